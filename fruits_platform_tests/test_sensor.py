"""The new-images sensor against real S3 and SQS protocols (moto's server on 127.0.0.1), its run requests
turned into runs on a real instance as the sensor daemon turns them."""

import json
from datetime import timedelta

import boto3
import pytest
from dagster import AssetKey, DagsterEventType, DefaultSensorStatus, PartitionKeyRange, build_sensor_context
from dagster._core.errors import DagsterInvalidInvocationError
from dagster._core.storage.dagster_run import DagsterRunStatus
from dagster._core.storage.tags import RUN_KEY_TAG

from fruits_platform import sensors
from fruits_platform.definitions import defs
from fruits_platform.partitions import fruit_classes, range_tags
from fruits_platform.resources.storage import FruitsStorage
from fruits_platform.sensors import build_new_images_sensor, list_objects
from fruits_platform_tests.corpus import valid_jpeg
from fruits_platform_tests.emr_emulator import moto_server

BUCKET, OTHER_BUCKET = "fruits-sensor", "fruits-other"
sensor = build_new_images_sensor(request_runs=True, default_status=DefaultSensorStatus.RUNNING)
embed_job = defs.resolve_job_def("embed_classes")


@pytest.fixture
def bucket():
    with moto_server():
        boto3.client("s3").create_bucket(Bucket=BUCKET)
        yield boto3.client("s3")


@pytest.fixture
def queue(bucket) -> str:
    """A queue that receives the S3 event notifications of the data root's bucket and of another bucket."""
    sqs = boto3.client("sqs")
    url = sqs.create_queue(QueueName="fruits-images")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    events = ["s3:ObjectCreated:*", "s3:ObjectRemoved:*"]
    bucket.create_bucket(Bucket=OTHER_BUCKET)
    for name in (BUCKET, OTHER_BUCKET):
        bucket.put_bucket_notification_configuration(
            Bucket=name, NotificationConfiguration={"QueueConfigurations": [{"QueueArn": arn, "Events": events}]}
        )
    return url


def put(s3, key: str, seed: int = 0) -> None:
    s3.put_object(Bucket=BUCKET, Key=f"images/{key}", Body=valid_jpeg((8, 8), seed=seed))


def tick(instance, cursor, queue: str = ""):
    """One evaluation as the daemon runs it (run requests resolved), applying its partition requests as the
    daemon does before it creates runs; returns (result, cursor)."""
    storage = FruitsStorage(data_root=f"s3://{BUCKET}/images", output_root="/tmp/unused", notification_queue=queue)
    context = build_sensor_context(instance=instance, cursor=cursor, resources={"storage": storage})
    result = sensor.evaluate_tick(context)
    for request in result.dynamic_partitions_requests:
        instance.add_dynamic_partitions(fruit_classes.name, list(request.partition_keys))
    return result, result.cursor


def launch(instance, result) -> set[str]:
    """Create the tick's run as the sensor daemon does (job snapshot, execution plan, the request's tags, its
    planned materializations resolved against the instance's partitions): the classes the run covers."""
    if not result.run_requests:
        return set()
    (request,) = result.run_requests
    assert request.partition_key is None
    tags = {**request.tags, RUN_KEY_TAG: request.run_key}
    run = instance.create_run_for_job(embed_job, tags=tags, status=DagsterRunStatus.NOT_STARTED)
    assert run.tags[RUN_KEY_TAG] == request.run_key
    planned = instance.all_logs(run.run_id, of_type=DagsterEventType.ASSET_MATERIALIZATION_PLANNED)
    data = [event.dagster_event.event_specific_data for event in planned]
    return {d.partition for d in data if d.asset_key == AssetKey("mobilenet_features")}


def key_range(result) -> PartitionKeyRange:
    (request,) = result.run_requests
    return request.partition_key_range


