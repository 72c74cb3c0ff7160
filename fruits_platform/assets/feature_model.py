"""`feature_model`: StandardScaler + PCA fitted once on the Training split of every materialized class."""

import uuid

from dagster import (
    AssetCheckResult,
    AssetCheckSpec,
    AssetExecutionContext,
    DataVersion,
    Failure,
    MaterializeResult,
    MetadataValue,
    asset,
)
from dagster_pyspark import LazyPySparkResource
from pyspark.ml import PipelineModel
from pyspark.sql import functions as F

from fruits_platform.assets.common import GROUP, OWNERS, StepLauncherParam, Stopwatch, pca_metadata
from fruits_platform.ml.reduction import explained_variance_valid, fit_feature_model, model_fingerprint
from fruits_platform.partitions import fruit_classes
from fruits_platform.resources.model import ReductionSettings
from fruits_platform.resources.storage import FruitsStorage
from fruits_platform.spark.datasets import HadoopFs, qualify, replace_directory

CHECK_VARIANCE = "explained_variance_in_range"


def model_path(storage: FruitsStorage) -> str:
    return qualify(storage.asset_root("feature_model"))


def load_feature_model(storage: FruitsStorage) -> PipelineModel:
    return PipelineModel.load(model_path(storage))


def materialized_classes(context: AssetExecutionContext, dataset) -> list[str]:
    """Registered fruit classes whose embeddings exist, in registration order."""
    return [label for label in context.instance.get_dynamic_partitions(fruit_classes.name) if dataset.exists(label)]


@asset(
    group_name=GROUP,
    owners=OWNERS,
    deps=["mobilenet_features"],
    kinds={"spark", "pyspark.ml"},
    tags={"layer": "model"},
    code_version="1",
    check_specs=[AssetCheckSpec(CHECK_VARIANCE, asset="feature_model", description="Explained variance in (0, 1]")],
    description=(
        "The fitted Spark PipelineModel (StandardScaler with mean and std, then PCA) that maps a 1280-d "
        "MobileNetV2 embedding to k components. Fitted once over the Training split of every materialized "
        "class together, so that the components separate classes; k is fixed (FRUITS_PCA_K) or the smallest "
        "reaching the explained-variance threshold (FRUITS_PCA_VARIANCE, default 0.95). The app loads it "
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
    signatures = [row[0] for row in features.select("model_signature").distinct().collect()]
    if len(signatures) > 1:
        raise Failure(
            description="mobilenet_features of different classes were computed with different weights or settings "
            f"({', '.join(signatures)}); re-materialize mobilenet_features for all classes with the same weights."
        )
    model, summary = fit_feature_model(
        features.where(F.col("split") == "Training"), reduction.pca_k or None, reduction.variance_threshold
    )
    target = model_path(storage)
    staged = f"{target.rsplit('/', 1)[0]}/_staging/feature_model-{uuid.uuid4().hex}"
    model.write().overwrite().save(staged)
    replace_directory(HadoopFs(session, target), staged, target)

    return MaterializeResult(
        metadata={
            "runtime_seconds": MetadataValue.float(round(stopwatch.seconds, 3)),
            "throughput_images_per_second": MetadataValue.float(round(summary.training_rows / stopwatch.seconds, 2)),
            "classes": MetadataValue.int(len(classes)),
            "training_images": MetadataValue.int(summary.training_rows),
            "model_signature": MetadataValue.text(signatures[0] if signatures else ""),
            "variance_threshold": MetadataValue.float(reduction.variance_threshold),
            "k_rule": MetadataValue.text(f"fixed k={reduction.pca_k}" if reduction.pca_k else "variance threshold"),
            "path": MetadataValue.path(target),
            **pca_metadata(summary.explained_variance, summary.spectrum),
        },
        check_results=[
            AssetCheckResult(
                check_name=CHECK_VARIANCE,
                passed=explained_variance_valid(summary.explained_variance),
                metadata={"total": float(sum(summary.explained_variance)), "k": summary.k},
            )
        ],
        data_version=DataVersion(model_fingerprint(model)),
    )
