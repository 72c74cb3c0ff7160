"""`scaled_features` and `pca_features`, one step (`scale_and_project`): the embeddings are read once, scaled
with `feature_model`'s scaler and written, and the scaled rows (kept on the executors' disks) projected on its
k principal components and written."""

from dagster import (
    AssetCheckResult,
    AssetCheckSpec,
    AssetExecutionContext,
    AutomationCondition,
    MaterializeResult,
    MetadataValue,
    multi_asset,
)
from dagster_pyspark import LazyPySparkResource
from pyspark import StorageLevel
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from fruits_platform.assets.metadata import Stopwatch, pca_metadata, run_metadata
from fruits_platform.assets.specs import CLASS_ROWS, PER_CLASS_STEP, StepLauncherParam, column_schema, dataset_spec
from fruits_platform.assets.versioned_writes import write_classes
from fruits_platform.resources.model_store import FittedModel
from fruits_platform.resources.storage import FruitsStorage
from fruits_platform.spark.reduction import project, scale

SCALED_SCHEMA = column_schema(
    {
        "sha256": ("string", "SHA-256 of the image bytes"),
        "scaled_features": ("list<float32>[1280]", "Embedding minus the Training mean, divided by the Training std"),
    }
)

SCALED_FEATURES = dataset_spec(
    "scaled_features",
    SCALED_SCHEMA,
    "MobileNetV2 embeddings of every image of the class (both splits) standardised with the StandardScaler of "
    "`feature_model` (fitted on the Training split of all classes).",
    deps=["mobilenet_features", "feature_model"],
    automation_condition=AutomationCondition.eager(),
)


def scaled_result(context, session, storage, scaled: DataFrame, feature_model: FittedModel) -> MaterializeResult:
    """Write `scaled` (the run's classes' scaled rows) as `scaled_features`; its materialization."""
    stopwatch = Stopwatch()
    stats, version = write_classes(
        context,
        session,
        storage,
        "scaled_features",
        scaled,
        salt=f"scaled_features/{feature_model.fingerprint}",
        rows=F.count("*"),
    )
    dimension = MetadataValue.int(len(feature_model.scaler.mean))
    return MaterializeResult(
        asset_key="scaled_features",
        metadata=run_metadata(stopwatch, stats["rows"], SCALED_SCHEMA, dimension=dimension),
        data_version=version,
    )


PCA_SCHEMA = column_schema(
    {
        "sha256": ("string", "SHA-256 of the image bytes"),
        "pca_features": ("list<float32>[k]", "Coordinates on the first k principal components"),
    }
)
CHECK_DIMENSION = "pca_dimension_is_k"

PCA_FEATURES = dataset_spec(
    "pca_features",
    PCA_SCHEMA,
    "The compact features the app uses: `scaled_features` projected on the k principal components of "
    "`feature_model`. Metadata shows k, the explained variance per component and cumulated, and a scree plot.",
    deps=["scaled_features", "feature_model"],
    automation_condition=AutomationCondition.eager(),
)
PCA_CHECKS = [AssetCheckSpec(CHECK_DIMENSION, asset="pca_features", description="Every vector has k values")]


def pca_result(context, session, storage, scaled: DataFrame, feature_model: FittedModel) -> MaterializeResult:
    """Project `scaled` (the run's classes' scaled rows) and write them as `pca_features`; its materialization,
    with the check that every vector has k values."""
    stopwatch, pca = Stopwatch(), feature_model.pca
    k = pca.getK()
    stats, version = write_classes(
        context,
        session,
        storage,
        "pca_features",
        project(feature_model.model, scaled),
        salt=f"pca_features/{feature_model.fingerprint}",
        rows=F.count("*"),
        min_dim=F.coalesce(F.min(F.size("pca_features")), F.lit(k)),
        max_dim=F.coalesce(F.max(F.size("pca_features")), F.lit(k)),
    )
    explained = [float(v) for v in pca.explainedVariance.toArray()]
    # The same scree plot as feature_model's (the whole spectrum, the k kept highlighted) when its record says it.
    spectrum = feature_model.summary.spectrum if feature_model.summary else explained
    return MaterializeResult(
        asset_key="pca_features",
        metadata=run_metadata(stopwatch, stats["rows"], PCA_SCHEMA, **pca_metadata(explained, spectrum)),
        check_results=[
            AssetCheckResult(
                asset_key="pca_features",
                check_name=CHECK_DIMENSION,
                passed=bool(stats["min_dim"] == stats["max_dim"] == k),
                metadata={"k": k, "min_dim": stats["min_dim"], "max_dim": stats["max_dim"]},
            )
        ],
        data_version=version,
    )


@multi_asset(
    specs=[SCALED_FEATURES, PCA_FEATURES],
    check_specs=PCA_CHECKS,
    ins={"mobilenet_features": CLASS_ROWS},
    **PER_CLASS_STEP,
)
def scale_and_project(
    context: AssetExecutionContext,
    spark: LazyPySparkResource,
    pyspark_step_launcher: StepLauncherParam,
    storage: FruitsStorage,
    mobilenet_features: DataFrame,
    feature_model: FittedModel,
):
    session = spark.spark_session
    rows = mobilenet_features.select("uri", "label", "split", "sha256", "features")
    scaled = scale(feature_model.model, rows).persist(StorageLevel.DISK_ONLY)  # projected from these, not re-read
    try:
        yield scaled_result(context, session, storage, scaled, feature_model)
        yield pca_result(context, session, storage, scaled, feature_model)
    finally:
        scaled.unpersist()
