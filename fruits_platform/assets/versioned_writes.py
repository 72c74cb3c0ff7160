"""Writing the per-class datasets and their data versions: content hashes computed by Spark while it writes,
the written rows' figures, each class's own figures on its partition."""

from __future__ import annotations

import hashlib

from dagster import DataVersion
from pyspark.sql import DataFrame
from pyspark.sql import functions as F


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
        figures["run_figures"] = f"runtime and throughput: the whole run's, over {len(labels)} classes"
        context.add_asset_metadata(figures, asset_key=asset_key, partition_key=label)


def write_classes(context, session, storage, asset: str, frame: DataFrame, salt: str, **aggregates):
    """Write `frame`, the rows of the run's classes as read from per-class folders, as `asset`'s dataset; return
    the summary of what was written (`write_summarized`, versioned by uri and sha256). The classes stay in the
    partitions they were read in: no shuffle."""
    labels = list(context.partition_keys)
    dataset = storage.dataset(session, asset)
    summary = write_summarized(dataset, frame, labels, ["uri", "sha256"], salt, grouped=True, **aggregates)
    add_class_metadata(context, dataset, labels, ["uri", "sha256"], salt, asset_key=asset)
    return summary
