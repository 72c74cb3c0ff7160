"""`feature_model`: StandardScaler + PCA fitted once on the Training split of every materialized class."""

import json
import uuid
from dataclasses import asdict, dataclass

from dagster import (
    AssetCheckResult,
    AssetCheckSpec,
    AssetExecutionContext,
    AssetKey,
    AutomationCondition,
    DataVersion,
    Failure,
    MaterializeResult,
    MetadataValue,
    asset,
)
from dagster_pyspark import LazyPySparkResource
from pyspark.ml import PipelineModel
from pyspark.sql import functions as F

from fruits_platform.assets.common import (
    GROUP,
    OWNERS,
    StepLauncherParam,
    Stopwatch,
    content_hash,
    data_version,
    pca_metadata,
)
from fruits_platform.ml.reduction import (
    K_RULES,
    ReductionSummary,
    explained_variance_valid,
    fit_feature_model,
    model_fingerprint,
)
from fruits_platform.partitions import fruit_classes
from fruits_platform.resources.model import ReductionSettings
from fruits_platform.resources.storage import FruitsStorage
from fruits_platform.spark.datasets import HadoopFs, qualify, read_json, replace_directory, write_json

FIT_RECORD = "fit_record"  # what the saved model was fitted on, beside its stages
CHECK_VARIANCE = "explained_variance_in_range"


def model_path(storage: FruitsStorage) -> str:
    return qualify(storage.asset_root("feature_model"))


@dataclass(frozen=True)
class FittedModel:
    """The saved PipelineModel, what it was fitted on (None for a model saved without its fit record) and its
    fingerprint."""

    model: PipelineModel
    summary: ReductionSummary | None
    fingerprint: str


# The model this process loaded or fitted last, by SparkContext, path and fit record: scaled_features and
# pca_features of the same run (or of successive runs of the CLI, a backfill) share it instead of each
# loading it again (a dozen small Spark jobs).
_LOADED: dict[tuple, FittedModel] = {}


def _cache_key(session, target: str, record: dict | None) -> tuple | None:
    return (session.sparkContext.applicationId, target, json.dumps(record, sort_keys=True)) if record else None


def _remember(session, target: str, record: dict | None, model: PipelineModel) -> FittedModel:
    summary = ReductionSummary(**record["summary"]) if record else None
    fitted = FittedModel(model, summary, model_fingerprint(model))
    key = _cache_key(session, target, record)
    if key is not None:
        _LOADED.clear()  # one model at a time
        _LOADED[key] = fitted
    return fitted


def _load(session, target: str, record: dict | None) -> FittedModel:
    """The model saved at `target` with its fit `record`, from this process's cache when it is the same."""
    key = _cache_key(session, target, record)
    if key is not None and key in _LOADED:
        return _LOADED[key]
    return _remember(session, target, record, PipelineModel.load(target))


def load_feature_model(session, storage: FruitsStorage) -> FittedModel:
    target = model_path(storage)
    return _load(session, target, read_json(session, f"{target}/{FIT_RECORD}"))


def materialized_classes(context: AssetExecutionContext, dataset) -> list[str]:
    """Registered fruit classes whose embeddings exist, in registration order."""
    return [label for label in context.instance.get_dynamic_partitions(fruit_classes.name) if dataset.exists(label)]


def weights_source(instance, signature: str, lookback: int = 200) -> str:
    """The weights source ("file:...", "imagenet", "random:0") recorded by the latest mobilenet_features
    materialization whose weights fingerprint is the one in `signature` (mobilenet_v2/<fingerprint>/...)."""
    parts = signature.split("/")
    fingerprint = parts[1] if len(parts) > 1 else ""
    records = instance.fetch_materializations(AssetKey("mobilenet_features"), limit=lookback).records
    for record in records:
        metadata = record.asset_materialization.metadata if record.asset_materialization else {}
        if fingerprint and getattr(metadata.get("weights_fingerprint"), "value", None) == fingerprint:
            return str(metadata["weights_source"].value)
    return "unknown"


