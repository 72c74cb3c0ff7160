"""A feature_model saved by one supported Spark loads and transforms identically in another: the host's
pinned pyspark and each EMR release's (`.ci/run` names the release environment's Python in
FRUITS_TEST_OTHER_SPARK_PYTHON). Both directions: the other side applies our model, we apply its model."""

import os
import subprocess

import numpy as np
import pandas as pd
import pytest
from pyspark.ml import PipelineModel

from fruits_platform.spark.reduction import fit_feature_model, transform_features
from fruits_platform_tests.helpers import REPO

OTHER_PYTHON = os.getenv("FRUITS_TEST_OTHER_SPARK_PYTHON")
pytestmark = pytest.mark.skipif(
    not OTHER_PYTHON, reason="FRUITS_TEST_OTHER_SPARK_PYTHON (another Spark's environment) is not set"
)


def vectors(table: pd.DataFrame, column: str) -> np.ndarray:
    return np.stack(table.sort_values("uri")[column].map(np.asarray).to_list())


def test_feature_model_is_portable_between_sparks(spark, tmp_path):
    rng = np.random.default_rng(7)
    rows = rng.normal(size=(60, 32)) @ rng.normal(size=(32, 32))
    source = pd.DataFrame(
        {
            "uri": [f"img-{i:03d}.jpg" for i in range(60)],
            "label": [f"class {i % 3}" for i in range(60)],
            "split": ["Training" if i % 4 else "Test" for i in range(60)],
            "features": [row.astype(np.float32) for row in rows],
        }
    )
    source.to_parquet(tmp_path / "input.parquet")
    frame = spark.read.parquet(str(tmp_path / "input.parquet"))
    ours, _ = fit_feature_model(frame.where("split = 'Training'"), fixed_k=8)
    ours.save(str(tmp_path / "our_model"))
    expected = transform_features(ours, frame).toPandas()

    done = subprocess.run(
        [
            OTHER_PYTHON,
            "-m",
            "fruits_platform_tests.spark_side",
            str(tmp_path / "input.parquet"),
            str(tmp_path / "our_model"),
            str(tmp_path),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    other_version = (tmp_path / "spark_version").read_text()
    assert other_version != spark.version, "FRUITS_TEST_OTHER_SPARK_PYTHON runs the same Spark as this one"

    theirs = pd.read_parquet(tmp_path / "theirs.parquet")  # our model applied by the other Spark
    their_own = pd.read_parquet(tmp_path / "ours.parquet")  # its model applied by itself
    applied_here = transform_features(PipelineModel.load(str(tmp_path / "model")), frame).toPandas()
    for column in ("scaled_features", "pca_features"):
        np.testing.assert_allclose(vectors(theirs, column), vectors(expected, column), rtol=0, atol=1e-5)
        np.testing.assert_allclose(vectors(applied_here, column), vectors(their_own, column), rtol=0, atol=1e-5)
