"""Resources per deployment profile. This module is the one place that chooses local vs EMR,
from FRUITS_DEPLOYMENT (default `local`); everything else receives resources by key. It reads the settings:
each one's default is declared once, a resource field's on the field (model.py, storage.py), the others here."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from dagster import EnvVar, ResourceDefinition
from dagster_pyspark import LazyPySparkResource
from dagster_spark.utils import flatten_dict

from fruits_platform.releases import ARROW_BATCH_ROWS, ARROW_SETTINGS, release
from fruits_platform.resources.class_datasets import ClassDatasets
from fruits_platform.resources.model import AppModelSettings, MobileNetWeights, ReductionSettings
from fruits_platform.resources.model_store import AppModelIOManager, FeatureModelIOManager
from fruits_platform.resources.storage import FruitsStorage
from fruits_platform.sources import DEFAULT_OUTPUT_ROOT
from fruits_platform.spark.jvm import start_local_jvm

DEPLOYMENT_ENV = "FRUITS_DEPLOYMENT"
SAMPLE_DATA_ROOT = str(Path(__file__).resolve().parents[1] / "sample_data" / "fruits360")
SPARK_LOG_CONFIG = Path(__file__).resolve().parents[1] / "spark" / "log4j2.properties"

# Local Spark: every core, up to 4 attempts per task (local mode otherwise never retries),
# Arrow as on EMR (releases.py), no UI port to collide
# with `dagster dev`. The measurements behind each setting: docs/decisions.md.
LOCAL_SPARK_CONFIG = {
    "spark.master": "local[*,4]",
    # The data streams through the driver, and G1 fills whatever heap it is given before collecting.
    "spark.driver.memory": os.getenv("FRUITS_SPARK_DRIVER_MEMORY", "1g"),
    # Its log without the notices that ask nothing (spark/log4j2.properties); a short-lived JVM: leave the
    # optimizing compiler to the hot per-row loops, not to lukewarm methods.
    "spark.driver.extraJavaOptions": f"-Dlog4j2.configurationFile={SPARK_LOG_CONFIG.as_uri()} "
    "-XX:Tier4InvocationThreshold=50000 -XX:Tier4MinInvocationThreshold=6000 "
    "-XX:Tier4CompileThreshold=150000 -XX:Tier4BackEdgeThreshold=400000",
    **ARROW_SETTINGS,
    "spark.sql.shuffle.partitions": "16",
    # Class folders are listed on the driver, not by a job of one task per folder.
    "spark.sql.sources.parallelPartitionDiscovery.threshold": "4096",
    # No .crc side files: without Hadoop's native library each file costs a forked chmod (Parquet checks itself).
    "spark.hadoop.fs.file.impl": "org.apache.hadoop.fs.RawLocalFileSystem",
    "spark.sql.session.timeZone": "UTC",
    "spark.ui.enabled": "false",
    "spark.ui.showConsoleProgress": "false",  # the runs log their own progress
    "spark.driver.host": "127.0.0.1",
    "spark.driver.bindAddress": "127.0.0.1",
    "spark.python.worker.reuse": "true",
}


def _setting(name: str, default):
    """The variable's value when it is set, else the default: text as an EnvVar (shown as such in the UI),
    numbers parsed here, so that the resource's bounds check the real value (an EnvVar.int is 0 until a run)."""
    if name not in os.environ:
        return default
    if isinstance(default, bool) or not isinstance(default, int | float):
        return EnvVar(name)
    try:
        return type(default)(os.environ[name])
    except ValueError:
        kind = "an integer" if isinstance(default, int) else "a number"
        raise ValueError(f"{name} must be {kind}, got {os.environ[name]!r}") from None


def _from_env(resource_class, **variables: str) -> dict:
    """Arguments for `resource_class`: each field named (the keyword) from its variable (the value) by `_setting`,
    whose default is the field's own. A resource setting's default is declared once, on its field."""
    fields = resource_class.model_fields
    return {field: _setting(variable, fields[field].default) for field, variable in variables.items()}


def sensor_intervals() -> tuple[int, int]:
    """Seconds between evaluations of the new-images sensor and of the automation (Dagster's
    `minimum_interval_seconds`): how long a new image can wait before its run is requested. The defaults follow
    what a tick costs (docs/change-detection.md): a listing tick seconds at full size, an automation tick a
    quarter of one."""
    intervals = _setting("FRUITS_SENSOR_INTERVAL_SECONDS", 30), _setting("FRUITS_AUTOMATION_INTERVAL_SECONDS", 10)
    for name, seconds in zip(("FRUITS_SENSOR_INTERVAL_SECONDS", "FRUITS_AUTOMATION_INTERVAL_SECONDS"), intervals):
        if seconds < 1:
            raise ValueError(f"{name} must be at least 1, got {seconds}")
    return intervals


def model_resources() -> dict:
    return {
        "weights": MobileNetWeights(
            **_from_env(
                MobileNetWeights,
                weights="FRUITS_WEIGHTS",
                image_size="FRUITS_IMAGE_SIZE",
                engine="FRUITS_ENGINE",
                batch_size="FRUITS_BATCH_SIZE",
                model_cache="FRUITS_MODEL_CACHE",
            )
        ),
        "reduction": ReductionSettings(
            **_from_env(
                ReductionSettings,
                pca_k="FRUITS_PCA_K",
                variance_threshold="FRUITS_PCA_VARIANCE",
                k_rule="FRUITS_PCA_K_RULE",
                accuracy_tolerance="FRUITS_PCA_ACCURACY_TOLERANCE",
                evaluation_max_images="FRUITS_QUALITY_MAX_IMAGES",
            )
        ),
        "app": AppModelSettings(
            **_from_env(
                AppModelSettings,
                training_images="FRUITS_APP_TRAINING_IMAGES",
                calibration_images="FRUITS_APP_CALIBRATION_IMAGES",
                evaluation_images="FRUITS_APP_EVALUATION_IMAGES",
            )
        ),
    }


