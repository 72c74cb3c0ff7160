"""`fruits-platform code-server OPTIONS`: Dagster's code server (`dagster code-server start OPTIONS`) that stops
within seconds of SIGTERM or SIGINT, even while it runs runs.

Dagster's code server also runs the runs it launches (the default run launcher), and on SIGTERM it waits for
them to finish: for 30 s, then it exits 1 and leaves its gRPC server and the runs behind, still holding their
slots of the outputs' pool. So on a signal this process first terminates those runs as the UI's Terminate
button does (each run is marked canceled, its step interrupted, its pool slot freed; the previous version of
every output stays readable), then passes the signal on and exits when Dagster's code server has."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time


def _option(args: list[str], *names: str) -> str | None:
    """The value of an option of `dagster code-server start` (`-p 4000`, `--port 4000` or `--port=4000`)."""
    for index, arg in enumerate(args):
        if arg in names and index + 1 < len(args):
            return args[index + 1]
        for name in names:
            if name.startswith("--") and arg.startswith(name + "="):
                return arg.split("=", 1)[1]
    return None


def hosted_runs(instance, port: str | None, location: str | None) -> list:
    """The runs in progress that a code server on `port` (of the code location `location`) launched."""
    from dagster import DagsterRunStatus, RunsFilter
    from dagster._core.storage.tags import GRPC_INFO_TAG  # where the default run launcher names the server

    in_progress = [DagsterRunStatus.STARTING, DagsterRunStatus.STARTED]
    found = []
    for run in instance.get_runs(RunsFilter(statuses=in_progress)):
        info = json.loads(run.tags.get(GRPC_INFO_TAG, "{}"))
        origin = run.remote_job_origin
        if port is None or str(info.get("port")) != port:
            continue
        if location and (origin is None or origin.location_name != location):
            continue
        found.append(run)
    return found


def terminate_hosted_runs(instance, port: str | None, location: str | None) -> None:
    for run in hosted_runs(instance, port, location):
        try:
            instance.run_launcher.terminate(run.run_id)
            print(f"fruits-platform code-server: run {run.run_id} terminated", file=sys.stderr, flush=True)
        except Exception as error:  # noqa: BLE001 - the run may have ended meanwhile; the others still get their turn
            print(f"fruits-platform code-server: run {run.run_id} not terminated: {error}", file=sys.stderr)


def main(args: list[str]) -> int:
    command = [os.path.join(os.path.dirname(sys.executable), "dagster"), "code-server", "start", *args]
    if not os.path.exists(command[0]):
        command[0] = "dagster"
    received: list[int] = []
    # Recorded here, handled in the loop below (a handler must not block on the database or on gRPC).
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda signum, _frame: received.append(signum))
    server = subprocess.Popen(command)
    from dagster import DagsterInstance  # now, not when the signal comes: importing Dagster takes seconds

    try:
        instance = DagsterInstance.get()
    except Exception:  # noqa: BLE001 - e.g. the database not up yet: tried again at the signal
        instance = None
    forwarded = 0
    while server.poll() is None:
        if len(received) > forwarded:
            if forwarded == 0:
                try:
                    instance = instance or DagsterInstance.get()
                    terminate_hosted_runs(instance, _option(args, "-p", "--port"), _option(args, "--location-name"))
                except Exception as error:  # noqa: BLE001 - the instance unreachable: Dagster shuts down anyway
                    print(f"fruits-platform code-server: runs not terminated: {error}", file=sys.stderr)
            server.send_signal(received[forwarded])
            forwarded += 1
        time.sleep(0.1)
    if instance is not None:
        instance.dispose()
    return 0 if received and server.returncode in (0, -signal.SIGTERM, -signal.SIGINT) else server.returncode
