"""`pca_features`: the standardised embeddings projected on the k principal components."""

from dagster import (
    AssetCheckResult,
    AssetCheckSpec,
    AssetExecutionContext,
    AutomationCondition,
    MaterializeResult,
    asset,
)
from dagster_pyspark import LazyPySparkResource
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from fruits_platform.assets.common import (
    CLASS_ROWS,
    PER_CLASS,
    StepLauncherParam,
    Stopwatch,
    column_schema,
    pca_metadata,
    run_metadata,
    transform_classes,
)
from fruits_platform.resources.model_store import FittedModel
from fruits_platform.resources.storage import FruitsStorage
from fruits_platform.spark.reduction import project

SCHEMA = column_schema(
    {
        "sha256": ("string", "SHA-256 of the image bytes"),
        "pca_features": ("list<float32>[k]", "Coordinates on the first k principal components"),
    }
)
CHECK_DIMENSION = "pca_dimension_is_k"


@asset(
    **PER_CLASS,
    ins={"scaled_features": CLASS_ROWS},
    kinds={"spark", "parquet"},
    tags={"layer": "features"},
    code_version="1",
    automation_condition=AutomationCondition.eager(),
    metadata={"dagster/column_schema": SCHEMA},
    check_specs=[AssetCheckSpec(CHECK_DIMENSION, asset="pca_features", description="Every vector has k values")],
    description=(
        "The compact features the app uses: `scaled_features` projected on the k principal components of "
        "`feature_model`. Metadata shows k, the explained variance per component and cumulated, and a scree plot."
    ),
)
def pca_features(
    context: AssetExecutionContext,
    spark: LazyPySparkResource,
    pyspark_step_launcher: StepLauncherParam,
    storage: FruitsStorage,
    scaled_features: DataFrame,
    feature_model: FittedModel,
) -> MaterializeResult:
    stopwatch = Stopwatch()
    pca = feature_model.pca
    explained = [float(v) for v in pca.explainedVariance.toArray()]
    # The same scree plot as feature_model's (the whole spectrum, the k kept highlighted) when its record says it.
    spectrum = feature_model.summary.spectrum if feature_model.summary else explained
    stats, version = transform_classes(
        context,
        spark.spark_session,
        storage,
        scaled_features.select("uri", "label", "split", "sha256", "scaled_features"),
        lambda rows: project(feature_model.model, rows),
        salt=f"pca_features/{feature_model.fingerprint}",
        rows=F.count("*"),
        min_dim=F.coalesce(F.min(F.size("pca_features")), F.lit(pca.getK())),
        max_dim=F.coalesce(F.max(F.size("pca_features")), F.lit(pca.getK())),
    )
    return MaterializeResult(
        metadata=run_metadata(stopwatch, stats["rows"], SCHEMA, **pca_metadata(explained, spectrum)),
        check_results=[
            AssetCheckResult(
                check_name=CHECK_DIMENSION,
                passed=bool(stats["min_dim"] == stats["max_dim"] == pca.getK()),
                metadata={"k": pca.getK(), "min_dim": stats["min_dim"], "max_dim": stats["max_dim"]},
            )
        ],
        data_version=version,
    )
