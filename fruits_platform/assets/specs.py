"""What the assets declare: partitions, backfill policy, pool, group and owners; their typed inputs; the
per-class datasets' specs and column schemas."""

from __future__ import annotations

import warnings
from typing import Any

from dagster import (
    AllPartitionMapping,
    AssetIn,
    AssetSpec,
    BackfillPolicy,
    BetaWarning,
    ResourceParam,
    TableColumn,
    TableSchema,
)

from fruits_platform.concurrency import OUTPUTS_POOL
from fruits_platform.partitions import fruit_classes
from fruits_platform.resources.class_datasets import MATERIALIZED_ONLY

# Every Spark asset takes this resource: None locally; in the emr profile the EMR step launcher,
# which makes Dagster run the asset's step on the cluster instead of in this process.
StepLauncherParam = ResourceParam[Any]

GROUP = "fruit_features"
OWNERS = ["team:data-platform"]

# Per-class assets: one run covers a whole backfill (one SparkSession, one Spark job per asset); one step at a
# time in the outputs pool (fruits_platform/concurrency.py);
# a step failed by an unreachable storage is retried after a pause (`storage_failures`). No step RetryPolicy:
# Dagster retries an interrupted step under one, so a run terminated (from the UI, or by the code server's
# SIGTERM) would restart its step instead of stopping (docs/failure-modes.md).
# The single-run policy is what makes a backfill one run; Dagster marks the parameter beta at every asset.
warnings.filterwarnings("ignore", message="Parameter `backfill_policy`", category=BetaWarning)
# Outputs kept by an IO manager carry their data version through `Output`, whose parameter Dagster marks beta.
warnings.filterwarnings("ignore", message="Parameter `data_version` of initializer `Output", category=BetaWarning)
PER_CLASS_STEP = dict(
    partitions_def=fruit_classes,
    backfill_policy=BackfillPolicy.single_run(),
    group_name=GROUP,
    pool=OUTPUTS_POOL,
)
PER_CLASS = dict(**PER_CLASS_STEP, owners=OWNERS)


# Typed inputs from the per-class datasets (resources/class_datasets.py): the rows of the run's classes; or, for
# the model fit and the evaluation, of every class materialized so far (a child of every partition, still run
# in the same run as its parents since all share the partitions and the single-run policy).
CLASS_ROWS = AssetIn(input_manager_key="class_datasets")
EVERY_CLASS_ROWS = AssetIn(
    input_manager_key="class_datasets", partition_mapping=AllPartitionMapping(), metadata={MATERIALIZED_ONLY: True}
)


def dataset_spec(name: str, schema: TableSchema, description: str, layer: str = "features", **spec) -> AssetSpec:
    """A per-class Parquet dataset that a multi-asset step writes (`spec`: deps, kinds, automation condition)."""
    spec.setdefault("kinds", {"spark", "parquet"})
    return AssetSpec(
        name,
        tags={"layer": layer},
        code_version="1",
        owners=OWNERS,
        metadata={"dagster/column_schema": schema},
        description=description,
        **spec,
    )


LINEAGE_COLUMNS = {
    "uri": ("string", "Location of the image file (local path or s3:// URI)"),
    "label": ("string", "Fruit class: the class folder's name (also the partition key)"),
    "split": ("string", "Fruits-360 split: Training or Test"),
}


def column_schema(columns: dict[str, tuple[str, str]]) -> TableSchema:
    """The lineage columns every row carries, then {name: (type, description)}: the UI's column view."""
    columns = {**LINEAGE_COLUMNS, **columns}
    return TableSchema(columns=[TableColumn(name, kind, description) for name, (kind, description) in columns.items()])
