"""What every asset module shares: the asset defaults, metadata builders, data versions, progress."""

from __future__ import annotations

import base64
import functools
import hashlib
import io
import re
import threading
import time
import warnings
from contextlib import contextmanager
from typing import Any

import numpy as np
from dagster import (
    AllPartitionMapping,
    AssetIn,
    AssetSpec,
    BackfillPolicy,
    BetaWarning,
    DagsterInvariantViolationError,
    DataVersion,
    Failure,
    MetadataValue,
    OpExecutionContext,
    ResourceParam,
    RetryRequested,
    TableColumn,
    TableSchema,
)
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from fruits_platform.concurrency import OUTPUTS_POOL
from fruits_platform.partitions import fruit_classes
from fruits_platform.resources.class_datasets import MATERIALIZED_ONLY
from fruits_platform.sources import StorageUnreachableError
from fruits_platform.spark.datasets import MissingPartitionError

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
PER_CLASS_STEP = dict(
    partitions_def=fruit_classes,
    backfill_policy=BackfillPolicy.single_run(),
    group_name=GROUP,
    pool=OUTPUTS_POOL,
)
STORAGE_RETRIES, STORAGE_RETRY_DELAY = 2, 5  # seconds, doubled at each retry
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


class Stopwatch:
    def __init__(self):
        self.started = time.perf_counter()

    @property
    def seconds(self) -> float:
        return time.perf_counter() - self.started


def runtime_metadata(stopwatch: Stopwatch) -> dict:
    return {"runtime_seconds": MetadataValue.float(round(stopwatch.seconds, 3))}


def run_metadata(stopwatch: Stopwatch, rows: int, schema: TableSchema, images: int | None = None, **extra) -> dict:
    """Runtime, counts, throughput and schema, the metadata every dataset's materialization carries."""
    seconds = stopwatch.seconds
    images = rows if images is None else images
    return {
        **runtime_metadata(stopwatch),
        "throughput_images_per_second": MetadataValue.float(round(images / seconds, 2) if seconds > 0 else 0.0),
        "dagster/row_count": MetadataValue.int(rows),
        "dagster/column_schema": MetadataValue.table_schema(schema),
        **extra,
    }


def content_hash(columns: list[str], where=None):
    """An aggregate column: a hash of the content of `columns` over the rows (those matching `where`),
    independent of row order and of how Spark partitioned them."""
    row_hash = F.sha2(F.concat_ws("\x1f", *[F.col(c).cast("string") for c in columns]), 256)
    if where is not None:
        row_hash = F.when(where, row_hash)  # collect_list skips the nulls
    return F.sha2(F.concat_ws(",", F.sort_array(F.collect_list(row_hash))), 256)


def data_version(content: str | None, salt: str = "") -> DataVersion:
    return DataVersion(hashlib.sha256(f"{salt}|{content or ''}".encode()).hexdigest()[:24])


def summarize(frame: DataFrame, version_columns: list[str], salt: str = "", **aggregates):
    """Aggregates of `frame` and a data version from its content, in one Spark job (one small row to the
    driver). Returns (row of the aggregates by name, DataVersion)."""
    row = frame.agg(
        *[column.alias(name) for name, column in aggregates.items()], content_hash(version_columns).alias("_v")
    ).first()
    return row, data_version(row["_v"], salt)


def write_summarized(
    dataset,
    frame: DataFrame,
    labels: list[str],
    version_columns: list[str],
    salt: str = "",
    grouped: bool = False,
    **aggregates,
):
    """Write `frame` as the new version of `labels` in `dataset` (a PartitionedDataset) and summarize the rows
    written as `summarize` does: (aggregates by name, DataVersion). Computed while Spark writes them (observed
    metrics, which allow no DISTINCT aggregates); read back only when Spark reports none (no row written)."""
    observed = dataset.write(frame, labels, grouped, observe={**aggregates, "_v": content_hash(version_columns)})
    if observed is None:
        return summarize(dataset.read(labels), version_columns, salt, **aggregates)
    return observed, data_version(observed["_v"], salt)


def add_class_metadata(
    context,
    dataset,
    labels: list[str],
    version_columns: list[str],
    salt: str = "",
    known=None,
    asset_key: str | None = None,
    **aggregates,
) -> None:
    """In a run over several classes, each class's own figures on its partition's materialization (else
    Dagster gives every partition the run's totals): row count, `class_data_version` (its content), the
    `aggregates` ({name: column}) of its written rows, and `known` ({name: {class: value}}) figures; `asset_key`:
    which asset of a multi-asset."""
    if len(labels) < 2:
        return  # the run's figures are the class's
    found = (
        dataset.read(labels)
        .groupBy("label")
        .agg(
            F.count("*").alias("dagster/row_count"),
            content_hash(version_columns).alias("_v"),
            *[column.alias(name) for name, column in aggregates.items()],
        )
        .collect()
    )
    by_label = {row["label"]: row for row in found}  # an empty class has no row
    for label in labels:
        row = by_label.get(label)
        figures = {name: row[name] if row else 0 for name in ["dagster/row_count", *aggregates]}
        figures.update({name: values.get(label, 0) for name, values in (known or {}).items()})
        figures["class_data_version"] = data_version(row["_v"] if row else None, salt).value
        context.add_asset_metadata(figures, asset_key=asset_key, partition_key=label)


def content_version(frame: DataFrame, columns: list[str], salt: str = "") -> DataVersion:
    """A data version from the content itself, computed by Spark."""
    return summarize(frame, columns, salt)[1]


