"""The emr profile end to end, offline: the real dagster-aws step launcher submits each asset step to
a moto EMR cluster, the emulated node runs it with spark-submit (see emr_emulator.py), images and
weights are read from moto S3, and the outputs must equal the local profile's."""

import os
import subprocess
import sys
from pathlib import Path

import boto3
import numpy as np
import pyarrow.dataset as ds
import pytest
from dagster import AssetKey, DagsterInstance, instance_for_test

from fruits_platform.resources import local_resources
from fruits_platform.resources.model import MobileNetWeights, ReductionSettings
from fruits_platform.runner import materialize_classes, register_classes
from fruits_platform_tests.emr_emulator import emulated_emr
from fruits_platform_tests.helpers import REAL_WEIGHTS, copy_classes

pytestmark = pytest.mark.emr

CLASSES = ["Apple Braeburn", "Banana", "Lemon"]
ASSETS = {"mobilenet_features": "features", "scaled_features": "scaled_features", "pca_features": "pca_features"}


def upload_folder(folder: Path, bucket: str, prefix: str) -> None:
    s3 = boto3.client("s3")
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            s3.upload_file(str(path), bucket, f"{prefix}/{path.relative_to(folder).as_posix()}")


def download_prefix(bucket: str, prefix: str, target: Path) -> None:
    s3 = boto3.client("s3")
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix + "/"):
        for obj in page.get("Contents", []):
            path = target / obj["Key"][len(prefix) + 1 :]
            path.parent.mkdir(parents=True, exist_ok=True)
            s3.download_file(bucket, obj["Key"], str(path))


def keyed(output_root: Path, asset: str) -> dict:
    """(label, split, file name) -> vector: the uri's folder differs between S3 and local."""
    table = ds.dataset(str(output_root / asset)).to_table().to_pylist()
    return {(r["label"], r["split"], r["uri"].rsplit("/", 1)[-1]): np.array(r[ASSETS[asset]]) for r in table}


def test_emr_profile_matches_local_profile(tmp_path, spark):
    data = copy_classes(tmp_path / "data", CLASSES, per_split=3)
    weights_local = str(REAL_WEIGHTS) if REAL_WEIGHTS.is_file() else "random:0"
    with emulated_emr() as emr:
        upload_folder(data, emr.bucket, "data")
        weights = weights_local
        if REAL_WEIGHTS.is_file():
            boto3.client("s3").upload_file(weights_local, emr.bucket, "models/mobilenet_v2_no_top.weights.h5")
            weights = f"s3://{emr.bucket}/models/mobilenet_v2_no_top.weights.h5"
        home = tmp_path / "home"
        home.mkdir()
        env = {
            **os.environ,
            "DAGSTER_HOME": str(home),
            "FRUITS_DEPLOYMENT": "emr",
            "FRUITS_EMR_CLUSTER_ID": emr.cluster_id,
            "FRUITS_EMR_REGION": emr.region,
            "FRUITS_EMR_STAGING_BUCKET": emr.bucket,
            "FRUITS_EMR_POLL_SECONDS": "1",
        }
        command = [
            sys.executable,
            "-m",
            "fruits_platform.cli",
            "materialize",
            "--data-root",
            f"s3://{emr.bucket}/data",
            "--output-root",
            f"s3://{emr.bucket}/out",
            "--weights",
            weights,
        ]
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=1200)
        steps = list(emr.node.records.values())
        assert done.returncode == 0, done.stderr[-4000:] + "\n".join(s.stderr[-3000:] for s in steps)
        # One EMR step per Dagster step for the three classes together (a partition range through the launcher):
        # catalogue_and_embed (raw_images + mobilenet_features), feature_model, scale_and_project (scaled + pca),
        # feature_quality.
        assert len(steps) == 4 and all(step.returncode == 0 for step in steps)
        assert all(step.args[0] == "env" and "FRUITS_DEPLOYMENT=emr" in step.args for step in steps)
        assert not any("AWS_" in arg for step in steps for arg in step.args)
        download_prefix(emr.bucket, "out", tmp_path / "emr_out")
        node_spark = emr.node.spark_version

    instance = DagsterInstance.from_config(str(home))
    for asset in [
        "raw_images",
        "mobilenet_features",
        "feature_model",
        "scaled_features",
        "pca_features",
        "feature_quality",
    ]:
        event = instance.get_latest_materialization_event(AssetKey(asset))
        assert event is not None, asset
        metadata = event.asset_materialization.metadata
        assert metadata["runtime_seconds"].value > 0
    # The model was fitted and saved by the node's Spark (the release's, in CI), not the host's.
    model_metadata = instance.get_latest_materialization_event(AssetKey("feature_model")).asset_materialization
    assert model_metadata.metadata["spark_version"].value == node_spark
    pca_metadata = instance.get_latest_materialization_event(AssetKey("pca_features")).asset_materialization.metadata
    assert 0 < pca_metadata["explained_variance_total"].value <= 1
    assert pca_metadata["dagster/row_count"].value == 6  # its class's own rows, also through the step launcher

    (tmp_path / "local_home").mkdir()
    with instance_for_test(temp_dir=str(tmp_path / "local_home")) as local_instance:
        register_classes(local_instance, str(data))
        weights = MobileNetWeights(weights=weights_local)
        resources = local_resources(data, tmp_path / "local_out", weights, ReductionSettings())
        materialize_classes(local_instance, resources, CLASSES)
    for asset in ASSETS:
        emr_rows, local_rows = keyed(tmp_path / "emr_out", asset), keyed(tmp_path / "local_out", asset)
        assert emr_rows.keys() == local_rows.keys() and len(emr_rows) == 6 * len(CLASSES)
        for key, vector in local_rows.items():
            other = emr_rows[key]
            assert other.shape == vector.shape, (asset, key)
            if asset == "pca_features":  # a principal component is defined up to its sign
                other = other * np.sign(other * vector + 1e-12)
            np.testing.assert_allclose(other, vector, rtol=1e-3, atol=1e-3, err_msg=f"{asset} {key}")
