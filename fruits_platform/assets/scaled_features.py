"""`scaled_features`: the embeddings standardised with the fitted scaler of `feature_model`."""

from dagster import AssetExecutionContext, AutomationCondition, MaterializeResult, MetadataValue, asset
from dagster_pyspark import LazyPySparkResource
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from fruits_platform.assets.common import (
    CLASS_ROWS,
    PER_CLASS,
    StepLauncherParam,
    Stopwatch,
    column_schema,
    run_metadata,
    transform_classes,
)
from fruits_platform.resources.model_store import FittedModel
from fruits_platform.resources.storage import FruitsStorage
from fruits_platform.spark.reduction import scale

SCHEMA = column_schema(
    {
        "sha256": ("string", "SHA-256 of the image bytes"),
        "scaled_features": ("list<float32>[1280]", "Embedding minus the Training mean, divided by the Training std"),
    }
)


@asset(
    **PER_CLASS,
    ins={"mobilenet_features": CLASS_ROWS},
    kinds={"spark", "parquet"},
    tags={"layer": "features"},
    code_version="1",
    automation_condition=AutomationCondition.eager(),
    metadata={"dagster/column_schema": SCHEMA},
    description=(
        "MobileNetV2 embeddings of every image of the class (both splits) standardised with the "
        "StandardScaler of `feature_model` (fitted on the Training split of all classes)."
    ),
)
def scaled_features(
    context: AssetExecutionContext,
    spark: LazyPySparkResource,
    pyspark_step_launcher: StepLauncherParam,
    storage: FruitsStorage,
    mobilenet_features: DataFrame,
    feature_model: FittedModel,
) -> MaterializeResult:
    stopwatch = Stopwatch()
    stats, version = transform_classes(
        context,
        spark.spark_session,
        storage,
        mobilenet_features.select("uri", "label", "split", "sha256", "features"),
        lambda rows: scale(feature_model.model, rows),
        salt=f"scaled_features/{feature_model.fingerprint}",
        rows=F.count("*"),
    )
    return MaterializeResult(
        metadata=run_metadata(
            stopwatch, stats["rows"], SCHEMA, dimension=MetadataValue.int(len(feature_model.scaler.mean))
        ),
        data_version=version,
    )
