"""The code location: assets, checks, jobs, sensors and the resources of the chosen profile."""

from dagster import DefaultSensorStatus, Definitions, in_process_executor, load_assets_from_package_module

from fruits_platform import assets
from fruits_platform.jobs import ALL_ASSETS_JOB, all_assets_job, embed_classes_job
from fruits_platform.resources import automation_enabled, build_resources, sensor_intervals
from fruits_platform.sensors import build_automation_sensor, build_new_images_sensor

AUTOMATION = automation_enabled()
SENSOR_SECONDS, AUTOMATION_SECONDS = sensor_intervals()
RUNNING, STOPPED = DefaultSensorStatus.RUNNING, DefaultSensorStatus.STOPPED

defs = Definitions(
    assets=load_assets_from_package_module(assets),
    jobs=[embed_classes_job, all_assets_job],
    sensors=[
        build_new_images_sensor(request_runs=AUTOMATION, default_status=RUNNING, interval_seconds=SENSOR_SECONDS),
        build_automation_sensor(RUNNING if AUTOMATION else STOPPED, interval_seconds=AUTOMATION_SECONDS),
    ],
    resources=build_resources(),
    # One process per run, so one SparkSession serves every asset and partition of the run
    # (in the emr profile each step goes to the cluster through the step launcher instead).
    executor=in_process_executor,
)


def fruit_features_job():
    """The job over every asset, as a module-level function so that `reconstructable` can rebuild it
    in another process (the EMR step launcher needs that; `materialize()` cannot provide it)."""
    return defs.resolve_job_def(ALL_ASSETS_JOB)
