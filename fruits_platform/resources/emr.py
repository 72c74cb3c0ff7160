"""Running asset steps on EMR with dagster-aws's PySpark step launcher, plus the three things the
stock launcher lacks for this project (the rest is dagster-aws's own code):

1. Dynamic partition keys reach the step. The step runs on an ephemeral instance that knows no
   `fruit_classes` keys, so a partition key range (a backfill in one run) fails there (the gap
   Dagster PR #15000 left). The launcher uploads the host's keys next to the step-run ref and the
   step's entry point (`fruits_platform.emr_step_main`) registers them before running the step.
2. The FRUITS_* settings reach the step: the step process rebuilds the code location from the
   code zip, so it needs the same profile and roots; they are passed in the step's command
   (`env FRUITS_...=... spark-submit ...`). Only FRUITS_* names are passed: never credentials
   (the cluster's instance profile gives the step its AWS access).
3. A configurable poll interval (the launcher's is fixed at 15 s).
The code zip holds only the `fruits_platform` package (staged once per process), not the repo.
"""

import json
import os
import shutil
import tempfile
from functools import lru_cache
from pathlib import Path

import boto3
from dagster import Field, resource
from dagster_aws.emr.pyspark_step_launcher import EmrPySparkStepLauncher, emr_pyspark_step_launcher

from fruits_platform.partitions import fruit_classes

PARTITIONS_FILE = "dynamic_partitions.json"
PACKAGE_DIR = Path(__file__).resolve().parents[1]
FORWARDED_PREFIX = "FRUITS_"


@lru_cache(maxsize=1)
def staged_package_dir() -> str:
    """A folder holding just the package (no sample data, caches, venv), zipped for each step."""
    target = Path(tempfile.mkdtemp(prefix="fruits-emr-code-")) / PACKAGE_DIR.name
    shutil.copytree(PACKAGE_DIR, target, ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "sample_data"))
    return str(target.parent)


def forwarded_environment() -> dict[str, str]:
    return {name: value for name, value in sorted(os.environ.items()) if name.startswith(FORWARDED_PREFIX)}


class FruitsEmrStepLauncher(EmrPySparkStepLauncher):
    def __init__(self, *, poll_interval: int, **kwargs):
        super().__init__(**kwargs)
        self.poll_interval = poll_interval

    def launch_step(self, step_context):
        keys = list(step_context.instance.get_dynamic_partitions(fruit_classes.name))
        key = self._artifact_s3_key(step_context.dagster_run.run_id, step_context.step.key, PARTITIONS_FILE)
        boto3.client("s3", region_name=self.region_name).put_object(
            Bucket=self.staging_bucket, Key=key, Body=json.dumps({fruit_classes.name: keys}).encode()
        )
        yield from super().launch_step(step_context)

    def _main_file_local_path(self):
        return str(PACKAGE_DIR / "emr_step_main.py")

    def _get_emr_step_def(self, run_id, step_key, solid_name):
        step = super()._get_emr_step_def(run_id, step_key, solid_name)
        settings = [f"{name}={value}" for name, value in forwarded_environment().items()]
        step["HadoopJarStep"]["Args"] = ["env", *settings, *step["HadoopJarStep"]["Args"]]
        return step

    def wait_for_completion(self, step_context, s3, run_id, step_key, emr_step_id, check_interval=None):
        return super().wait_for_completion(
            step_context, s3, run_id, step_key, emr_step_id, check_interval=self.poll_interval
        )


@resource(
    config_schema={
        **{
            name: field
            for name, field in emr_pyspark_step_launcher.config_schema.config_type.fields.items()
            if name
            in {
                "region_name",
                "cluster_id",
                "staging_bucket",
                "staging_prefix",
                "spark_config",
                "wait_for_logs",
                "action_on_failure",
            }
        },
        "poll_interval": Field(int, default_value=15, description="Seconds between EMR step status polls"),
    },
    description="dagster-aws's EMR PySpark step launcher, shipping dynamic partitions and FRUITS_* settings.",
)
def fruits_emr_step_launcher(context) -> FruitsEmrStepLauncher:
    config = context.resource_config
    return FruitsEmrStepLauncher(
        region_name=config["region_name"],
        staging_bucket=config["staging_bucket"],
        staging_prefix=config["staging_prefix"],
        wait_for_logs=config["wait_for_logs"],
        action_on_failure=config["action_on_failure"],
        cluster_id=config["cluster_id"],
        spark_config=config["spark_config"],
        local_job_package_path=staged_package_dir(),
        deploy_local_job_package=True,
        poll_interval=config["poll_interval"],
    )
