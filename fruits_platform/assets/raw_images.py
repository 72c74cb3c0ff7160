"""`raw_images`: the catalogue of every file of a fruit class, valid or not."""

from dagster import AssetExecutionContext, MaterializeResult, MetadataValue, asset
from dagster_pyspark import LazyPySparkResource
from pyspark.sql import functions as F

from fruits_platform.assets.common import (
    PER_CLASS,
    add_class_metadata,
    StepLauncherParam,
    Stopwatch,
    column_schema,
    progress_logger,
    run_metadata,
    storage_failures,
    write_summarized,
)
from fruits_platform.resources.storage import FruitsStorage
from fruits_platform.spark.featurize import catalogue_images, listing_sizes, whole_classes

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


@asset(
    **PER_CLASS,
    kinds={"spark", "parquet"},
    tags={"layer": "catalogue"},
    code_version="1",
    metadata={"dagster/column_schema": SCHEMA},
    description=(
        "Catalogue of every file in a fruit class folder, over both splits (Training, Test): where it is, "
        "its size, dimensions, colour mode and SHA-256, and whether it is fit for the model (`ok`) or "
        "`rejected` with the precise reason (empty, truncated, not an image, wrong format, too large...)."
    ),
)
def raw_images(
    context: AssetExecutionContext,
    spark: LazyPySparkResource,
    pyspark_step_launcher: StepLauncherParam,
    storage: FruitsStorage,
) -> MaterializeResult:
    stopwatch = Stopwatch()
    labels = list(context.partition_keys)
    session = spark.spark_session
    files = storage.class_files(labels)
    dataset = storage.dataset(session, "raw_images")
    progress = session.sparkContext.accumulator(0)
    with progress_logger(context.log, len(files), progress, label="files"), storage_failures():
        stats, version = write_summarized(
            dataset,
            catalogue_images(session, files, progress),
            labels,
            ["uri", "sha256", "status"],
            grouped=whole_classes(session, listing_sizes(files)),  # as catalogue_images spread them
            rows=F.count("*"),
            ok=F.count(F.when(F.col("status") == "ok", 1)),
        )
    ok, rejected_count = stats["ok"], stats["rows"] - stats["ok"]
    is_ok = F.col("status") == "ok"
    add_class_metadata(
        context,
        dataset,
        labels,
        ["uri", "sha256", "status"],
        images_ok=F.count(F.when(is_ok, 1)),
        images_rejected=F.count(F.when(~is_ok, 1)),
    )
    rejected = []
    if rejected_count:
        rejected = (
            dataset.read(labels)
            .where(F.col("status") == "rejected")
            .select("uri", "reason")
            .orderBy("uri")
            .limit(50)
            .collect()
        )
    context.log.info(f"{len(labels)} class(es): {ok} ok, {rejected_count} rejected")
    return MaterializeResult(
        metadata=run_metadata(
            stopwatch,
            stats["rows"],
            SCHEMA,
            classes=MetadataValue.json(labels) if len(labels) > 1 else MetadataValue.text(labels[0]),
            images_ok=MetadataValue.int(ok),
            images_rejected=MetadataValue.int(rejected_count),
            rejected_files=MetadataValue.md(
                "| file | reason |\n|---|---|\n"
                + "\n".join(f"| `{r['uri'].rsplit('/', 1)[-1]}` | {r['reason']} |" for r in rejected)
            )
            if rejected
            else MetadataValue.text("none"),
        ),
        data_version=version,
    )
