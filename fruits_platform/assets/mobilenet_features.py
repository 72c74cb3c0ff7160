"""`mobilenet_features`: one 1280-d MobileNetV2 embedding per `ok` image of a fruit class."""

from dagster import (
    AssetCheckResult,
    AssetCheckSpec,
    AssetExecutionContext,
    MaterializeResult,
    MetadataValue,
    asset,
)
from dagster_pyspark import LazyPySparkResource
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from fruits_platform.assets.common import (
    CLASS_ROWS,
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
from fruits_platform.ml.mobilenet import FEATURE_DIM
from fruits_platform.resources.model import MobileNetWeights
from fruits_platform.resources.storage import FruitsStorage
from fruits_platform.spark.featurize import UriList, class_sizes, embed_images, whole_classes

SCHEMA = column_schema(
    {
        "sha256": ("string", "SHA-256 of the image bytes the vector was computed from"),
        "features": ("list<float32>[1280]", "MobileNetV2 global-average-pooled embedding (ImageNet preprocessing)"),
        "model_signature": (
            "string",
            "Weights fingerprint, input size, preprocessing and engine (LiteRT; none: Keras) of the vector",
        ),
    }
)
CHECK_FINITE = "features_are_finite_1280d"


def has_non_finite(column: str):
    """Whether the float array `column` holds a NaN or an infinity. Spark orders NaN above every number, so
    a NaN or +inf shows in the largest value and -inf in the smallest: as fast as a sum, where a lambda over
    the 1280 values (`exists`) is interpreted value by value."""
    largest, smallest = F.array_max(column), F.array_min(column)
    return F.isnan(largest) | (largest == float("inf")) | (smallest == float("-inf"))


CHECK_ONE_ROW = "one_row_per_ok_image"
CHANGED_REASON = (
    "the file was replaced or removed after raw_images catalogued it (its bytes no longer have the recorded "
    "SHA-256): re-materialize raw_images for its class"
)


@asset(
    **PER_CLASS,
    ins={"raw_images": CLASS_ROWS},
    kinds={"spark", "tensorflow", "parquet"},
    tags={"layer": "features"},
    code_version="1",
    metadata={"dagster/column_schema": SCHEMA},
    check_specs=[
        AssetCheckSpec(CHECK_FINITE, asset="mobilenet_features", description="Every vector has 1280 finite values"),
        AssetCheckSpec(CHECK_ONE_ROW, asset="mobilenet_features", description="Exactly one row per ok image"),
    ],
    description=(
        "MobileNetV2 embeddings (1280 values, include_top=False, average pooling, 224x224 by default) of "
        "every `ok` image in `raw_images`, computed by Spark with the model built once per worker from "
        "broadcast weights (run by LiteRT by default, or Keras: `engine` in the metadata). Images whose "
        "content (SHA-256) was already embedded with the same weights and "
        "settings are reused, not run through the model again (`images_embedded` counts the model's work)."
    ),
)
def mobilenet_features(
    context: AssetExecutionContext,
    spark: LazyPySparkResource,
    pyspark_step_launcher: StepLauncherParam,
    storage: FruitsStorage,
    weights: MobileNetWeights,
    raw_images: DataFrame,
) -> MaterializeResult:
    stopwatch = Stopwatch()
    labels = list(context.partition_keys)
    session = spark.spark_session
    model_weights = weights.load()
    model = weights.compiled()
    signature = model.signature

    images = raw_images.where(F.col("status") == "ok").select("uri", "label", "split", "sha256")
    dataset = storage.dataset(session, "mobilenet_features")
    previous = dataset.read_existing(labels)
    if previous is not None and "model_signature" in previous.columns:
        known = (
            previous.where(F.col("model_signature") == signature)
            .select("sha256", "features")
            .dropDuplicates(["sha256"])
        )
        to_embed = images.join(known, "sha256", "left_anti")
        reused = images.join(known, "sha256", "inner")
    else:
        to_embed, reused = images, None
    sizes = class_sizes(images)
    embed_sizes = sizes if reused is None else class_sizes(to_embed)
    total, embed_count = sum(sizes.values()), sum(embed_sizes.values())
    context.log.info(
        f"{total} ok image(s) in {len(labels)} class(es): {embed_count} to embed, {total - embed_count} reused; "
        f"weights {model_weights.source} ({model_weights.fingerprint}), {model_weights.image_size}px, "
        f"engine {model.engine}"
    )

    broadcast = session.sparkContext.broadcast(model)
    progress = session.sparkContext.accumulator(0)
    changed = session.sparkContext.accumulator([], UriList())
    embedded = embed_images(session, to_embed, embed_sizes, broadcast, progress, weights.batch_size, changed)
    features = embedded if reused is None else embedded.unionByName(reused)
    # Without reused rows to add, the embedding tasks may hold whole classes: then no shuffle before the write.
    grouped = reused is None and whole_classes(session, embed_sizes)
    with progress_logger(context.log, embed_count, progress), storage_failures():
        stats, version = write_summarized(
            dataset,
            features.select("uri", "label", "split", "sha256", "features", F.lit(signature).alias("model_signature")),
            labels,
            ["uri", "sha256"],
            salt=signature,
            grouped=grouped,
            rows=F.count("*"),
            distinct_uris=F.size(F.collect_set("uri")),
            min_dim=F.coalesce(F.min(F.size("features")), F.lit(FEATURE_DIM)),
            max_dim=F.coalesce(F.max(F.size("features")), F.lit(FEATURE_DIM)),
            bad=F.sum(has_non_finite("features").cast("int")),
        )
    broadcast.unpersist()
    changed_uris = sorted(set(changed.value))  # a retried task adds its uris again
    if changed_uris:
        context.log.warning(f"{len(changed_uris)} image(s) not embedded: {CHANGED_REASON}")
    reused_sizes = {label: sizes[label] - embed_sizes.get(label, 0) for label in sizes}
    known = {"images_ok": sizes, "images_embedded": embed_sizes, "images_reused": reused_sizes}
    add_class_metadata(context, dataset, labels, ["uri", "sha256"], salt=signature, known=known)
    non_finite = stats["bad"] or 0
    return MaterializeResult(
        metadata=run_metadata(
            stopwatch,
            stats["rows"],
            SCHEMA,
            images_ok=MetadataValue.int(total),
            images_embedded=MetadataValue.int(embed_count),
            images_reused=MetadataValue.int(total - embed_count),
            weights_source=MetadataValue.text(model_weights.source),
            weights_fingerprint=MetadataValue.text(model_weights.fingerprint),
            image_size=MetadataValue.int(model_weights.image_size),
            engine=MetadataValue.text(model.engine),
            batch_size=MetadataValue.int(model.batch_size(weights.batch_size)),
            images_changed_since_catalogue=MetadataValue.int(len(changed_uris)),
            changed_files=MetadataValue.md(
                "| file | reason |\n|---|---|\n"
                + "\n".join(f"| `{uri}` | changed_since_catalogue: {CHANGED_REASON} |" for uri in changed_uris[:50])
            )
            if changed_uris
            else MetadataValue.text("none"),
        ),
        check_results=[
            AssetCheckResult(
                check_name=CHECK_FINITE,
                passed=bool(stats["min_dim"] == stats["max_dim"] == FEATURE_DIM and non_finite == 0),
                metadata={"min_dim": stats["min_dim"], "max_dim": stats["max_dim"], "rows_with_nan_or_inf": non_finite},
            ),
            AssetCheckResult(
                check_name=CHECK_ONE_ROW,
                passed=bool(stats["rows"] == stats["distinct_uris"] == total),
                metadata={"rows": stats["rows"], "distinct_uris": stats["distinct_uris"], "ok_images": total},
            ),
        ],
        data_version=version,
    )