def queue_depth(url: str) -> int:
    names = ["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
    attributes = boto3.client("sqs").get_queue_attributes(QueueUrl=url, AttributeNames=names)["Attributes"]
    return sum(int(attributes[name]) for name in names)


def test_one_run_over_the_changed_classes_and_none_twice(instance, bucket):
    put(bucket, "Training/Banana/1.jpg", 1)
    put(bucket, "Test/Banana/2.jpg", 2)
    put(bucket, "Training/Lemon/1.jpg", 3)
    put(bucket, "README.txt")  # not under a split/class: ignored
    first, cursor = tick(instance, None)
    assert key_range(first) == PartitionKeyRange("Banana", "Lemon")
    assert launch(instance, first) == {"Banana", "Lemon"}
    assert instance.get_dynamic_partitions(fruit_classes.name) == ["Banana", "Lemon"]
    # The run's check is real: a range reaching a class that is not registered is refused.
    with pytest.raises(DagsterInvalidInvocationError):
        instance.create_run_for_job(embed_job, tags=range_tags(["Banana", "Pear"]))

    again, cursor = tick(instance, cursor)
    assert launch(instance, again) == set() and not again.dynamic_partitions_requests

    put(bucket, "Training/Banana/3.jpg", 4)  # new image, existing class (same second as the mark, often)
    put(bucket, "Training/Kiwi fruit ü/1.jpg", 5)  # brand-new class with an odd name, registered last
    third, cursor_after = tick(instance, cursor)
    assert key_range(third) == PartitionKeyRange("Banana", "Kiwi fruit ü")
    assert launch(instance, third) == {"Banana", "Lemon", "Kiwi fruit ü"}  # Lemon, unchanged, is inside the range
    assert instance.get_dynamic_partitions(fruit_classes.name) == ["Banana", "Lemon", "Kiwi fruit ü"]
    # A retried tick (same cursor) asks for the same work under the same run key: Dagster dedupes it.
    retried, _ = tick(instance, cursor)
    assert retried.run_requests == third.run_requests
    # A sensor restarted from its stored cursor: nothing new, nothing requested.
    restarted, _ = tick(instance, cursor_after)
    assert restarted.run_requests == []


def test_changed_content_and_late_objects_are_not_lost(instance, bucket):
    put(bucket, "Training/Banana/1.jpg", 1)
    _, cursor = tick(instance, None)
    put(bucket, "Training/Banana/1.jpg", 99)  # same key, new content
    changed, cursor = tick(instance, cursor)
    assert launch(instance, changed) == {"Banana"}

    # An object listed late with a LastModified before the high-water mark (S3 stamps the start of an
    # upload): a plain since_last_modified / since_key cursor would skip it for ever.
    put(bucket, "Training/Lemon/late.jpg", 7)
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.s3.models import s3_backends

    key = s3_backends[DEFAULT_ACCOUNT_ID]["global"].buckets[BUCKET].keys["images/Training/Lemon/late.jpg"]
    key.last_modified = key.last_modified - timedelta(minutes=5)
    late, _ = tick(instance, cursor)
    assert launch(instance, late) == {"Lemon"}


def test_local_folders_are_listed_the_same_way(tmp_path):
    (tmp_path / "Training" / "Pear").mkdir(parents=True)
    (tmp_path / "Training" / "Pear" / "1.jpg").write_bytes(valid_jpeg((8, 8)))
    (tmp_path / "Test").mkdir()
    objects = list_objects(str(tmp_path), None)
    assert [o.key for o in objects] == ["Training/Pear/1.jpg"]
    assert list_objects(str(tmp_path), objects[0].last_modified) == []


def test_notifications_request_one_run_and_leave_the_queue_empty(instance, bucket, queue):
    """moto's S3 delivers the notifications to its SQS itself (an s3:TestEvent first, when the notifications
    are configured; keys URL-encoded with "+" for a space), as S3 does."""
    instance.add_dynamic_partitions(fruit_classes.name, ["Apple", "Banana"])
    put(bucket, "Training/Apple/1.jpg", 1)
    put(bucket, "Training/Kiwi fruit ü/1.jpg", 2)  # new class, with a space
    put(bucket, "Test/Lemon/1.jpg", 3)  # new class
    put(bucket, "README.txt")  # not an image of a class
    bucket.put_object(Bucket=BUCKET, Key="elsewhere/Training/Pear/1.jpg", Body=b"")  # outside the data root
    bucket.put_object(Bucket=OTHER_BUCKET, Key="images/Training/Pear/1.jpg", Body=b"")  # another bucket
    first, cursor = tick(instance, None, queue)
    assert cursor is None  # the listing cursor is left as it is
    assert instance.get_dynamic_partitions(fruit_classes.name) == ["Apple", "Banana", "Kiwi fruit ü", "Lemon"]
    assert key_range(first) == PartitionKeyRange("Apple", "Lemon")
    assert launch(instance, first) == {"Apple", "Banana", "Kiwi fruit ü", "Lemon"}  # Banana: unchanged, in range
    assert queue_depth(queue) == 0

    again, _ = tick(instance, None, queue)
    assert again.run_requests == [] and again.dynamic_partitions_requests == []


def test_malformed_notifications_are_dropped_and_removals_count(instance, bucket, queue, capfd):
    put(bucket, "Training/Apple/1.jpg", 1)
    put(bucket, "Training/Banana/1.jpg", 2)
    tick(instance, None, queue)
    sqs = boto3.client("sqs")
    sqs.send_message(QueueUrl=queue, MessageBody="not JSON")
    sqs.send_message(QueueUrl=queue, MessageBody=json.dumps({"Records": [{"s3": {}}]}))  # JSON, not an S3 event
    bucket.delete_object(Bucket=BUCKET, Key="images/Training/Banana/1.jpg")
    removed, _ = tick(instance, None, queue)
    assert launch(instance, removed) == {"Banana"}
    assert capfd.readouterr().err.count("WARNING - dropping malformed S3 notification") == 2  # the sensor's log
    assert queue_depth(queue) == 0


def test_a_tick_reads_a_bounded_number_of_messages(instance, bucket, queue, monkeypatch):
    monkeypatch.setattr(sensors, "MAX_RECEIVES", 1)  # one receive: at most 10 messages
    for index in range(12):
        put(bucket, f"Training/Class {index:02d}/1.jpg", index)
    first, _ = tick(instance, None, queue)  # at most 10 of the 13 messages (the s3:TestEvent among them)
    second, _ = tick(instance, None, queue)
    first_classes, second_classes = launch(instance, first), launch(instance, second)
    assert first_classes and second_classes and not first_classes & second_classes
    assert first_classes | second_classes == {f"Class {index:02d}" for index in range(12)}
    assert queue_depth(queue) == 0
