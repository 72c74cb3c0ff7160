"""S3 going away in the middle of a materialization (moto's server stopped, then restarted)."""

import threading
import time

import boto3
import pyarrow.dataset as ds
import pytest
from dagster import instance_for_test
from moto.server import ThreadedMotoServer

from fruits_platform.runner import materialize_classes, register_classes
from fruits_platform_tests.helpers import S3_TEST_PORT, SAMPLE_ROOT
from fruits_platform_tests.helpers import resources as local_test_resources

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
    return local_test_resources(f"s3://{BUCKET}/data", output_root)


def materialize(tmp_path, name, during=None):
    (tmp_path / name).mkdir()
    with instance_for_test(temp_dir=str(tmp_path / name)) as instance:
        register_classes(instance, f"s3://{BUCKET}/data")
        watcher = threading.Thread(target=during, args=(instance,), daemon=True) if during else None
        if watcher:
            watcher.start()
            time.sleep(1)  # the outage has begun
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


def test_endpoint_lost_fails_clearly_retries_and_matches_a_clean_run(tmp_path, spark, endpoint):
    materialize(tmp_path, "clean")

    def outage(instance):
        # S3 is gone when the step starts (the classes were registered); it comes back when the step is up for retry.
        endpoint.stop()
        wait_for_event(instance, lambda e: e.event_type_value == "STEP_UP_FOR_RETRY")
        endpoint.start()

    events = materialize(tmp_path, "faulty", during=outage)
    retries = [e for e in events if e.event_type_value == "STEP_UP_FOR_RETRY"]
    assert [e.step_key for e in retries] == ["catalogue_and_embed"]
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


def test_endpoint_lost_while_the_files_are_read_fails_the_step_for_a_retry(spark, endpoint):
    """Each file is read once, in the Spark pass: S3 lost there is a retryable failure that names the endpoint
    and the file, never a file recorded as rejected."""
    from dagster import Failure, RetryRequested

    from fruits_platform.assets.storage_failures import storage_failures
    from fruits_platform.ml.mobilenet import compile_model, load_weights
    from fruits_platform.sources import list_class_files
    from fruits_platform.spark.featurize import catalogue_and_embed

    files = list_class_files(f"s3://{BUCKET}/data", "Banana")
    model = spark.sparkContext.broadcast(compile_model(load_weights("random:0", 96)))
    known = spark.sparkContext.broadcast(frozenset())
    endpoint.stop()
    try:
        with pytest.raises(RetryRequested) as retry, storage_failures():
            catalogue_and_embed(spark, files, model, known).collect()
    finally:
        endpoint.start()
    assert retry.value.max_retries == 2 and retry.value.seconds_to_wait == 5
    failure = retry.value.__cause__
    assert isinstance(failure, Failure)
    assert failure.description.startswith("Storage unreachable: S3 endpoint http://127.0.0.1:")
    assert f"unreachable for s3://{BUCKET}/data/" in failure.description
    assert failure.allow_retries
