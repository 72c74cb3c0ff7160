"""Where the images are read from and where the asset data is written."""

from __future__ import annotations

import os

from dagster import ConfigurableResource, Failure
from pydantic import Field

from fruits_platform.concurrency import LIMITED, limit_outputs_pool
from fruits_platform.sources import ImageFile, is_s3, join_uri, list_class_files, list_classes


class FruitsStorage(ConfigurableResource):
    """Data root (Fruits-360 layout) and output root, each a local folder or an s3:// URI."""

    data_root: str = Field(description="Fruits-360 layout root: <data_root>/{Training,Test}/<Class>/*.jpg")
    output_root: str = Field(description="Each asset is written under <output_root>/<asset_name>/")
    notification_queue: str = Field(
        default="",
        description="URL of the SQS queue that receives the data root bucket's S3 event notifications "
        "(ObjectCreated:*, ObjectRemoved:*), read by the new-images sensor; empty: the sensor lists the data root",
    )

    def setup_for_execution(self, context) -> None:
        """A local data root that does not exist or an output root that cannot be written fails the run before
        any step starts (S3 roots are checked by the first read or write). An instance without a limit on the
        outputs' pool (`dagster dev`'s own) gets one, said once in the log: no run then writes what another does."""
        if context.instance is not None and limit_outputs_pool(context.instance):
            context.log.info(LIMITED)
        if not is_s3(self.data_root) and not os.path.isdir(self.data_root):
            raise Failure(
                description=f"Data root not found: {self.data_root!r} (FRUITS_DATA_ROOT).", allow_retries=False
            )
        if not is_s3(self.output_root):
            try:
                os.makedirs(self.output_root, exist_ok=True)
            except OSError as error:
                raise Failure(description=f"Output root not writable: {error} (FRUITS_OUTPUT_ROOT).") from error
            if not os.access(self.output_root, os.W_OK):
                raise Failure(description=f"Output root not writable: {self.output_root!r} (FRUITS_OUTPUT_ROOT).")

    def classes(self) -> list[str]:
        return list_classes(self.data_root)

    def class_files(self, labels: list[str]) -> list[ImageFile]:
        """Every file of the classes; a class with no folder in the data root fails (an empty folder is a class)."""
        missing = sorted(set(labels) - set(self.classes()))
        if missing:
            raise Failure(
                description=f"{len(missing)} class(es) have no folder under {self.data_root}/{{Training,Test}}: "
                f"{', '.join(map(repr, missing[:5]))}. They were registered from another data root: set "
                "FRUITS_DATA_ROOT to it, or delete these partitions.",
                allow_retries=False,
            )
        return [image for label in labels for image in list_class_files(self.data_root, label)]

    def asset_root(self, asset_name: str) -> str:
        return join_uri(self.output_root, asset_name)

    def dataset(self, spark, asset_name: str):
        from fruits_platform.spark.datasets import PartitionedDataset

        return PartitionedDataset(spark, self.asset_root(asset_name))
