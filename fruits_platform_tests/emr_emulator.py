"""Offline AWS for tests: moto's S3 + EMR server in this process, and an "EMR node" that runs the
steps submitted to the moto cluster the way EMR would.

moto records EMR steps but never runs them. `EmrNode` polls the cluster for new steps, runs each
step's command (`env FRUITS_...=... spark-submit ... s3://.../emr_step_main.py <bucket> <key>`)
with the local spark-submit, then sets the step's final state in moto. What it maps, and why:
- `s3://` files given to spark-submit (main file, --py-files) are downloaded first: the pyspark
  wheel has no S3 filesystem (no hadoop-aws jars), EMR's Spark reads them natively.
- `--master yarn` -> `local[2]`; the cluster's Python and spark-submit -> those of the node's environment:
  FRUITS_TEST_EMR_NODE_PYTHON, an environment built as the bootstrap builds a node's (the release's
  pyspark, hence its Spark; `.ci/run` builds one per supported release), else this interpreter's.
- FRUITS_OUTPUT_ROOT=s3://bucket/prefix -> a local mirror folder, because Spark writes the Parquet
  outputs (again no S3 filesystem here); after each step the mirror is synchronised to the bucket,
  so the outputs end up in S3 as on EMR. Image and weight reads go to moto through boto3 unchanged.
- The step gets the AWS settings of the node (moto endpoint, fake keys), as EMR's instance profile.
"""

import gzip
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import boto3

from fruits_platform.releases import DEFAULT_RELEASE

FAKE_AWS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_REGION": "us-east-1",
}
FILE_OPTIONS = {"--py-files", "--files", "--jars", "--archives"}
PYTHON_CONFS = ("spark.pyspark.python=", "spark.pyspark.driver.python=")
NODE_PYTHON_ENV = "FRUITS_TEST_EMR_NODE_PYTHON"


def node_python() -> str:
    return os.getenv(NODE_PYTHON_ENV) or sys.executable


def spark_version_of(python: str) -> str:
    return subprocess.run(
        [python, "-c", "import pyspark; print(pyspark.__version__)"], capture_output=True, text=True, check=True
    ).stdout.strip()


@contextmanager
def moto_server():
    """moto on 127.0.0.1 (free port), with boto3 pointed at it through the environment."""
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    saved = {name: os.environ.get(name) for name in [*FAKE_AWS, "AWS_ENDPOINT_URL"]}
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    os.environ.update(FAKE_AWS)
    os.environ["AWS_ENDPOINT_URL"] = f"http://{host}:{port}"
    try:
        yield os.environ["AWS_ENDPOINT_URL"]
    finally:
        server.stop()
        for name, value in saved.items():
            os.environ.pop(name, None) if value is None else os.environ.__setitem__(name, value)


def _moto_step(region: str, cluster_id: str, step_id: str):
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.emr.models import emr_backends

    backend = emr_backends[DEFAULT_ACCOUNT_ID][region]
    return backend, backend.describe_step(cluster_id, step_id)


@dataclass
class StepRecord:
    step_id: str
    args: list
    command: list = field(default_factory=list)
    returncode: int | None = None
    seconds: float = 0.0
    stdout: str = ""
    stderr: str = ""