def pyplot():
    """matplotlib's pyplot, drawing off-screen (a run worker has no display)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def markdown_table(header: list[str], rows: list, empty: str = "(none)") -> MetadataValue:
    """A Markdown table (the UI renders it), one row saying `empty` when there is none."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += [
        "| " + " | ".join(str(cell) for cell in row) + " |" for row in rows or [(empty, *[""] * (len(header) - 1))]
    ]
    return MetadataValue.md("\n".join(lines))


PAIRS_HEADER = ["class A", "class B", "A predicted as B", "B predicted as A"]


def png_markdown(figure, title: str) -> MetadataValue:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    encoded = base64.b64encode(buffer.getvalue()).decode()
    return MetadataValue.md(f"![{title}](data:image/png;base64,{encoded})")


def scree_plot(explained_variance: list[float], spectrum: list[float], title: str = "PCA scree plot") -> MetadataValue:
    return MetadataValue.md(_scree_markdown(tuple(explained_variance), tuple(spectrum), title))


@functools.lru_cache(maxsize=4)
def _scree_markdown(explained_variance: tuple, spectrum: tuple, title: str) -> str:
    """The plot as Markdown, drawn once per model in a process (feature_model and pca_features show the same)."""
    plt = pyplot()

    k = len(explained_variance)
    shown = spectrum[: max(k * 2, min(len(spectrum), 50))]
    figure, axis = plt.subplots(figsize=(7, 3.6))
    # Two filled step outlines (kept components, then the rest): a bar per component is slow to draw.
    edges = np.arange(len(shown) + 1) + 0.5
    axis.stairs(shown[:k], edges[: min(k, len(shown)) + 1], fill=True, color="#2f7ed8", label="kept")
    if len(shown) > k:
        axis.stairs(shown[k:], edges[k:], fill=True, color="#c8d6e5", label="dropped")
    axis.set_xlabel("principal component")
    axis.set_ylabel("explained variance ratio")
    twin = axis.twinx()
    twin.plot(range(1, len(shown) + 1), np.cumsum(shown), color="#e4572e", marker=".")
    twin.set_ylabel("cumulative")
    twin.set_ylim(0, 1.02)
    axis.set_title(f"{title}: k = {k}, cumulative = {sum(explained_variance):.3f}")
    try:
        return png_markdown(figure, title).value
    finally:
        plt.close(figure)


def pca_metadata(explained_variance: list[float], spectrum: list[float]) -> dict:
    cumulative = [float(v) for v in np.cumsum(explained_variance)]
    return {
        "pca_k": MetadataValue.int(len(explained_variance)),
        "explained_variance_total": MetadataValue.float(round(cumulative[-1], 6) if cumulative else 0.0),
        "explained_variance": MetadataValue.json([round(v, 6) for v in explained_variance]),
        "cumulative_explained_variance": MetadataValue.json([round(v, 6) for v in cumulative]),
        "scree_plot": scree_plot(explained_variance, spectrum),
    }


@contextmanager
def progress_logger(log, total: int, counter, label: str = "images", every_seconds: float = 10.0):
    """Log `done / total` and the rate every few seconds while the block runs (counter: a Spark accumulator)."""
    stop = threading.Event()
    started = time.perf_counter()

    def report():
        while not stop.wait(every_seconds):
            done, elapsed = counter.value, time.perf_counter() - started
            log.info(f"{label}: {done}/{total} done, {done / elapsed:.1f} {label}/s")

    thread = threading.Thread(target=report, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
        elapsed = time.perf_counter() - started
        rate = counter.value / elapsed if elapsed > 0 else 0.0
        log.info(f"{label}: {counter.value}/{total} done in {elapsed:.1f}s, {rate:.1f} {label}/s")


def write_classes(context, session, storage, asset: str, frame: DataFrame, salt: str, **aggregates):
    """Write `frame`, the rows of the run's classes as read from per-class folders, as `asset`'s dataset; return
    the summary of what was written (`write_summarized`, versioned by uri and sha256). The classes stay in the
    partitions they were read in: no shuffle."""
    labels = list(context.partition_keys)
    dataset = storage.dataset(session, asset)
    summary = write_summarized(dataset, frame, labels, ["uri", "sha256"], salt, grouped=True, **aggregates)
    add_class_metadata(context, dataset, labels, ["uri", "sha256"], salt, asset_key=asset)
    return summary


@contextmanager
def storage_failures():
    """Turn a Spark job that died because the storage was unreachable into a clear, retryable Failure
    (Spark buries the worker's error deep in its own message); missing upstream data into a Failure that
    no retry can mend."""
    try:
        yield
    except MissingPartitionError as error:
        raise Failure(description=str(error), allow_retries=False) from error
    except StorageUnreachableError as error:  # the driver's own listing or read
        raise retry_later(Failure(description=f"Storage unreachable: {error}", allow_retries=True), error)
    except Exception as error:
        found = re.search(r"StorageUnreachableError: ([^\n]+)", str(error))
        if found is None:
            raise
        failure = Failure(description=f"Storage unreachable: {found.group(1)}", allow_retries=True)
        raise retry_later(failure, error)


def retry_later(failure: Failure, cause: BaseException) -> RetryRequested:
    """Dagster's request to retry the step after a pause (5 s, then 10 s), caused by `failure` (which the run's
    events and the command's error line show)."""
    failure.__cause__ = cause
    try:
        attempt = OpExecutionContext.get().retry_number
    except DagsterInvariantViolationError:  # called outside a step
        attempt = 0
    retry = RetryRequested(max_retries=STORAGE_RETRIES, seconds_to_wait=STORAGE_RETRY_DELAY * 2**attempt)
    retry.__cause__ = failure
    return retry
