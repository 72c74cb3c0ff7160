"""`raw_images` and `mobilenet_features`, one step (`catalogue_and_embed`): each file is read once, catalogued and
(when valid and not embedded before) embedded from the same bytes; the rows are kept on the executors' disks
and written twice."""

from concurrent.futures import ThreadPoolExecutor

from dagster import (
    AssetCheckResult,
    AssetCheckSpec,
    AssetExecutionContext,
    MaterializeResult,
    MetadataValue,
    TableColumn,
    TableRecord,
    TableSchema,
    multi_asset,
)
from dagster_pyspark import LazyPySparkResource
from pyspark import StorageLevel
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from fruits_platform.assets.metadata import Stopwatch, run_metadata
from fruits_platform.assets.progress import progress_logger
from fruits_platform.assets.specs import PER_CLASS_STEP, StepLauncherParam, column_schema, dataset_spec
from fruits_platform.assets.storage_failures import storage_failures
from fruits_platform.assets.versioned_writes import add_class_metadata, write_summarized
from fruits_platform.ml.mobilenet import FEATURE_DIM, CompiledModel, ModelWeights
from fruits_platform.resources.model import MobileNetWeights
from fruits_platform.resources.storage import FruitsStorage
from fruits_platform.spark.featurize import CATALOGUE_COLUMNS, broadcast, listing_sizes, whole_classes
from fruits_platform.spark.featurize import catalogue_and_embed as catalogue_and_embed_files

CATALOGUE_SCHEMA = column_schema(
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

RAW_IMAGES = dataset_spec(
    "raw_images",
    CATALOGUE_SCHEMA,
    "Catalogue of every file in a fruit class folder, over both splits (Training, Test): where it is, its size, "
    "dimensions, colour mode and SHA-256, and whether it is fit for the model (`ok`) or `rejected` with the precise "
    "reason (empty, truncated, not an image, wrong format, too large...).",
    layer="catalogue",
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
            CATALOGUE_SCHEMA,
            classes=MetadataValue.json(labels) if len(labels) > 1 else MetadataValue.text(labels[0]),
            images_ok=MetadataValue.int(ok),
            images_rejected=MetadataValue.int(rejected_count),
            rejected_files=MetadataValue.table(
                [TableRecord({"file": r["uri"], "reason": r["reason"]}) for r in rejected], REJECTED_SCHEMA
            ),
        ),
        data_version=version,
    )


FEATURES_SCHEMA = column_schema(
    {
        "sha256": ("string", "SHA-256 of the image bytes the vector was computed from"),
        "features": ("list<float32>[1280]", "MobileNetV2 global-average-pooled embedding (ImageNet preprocessing)"),
        "model_signature": (
            "string",
            "Weights fingerprint, input size, preprocessing and engine (LiteRT; none: Keras) of the vector",
        ),
    }
)
FEATURES_COLUMNS = ["uri", "label", "split", "sha256", "features"]
CHECK_FINITE = "features_are_finite_1280d"
CHECK_ONE_ROW = "one_row_per_ok_image"

MOBILENET_FEATURES = dataset_spec(
    "mobilenet_features",
    FEATURES_SCHEMA,
    "MobileNetV2 embeddings (1280 values, include_top=False, average pooling, 224x224 by default) of "
    "every `ok` image in `raw_images`, computed by Spark from the same read of the file as its catalogue "
    "row (the vector is of the bytes whose SHA-256 the row holds), with the model built once per worker "
    "from broadcast weights (run by LiteRT by default, or Keras: `engine` in the metadata). Images whose "
    "content (SHA-256) was already embedded with the same weights and settings are reused, not run "
    "through the model again (`images_embedded` counts the model's work).",
    deps=["raw_images"],
    kinds={"spark", "tensorflow", "parquet"},
)
FEATURES_CHECKS = [
    AssetCheckSpec(CHECK_FINITE, asset="mobilenet_features", description="Every vector has 1280 finite values"),
    AssetCheckSpec(CHECK_ONE_ROW, asset="mobilenet_features", description="Exactly one row per ok image"),
]


def has_non_finite(column: str):
    """Whether the float array `column` holds a NaN or an infinity. Spark orders NaN above every number, so
    a NaN or +inf shows in the largest value and -inf in the smallest: as fast as a sum, where a lambda over
    the 1280 values (`exists`) is interpreted value by value."""
    largest, smallest = F.array_max(column), F.array_min(column)
    return F.isnan(largest) | (largest == float("inf")) | (smallest == float("-inf"))


def known_features(previous: DataFrame | None, signature: str) -> DataFrame | None:
    """(sha256, features) of the images embedded before with the model of `signature`, from the classes'
    previous `mobilenet_features` (None: none written yet)."""
    if previous is None or "model_signature" not in previous.columns:
        return None
    return previous.where(F.col("model_signature") == signature).select("sha256", "features").dropDuplicates(["sha256"])


def embedded_before(features, labels: list[str], signature: str) -> tuple[DataFrame | None, frozenset[str]]:
    """The classes' embeddings made before with the model of `signature` (`known_features`), and their hashes."""
    known = known_features(features.read_existing(labels), signature)
    if known is None:
        return None, frozenset()
    return known, frozenset(row["sha256"] for row in known.select("sha256").collect())


