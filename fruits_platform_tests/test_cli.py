"""The headless command, run as a user would: a subprocess with its own DAGSTER_HOME."""

import os
import subprocess
import sys

import pyarrow.dataset as ds

from fruits_platform_tests.helpers import FULL_SAMPLE, SAMPLE_ROOT, copy_classes

CLI = [sys.executable, "-m", "fruits_platform.cli"]


def run_cli(args, home, **env):
    environment = {**os.environ, "DAGSTER_HOME": str(home), **env}
    return subprocess.run(CLI + args, capture_output=True, text=True, env=environment, timeout=600)


def test_materialize_twice_gives_identical_datasets(tmp_path):
    source = FULL_SAMPLE if FULL_SAMPLE.is_dir() else SAMPLE_ROOT
    # Classes the other tests never use, with odd names, a few images each.
    data = copy_classes(
        tmp_path / "data", ["Kiwi", "Pepino"] if FULL_SAMPLE.is_dir() else ["Avocado"], source=source, per_split=3
    )
    (data / "Training" / "Kiwi").rename(data / "Training" / "Kiwi fruit ü") if FULL_SAMPLE.is_dir() else None
    (data / "Test" / "Kiwi").rename(data / "Test" / "Kiwi fruit ü") if FULL_SAMPLE.is_dir() else None
    (tmp_path / "home").mkdir()
    args = ["materialize", "--data-root", str(data), "--output-root", str(tmp_path / "out"), "--weights", "random:0"]
    first = run_cli(args, tmp_path / "home")
    assert first.returncode == 0, first.stderr[-3000:]
    assert "materialized" in first.stdout
    # The summary follows the pipeline: an asset's line before the lines of the assets it feeds.
    pipeline = ["raw_images", "mobilenet_features", "feature_model", "scaled_features", "pca_features"]
    summary = [line.split()[0] for line in first.stdout.splitlines() if line.startswith("  ")]
    assert summary[:5] == pipeline and set(summary[5:]) >= {"feature_quality", "app_model"}, summary
    snapshot = {
        a: ds.dataset(str(tmp_path / "out" / a)).to_table().sort_by("uri")
        for a in ["raw_images", "mobilenet_features", "scaled_features", "pca_features"]
    }
    second = run_cli(args, tmp_path / "home")
    assert second.returncode == 0, second.stderr[-3000:]
    for asset, table in snapshot.items():
        assert table.num_rows > 0
        assert ds.dataset(str(tmp_path / "out" / asset)).to_table().sort_by("uri").equals(table), asset
    # Both runs are recorded in the instance, so the UI shows them.
    assert len(os.listdir(tmp_path / "home" / "history" / "runs")) >= 2 or (tmp_path / "home" / "history").exists()


def test_failure_is_one_line_and_non_zero(tmp_path):
    (tmp_path / "home").mkdir()
    missing = run_cli(
        ["materialize", "--data-root", str(tmp_path / "nope"), "--output-root", str(tmp_path / "o")], tmp_path / "home"
    )
    assert missing.returncode != 0
    assert missing.stderr.strip().splitlines()[-1].startswith("error: data root not found")
    unknown = run_cli(
        [
            "materialize",
            "--data-root",
            str(SAMPLE_ROOT),
            "--output-root",
            str(tmp_path / "o"),
            "--classes",
            "Durian",
            "--weights",
            "random:0",
        ],
        tmp_path / "home",
    )
    assert unknown.returncode != 0
    assert "'Durian'" in unknown.stderr.strip().splitlines()[-1]


def test_offline_imagenet_download_fails_with_a_clear_message(tmp_path):
    (tmp_path / "home").mkdir()
    data = copy_classes(tmp_path / "data", ["Banana"], per_split=1)
    # An unreachable proxy and an empty Keras cache make the download fail fast, online or not.
    result = run_cli(
        ["materialize", "--data-root", str(data), "--output-root", str(tmp_path / "o")],
        tmp_path / "home",
        HTTPS_PROXY="http://127.0.0.1:9",
        HTTP_PROXY="http://127.0.0.1:9",
        KERAS_HOME=str(tmp_path / "keras"),
    )
    assert result.returncode != 0
    last = result.stderr.strip().splitlines()[-1]
    assert "ImageNet weights" in last and "FRUITS_WEIGHTS" in last, last


def test_the_app_model_with_random_weights_builds_without_crashing(tmp_path):
    """The issue's command: it aborted the process (heap corruption in LiteRT's 8-bit kernels)."""
    data = copy_classes(tmp_path / "data", ["Avocado", "Banana"], per_split=4)
    (tmp_path / "home").mkdir()
    args = ["materialize", "--data-root", str(data), "--output-root", str(tmp_path / "out"), "--weights", "random:0"]
    result = run_cli([*args, "--app-model"], tmp_path / "home")
    assert result.returncode == 0, result.stdout + result.stderr[-3000:]
    [line] = [line for line in result.stdout.splitlines() if line.split()[:1] == ["app_model"]]
    assert "float32_top1_accuracy=" in line and "int8_not_built=" in line, line


QUIET_RUN = """
import sys
from fruits_platform.ml.mobilenet import _keras
from fruits_platform.resources import local_resources
spark = local_resources()["spark"].spark_session
_keras()
from pyspark.ml.feature import PCA, StandardScaler
from pyspark.ml.linalg import Vectors
rows = spark.createDataFrame([(Vectors.dense([float(i), i % 3, i % 5]),) for i in range(20)], ["v"])
scaled = StandardScaler(inputCol="v", outputCol="s", withMean=True).fit(rows).transform(rows)
PCA(k=2, inputCol="s", outputCol="p").fit(scaled).transform(scaled).toPandas()

def worker(batches):
    sys.stderr.write("a line from a worker\\n")
    yield from batches

spark.range(1).coalesce(1).mapInArrow(worker, "id long").collect()
sys.stderr.write("a line from the driver\\n")
spark.stop()
"""


def test_a_local_run_prints_no_notice_that_asks_nothing_and_every_other_line():
    """What the UI's run worker prints to the terminal on the README's first run: Spark's JVM and TensorFlow's
    import say nothing unless asked (spark/log4j2.properties, SPARK_LOCAL_IP, fruits_platform/notices.py), while
    what the driver and the Python workers write still reaches the terminal."""
    environment = {k: v for k, v in os.environ.items() if k not in ("SPARK_LOCAL_IP", "TF_CPP_MIN_LOG_LEVEL")}
    command = [sys.executable, "-c", QUIET_RUN]
    result = subprocess.run(command, check=False, capture_output=True, text=True, env=environment)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert sorted(lines) == ["a line from a worker", "a line from the driver"], lines
