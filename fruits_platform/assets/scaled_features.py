"""`scaled_features`: the embeddings standardised with the fitted scaler of `feature_model` (written in one
step with `pca_features`: `scale_and_project`)."""

from dagster import AssetSpec, AutomationCondition, MaterializeResult, MetadataValue
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from fruits_platform.assets.common import OWNERS, Stopwatch, column_schema, run_metadata, write_classes
from fruits_platform.resources.model_store import FittedModel

SCHEMA = column_schema(
    {
        "sha256": ("string", "SHA-256 of the image bytes"),
        "scaled_features": ("list<float32>[1280]", "Embedding minus the Training mean, divided by the Training std"),
    }
)

SCALED_FEATURES = AssetSpec(
    "scaled_features",
    deps=["mobilenet_features", "feature_model"],
    kinds={"spark", "parquet"},
    tags={"layer": "features"},
    code_version="1",
    owners=OWNERS,
    automation_condition=AutomationCondition.eager(),
    metadata={"dagster/column_schema": SCHEMA},
    description=(
        "MobileNetV2 embeddings of every image of the class (both splits) standardised with the "
        "StandardScaler of `feature_model` (fitted on the Training split of all classes)."
    ),
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
        metadata=run_metadata(stopwatch, stats["rows"], SCHEMA, dimension=dimension),
        data_version=version,
    )
