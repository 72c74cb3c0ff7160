"""Shared fixtures: one SparkSession for the whole test session, temp Dagster instances, data."""

from __future__ import annotations

import os

import pytest

from fruits_platform.resources import use_local_spark_env
from fruits_platform_tests.helpers import REAL_WEIGHTS, S3_TEST_PORT

# Spark's Python workers inherit the environment of the JVM, which starts once per test session:
# the tests' S3 endpoint and fake credentials are set now.
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
