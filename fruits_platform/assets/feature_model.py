"""`feature_model`: StandardScaler + PCA fitted once on the Training split of every materialized class."""

from dataclasses import dataclass

from dagster import (
    AssetCheckResult,
    AssetCheckSpec,
    AssetExecutionContext,
    AssetKey,
    AutomationCondition,
    DataVersion,
    Failure,
    MetadataValue,
    Output,
    ResourceParam,
    asset,
)
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from fruits_platform.assets.metadata import Stopwatch, pca_metadata, runtime_metadata
from fruits_platform.assets.specs import EVERY_CLASS_ROWS, PER_CLASS, StepLauncherParam
from fruits_platform.assets.versioned_writes import content_hash, data_version
from fruits_platform.resources.model import ReductionSettings
from fruits_platform.resources.model_store import FeatureModelIOManager, FittedModel
from fruits_platform.spark.reduction import K_RULES, explained_variance_valid, fit_feature_model

CHECK_VARIANCE = "explained_variance_in_range"


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
    **PER_CLASS,
    ins={"mobilenet_features": EVERY_CLASS_ROWS},
    io_manager_key="model_store",
    kinds={"spark", "pyspark.ml"},
    tags={"layer": "model"},
    code_version="1",
    automation_condition=AutomationCondition.eager(),
    check_specs=[AssetCheckSpec(CHECK_VARIANCE, asset="feature_model", description="Explained variance in (0, 1]")],
    description=(
        "The fitted Spark PipelineModel (StandardScaler with mean and std, then PCA) that maps a 1280-d "
        "MobileNetV2 embedding to k components. One model, fitted over the Training split of every materialized "
        "class together, so that the components separate classes; each class's partition is that model as its "
        "features use it, so a class added makes every partition stale. k is fixed (`FRUITS_PCA_K`), or the "
        "smallest reaching the explained-variance threshold (`FRUITS_PCA_VARIANCE`, default 0.95), or with "
        "`FRUITS_PCA_K_RULE=accuracy` the smallest whose 1-NN accuracy on held-out Training images is within "
        "`FRUITS_PCA_ACCURACY_TOLERANCE` of the unreduced features'. The app loads it "
        "with `PipelineModel.load` and transforms a new photo's embedding in one call."
    ),
)
def feature_model(
    context: AssetExecutionContext,
    pyspark_step_launcher: StepLauncherParam,
    reduction: ReductionSettings,
    model_store: ResourceParam[FeatureModelIOManager],
    mobilenet_features: DataFrame,
):
    stopwatch = Stopwatch()
    if reduction.k_rule not in K_RULES:
        raise Failure(description=f"k_rule (FRUITS_PCA_K_RULE) must be one of {', '.join(K_RULES)}")
    found = training_inventory(context, mobilenet_features)
    settings = (reduction.pca_k, reduction.variance_threshold, reduction.k_rule, reduction.accuracy_tolerance)
    fit_inputs = data_version(found.training, salt=f"{found.signatures}|{settings}").value
    previous = model_store.saved("feature_model")
    # Same Training images, weights and settings: the saved model is reused, so reruns give identical outputs
    # (a refit may differ in the last bits, and PCA components may flip sign).
    if previous is not None and previous.record.get("inputs") == fit_inputs:
        context.log.info("Training images, weights and settings unchanged: the fitted model is reused")
        fitted = previous
    else:
        training = mobilenet_features.where(F.col("split") == "Training")
        fitted = fit(training, reduction, fit_inputs, mobilenet_features.sparkSession.version)
        warn_of_stale_classes(context, found.classes)
    summary = fitted.summary
    metadata = model_metadata(context, stopwatch, fitted, found, reduction)
    yield Output(fitted, metadata=metadata, data_version=DataVersion(fitted.fingerprint))
    yield AssetCheckResult(
        check_name=CHECK_VARIANCE,
        passed=explained_variance_valid(summary.explained_variance),
        metadata={"total": float(sum(summary.explained_variance)), "k": summary.k},
    )


