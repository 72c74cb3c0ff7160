"""The new-images sensor against a real S3 protocol (moto's server on 127.0.0.1)."""

from datetime import timedelta

import boto3
import pytest
from dagster import DefaultSensorStatus, build_sensor_context

from fruits_platform.partitions import fruit_classes
from fruits_platform.resources.storage import FruitsStorage
from fruits_platform.sensors import build_new_images_sensor, list_objects
from fruits_platform_tests.corpus import valid_jpeg
from fruits_platform_tests.emr_emulator import moto_server

BUCKET = "fruits-sensor"
sensor = build_new_images_sensor(request_runs=True, default_status=DefaultSensorStatus.RUNNING)


@pytest.fixture
def bucket():
    with moto_server():
        boto3.client("s3").create_bucket(Bucket=BUCKET)
        yield boto3.client("s3")


def put(s3, key: str, seed: int = 0) -> None:
    s3.put_object(Bucket=BUCKET, Key=f"images/{key}", Body=valid_jpeg((8, 8), seed=seed))


def tick(instance, cursor):
    """One evaluation, applying its partition requests as the daemon would; returns (result, cursor)."""
    storage = FruitsStorage(data_root=f"s3://{BUCKET}/images", output_root="/tmp/unused")
    result = sensor(build_sensor_context(instance=instance, cursor=cursor, resources={"storage": storage}))
    for request in result.dynamic_partitions_requests:
        instance.add_dynamic_partitions(fruit_classes.name, list(request.partition_keys))
    return result, result.cursor


def requested(result) -> dict[str, str]:
    return {request.partition_key: request.run_key for request in result.run_requests}


def test_one_run_per_changed_class_and_none_twice(instance, bucket):
    put(bucket, "Training/Banana/1.jpg", 1)
    put(bucket, "Test/Banana/2.jpg", 2)
    put(bucket, "Training/Lemon/1.jpg", 3)
    put(bucket, "README.txt")  # not under a split/class: ignored
    first, cursor = tick(instance, None)
    assert set(requested(first)) == {"Banana", "Lemon"}
    assert instance.get_dynamic_partitions(fruit_classes.name) == ["Banana", "Lemon"]

    again, cursor = tick(instance, cursor)
    assert requested(again) == {} and not again.dynamic_partitions_requests

    put(bucket, "Training/Banana/3.jpg", 4)  # new image, existing class (same second as the mark, often)
    put(bucket, "Training/Kiwi fruit ü/1.jpg", 5)  # brand-new class with an odd name
    third, cursor_after = tick(instance, cursor)
    assert set(requested(third)) == {"Banana", "Kiwi fruit ü"}
    assert "Kiwi fruit ü" in instance.get_dynamic_partitions(fruit_classes.name)
    # A retried tick (same cursor) asks for the same work under the same run keys: Dagster dedupes it.
    retried, _ = tick(instance, cursor)
    assert requested(retried) == requested(third)
    # A sensor restarted from its stored cursor: nothing new, nothing requested.
    restarted, _ = tick(instance, cursor_after)
    assert requested(restarted) == {}


def test_changed_content_and_late_objects_are_not_lost(instance, bucket):
    put(bucket, "Training/Banana/1.jpg", 1)
    _, cursor = tick(instance, None)
    put(bucket, "Training/Banana/1.jpg", 99)  # same key, new content
    changed, cursor = tick(instance, cursor)
    assert set(requested(changed)) == {"Banana"}

    # An object listed late with a LastModified before the high-water mark (S3 stamps the start of an
    # upload): a plain since_last_modified / since_key cursor would skip it for ever.
    put(bucket, "Training/Lemon/late.jpg", 7)
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.s3.models import s3_backends

    key = s3_backends[DEFAULT_ACCOUNT_ID]["global"].buckets[BUCKET].keys["images/Training/Lemon/late.jpg"]
    key.last_modified = key.last_modified - timedelta(minutes=5)
    late, _ = tick(instance, cursor)
    assert set(requested(late)) == {"Lemon"}


def test_local_folders_are_listed_the_same_way(tmp_path):
    (tmp_path / "Training" / "Pear").mkdir(parents=True)
    (tmp_path / "Training" / "Pear" / "1.jpg").write_bytes(valid_jpeg((8, 8)))
    (tmp_path / "Test").mkdir()
    objects = list_objects(str(tmp_path), None)
    assert [o.key for o in objects] == ["Training/Pear/1.jpg"]
    assert list_objects(str(tmp_path), objects[0].last_modified) == []
