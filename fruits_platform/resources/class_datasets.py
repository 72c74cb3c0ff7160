"""The per-class Parquet datasets as typed inputs: an asset parameter `raw_images: DataFrame` receives the rows
of the run's classes from `<output_root>/raw_images/`."""

from __future__ import annotations

from dagster import ConfigurableIOManager, Failure, InputContext, OutputContext
from dagster_pyspark import LazyPySparkResource
from pyspark.sql import DataFrame

from fruits_platform.resources.storage import FruitsStorage
from fruits_platform.spark.datasets import MissingPartitionError

MATERIALIZED_ONLY = "materialized_only"  # input metadata: the classes materialized among those mapped, not all


class ClassDatasets(ConfigurableIOManager):
    """Loads an upstream asset's rows for the classes its partition mapping gives: all of them (a class
    missing fails the step with the path and the fix), or, for an input marked `materialized_only`, those
    materialized so far. Each asset writes its own dataset: the data version, counts and checks it reports are
    computed by Spark while it writes, in the same pass, which an IO manager's output cannot report back."""

    storage: FruitsStorage
    spark: LazyPySparkResource

    def load_input(self, context: InputContext) -> DataFrame:
        asset_name = context.asset_key.path[-1]
        dataset = self.storage.dataset(self.spark.spark_session, asset_name)
        classes = list(context.asset_partition_keys)
        if context.definition_metadata.get(MATERIALIZED_ONLY):
            classes = [label for label in classes if dataset.exists(label)]
            if not classes:
                raise Failure(description=f"No class has {asset_name} yet: materialize {asset_name} first.")
        try:
            return dataset.read(classes)
        except MissingPartitionError as error:
            raise Failure(description=str(error), allow_retries=False) from error

    def handle_output(self, context: OutputContext, obj) -> None:
        raise TypeError(f"{context.asset_key.to_user_string()} writes its own dataset: return a MaterializeResult")
