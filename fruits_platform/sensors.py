"""The new-images sensor: registers class folders as partitions and requests one run over the classes whose
images changed. It finds the changes in one of two ways:

- Listing (the default; small buckets and local data roots): the data root is listed on S3 (dagster-aws's
  `get_objects`) or on disk. Cursor: a high-water mark of LastModified plus the (key, ETag) of every object
  seen within LOOKBACK before it. Each tick lists from `mark - LOOKBACK` and treats an object as new when its
  (key, ETag) is not remembered: objects whose LastModified equals the mark, or that show up late in the
  listing with an older LastModified (S3 stamps the start of an upload), are not lost — unlike
  `since_key`/`since_last_modified` alone. The cursor is stored by Dagster, so it survives restarts.
- Notifications (`FruitsStorage.notification_queue` set): the SQS queue that receives the bucket's S3 event
  notifications (ObjectCreated:*, ObjectRemoved:*) is read instead, so a tick costs what changed, not what
  the bucket holds; a removed object marks its class as changed too. The messages are deleted once the tick's
  result is built; the listing cursor is left as it is.

Both modes hand their per-class changes to `changes_result`. A Dagster run covers one partition or one key
range, so the tick requests one run over the range from the first to the last changed class, in the order
the classes were registered.
"""

import hashlib
import json
import os
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from urllib.parse import unquote_plus, urlparse

from dagster import (
    AssetSelection,
    AutomationConditionSensorDefinition,
    DefaultSensorStatus,
    RunRequest,
    SensorEvaluationContext,
    SensorResult,
    sensor,
)

from fruits_platform.jobs import embed_classes_job
from fruits_platform.partitions import fruit_classes, range_tags, unusable_key_reason
from fruits_platform.resources.storage import FruitsStorage
from fruits_platform.sources import SPLITS, is_s3, split_s3

LOOKBACK = timedelta(minutes=15)
MAX_RECEIVES = 100  # receive calls of up to 10 messages per tick: a tick stays short, the rest waits for the next
NOTIFIED_EVENTS = ("ObjectCreated:", "ObjectRemoved:")
# What a body that is not an S3 event notification raises while it is parsed.
MALFORMED = (ValueError, KeyError, TypeError, AttributeError)


@dataclass(frozen=True)
class StoredObject:
    key: str  # relative to the data root: <split>/<class>/<file>
    etag: str  # "" for a removed object
    last_modified: datetime


def s3_root(data_root: str) -> tuple[str, str]:
    """Bucket and key prefix ("" or ending with "/") of an s3:// data root."""
    bucket, prefix = split_s3(data_root)
    return bucket, (prefix.strip("/") + "/" if prefix.strip("/") else "")


def list_objects(data_root: str, since: datetime | None) -> list[StoredObject]:
    """Objects of the data root modified after `since` (all of them when None)."""
    if is_s3(data_root):
        from dagster_aws.s3.sensor import get_objects

        bucket, prefix = s3_root(data_root)
        return [
            StoredObject(obj["Key"][len(prefix) :], obj["ETag"], obj["LastModified"])
            for obj in get_objects(bucket, prefix, since_last_modified=since)
        ]
    found = []
    for split in SPLITS:
        for folder, _, names in os.walk(os.path.join(data_root, split)):
            for name in names:
                stat = os.stat(os.path.join(folder, name))
                modified = datetime.fromtimestamp(stat.st_mtime, tz=UTC)
                if since is None or modified > since:
                    key = os.path.relpath(os.path.join(folder, name), data_root).replace(os.sep, "/")
                    found.append(StoredObject(key, f"{stat.st_size}-{stat.st_mtime_ns}", modified))
    return found


def class_of(key: str) -> str | None:
    parts = key.split("/")
    return parts[1] if len(parts) == 3 and parts[0] in SPLITS and parts[1] else None


def group_by_class(objects: list[StoredObject]) -> dict[str, list[StoredObject]]:
    """The objects of the form <split>/<class>/<file>, per class (anything else is not an image of a class)."""
    changed: dict[str, list[StoredObject]] = {}
    for obj in objects:
        label = class_of(obj.key)
        if label is not None:
            changed.setdefault(label, []).append(obj)
    return changed


