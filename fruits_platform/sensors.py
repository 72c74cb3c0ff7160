"""Sensors: register the fruit classes found in the data root as partitions."""

from __future__ import annotations

from dagster import DefaultSensorStatus, SensorEvaluationContext, SensorResult, SkipReason, sensor

from fruits_platform.partitions import fruit_classes, split_usable
from fruits_platform.resources.storage import FruitsStorage


def new_class_requests(context, storage: FruitsStorage):
    """(add request or None, names refused as partition keys) for classes not yet registered."""
    usable, refused = split_usable(storage.classes())
    known = set(context.instance.get_dynamic_partitions(fruit_classes.name))
    new = [name for name in usable if name not in known]
    return (fruit_classes.build_add_request(new) if new else None), refused


@sensor(
    name="fruit_classes_sensor",
    minimum_interval_seconds=30,
    default_status=DefaultSensorStatus.RUNNING,
    description="Registers every class folder of the data root as a `fruit_classes` partition.",
)
def fruit_classes_sensor(context: SensorEvaluationContext, storage: FruitsStorage):
    request, refused = new_class_requests(context, storage)
    for name, reason in refused.items():
        context.log.warning(f"class folder {name!r} is not registered: {reason}")
    if request is None:
        return SkipReason("no new class folder")
    return SensorResult(dynamic_partitions_requests=[request])
