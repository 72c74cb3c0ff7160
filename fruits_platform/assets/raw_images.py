"""`raw_images`: the catalogue of every file of a fruit class, valid or not (computed with the embeddings, in
`catalogue_and_embed`: each file is read once)."""

from dagster import AssetSpec, MaterializeResult, MetadataValue, TableColumn, TableRecord, TableSchema
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from fruits_platform.assets.common import (
    OWNERS,
    Stopwatch,
    add_class_metadata,
    column_schema,
    run_metadata,
    write_summarized,
)
from fruits_platform.spark.featurize import CATALOGUE_COLUMNS

SCHEMA = column_schema(
    {
        "size_bytes": ("long", "File size in bytes"),
        "sha256": ("string", "SHA-256 of the file's bytes (identifies the content)"),
        "format": ("string", "Image format found in the content (JPEG, PNG, WEBP), if any"),
        "width": ("int", "Width in pixels, as declared by the image"),
        "height": ("int", "Height in pixels, as declared by the image"),
        "mode": ("string", "Pillow colour mode (RGB, L, P, RGBA, CMYK, ...); converted to RGB when ok"),
        "status": ("string", "ok: goes to the model; rejected: kept out of it, see reason"),
        "reason": ("string", "Why the file was rejected (kind: detail), null when ok"),
    }
)
VERSION_COLUMNS = ["uri", "sha256", "status"]
# The first rejected files of a run and why: the UI's table, the command's summary.
REJECTED_SCHEMA = TableSchema([TableColumn("file", "string"), TableColumn("reason", "string")])
REJECTED_SHOWN = 50

RAW_IMAGES = AssetSpec(
    "raw_images",
    kinds={"spark", "parquet"},
    tags={"layer": "catalogue"},
    code_version="1",
    owners=OWNERS,
    metadata={"dagster/column_schema": SCHEMA},
    description=(
        "Catalogue of every file in a fruit class folder, over both splits (Training, Test): where it is, "
        "its size, dimensions, colour mode and SHA-256, and whether it is fit for the model (`ok`) or "
        "`rejected` with the precise reason (empty, truncated, not an image, wrong format, too large...)."
    ),
)


def catalogue_result(
    context, stopwatch: Stopwatch, dataset, rows: DataFrame, labels: list[str], grouped: bool
) -> MaterializeResult:
    """Write the catalogue columns of `rows` (one per file of the run's classes) as `raw_images`; its
    materialization, with each class's own figures."""
    stats, version = write_summarized(
        dataset,
        rows.select(*CATALOGUE_COLUMNS),
        labels,
        VERSION_COLUMNS,
        grouped=grouped,
        rows=F.count("*"),
        ok=F.count(F.when(F.col("status") == "ok", 1)),
    )
    ok, rejected_count = stats["ok"], stats["rows"] - stats["ok"]
    is_ok = F.col("status") == "ok"
    add_class_metadata(
        context,
        dataset,
        labels,
        VERSION_COLUMNS,
        asset_key="raw_images",
        images_ok=F.count(F.when(is_ok, 1)),
        images_rejected=F.count(F.when(~is_ok, 1)),
    )
    rejected = []
    if rejected_count:
        rejected = (
            dataset.read(labels).where(~is_ok).select("uri", "reason").orderBy("uri").limit(REJECTED_SHOWN).collect()
        )
    context.log.info(f"{len(labels)} class(es): {ok} ok, {rejected_count} rejected")
    return MaterializeResult(
        asset_key="raw_images",
        metadata=run_metadata(
            stopwatch,
            stats["rows"],
            SCHEMA,
            classes=MetadataValue.json(labels) if len(labels) > 1 else MetadataValue.text(labels[0]),
            images_ok=MetadataValue.int(ok),
            images_rejected=MetadataValue.int(rejected_count),
            rejected_files=MetadataValue.table(
                [TableRecord({"file": r["uri"], "reason": r["reason"]}) for r in rejected], REJECTED_SCHEMA
            ),
        ),
        data_version=version,
    )