@dataclass
class ImageCursor:
    mark: datetime | None
    recent: dict[str, tuple[str, str]]  # key -> (etag, last modified ISO)

    @classmethod
    def parse(cls, raw: str | None) -> "ImageCursor":
        if not raw:
            return cls(None, {})
        data = json.loads(raw)
        return cls(datetime.fromisoformat(data["mark"]), {k: tuple(v) for k, v in data["recent"].items()})

    def dump(self) -> str:
        return json.dumps({"mark": self.mark.isoformat() if self.mark else None, "recent": self.recent})


def detect_changes(cursor: ImageCursor, data_root: str) -> tuple[dict[str, list[StoredObject]], ImageCursor]:
    """New or changed objects per class since the cursor, and the cursor to store."""
    listed = list_objects(data_root, cursor.mark - LOOKBACK if cursor.mark else None)
    changed = group_by_class([obj for obj in listed if cursor.recent.get(obj.key, ("",))[0] != obj.etag])
    mark = max([o.last_modified for o in listed] + ([cursor.mark] if cursor.mark else []), default=None)
    recent = (
        {}
        if mark is None
        else {key: value for key, value in cursor.recent.items() if datetime.fromisoformat(value[1]) >= mark - LOOKBACK}
    )
    for obj in listed:
        if mark is not None and obj.last_modified >= mark - LOOKBACK:
            recent[obj.key] = (obj.etag, obj.last_modified.isoformat())
    return changed, ImageCursor(mark, recent)


def sqs_client(queue_url: str):
    import boto3

    host = urlparse(queue_url).hostname or ""
    # The URL names the queue's region (sqs.<region>.amazonaws.com): the daemon needs no AWS_REGION for it.
    return boto3.client("sqs", region_name=host.split(".")[1] if host.startswith("sqs.") else None)


def receive_notifications(sqs, queue_url: str) -> list[dict]:
    """The queue's visible messages, at most MAX_RECEIVES batches of them."""
    messages: dict[str, dict] = {}
    for _ in range(MAX_RECEIVES):
        batch = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=0).get("Messages")
        if not batch:
            break
        # A standard queue may deliver a message twice.
        messages.update((message["MessageId"], message) for message in batch)
    return list(messages.values())


def notified_object(record: dict, bucket: str, prefix: str) -> StoredObject | None:
    """The data root's object that one S3 event record names, or None (another bucket, prefix or event)."""
    key = unquote_plus(record["s3"]["object"]["key"])  # URL-encoded, "+" for a space
    if record["s3"]["bucket"]["name"] != bucket or not key.startswith(prefix):
        return None
    if not record["eventName"].startswith(NOTIFIED_EVENTS):
        return None
    etag = "" if record["eventName"].startswith("ObjectRemoved:") else record["s3"]["object"].get("eTag", "")
    return StoredObject(key[len(prefix) :], etag, datetime.fromisoformat(record["eventTime"]))


def notified_objects(body: str, bucket: str, prefix: str) -> list[StoredObject]:
    """The data root's objects that an S3 event notification names; raises one of MALFORMED for a body that
    is not one."""
    event = json.loads(body)
    if event.get("Event") == "s3:TestEvent":  # sent once, when the bucket's notifications are configured
        return []
    found = [notified_object(record, bucket, prefix) for record in event["Records"]]
    return [obj for obj in found if obj is not None]


def read_notifications(context: SensorEvaluationContext, messages: list[dict], data_root: str) -> list[StoredObject]:
    """The objects the messages name; a malformed message is only logged (it is deleted with the others)."""
    bucket, prefix = s3_root(data_root)
    objects = []
    for message in messages:
        try:
            objects += notified_objects(message["Body"], bucket, prefix)
        except MALFORMED as error:
            context.log.warning(f"dropping malformed S3 notification {message['MessageId']}: {error!r}")
    return objects


