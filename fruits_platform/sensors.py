"""The new-images sensor: registers class folders as partitions and requests runs for the classes
whose images changed, on S3 (dagster-aws's `get_objects`) or in a local data root.

Cursor: a high-water mark of LastModified plus the (key, ETag) of every object seen within
LOOKBACK before it. Each tick lists from `mark - LOOKBACK` and treats an object as new when its
(key, ETag) is not remembered: objects whose LastModified equals the mark, or that show up late
in the listing with an older LastModified (S3 stamps the start of an upload), are not lost — unlike
`since_key`/`since_last_modified` alone. The cursor is stored by Dagster, so it survives restarts.
"""

import hashlib
import json
import os
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

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
from fruits_platform.partitions import fruit_classes, unusable_key_reason
from fruits_platform.resources.storage import FruitsStorage
from fruits_platform.sources import SPLITS, is_s3, split_s3

LOOKBACK = timedelta(minutes=15)


@dataclass(frozen=True)
class StoredObject:
    key: str  # relative to the data root: <split>/<class>/<file>
    etag: str
    last_modified: datetime


def list_objects(data_root: str, since: datetime | None) -> list[StoredObject]:
    """Objects of the data root modified after `since` (all of them when None)."""
    if is_s3(data_root):
        from dagster_aws.s3.sensor import get_objects

        bucket, prefix = split_s3(data_root)
        prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        return [
            StoredObject(obj["Key"][len(prefix) :], obj["ETag"], obj["LastModified"])
            for obj in get_objects(bucket, prefix, since_last_modified=since)
        ]
    found = []
    for split in SPLITS:
        for folder, _, names in os.walk(os.path.join(data_root, split)):
            for name in names:
                stat = os.stat(os.path.join(folder, name))
                modified = datetime.fromtimestamp(stat.st_mtime, tz=timezone.utc)
                if since is None or modified > since:
                    key = os.path.relpath(os.path.join(folder, name), data_root).replace(os.sep, "/")
                    found.append(StoredObject(key, f"{stat.st_size}-{stat.st_mtime_ns}", modified))
    return found


def class_of(key: str) -> str | None:
    parts = key.split("/")
    return parts[1] if len(parts) == 3 and parts[0] in SPLITS and parts[1] else None


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
    changed: dict[str, list[StoredObject]] = {}
    for obj in listed:
        label = class_of(obj.key)
        if label is not None and cursor.recent.get(obj.key, ("",))[0] != obj.etag:
            changed.setdefault(label, []).append(obj)
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


def run_key(label: str, objects: list[StoredObject]) -> str:
    """Same changes -> same key, so a retried tick or a restart never launches the same work twice."""
    digest = hashlib.sha256("\n".join(sorted(f"{o.key}\t{o.etag}" for o in objects)).encode()).hexdigest()
    return f"{label}:{digest[:16]}"


def build_new_images_sensor(request_runs: bool, default_status: DefaultSensorStatus):
    @sensor(
        name="new_images_sensor",
        job=embed_classes_job,
        minimum_interval_seconds=30,
        default_status=default_status,
        description=(
            "Watches the data root: registers new class folders as `fruit_classes` partitions and "
            + (
                "requests an `embed_classes` run for each class whose images changed."
                if request_runs
                else "(in this profile) leaves materialization to you."
            )
        ),
    )
    def new_images_sensor(context: SensorEvaluationContext, storage: FruitsStorage):
        cursor = ImageCursor.parse(context.cursor)
        changed, next_cursor = detect_changes(cursor, storage.data_root)
        known = set(context.instance.get_dynamic_partitions(fruit_classes.name))
        usable = {}
        for label, objects in sorted(changed.items()):
            reason = unusable_key_reason(label)
            if reason:
                context.log.warning(f"class folder {label!r} is not registered: {reason}")
            else:
                usable[label] = objects
        new_classes = sorted(label for label in usable if label not in known)
        result = SensorResult(
            run_requests=[
                RunRequest(run_key=run_key(label, objects), partition_key=label) for label, objects in usable.items()
            ]
            if request_runs
            else [],
            dynamic_partitions_requests=[fruit_classes.build_add_request(new_classes)] if new_classes else [],
            cursor=next_cursor.dump(),
        )
        if not usable:
            context.log.info("no new or changed image")
        return result

    return new_images_sensor


def build_automation_sensor(default_status: DefaultSensorStatus) -> AutomationConditionSensorDefinition:
    """Refits `feature_model` and refreshes the per-class outputs once embeddings changed."""
    return AutomationConditionSensorDefinition(
        "fruit_features_automation", target=AssetSelection.all(), default_status=default_status
    )