@asset(
    group_name=GROUP,
    owners=OWNERS,
    deps=["mobilenet_features"],
    kinds={"spark", "pyspark.ml"},
    tags={"layer": "model"},
    code_version="1",
    automation_condition=AutomationCondition.eager(),
    check_specs=[AssetCheckSpec(CHECK_VARIANCE, asset="feature_model", description="Explained variance in (0, 1]")],
    description=(
        "The fitted Spark PipelineModel (StandardScaler with mean and std, then PCA) that maps a 1280-d "
        "MobileNetV2 embedding to k components. Fitted once over the Training split of every materialized "
        "class together, so that the components separate classes; k is fixed (`FRUITS_PCA_K`), or the smallest "
        "reaching the explained-variance threshold (`FRUITS_PCA_VARIANCE`, default 0.95), or with "
        "`FRUITS_PCA_K_RULE=accuracy` the smallest whose 1-NN accuracy on held-out Training images is within "
        "`FRUITS_PCA_ACCURACY_TOLERANCE` of the unreduced features'. The app loads it "
        "with `PipelineModel.load` and transforms a new photo's embedding in one call."
    ),
)
def feature_model(
    context: AssetExecutionContext,
    spark: LazyPySparkResource,
    pyspark_step_launcher: StepLauncherParam,
    storage: FruitsStorage,
    reduction: ReductionSettings,
) -> MaterializeResult:
    stopwatch = Stopwatch()
    session = spark.spark_session
    embeddings = storage.dataset(session, "mobilenet_features")
    classes = materialized_classes(context, embeddings)
    if not classes:
        raise Failure(description="No class has mobilenet_features yet: materialize mobilenet_features first.")
    features = embeddings.read(classes)
    is_training = F.col("split") == "Training"
    found = features.agg(
        F.collect_set("model_signature").alias("signatures"),
        content_hash(["uri", "sha256"], where=is_training).alias("training"),
        F.collect_set(F.when(is_training, F.col("label"))).alias("trained_classes"),
    ).first()
    untrained = sorted(set(classes) - set(found["trained_classes"]))
    if untrained:
        context.log.warning(
            f"{len(untrained)} class(es) have no Training image and add nothing to the fit: {', '.join(untrained[:10])}"
        )
    signatures = sorted(found["signatures"])
    if len(signatures) > 1:
        raise Failure(
            description="mobilenet_features of different classes were computed with different weights or settings "
            f"({', '.join(signatures)}); re-materialize mobilenet_features for all classes with the same weights."
        )
    if reduction.k_rule not in K_RULES:
        raise Failure(description=f"k_rule (FRUITS_PCA_K_RULE) must be one of {', '.join(K_RULES)}")
    training = features.where(is_training)
    target = model_path(storage)
    # Same Training images, weights and settings as the saved model: reuse it, so that reruns give
    # identical outputs (a refit may differ in the last bits, and PCA components may flip sign).
    settings = (reduction.pca_k, reduction.variance_threshold, reduction.k_rule, reduction.accuracy_tolerance)
    fit_inputs = data_version(found["training"], salt=f"{signatures}|{settings}").value
    record = read_json(session, f"{target}/{FIT_RECORD}")
    if record and record["inputs"] == fit_inputs:
        context.log.info("Training images, weights and settings unchanged: the fitted model is reused")
        fitted = _load(session, target, record)
    else:
        try:
            model, summary = fit_feature_model(
                training,
                reduction.pca_k or None,
                reduction.variance_threshold,
                k_rule=reduction.k_rule,
                accuracy_tolerance=reduction.accuracy_tolerance,
            )
        except ValueError as error:
            raise Failure(description=str(error)) from error
        staged = f"{target.rsplit('/', 1)[0]}/_staging/feature_model-{uuid.uuid4().hex}"
        model.write().overwrite().save(staged)
        record = {"inputs": fit_inputs, "summary": asdict(summary), "spark_version": session.version}
        write_json(session, f"{staged}/{FIT_RECORD}", record)
        replace_directory(HadoopFs(session, target), staged, target)
        fitted = _remember(session, target, json.loads(json.dumps(record)), model)  # as a later read sees it
    summary = fitted.summary
    selection = {}
    if summary.k_rule == "accuracy":
        selection = {
            "accuracy_tolerance": MetadataValue.float(reduction.accuracy_tolerance),
            "validation_images": MetadataValue.int(summary.validation_images),
            "validation_accuracy_unreduced": MetadataValue.float(round(summary.validation_full_accuracy, 4)),
            "validation_accuracy_by_k": MetadataValue.json(
                {str(k): round(v, 4) for k, v in summary.validation_accuracy.items()}
            ),
        }
    return MaterializeResult(
        metadata={
            "runtime_seconds": MetadataValue.float(round(stopwatch.seconds, 3)),
            "throughput_images_per_second": MetadataValue.float(round(summary.training_rows / stopwatch.seconds, 2)),
            "classes": MetadataValue.int(len(classes)),
            "training_images": MetadataValue.int(summary.training_rows),
            "classes_without_training_images": MetadataValue.json(untrained),
            "model_signature": MetadataValue.text(signatures[0] if signatures else ""),
            "weights_source": MetadataValue.text(weights_source(context.instance, signatures[0] if signatures else "")),
            "variance_threshold": MetadataValue.float(reduction.variance_threshold),
            "k_rule": MetadataValue.text(reduction.describe()),
            **selection,
            "path": MetadataValue.path(target),
            # Models load across the supported Sparks (tested); this says which one wrote it.
            "spark_version": MetadataValue.text(record.get("spark_version", "unknown")),
            **pca_metadata(summary.explained_variance, summary.spectrum),
        },
        check_results=[
            AssetCheckResult(
                check_name=CHECK_VARIANCE,
                passed=explained_variance_valid(summary.explained_variance),
                metadata={"total": float(sum(summary.explained_variance)), "k": summary.k},
            )
        ],
        data_version=DataVersion(fitted.fingerprint),
    )
