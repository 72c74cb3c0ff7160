"""The code location: assets, checks, jobs, sensors and the resources of the chosen profile."""

from __future__ import annotations

from dagster import Definitions, in_process_executor, load_assets_from_package_module

from fruits_platform import assets
from fruits_platform.jobs import embed_classes_job
from fruits_platform.resources import build_resources
from fruits_platform.sensors import fruit_classes_sensor

defs = Definitions(
    assets=load_assets_from_package_module(assets),
    jobs=[embed_classes_job],
    sensors=[fruit_classes_sensor],
    resources=build_resources(),
    # One process per run, so one SparkSession serves every asset and partition of the run.
    executor=in_process_executor,
)
