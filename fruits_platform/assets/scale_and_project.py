"""`scaled_features` and `pca_features`, one step: the embeddings are read once, scaled, written, and the
scaled rows (kept on the executors' disks) projected and written."""

from dagster import AssetExecutionContext, multi_asset
from dagster_pyspark import LazyPySparkResource
from pyspark import StorageLevel
from pyspark.sql import DataFrame

from fruits_platform.assets.common import CLASS_ROWS, PER_CLASS_STEP, StepLauncherParam
from fruits_platform.assets.pca_features import CHECKS, PCA_FEATURES, pca_result
from fruits_platform.assets.scaled_features import SCALED_FEATURES, scaled_result
from fruits_platform.resources.model_store import FittedModel
from fruits_platform.resources.storage import FruitsStorage
from fruits_platform.spark.reduction import scale


@multi_asset(
    specs=[SCALED_FEATURES, PCA_FEATURES], check_specs=CHECKS, ins={"mobilenet_features": CLASS_ROWS}, **PER_CLASS_STEP
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