@dataclass(frozen=True)
class Inventory:
    classes: list[str]
    untrained: list[str]  # classes with no Training image
    signatures: list[str]  # the embeddings' model signatures (one, else the step fails)
    training: str  # a hash of the Training rows' uri and sha256


def training_inventory(context, features: DataFrame) -> Inventory:
    """What the fit would read, in one Spark job; fails when the embeddings come from different weights or
    settings, warns of classes that have no Training image."""
    is_training = F.col("split") == "Training"
    found = features.agg(
        F.collect_set("label").alias("classes"),
        F.collect_set("model_signature").alias("signatures"),
        content_hash(["uri", "sha256"], where=is_training).alias("training"),
        F.collect_set(F.when(is_training, F.col("label"))).alias("trained_classes"),
    ).first()
    signatures = sorted(found["signatures"])
    if len(signatures) > 1:
        raise Failure(
            description="mobilenet_features of different classes were computed with different weights or settings "
            f"({', '.join(signatures)}); re-materialize mobilenet_features for all classes with the same weights."
        )
    classes = sorted(found["classes"])
    untrained = sorted(set(classes) - set(found["trained_classes"]))
    if untrained:
        context.log.warning(
            f"{len(untrained)} class(es) have no Training image and add nothing to the fit: {', '.join(untrained[:10])}"
        )
    return Inventory(classes, untrained, signatures, found["training"])


def warn_of_stale_classes(context, classes: list[str]) -> None:
    outside = sorted(set(classes) - set(context.partition_keys))
    if outside:
        context.log.warning(
            f"the model was refitted: the features of {len(outside)} class(es) outside this run "
            f"({', '.join(outside[:5])}) are now stale; materialize feature_model and its downstream for them "
            "(the automation sensor does when it runs)"
        )


def model_metadata(context, stopwatch, fitted: FittedModel, found: Inventory, reduction: ReductionSettings) -> dict:
    summary, signature = fitted.summary, found.signatures[0] if found.signatures else ""
    return {
        **runtime_metadata(stopwatch),
        "throughput_images_per_second": MetadataValue.float(round(summary.training_rows / stopwatch.seconds, 2)),
        "classes": MetadataValue.int(len(found.classes)),
        "training_images": MetadataValue.int(summary.training_rows),
        "classes_without_training_images": MetadataValue.json(found.untrained),
        "model_signature": MetadataValue.text(signature),
        "weights_source": MetadataValue.text(weights_source(context.instance, signature)),
        "variance_threshold": MetadataValue.float(reduction.variance_threshold),
        "k_rule": MetadataValue.text(reduction.describe()),
        **selection_metadata(summary, reduction),
        "fingerprint": MetadataValue.text(fitted.fingerprint),
        # Models load across the supported Sparks (tested); this says which one wrote it.
        "spark_version": MetadataValue.text(fitted.record.get("spark_version", "unknown")),
        **pca_metadata(summary.explained_variance, summary.spectrum),
    }


def fit(training, reduction: ReductionSettings, fit_inputs: str, spark_version: str) -> FittedModel:
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
    return FittedModel.fitted(model, fit_inputs, summary, spark_version)


def selection_metadata(summary, reduction: ReductionSettings) -> dict:
    """The accuracy rule's evidence, when k was chosen by it."""
    if summary.k_rule != "accuracy":
        return {}
    return {
        "accuracy_tolerance": MetadataValue.float(reduction.accuracy_tolerance),
        "validation_images": MetadataValue.int(summary.validation_images),
        "validation_accuracy_unreduced": MetadataValue.float(round(summary.validation_full_accuracy, 4)),
        "validation_accuracy_by_k": MetadataValue.json(
            {str(k): round(v, 4) for k, v in summary.validation_accuracy.items()}
        ),
    }
