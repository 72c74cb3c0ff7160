"""Where the images are read from and where the asset data is written."""

from __future__ import annotations

from dagster import ConfigurableResource
from pydantic import Field

from fruits_platform.sources import ImageFile, join_uri, list_class_files, list_classes


class FruitsStorage(ConfigurableResource):
    """Data root (Fruits-360 layout) and output root, each a local folder or an s3:// URI."""

    data_root: str = Field(description="Fruits-360 layout root: <data_root>/{Training,Test}/<Class>/*.jpg")
    output_root: str = Field(description="Each asset is written under <output_root>/<asset_name>/")

    def classes(self) -> list[str]:
        return list_classes(self.data_root)

    def class_files(self, labels: list[str]) -> list[ImageFile]:
        return [image for label in labels for image in list_class_files(self.data_root, label)]

    def asset_root(self, asset_name: str) -> str:
        return join_uri(self.output_root, asset_name)

    def dataset(self, spark, asset_name: str):
        from fruits_platform.spark.datasets import PartitionedDataset

        return PartitionedDataset(spark, self.asset_root(asset_name))
