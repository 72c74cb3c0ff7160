"""Resources per deployment profile. This module is the one place that chooses local vs EMR,
from FRUITS_DEPLOYMENT (default `local`); everything else receives resources by key."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from dagster import EnvVar, ResourceDefinition
from dagster_pyspark import LazyPySparkResource

from fruits_platform.resources.model import MobileNetWeights, ReductionSettings
from fruits_platform.resources.storage import FruitsStorage

DEPLOYMENT_ENV = "FRUITS_DEPLOYMENT"
SAMPLE_DATA_ROOT = str(Path(__file__).resolve().parents[1] / "sample_data" / "fruits360")
DEFAULT_OUTPUT_ROOT = "fruits_output"

# Local Spark: every core, up to 4 attempts per task (local mode otherwise never retries),
# one Arrow batch = one model batch, no UI port to collide with `dagster dev`.
LOCAL_SPARK_CONFIG = {
    "spark.master": "local[*,4]",
    "spark.driver.memory": "6g",
    "spark.sql.execution.arrow.maxRecordsPerBatch": "64",
    "spark.sql.shuffle.partitions": "16",
    "spark.sql.session.timeZone": "UTC",
    "spark.ui.enabled": "false",
    "spark.driver.host": "127.0.0.1",
    "spark.driver.bindAddress": "127.0.0.1",
    "spark.python.worker.reuse": "true",
}


def _setting(name: str, default):
    """An EnvVar when the variable is set (shown as such in the UI), else the default."""
    if name not in os.environ:
        return default
    return (
        EnvVar.int(name)
        if isinstance(default, int) and not isinstance(default, bool)
        else (EnvVar.float(name) if isinstance(default, float) else EnvVar(name))
    )


def model_resources() -> dict:
    return {
        "weights": MobileNetWeights(
            weights=_setting("FRUITS_WEIGHTS", "imagenet"), image_size=_setting("FRUITS_IMAGE_SIZE", 224)
        ),
        "reduction": ReductionSettings(
            pca_k=_setting("FRUITS_PCA_K", 0), variance_threshold=_setting("FRUITS_PCA_VARIANCE", 0.95)
        ),
    }


def local_resources() -> dict:
    # Spark's Python workers must run this interpreter (the venv), not whatever `python3` is on PATH.
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    return {
        "spark": LazyPySparkResource(spark_config=LOCAL_SPARK_CONFIG),
        "storage": FruitsStorage(
            data_root=_setting("FRUITS_DATA_ROOT", SAMPLE_DATA_ROOT),
            output_root=_setting("FRUITS_OUTPUT_ROOT", os.path.abspath(DEFAULT_OUTPUT_ROOT)),
        ),
        **model_resources(),
        "pyspark_step_launcher": ResourceDefinition.none_resource(),  # steps run in this process
    }


def deployment() -> str:
    return os.getenv(DEPLOYMENT_ENV, "local").strip().lower()


def build_resources(profile: str | None = None) -> dict:
    profile = profile or deployment()
    builders = {"local": local_resources}
    if profile not in builders:
        raise ValueError(f"{DEPLOYMENT_ENV} must be one of {sorted(builders)}, got {profile!r}")
    return builders[profile]()
