"""`pca_features`: the standardised embeddings projected on the k principal components (written in one step
with `scaled_features`: `scale_and_project`)."""

from dagster import AssetCheckResult, AssetCheckSpec, AssetSpec, AutomationCondition, MaterializeResult
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from fruits_platform.assets.common import OWNERS, Stopwatch, column_schema, pca_metadata, run_metadata, write_classes
from fruits_platform.resources.model_store import FittedModel
from fruits_platform.spark.reduction import project

SCHEMA = column_schema(
    {
        "sha256": ("string", "SHA-256 of the image bytes"),
        "pca_features": ("list<float32>[k]", "Coordinates on the first k principal components"),
    }
)
CHECK_DIMENSION = "pca_dimension_is_k"

PCA_FEATURES = AssetSpec(
    "pca_features",
    deps=["scaled_features", "feature_model"],
    kinds={"spark", "parquet"},
    tags={"layer": "features"},
    code_version="1",
    owners=OWNERS,
    automation_condition=AutomationCondition.eager(),
    metadata={"dagster/column_schema": SCHEMA},
    description=(
        "The compact features the app uses: `scaled_features` projected on the k principal components of "
        "`feature_model`. Metadata shows k, the explained variance per component and cumulated, and a scree plot."
    ),
)
CHECKS = [AssetCheckSpec(CHECK_DIMENSION, asset="pca_features", description="Every vector has k values")]


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
        metadata=run_metadata(stopwatch, stats["rows"], SCHEMA, **pca_metadata(explained, spectrum)),
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