def stores(storage: FruitsStorage, spark: LazyPySparkResource) -> dict:
    """The IO managers: per-class Parquet datasets, the fitted feature model, the app's model files."""
    return {
        "class_datasets": ClassDatasets(storage=storage, spark=spark),
        "model_store": FeatureModelIOManager(storage=storage, spark=spark),
        "app_model_store": AppModelIOManager(storage=storage, spark=spark),
    }


class LocalSparkResource(LazyPySparkResource):
    """dagster-pyspark's lazy session, its JVM started by this process with the start-up notices left out of the
    terminal (`spark.jvm.start_local_jvm`)."""

    def _init_session(self) -> None:
        start_local_jvm(dict(flatten_dict(self.spark_config)))
        super()._init_session()


def use_local_spark_env() -> None:
    """Environment for the local Spark JVM that this process starts, and its Python workers (set unless
    already set): they run this interpreter (the venv), not whatever `python3` is on PATH; Spark's own
    advice for a native BLAS, one thread per call since Spark already runs a task per core; and the loopback
    address the driver binds to (`spark.driver.host`), which Spark otherwise warns that it picked itself."""
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")


def local_resources(
    data_root=None,
    output_root=None,
    weights: MobileNetWeights | None = None,
    reduction: ReductionSettings | None = None,
    spark_conf: dict | None = None,
) -> dict:
    """The local profile's resources: from the environment (the code location), or with the values given
    (tests, benchmark), the one place that builds them."""
    use_local_spark_env()
    model = model_resources()
    spark = LocalSparkResource(spark_config={**LOCAL_SPARK_CONFIG, **(spark_conf or {})})
    storage = FruitsStorage(
        data_root=str(data_root) if data_root else _setting("FRUITS_DATA_ROOT", SAMPLE_DATA_ROOT),
        output_root=str(output_root)
        if output_root
        else _setting("FRUITS_OUTPUT_ROOT", os.path.abspath(DEFAULT_OUTPUT_ROOT)),
        **_from_env(FruitsStorage, notification_queue="FRUITS_SQS_QUEUE_URL"),
    )
    return {
        "spark": spark,
        "storage": storage,
        **stores(storage, spark),
        "weights": weights or model["weights"],
        "reduction": reduction or model["reduction"],
        "app": model["app"],
        "pyspark_step_launcher": ResourceDefinition.none_resource(),  # steps run in this process
    }


# Spark settings for steps on EMR (the cluster's own defaults do the rest): the release's Python 3.11,
# where the bootstrap installed our packages, for driver and workers; Arrow as locally (releases.py); quiet log.
NODE_PYTHON = release().python
EMR_SPARK_CONFIG = {
    "spark": {
        "pyspark": {"python": NODE_PYTHON, "driver": {"python": NODE_PYTHON}},
        "sql": {"execution": {"arrow": {"maxRecordsPerBatch": ARROW_BATCH_ROWS, "pyspark": {"enabled": "true"}}}},
        "log": {"level": "WARN"},
    }
}


def emr_resources() -> dict:
    """Data and outputs on S3, every Spark asset step run on the EMR cluster by the step launcher."""
    from fruits_platform.resources.emr import fruits_emr_step_launcher

    spark = LazyPySparkResource(spark_config={})  # the session spark-submit created on the cluster
    storage = FruitsStorage(
        data_root=EnvVar("FRUITS_DATA_ROOT"),
        output_root=EnvVar("FRUITS_OUTPUT_ROOT"),
        **_from_env(FruitsStorage, notification_queue="FRUITS_SQS_QUEUE_URL"),
    )
    return {
        "spark": spark,
        "storage": storage,
        **stores(storage, spark),  # used in the steps, on the cluster
        **model_resources(),
        "pyspark_step_launcher": fruits_emr_step_launcher.configured(
            {
                "cluster_id": {"env": "FRUITS_EMR_CLUSTER_ID"},
                "region_name": {"env": "FRUITS_EMR_REGION"},
                "staging_bucket": {"env": "FRUITS_EMR_STAGING_BUCKET"},
                "staging_prefix": os.getenv("FRUITS_EMR_STAGING_PREFIX", "fruits-platform/staging"),
                "poll_interval": int(os.getenv("FRUITS_EMR_POLL_SECONDS", "15")),
                "spark_config": EMR_SPARK_CONFIG,
                # EMR ships step logs to S3 only every few minutes: do not block runs on them.
                "wait_for_logs": os.getenv("FRUITS_EMR_WAIT_FOR_LOGS", "0") == "1",
                "action_on_failure": "CONTINUE",
            }
        ),
    }


def deployment() -> str:
    return os.getenv(DEPLOYMENT_ENV, "local").strip().lower()


def automation_enabled(profile: str | None = None) -> bool:
    """Whether sensors launch runs by themselves: yes on EMR; locally only with FRUITS_AUTOMATION=1
    (the local sensor then only registers new classes and leaves materializing to the user)."""
    return (profile or deployment()) == "emr" or os.getenv("FRUITS_AUTOMATION") == "1"


def build_resources(profile: str | None = None) -> dict:
    profile = profile or deployment()
    builders = {"local": local_resources, "emr": emr_resources}
    if profile not in builders:
        raise ValueError(f"{DEPLOYMENT_ENV} must be one of {sorted(builders)}, got {profile!r}")
    return builders[profile]()
