"""S3 going away in the middle of a materialization (moto's server stopped, then restarted)."""

import threading
import time

import boto3
import pyarrow.dataset as ds
import pytest
from dagster import instance_for_test
from moto.server import ThreadedMotoServer

from fruits_platform.resources import local_resources
from fruits_platform.resources.model import MobileNetWeights, ReductionSettings
from fruits_platform.runner import materialize_classes, register_classes
from fruits_platform_tests.conftest import S3_TEST_PORT, SAMPLE_ROOT

BUCKET = "fruits-faults"
CLASSES = ["Banana", "Lemon"]


class Endpoint:
    """moto on the session's S3 port; its data lives in this process, so a restart keeps it."""

    def __init__(self):
        self.server = None

    def start(self):
        self.server = ThreadedMotoServer(ip_address="127.0.0.1", port=S3_TEST_PORT, verbose=False)
        self.server.start()

    def stop(self):
        self.server.stop()


@pytest.fixture
def endpoint():
    server = Endpoint()
    server.start()
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket=BUCKET)
    for label in CLASSES:
        for split in ("Training", "Test"):
            for path in sorted((SAMPLE_ROOT / split / label).iterdir())[:3]:
                s3.upload_file(str(path), BUCKET, f"data/{split}/{label}/{path.name}")
    yield server
    server.stop()


def resources(output_root):
    return local_resources(
        f"s3://{BUCKET}/data", output_root, MobileNetWeights(weights="random:0"), ReductionSettings()
    )


def materialize(tmp_path, name, during=None):
    (tmp_path / name).mkdir()
    with instance_for_test(temp_dir=str(tmp_path / name)) as instance:
        register_classes(instance, f"s3://{BUCKET}/data")
        watcher = threading.Thread(target=during, args=(instance,), daemon=True) if during else None
        if watcher:
            watcher.start()
        results = materialize_classes(instance, resources(tmp_path / f"{name}_out"), CLASSES)
        if watcher:
            watcher.join(timeout=60)
        return [e for r in results for e in r.all_events]


def wait_for_event(instance, predicate, timeout=300.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for run in instance.get_runs(limit=1):
            for entry in instance.all_logs(run.run_id):
                if entry.dagster_event and predicate(entry.dagster_event):
                    return entry.dagster_event
        time.sleep(0.2)
    raise TimeoutError("event not seen")


def test_endpoint_lost_mid_run_fails_clearly_retries_and_matches_a_clean_run(tmp_path, spark, endpoint):
    materialize(tmp_path, "clean")

    def outage(instance):
        # Once the catalogue is written, S3 disappears; it comes back when the step is up for retry.
        wait_for_event(instance, lambda e: e.event_type_value == "ASSET_MATERIALIZATION" and e.step_key == "raw_images")
        endpoint.stop()
        wait_for_event(instance, lambda e: e.event_type_value == "STEP_UP_FOR_RETRY")
        endpoint.start()

    events = materialize(tmp_path, "faulty", during=outage)
    retries = [e for e in events if e.event_type_value == "STEP_UP_FOR_RETRY"]
    assert [e.step_key for e in retries] == ["mobilenet_features"]
    error, messages = retries[0].event_specific_data.error, []
    while error is not None:  # the policy's retry request wraps the step's Failure
        messages.append(error.message)
        error = error.cause
    message = "\n".join(messages)
    assert "Storage unreachable: S3 endpoint http://127.0.0.1:" in message and f"s3://{BUCKET}/data/" in message

    for asset in ["raw_images", "mobilenet_features", "scaled_features", "pca_features"]:
        clean = ds.dataset(str(tmp_path / "clean_out" / asset)).to_table().sort_by("uri")
        faulty = ds.dataset(str(tmp_path / "faulty_out" / asset)).to_table().sort_by("uri")
        assert clean.num_rows == 12 and faulty.equals(clean), asset
    statuses = ds.dataset(str(tmp_path / "faulty_out" / "raw_images")).to_table().column("status").to_pylist()
    assert set(statuses) == {"ok"}  # nothing valid was recorded as rejected
