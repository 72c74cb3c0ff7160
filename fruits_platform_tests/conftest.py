"""Shared fixtures: one SparkSession for the whole test session, temp Dagster instances, data."""

from __future__ import annotations

import os
import shutil
import socket
from pathlib import Path

import pytest

from fruits_platform.resources import use_local_spark_env

REPO = Path(__file__).resolve().parents[1]
SAMPLE_ROOT = REPO / "fruits_platform" / "sample_data" / "fruits360"
SAMPLE_CLASSES = sorted(p.name for p in (SAMPLE_ROOT / "Training").iterdir())
# Real ImageNet weights live beside the checkout (never committed); FRUITS_TEST_WEIGHTS overrides.
REAL_WEIGHTS = Path(
    os.getenv(
        "FRUITS_TEST_WEIGHTS", REPO.parent / "shared" / "models" / "mobilenet_v2_1.0_224_imagenet_qat_no_top.weights.h5"
    )
)
FULL_SAMPLE = REPO.parent / "shared" / "data" / "fruits360-sample"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


# Spark's Python workers inherit the environment of the JVM, which starts once per test session:
# the tests' S3 endpoint (a moto server that tests start and stop) and fake credentials are set now.
S3_TEST_PORT = free_port()
os.environ.update(
    AWS_ENDPOINT_URL=f"http://127.0.0.1:{S3_TEST_PORT}",
    AWS_ACCESS_KEY_ID="testing",
    AWS_SECRET_ACCESS_KEY="testing",
    AWS_DEFAULT_REGION="us-east-1",
)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
use_local_spark_env()  # for every Spark session a test starts, with or without the fixture


@pytest.fixture(scope="session")
def spark():
    from pyspark.sql import SparkSession

    from fruits_platform.resources import LOCAL_SPARK_CONFIG

    builder = SparkSession.builder.appName("fruits-platform-tests")
    for key, value in LOCAL_SPARK_CONFIG.items():
        builder = builder.config(key, value)
    session = builder.getOrCreate()
    yield session
    session.stop()


@pytest.fixture
def instance(tmp_path):
    from dagster import instance_for_test

    (tmp_path / "dagster_home").mkdir()
    with instance_for_test(temp_dir=str(tmp_path / "dagster_home")) as dagster_instance:
        yield dagster_instance


@pytest.fixture(scope="session")
def real_weights_path() -> str:
    if not REAL_WEIGHTS.is_file():
        pytest.skip(f"real MobileNetV2 weights not found at {REAL_WEIGHTS} (set FRUITS_TEST_WEIGHTS)")
    return str(REAL_WEIGHTS)


def copy_classes(target: Path, classes: list[str], source: Path = SAMPLE_ROOT, per_split: int | None = None) -> Path:
    """A Fruits-360 layout with some classes of `source` (optionally the first N files per split)."""
    for split in ("Training", "Test"):
        for name in classes:
            folder = target / split / name
            folder.mkdir(parents=True, exist_ok=True)
            files = sorted((source / split / name).iterdir())
            for file in files[:per_split] if per_split else files:
                shutil.copy(file, folder / file.name)
    return target