def delete_notifications(context: SensorEvaluationContext, sqs, queue_url: str, messages: list[dict]) -> None:
    for start in range(0, len(messages), 10):
        batch = messages[start : start + 10]
        entries = [{"Id": str(index), "ReceiptHandle": m["ReceiptHandle"]} for index, m in enumerate(batch)]
        failed = sqs.delete_message_batch(QueueUrl=queue_url, Entries=entries).get("Failed")
        if failed:
            context.log.warning(f"{len(failed)} notification(s) not deleted, read again later: {failed[0]}")


def notified_changes_result(
    context: SensorEvaluationContext, storage: FruitsStorage, request_runs: bool
) -> SensorResult:
    """The result for the changes the queue's notifications name; the messages are deleted once it is built."""
    if not is_s3(storage.data_root):
        raise ValueError(f"notification_queue needs an s3:// data root, not {storage.data_root!r}")
    sqs = sqs_client(storage.notification_queue)
    messages = receive_notifications(sqs, storage.notification_queue)
    changed = group_by_class(read_notifications(context, messages, storage.data_root))
    result = changes_result(context, changed, request_runs, context.cursor)
    delete_notifications(context, sqs, storage.notification_queue, messages)
    return result


def run_key(objects: list[StoredObject]) -> str:
    """Same changes -> same key, so a retried tick or a restart never launches the same work twice."""
    lines = sorted(f"{o.key}\t{o.etag}\t{o.last_modified.isoformat()}" for o in objects)
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()[:16]


def usable_changes(
    context: SensorEvaluationContext, changed: dict[str, list[StoredObject]]
) -> dict[str, list[StoredObject]]:
    """The changes of the classes whose folder name can be a partition key; the others are logged."""
    usable = {}
    for label, objects in sorted(changed.items()):
        reason = unusable_key_reason(label)
        if reason:
            context.log.warning(f"class folder {label!r} is not registered: {reason}")
        else:
            usable[label] = objects
    return usable


def changes_result(
    context: SensorEvaluationContext, changed: dict[str, list[StoredObject]], request_runs: bool, cursor: str | None
) -> SensorResult:
    """Registers the new classes and requests one run over the key range from the first to the last changed
    class, in the order the classes were registered (this tick's new ones last)."""
    usable = usable_changes(context, changed)
    known = context.instance.get_dynamic_partitions(fruit_classes.name)
    new_classes = sorted(set(usable) - set(known))
    ordered = [label for label in [*known, *new_classes] if label in usable]
    if not ordered:
        context.log.info("no new or changed image")
    objects = [obj for label in ordered for obj in usable[label]]
    runs = [RunRequest(run_key=run_key(objects), tags=range_tags(ordered))] if request_runs and ordered else []
    return SensorResult(
        run_requests=runs,
        dynamic_partitions_requests=[fruit_classes.build_add_request(new_classes)] if new_classes else [],
        cursor=cursor,
    )


def build_new_images_sensor(request_runs: bool, default_status: DefaultSensorStatus, interval_seconds: int = 30):
    @sensor(
        name="new_images_sensor",
        job=embed_classes_job,
        minimum_interval_seconds=interval_seconds,
        default_status=default_status,
        description=(
            "Watches the data root (a listing, or the bucket's S3 notifications when `notification_queue` is set): "
            "registers new class folders as `fruit_classes` partitions and "
            + (
                "requests one `embed_classes` run over the classes whose images changed."
                if request_runs
                else "(in this profile) leaves materialization to you."
            )
        ),
    )
    def new_images_sensor(context: SensorEvaluationContext, storage: FruitsStorage) -> SensorResult:
        """Unchanged classes inside the range re-run too: cheap and idempotent (embeddings reused by content hash)."""
        if storage.notification_queue:
            return notified_changes_result(context, storage, request_runs)
        changed, next_cursor = detect_changes(ImageCursor.parse(context.cursor), storage.data_root)
        return changes_result(context, changed, request_runs, next_cursor.dump())

    return new_images_sensor


def build_automation_sensor(
    default_status: DefaultSensorStatus, interval_seconds: int = 30
) -> AutomationConditionSensorDefinition:
    """Refits `feature_model` and refreshes the per-class outputs once embeddings changed."""
    return AutomationConditionSensorDefinition(
        "fruit_features_automation",
        target=AssetSelection.all(),
        default_status=default_status,
        minimum_interval_seconds=interval_seconds,
    )