def features_result(
    context,
    stopwatch: Stopwatch,
    dataset,
    rows: DataFrame,
    known: DataFrame | None,
    labels: list[str],
    grouped: bool,
    weights: ModelWeights,
    model: CompiledModel,
    batch_size: int | None,
) -> MaterializeResult:
    """Write a vector per `ok` row of `rows` (the one computed in the pass, else the one in `known`) as
    `mobilenet_features`; its materialization, checks and each class's own figures. `grouped`: whether `rows`'
    partitions hold whole classes."""
    ok = rows.where(F.col("status") == "ok").select(*FEATURES_COLUMNS)
    features = ok.where(F.col("features").isNotNull())
    if known is not None:
        reused = ok.where(F.col("features").isNull()).drop("features").join(known, "sha256")
        features, grouped = features.unionByName(reused), False
    counts = {
        row["label"]: row
        for row in ok.groupBy("label").agg(F.count("*").alias("ok"), F.count("features").alias("embedded")).collect()
    }
    sizes = {label: counts[label]["ok"] if label in counts else 0 for label in labels}
    embed_sizes = {label: counts[label]["embedded"] if label in counts else 0 for label in labels}
    total, embed_count = sum(sizes.values()), sum(embed_sizes.values())
    stats, version = write_summarized(
        dataset,
        features.select(*FEATURES_COLUMNS, F.lit(model.signature).alias("model_signature")),
        labels,
        ["uri", "sha256"],
        salt=model.signature,
        grouped=grouped,
        rows=F.count("*"),
        distinct_uris=F.size(F.collect_set("uri")),
        min_dim=F.coalesce(F.min(F.size("features")), F.lit(FEATURE_DIM)),
        max_dim=F.coalesce(F.max(F.size("features")), F.lit(FEATURE_DIM)),
        bad=F.sum(has_non_finite("features").cast("int")),
    )
    context.log.info(f"{total} ok image(s): {embed_count} embedded, {total - embed_count} reused")
    reused_sizes = {label: sizes[label] - embed_sizes[label] for label in labels}
    per_class = {"images_ok": sizes, "images_embedded": embed_sizes, "images_reused": reused_sizes}
    add_class_metadata(
        context,
        dataset,
        labels,
        ["uri", "sha256"],
        salt=model.signature,
        known=per_class,
        asset_key="mobilenet_features",
    )
    non_finite = stats["bad"] or 0
    return MaterializeResult(
        asset_key="mobilenet_features",
        metadata=run_metadata(
            stopwatch,
            stats["rows"],
            FEATURES_SCHEMA,
            images_ok=MetadataValue.int(total),
            images_embedded=MetadataValue.int(embed_count),
            images_reused=MetadataValue.int(total - embed_count),
            weights_source=MetadataValue.text(weights.source),
            weights_fingerprint=MetadataValue.text(weights.fingerprint),
            image_size=MetadataValue.int(weights.image_size),
            engine=MetadataValue.text(model.engine),
            batch_size=MetadataValue.int(model.batch_size(batch_size)),
        ),
        check_results=[
            AssetCheckResult(
                asset_key="mobilenet_features",
                check_name=CHECK_FINITE,
                passed=bool(stats["min_dim"] == stats["max_dim"] == FEATURE_DIM and non_finite == 0),
                metadata={"min_dim": stats["min_dim"], "max_dim": stats["max_dim"], "rows_with_nan_or_inf": non_finite},
            ),
            AssetCheckResult(
                asset_key="mobilenet_features",
                check_name=CHECK_ONE_ROW,
                passed=bool(stats["rows"] == stats["distinct_uris"] == total),
                metadata={"rows": stats["rows"], "distinct_uris": stats["distinct_uris"], "ok_images": total},
            ),
        ],
        data_version=version,
    )


@multi_asset(specs=[RAW_IMAGES, MOBILENET_FEATURES], check_specs=FEATURES_CHECKS, **PER_CLASS_STEP)
def catalogue_and_embed(
    context: AssetExecutionContext,
    spark: LazyPySparkResource,
    pyspark_step_launcher: StepLauncherParam,
    storage: FruitsStorage,
    weights: MobileNetWeights,
):
    stopwatch = Stopwatch()
    labels = list(context.partition_keys)
    session, model_weights, model = session_and_model(spark, weights)
    with storage_failures():
        files = storage.class_files(labels)
    features = storage.dataset(session, "mobilenet_features")
    known, known_hashes = embedded_before(features, labels, model.signature)
    context.log.info(f"{len(files)} file(s) in {len(labels)} class(es), {describe(known_hashes, model_weights, model)}")
    progress = session.sparkContext.accumulator(0)
    with broadcast(session, model, known_hashes) as (model_broadcast, known_broadcast):
        rows = catalogue_and_embed_files(session, files, model_broadcast, known_broadcast, progress, weights.batch_size)
        rows = rows.persist(StorageLevel.DISK_ONLY)  # the second write reads these rows, not the files again
        grouped = whole_classes(session, listing_sizes(files))  # as catalogue_and_embed spread them
        try:
            with progress_logger(context.log, len(files), progress, label="files"), storage_failures():
                catalogued = catalogue_result(
                    context, stopwatch, storage.dataset(session, "raw_images"), rows, labels, grouped
                )
            yield catalogued
            with storage_failures():
                embedded = features_result(
                    context, stopwatch, features, rows, known, labels, grouped, model_weights, model, weights.batch_size
                )
            yield embedded
        finally:
            rows.unpersist()


def session_and_model(spark: LazyPySparkResource, weights: MobileNetWeights):
    """The step's SparkSession, weights and compiled model: the JVM starts while TensorFlow loads the weights."""
    with ThreadPoolExecutor(1) as pool:
        starting = pool.submit(lambda: spark.spark_session)
        model_weights, model = weights.load(), weights.compiled()
        return starting.result(), model_weights, model


def describe(known_hashes: frozenset[str], model_weights, model) -> str:
    return (
        f"{len(known_hashes)} image(s) embedded before with these weights; weights {model_weights.source} "
        f"({model_weights.fingerprint}), {model_weights.image_size}px, engine {model.engine}"
    )
