"""The EMR releases the platform supports: the one place that names them, their Spark and their Python.

A node gets the cluster's Spark from the release and our packages from the release's lock file
(`bootstrap/locks/<release>.txt`, a `pip freeze` of the environment CI tested); the pyspark in that lock
is the release's own version, so the Python side matches the JVM side.
"""

from __future__ import annotations

from dataclasses import dataclass

# Arrow between the JVM and the Python workers, the same locally and on EMR: a batch per embedding task
# (the model still takes them in calls of FRUITS_BATCH_SIZE); on by default only from Spark 4.1, and pandas
# frames with array cells cannot be converted without it.
ARROW_BATCH_ROWS = 512
ARROW_SETTINGS = {
    "spark.sql.execution.arrow.pyspark.enabled": "true",
    "spark.sql.execution.arrow.maxRecordsPerBatch": str(ARROW_BATCH_ROWS),
}


@dataclass(frozen=True)
class EmrRelease:
    label: str
    spark_version: str  # Spark of the release, hence the pyspark version of its nodes
    python: str  # the node's Python 3.11 (Dagster 1.13 needs 3.10 or later)
    # x86_64 only: the lock's wheels (TensorFlow, LiteRT) are those of CI's machine, an x86_64 one.
    instance_families: tuple[str, ...] = ("m5", "m6i", "m7i", "c5", "c6i", "c7i", "r5", "r6i", "r7i")


RELEASES = {
    release.label: release
    for release in [
        # Spark 4.0.2, JDK 17 and Python 3.11 out of the box (May 2026).
        EmrRelease("emr-spark-8.0.0", spark_version="4.0.2", python="/usr/bin/python3.11"),
    ]
}
DEFAULT_RELEASE = "emr-spark-8.0.0"


def release(label: str = DEFAULT_RELEASE) -> EmrRelease:
    if label not in RELEASES:
        raise ValueError(f"unsupported EMR release {label!r}: supported are {', '.join(sorted(RELEASES))}")
    return RELEASES[label]


def node_requirements(label: str = DEFAULT_RELEASE) -> list[str]:
    """The package's pinned dependencies (pyproject.toml) as a node needs them: pyspark is the release's."""
    from importlib.metadata import requires

    from packaging.requirements import Requirement

    spark = release(label).spark_version
    pins = [r for r in requires("fruits_platform") or [] if "extra ==" not in r]
    return [f"pyspark=={spark}" if Requirement(pin).name == "pyspark" else pin for pin in pins]


def cluster_configurations(label: str = DEFAULT_RELEASE) -> list[dict]:
    """The `--configurations` of `aws emr create-cluster` for the release: its Python 3.11 for every PySpark
    process (where install.sh put our packages), Arrow for pandas conversions (off by default before Spark 4.1)."""
    python = release(label).python
    return [
        {
            "Classification": "spark-env",
            "Properties": {},
            "Configurations": [
                {"Classification": "export", "Properties": {"PYSPARK_PYTHON": python, "PYSPARK_DRIVER_PYTHON": python}}
            ],
        },
        {
            "Classification": "spark-defaults",
            "Properties": {
                **ARROW_SETTINGS,
                "spark.executorEnv.TF_CPP_MIN_LOG_LEVEL": "2",
            },
        },
    ]
