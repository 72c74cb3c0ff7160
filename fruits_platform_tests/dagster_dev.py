"""Start and stop a real `dg dev` (webserver + daemon) for end-to-end tests.

`running_dagster_dev(...)` is a context manager other tests can reuse: it starts `dg dev` (the README's command)
on 127.0.0.1 and a free port in its own process group, waits (bounded) for the webserver to answer, yields
a `DagsterDev` (url, DAGSTER_HOME, log file, `graphql()` helper) and on exit stops the whole process
group it started: SIGINT, then SIGTERM, then SIGKILL, each after a bounded wait.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from dagster import AssetKey, DagsterEventType, DagsterInstance

from fruits_platform_tests.helpers import REPO, free_port


def _reset_signals() -> None:
    # An ignored SIGINT survives exec (a shell's background job has one): default dispositions, so
    # that the SIGINT/SIGTERM we send to the group reach dagster's own handling.
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_DFL)


@dataclass
class DagsterDev:
    url: str
    home: Path
    log_path: Path
    processes: list[subprocess.Popen]
    commands: list[list[str]] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)

    def restart(self, index: int, kill: bool = False) -> None:
        """Stop the `index`-th service (its whole process group) and start it again, the others running on.
        With `kill`, SIGKILL the group at once (a crash, the OOM killer, a lost host) instead."""
        if kill:
            _kill_group(self.processes[index])
        else:
            _stop_group(self.processes[index])
        with open(self.log_path, "ab") as log:
            self.processes[index] = _start(self.commands[index], self.env, log)

    def graphql(self, query: str, variables: dict | None = None, timeout: float = 10.0) -> dict:
        body = json.dumps({"query": query, "variables": variables or {}}).encode()
        request = urllib.request.Request(f"{self.url}/graphql", data=body, headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=timeout) as response:
            payload = json.loads(response.read())
        if payload.get("errors"):
            raise RuntimeError(f"GraphQL errors: {payload['errors']}")
        return payload["data"]

    def log_tail(self, chars: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def wait_until(self, predicate, timeout: float, interval: float = 1.0, what: str = "condition"):
        """Poll `predicate()` until it returns a truthy value (returned) or `timeout` seconds pass."""
        deadline = time.monotonic() + timeout
        last_error = None
        while time.monotonic() < deadline:
            exited = [p for p in self.processes if p.poll() is not None]
            if exited:
                raise RuntimeError(f"{exited[0].args[:2]} exited ({exited[0].returncode}):\n{self.log_tail()}")
            try:
                value = predicate()
                if value:
                    return value
            except (OSError, urllib.error.URLError, RuntimeError, KeyError, ValueError) as error:
                last_error = error
            time.sleep(interval)
        raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what} (last error: {last_error})")


def _stop_group(process: subprocess.Popen) -> None:
    """Stop the process group of `process` (which we started with start_new_session=True)."""
    if process.poll() is not None and not _group_alive(process.pid):
        return
    for sig, grace in ((signal.SIGINT, 20), (signal.SIGTERM, 10), (signal.SIGKILL, 5)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            if process.poll() is not None and not _group_alive(process.pid):
                return
            time.sleep(0.25)


def _kill_group(process: subprocess.Popen, grace: float = 10) -> None:
    """SIGKILL the process group of `process` and wait until all of it is gone."""
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        return
    process.wait(timeout=grace)
    deadline = time.monotonic() + grace
    while _group_alive(process.pid) and time.monotonic() < deadline:
        time.sleep(0.05)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


def _child_env(home: Path, env: dict[str, str | None] | None) -> dict[str, str]:
    venv = Path(sys.executable).parent  # as after `source .venv/bin/activate`, which `dg` checks
    child_env = {**os.environ, "DAGSTER_HOME": str(home), "PYTHONUNBUFFERED": "1", "VIRTUAL_ENV": str(venv.parent)}
    child_env["PATH"] = f"{venv}{os.pathsep}{os.environ.get('PATH', '')}"
    for name, value in (env or {}).items():
        if value is None:
            child_env.pop(name, None)
        else:
            child_env[name] = value
    return child_env


def _program(name: str) -> str:
    found = Path(sys.executable).with_name(name)
    return str(found) if found.exists() else name


def _start(args: list[str], env: dict[str, str], log) -> subprocess.Popen:
    """`args` in its own process group (stopped as a group), output to `log`."""
    return subprocess.Popen(
        [_program(args[0]), *args[1:]],
        cwd=REPO,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        preexec_fn=_reset_signals,  # noqa: PLW1509 - only signal(), before any thread of ours
    )


@contextmanager
def _serving(commands: list[list[str]], home, env, port: int, startup_timeout: float, log_path) -> Iterator[DagsterDev]:
    """Start `commands` (the webserver on `port` among them), wait for the webserver, stop them all on exit."""
    home = Path(home)
    home.mkdir(parents=True, exist_ok=True)
    log_path = Path(log_path or home / "dagster_dev.log")
    child_env = _child_env(home, env)
    processes = []
    try:
        with open(log_path, "ab") as log:
            processes += [_start(command, child_env, log) for command in commands]
        server = DagsterDev(
            url=f"http://127.0.0.1:{port}",
            home=home,
            log_path=log_path,
            processes=processes,
            commands=commands,
            env=child_env,
        )

        def answers():
            with urllib.request.urlopen(f"{server.url}/server_info", timeout=3) as response:
                return response.status == 200

        server.wait_until(answers, timeout=startup_timeout, interval=0.5, what="the dagster webserver")
        yield server
    finally:
        for process in reversed(processes):
            _stop_group(process)


def running_dagster_dev(
    home: Path, env: dict[str, str | None] | None = None, startup_timeout: float = 120.0, log_path: Path | None = None
):
    """`dg dev` of this repo's project, as the README starts it, with DAGSTER_HOME=`home` (created) and extra
    `env` (a value of None removes that variable from the inherited environment)."""
    port = free_port()
    return _serving([["dg", "dev", "-h", "127.0.0.1", "-p", str(port)]], home, env, port, startup_timeout, log_path)


def running_production(
    home: Path, env: dict[str, str | None] | None = None, startup_timeout: float = 180.0, log_path: Path | None = None
):
    """The code server, the webserver and the daemon, started as docs/production.md says (deploy/workspace.yaml),
    with DAGSTER_HOME=`home` (holding deploy/dagster.yaml) and extra `env`."""
    port, code_port = free_port(), free_port()
    workspace = str(REPO / "deploy" / "workspace.yaml")
    env = {**(env or {}), "FRUITS_CODE_SERVER_HOST": "127.0.0.1", "FRUITS_CODE_SERVER_PORT": str(code_port)}
    commands = [
        [
            "fruits-platform",
            "code-server",
            "-h",
            "127.0.0.1",
            "-p",
            str(code_port),
            "-m",
            "fruits_platform.definitions",
            "--location-name",
            "fruits_platform",
        ],
        ["dagster-webserver", "-h", "127.0.0.1", "-p", str(port), "-w", workspace],
        ["dagster-daemon", "run", "-w", workspace],
    ]
    return _serving(commands, home, env, port, startup_timeout, log_path)


EVERY_ASSET = [
    "raw_images",
    "mobilenet_features",
    "feature_model",
    "scaled_features",
    "pca_features",
    "feature_quality",
]


def latest_ids(instance: DagsterInstance, asset: str) -> dict[str, int]:
    """The storage id (monotonic) of each class's latest materialization of `asset`."""
    return instance.event_log_storage.get_latest_storage_id_by_partition(
        AssetKey(asset), DagsterEventType.ASSET_MATERIALIZATION
    )


def fresh_for(
    instance: DagsterInstance, classes: list[str], after: str | None = None, assets: list[str] = EVERY_ASSET
) -> bool:
    """Each of `assets` materialized for every class; with `after`, the ones downstream of the embedding
    materialized again after that class's embedding."""
    ids = {asset: latest_ids(instance, asset) for asset in {*assets, "mobilenet_features"}}
    if not all(set(classes) <= set(ids[asset]) for asset in assets):
        return False
    if after is None:
        return True
    embedded = ids["mobilenet_features"][after]
    refreshed = [asset for asset in assets if asset not in EVERY_ASSET[:2]]
    return all(ids[asset][label] > embedded for asset in refreshed for label in classes)