class EmrNode(threading.Thread):
    def __init__(self, cluster_id: str, region: str, workdir: Path, poll_seconds: float = 0.5):
        super().__init__(name=f"emr-node-{cluster_id}", daemon=True)
        self.cluster_id, self.region, self.workdir, self.poll_seconds = cluster_id, region, workdir, poll_seconds
        self.python = node_python()
        self.spark_version = spark_version_of(self.python)
        self.records: dict[str, StepRecord] = {}
        self._halt = threading.Event()
        self._emr = boto3.client("emr", region_name=region)
        self._s3 = boto3.client("s3", region_name=region)

    def stop(self):
        self._halt.set()
        self.join(timeout=30)

    def run(self):
        while not self._halt.wait(self.poll_seconds):
            try:
                steps = self._emr.list_steps(ClusterId=self.cluster_id, StepStates=["PENDING", "RUNNING"])["Steps"]
            except Exception as error:  # moto stopped under us: end quietly
                print(f"[emr-node] {error!r}", file=sys.stderr)
                continue
            for step in sorted(steps, key=lambda s: s["Status"]["Timeline"]["CreationDateTime"]):
                if step["Id"] not in self.records:
                    self._run(step)

    def _set_state(self, step_id: str, state: str, reason: str | None = None):
        backend, step = _moto_step(self.region, self.cluster_id, step_id)
        now = datetime.now(timezone.utc)
        if state == "RUNNING":
            step.start_date_time = step.start_date_time or now
        else:
            step.end_date_time = now
        if reason:
            step.last_state_change_reason = reason
        step.state = state
        cluster = backend.clusters[self.cluster_id]
        if all(s.state not in ("PENDING", "RUNNING") for s in cluster.steps):
            cluster.state = "WAITING"

    def _download(self, uri: str, folder: Path) -> str:
        bucket, key = uri[len("s3://") :].split("/", 1)
        target = folder / Path(key).name
        self._s3.download_file(bucket, key, str(target))
        return str(target)

    def _mirror(self, uri: str) -> Path:
        bucket, _, key = uri[len("s3://") :].partition("/")
        return self.workdir / "s3" / bucket / key

    def _localize(self, args: list, folder: Path) -> tuple[list, dict, dict]:
        """The step's command as this machine runs it, its environment, and the output mirrors."""
        env, command, mirrors = {}, list(args), {}
        if command and command[0] == "env":
            command.pop(0)
            while command and "=" in command[0] and not command[0].startswith("-"):
                name, value = command.pop(0).split("=", 1)
                env[name] = value
        output_root = env.get("FRUITS_OUTPUT_ROOT", "")
        if output_root.startswith("s3://"):
            mirrors[output_root] = self._mirror(output_root)
            env["FRUITS_OUTPUT_ROOT"] = str(mirrors[output_root])
        local = [str(Path(self.python).parent / "spark-submit")]
        index = 1
        while index < len(command):
            arg = command[index]
            if arg == "--master":
                local += ["--master", "local[2]"]
                index += 2
                continue
            if arg == "--conf" and command[index + 1].startswith(PYTHON_CONFS):
                local += ["--conf", command[index + 1].split("=", 1)[0] + "=" + self.python]
                index += 2
                continue
            if arg in FILE_OPTIONS:
                values = [
                    self._download(v, folder) if v.startswith("s3://") else v for v in command[index + 1].split(",")
                ]
                local += [arg, ",".join(values)]
                index += 2
                continue
            local.append(self._download(arg, folder) if arg.startswith("s3://") and arg.endswith(".py") else arg)
            index += 1
        return local, env, mirrors

    def _sync(self, mirrors: dict):
        """Make s3://bucket/prefix equal to the local mirror (upload all, delete what is gone)."""
        for uri, folder in mirrors.items():
            bucket, _, prefix = uri[len("s3://") :].partition("/")
            local = {
                f"{prefix.rstrip('/')}/{path.relative_to(folder).as_posix()}": path
                for path in folder.rglob("*")
                if path.is_file()
            }
            for key, path in local.items():
                self._s3.upload_file(str(path), bucket, key)
            paginator = self._s3.get_paginator("list_objects_v2")
            for page in paginator.paginate(Bucket=bucket, Prefix=prefix.rstrip("/") + "/"):
                for obj in page.get("Contents", []):
                    if obj["Key"] not in local:
                        self._s3.delete_object(Bucket=bucket, Key=obj["Key"])

    def _upload_logs(self, record: StepRecord):
        log_uri = self._emr.describe_cluster(ClusterId=self.cluster_id)["Cluster"].get("LogUri")
        if log_uri:
            bucket, _, prefix = log_uri[len("s3://") :].partition("/")
            for name, text in (("stdout", record.stdout), ("stderr", record.stderr)):
                key = f"{prefix}{self.cluster_id}/steps/{record.step_id}/{name}.gz"
                self._s3.put_object(Bucket=bucket, Key=key, Body=gzip.compress(text.encode()))

    def _run(self, step: dict):
        record = StepRecord(step["Id"], list(step["Config"]["Args"]))
        self.records[record.step_id] = record
        self._set_state(record.step_id, "RUNNING")
        folder = self.workdir / record.step_id
        folder.mkdir(parents=True, exist_ok=True)
        started = time.perf_counter()
        try:
            record.command, step_env, mirrors = self._localize(record.args, folder)
            for mirror in mirrors.values():
                mirror.mkdir(parents=True, exist_ok=True)
            # The node's own Spark: nothing of the host's pyspark (SPARK_HOME, PYTHONPATH) may leak in.
            host = {k: v for k, v in os.environ.items() if k not in ("SPARK_HOME", "PYTHONPATH", "VIRTUAL_ENV")}
            env = {**host, **FAKE_AWS, **step_env, "PYSPARK_PYTHON": self.python, "PYSPARK_DRIVER_PYTHON": self.python}
            done = subprocess.run(record.command, cwd=folder, env=env, capture_output=True, text=True)
            record.returncode, record.stdout, record.stderr = done.returncode, done.stdout, done.stderr
            self._sync(mirrors)
        except Exception as error:
            record.returncode, record.stderr = -1, f"emr-node could not run the step: {error!r}"
        record.seconds = time.perf_counter() - started
        self._upload_logs(record)
        if record.returncode == 0:
            self._set_state(record.step_id, "COMPLETED")
        else:
            self._set_state(record.step_id, "FAILED", reason=f"exit code {record.returncode}")


@dataclass
class EmulatedEmr:
    endpoint_url: str
    bucket: str
    cluster_id: str
    region: str
    node: EmrNode


@contextmanager
def emulated_emr(bucket: str = "fruits-test", region: str = "us-east-1"):
    """moto S3 + EMR, a bucket, a cluster, and a node running its steps."""
    workdir = Path(tempfile.mkdtemp(prefix="emr-node-"))
    with moto_server() as endpoint:
        boto3.client("s3", region_name=region).create_bucket(Bucket=bucket)
        cluster_id = boto3.client("emr", region_name=region).run_job_flow(
            Name="fruits-emulated",
            ReleaseLabel=DEFAULT_RELEASE,
            LogUri=f"s3://{bucket}/emr-logs/",
            Applications=[{"Name": "Spark"}],
            Instances={"MasterInstanceType": "m5.xlarge", "InstanceCount": 1, "KeepJobFlowAliveWhenNoSteps": True},
            JobFlowRole="EMR_EC2_DefaultRole",
            ServiceRole="EMR_DefaultRole",
        )["JobFlowId"]
        node = EmrNode(cluster_id, region, workdir)
        node.start()
        try:
            yield EmulatedEmr(endpoint, bucket, cluster_id, region, node)
        finally:
            node.stop()
            shutil.rmtree(workdir, ignore_errors=True)
