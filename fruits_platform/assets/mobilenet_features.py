"""`mobilenet_features`: one 1280-d MobileNetV2 embedding per `ok` image of a fruit class (computed with the
catalogue, in `catalogue_and_embed`: each file is read once)."""

from dagster import AssetCheckResult, AssetCheckSpec, AssetSpec, MaterializeResult, MetadataValue
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
from fruits_platform.ml.mobilenet import FEATURE_DIM, CompiledModel, ModelWeights

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
COLUMNS = ["uri", "label", "split", "sha256", "features"]
CHECK_FINITE = "features_are_finite_1280d"
CHECK_ONE_ROW = "one_row_per_ok_image"

MOBILENET_FEATURES = AssetSpec(
    "mobilenet_features",
    deps=["raw_images"],
    kinds={"spark", "tensorflow", "parquet"},
    tags={"layer": "features"},
    code_version="1",
    owners=OWNERS,
    metadata={"dagster/column_schema": SCHEMA},
    description=(
        "MobileNetV2 embeddings (1280 values, include_top=False, average pooling, 224x224 by default) of "
        "every `ok` image in `raw_images`, computed by Spark from the same read of the file as its catalogue "
        "row (the vector is of the bytes whose SHA-256 the row holds), with the model built once per worker "
        "from broadcast weights (run by LiteRT by default, or Keras: `engine` in the metadata). Images whose "
        "content (SHA-256) was already embedded with the same weights and settings are reused, not run "
        "through the model again (`images_embedded` counts the model's work)."
    ),
)
CHECKS = [
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
    ok = rows.where(F.col("status") == "ok").select(*COLUMNS)
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
        features.select(*COLUMNS, F.lit(model.signature).alias("model_signature")),
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
            SCHEMA,
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
