"""Entry point of an EMR step: dagster-aws's `emr_step_main`, after registering on the step's
ephemeral instance the dynamic partition keys the host shipped (see resources/emr.py).

spark-submit runs this file as a script: `emr_step_main.py <bucket> <key of step_run_ref.pkl>`.
"""

import json
import posixpath
import sys

import boto3
from dagster_aws.emr import emr_step_main

PARTITIONS_FILE = "dynamic_partitions.json"


def main(bucket: str, step_run_ref_key: str) -> None:
    key = posixpath.join(posixpath.dirname(step_run_ref_key), PARTITIONS_FILE)
    partitions = json.loads(boto3.client("s3").get_object(Bucket=bucket, Key=key)["Body"].read())
    build_instance = emr_step_main.external_instance_from_step_run_ref

    def instance_with_partitions(step_run_ref, event_listener_fn=None):
        instance = build_instance(step_run_ref, event_listener_fn=event_listener_fn)
        for name, keys in partitions.items():
            if keys:
                instance.add_dynamic_partitions(partitions_def_name=name, partition_keys=keys)
        return instance

    # emr_step_main.main looks this name up in its module at call time.
    emr_step_main.external_instance_from_step_run_ref = instance_with_partitions
    emr_step_main.main(bucket, step_run_ref_key)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
