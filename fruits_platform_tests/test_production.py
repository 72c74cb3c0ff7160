"""The production instance (deploy/dagster.yaml) on a real PostgreSQL: runs that overlap never write at once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path

import pyarrow.dataset as ds
import pytest
from dagster import DagsterEventType, DagsterInstance, DagsterRunStatus, RunsFilter
from dagster._core.execution.backfill import BULK_ACTION_TERMINAL_STATUSES, BulkActionStatus
from dagster_postgres import PostgresEventLogStorage, PostgresRunStorage

from fruits_platform.concurrency import (
    LIMITED,
    OUTPUTS_POOL,
    PID_TAG,
    limit_outputs_pool,
    pool_limit,
    process_tags,
    release_dead_runs,
)
from fruits_platform.partitions import RANGE_END, RANGE_START, fruit_classes
from fruits_platform.resources.storage import FruitsStorage
from fruits_platform_tests.dagster_dev import EVERY_ASSET, DagsterDev, fresh_for, running_production
from fruits_platform_tests.helpers import SAMPLE_CLASSES, copy_classes
from fruits_platform_tests.postgres import create_database, postgres_for_tests, production_home, restart_postgres

CLI = [sys.executable, "-m", "fruits_platform.cli"]
PER_CLASS_ASSETS = ["raw_images", "mobilenet_features", "scaled_features", "pca_features"]
STEP_EVENTS = {DagsterEventType.STEP_START, DagsterEventType.STEP_SUCCESS, DagsterEventType.STEP_FAILURE}


@pytest.fixture(scope="module")
def postgres_server():
    with postgres_for_tests() as env:
        yield env


@pytest.fixture
def production(postgres_server, tmp_path, monkeypatch):
    """A DAGSTER_HOME with deploy/dagster.yaml and its own database; the instance it opens."""
    env = {**postgres_server, "DAGSTER_PG_DB": f"dagster_{uuid.uuid4().hex[:8]}"}
    create_database(env)
    home = production_home(tmp_path / "dagster_home")
    for name, value in {**env, "DAGSTER_HOME": str(home)}.items():
        monkeypatch.setenv(name, value)
    with DagsterInstance.from_config(str(home)) as instance:
        yield instance


def step_windows(instance: DagsterInstance, run_id: str) -> list[tuple[str, float, float]]:
    """(step, start, end) of each step of the run, from its events in PostgreSQL."""
    started, windows = {}, []
    for entry in instance.all_logs(run_id, of_type=STEP_EVENTS):
        if entry.dagster_event.event_type == DagsterEventType.STEP_START:
            started[entry.step_key] = entry.timestamp
        else:
            windows.append((entry.step_key, started.pop(entry.step_key), entry.timestamp))
    return windows


def assert_every_image_once(out: Path, assets: list[str], images: int) -> None:
    """Each of `assets`' outputs holds one row per image (`images` of them): nothing lost or written twice;
    no staged or trashed file left behind."""
    for asset in assets:
        table = ds.dataset(str(out / asset)).to_table()
        assert table.num_rows == images and len(set(table.column("uri").to_pylist())) == images, asset
    assert not [p for p in out.glob("*/_*/**/*.parquet")], "a staged or trashed file was left behind"


def services_env(data: Path, out: Path) -> dict[str, str]:
    """The services' settings: the sample's classes, random weights, sensors and automation on."""
    return {
        "FRUITS_DATA_ROOT": str(data),
        "FRUITS_OUTPUT_ROOT": str(out),
        "FRUITS_WEIGHTS": "random:0",
        "FRUITS_AUTOMATION": "1",
        "FRUITS_DEPLOYMENT": "local",
    }


def test_production_instance_is_postgres_with_a_limited_outputs_pool(production):
    assert isinstance(production.run_storage, PostgresRunStorage)
    assert isinstance(production.event_log_storage, PostgresEventLogStorage)
    assert pool_limit(production) == 1
    assert production.get_concurrency_config().run_queue_config.max_concurrent_runs == 4


def test_commands_starting_together_create_the_pool_once(production):
    """Dagster creates a pool's row at the first step that needs it; two runs starting together on PostgreSQL
    race there and the loser fails. The command creates it first, and tolerates another process doing so too."""
    home = os.environ["DAGSTER_HOME"]
    instances = [DagsterInstance.from_config(home) for _ in range(4)]
    start = threading.Barrier(len(instances))

    def limit(instance):
        start.wait()
        limit_outputs_pool(instance)

    try:
        with ThreadPoolExecutor(len(instances)) as pool:
            list(pool.map(limit, instances))
    finally:
        for instance in instances:
            instance.dispose()
    [pool] = [pool for pool in production.event_log_storage.get_pool_limits() if pool.name == OUTPUTS_POOL]
    assert pool.limit == 1


def test_two_overlapping_materializations_never_write_at_once(production, tmp_path):
    classes = SAMPLE_CLASSES[:2]
    data = copy_classes(tmp_path / "data", classes, per_split=4)
    out = tmp_path / "out"
    args = ["materialize", "--data-root", str(data), "--output-root", str(out), "--weights", "random:0"]
    # Both processes register the classes, then run the same assets of the same classes at the same time.
    processes = [
        subprocess.Popen(CLI + args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=os.environ)
        for _ in range(2)
    ]
    outputs = [process.communicate(timeout=900) for process in processes]
    for process, (stdout, stderr) in zip(processes, outputs):
        assert process.returncode == 0, stderr[-3000:]

    runs = production.get_runs(RunsFilter(statuses=None))
    assert len(runs) >= 2 and all(run.is_success for run in runs)
    windows = [(run.run_id, *window) for run in runs for window in step_windows(production, run.run_id)]
    assert len({window[0] for window in windows}) >= 2
    for run_a, step_a, start_a, end_a in windows:
        for run_b, step_b, start_b, end_b in windows:
            if run_a < run_b:
                assert end_a <= start_b or end_b <= start_a, f"{step_a} of {run_a} overlapped {step_b} of {run_b}"

    # Nothing lost or mixed: one row per image in every per-class output, the one model's features.
    assert_every_image_once(out, PER_CLASS_ASSETS, images=sum(1 for _ in data.glob("*/*/*")))
    assert production.event_log_storage.get_concurrency_info(OUTPUTS_POOL).claimed_slots == []


def test_daemon_registers_embeds_refits_and_refreshes_a_new_class(production, tmp_path, monkeypatch):
    """The code server, webserver and daemon on the production instance, sensors on: classes dropped
    into the data root become fresh assets with no human action; then a new class refreshes every class."""
    first, new = SAMPLE_CLASSES[:2], SAMPLE_CLASSES[2]
    data = copy_classes(tmp_path / "data", first, per_split=3)
    env = services_env(data, tmp_path / "out")
    home = Path(os.environ["DAGSTER_HOME"])
    with running_production(home, env) as server:
        locations = server.graphql("{ workspaceOrError { ... on Workspace { locationEntries { name } } } }")
        assert [entry["name"] for entry in locations["workspaceOrError"]["locationEntries"]] == ["fruits_platform"]
        server.wait_until(lambda: fresh_for(production, first), timeout=420, interval=5, what="the first classes")
        copy_classes(data, [new], per_split=3)
        every = [*first, new]
        server.wait_until(
            lambda: fresh_for(production, every, after=new), timeout=420, interval=5, what="the new class everywhere"
        )
    runs = production.get_runs()
    assert runs and all(run.is_success for run in runs), [(run.job_name, run.status) for run in runs]
    assert production.get_dynamic_partitions(fruit_classes.name) == every
    # The first tick found both classes: one run over them, not one per class.
    embedding = [
        run.tags.get(RANGE_START, run.tags.get("dagster/partition")) for run in runs if run.job_name == "embed_classes"
    ]
    assert first[0] in embedding and first[1] not in embedding


def test_an_instance_without_the_pool_limit_gets_one_said_once_and_no_warning(instance, tmp_path, capsys):
    """`dagster dev`'s own instance sets no limit: the first run or sensor tick sets it, in one info line."""
    from dagster import build_init_resource_context

    storage = FruitsStorage(data_root=str(tmp_path), output_root=str(tmp_path / "out"))
    assert pool_limit(instance) is None
    storage.setup_for_execution(build_init_resource_context(instance=instance))
    assert pool_limit(instance) == 1
    logged = capsys.readouterr().err
    assert LIMITED in logged and "WARNING" not in logged.upper()
    storage.setup_for_execution(build_init_resource_context(instance=instance))  # already limited: silent
    assert LIMITED not in capsys.readouterr().err
    assert not limit_outputs_pool(instance)  # what `fruits-platform materialize` does for its DAGSTER_HOME


def test_a_killed_command_does_not_hold_the_pool_for_ever(instance):
    """A command SIGKILLed inside a step keeps its slot (no daemon watches its run): the next command frees it."""
    from dagster import DagsterRunStatus
    from dagster._core.test_utils import create_run_for_test

    gone = subprocess.Popen(["true"])
    gone.wait()
    instance.event_log_storage.set_concurrency_slots(OUTPUTS_POOL, 2)  # both runs hold one
    runs = {}
    for name, pid in {"dead": gone.pid, "alive": os.getpid()}.items():
        tags = {**process_tags(), PID_TAG: str(pid)}
        runs[name] = create_run_for_test(instance, status=DagsterRunStatus.STARTED, tags=tags).run_id
        instance.event_log_storage.claim_concurrency_slot(OUTPUTS_POOL, runs[name], "raw_images")
    assert release_dead_runs(instance) == [runs["dead"]]
    assert instance.event_log_storage.get_concurrency_info(OUTPUTS_POOL).active_run_ids == {runs["alive"]}
    assert instance.get_run_by_id(runs["dead"]).status == DagsterRunStatus.FAILURE
    assert instance.get_run_by_id(runs["alive"]).status == DagsterRunStatus.STARTED


def group_members(pgid: int) -> list[int]:
    """The processes of a process group still running (zombies are gone already)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            state, _parent, group = stat.read_text().rsplit(")", 1)[1].split()[:3]
        except (OSError, IndexError):
            continue
        if state != "Z" and int(group) == pgid:
            found.append(int(stat.parent.name))
    return found


def test_each_service_stops_within_10_s_of_sigterm_even_during_a_run(production, tmp_path):
    """A container runtime or systemd sends SIGTERM, then kills after ~10 s. The code server, while a run it
    launched embeds images: the run is terminated (canceled, its pool slot freed) and the server exits 0 with
    everything it started; then the webserver and the daemon."""
    data = copy_classes(tmp_path / "data", SAMPLE_CLASSES)
    env = services_env(data, tmp_path / "out")

    def embedding():
        """A run past its model's load (an import of TensorFlow in progress defers any signal until it ends)."""
        for run in production.get_runs(RunsFilter(statuses=[DagsterRunStatus.STARTED])):
            if any("embedded before" in entry.user_message for entry in production.all_logs(run.run_id)):
                return run
        return None

    with running_production(Path(os.environ["DAGSTER_HOME"]), env) as server:
        run = server.wait_until(embedding, timeout=420, interval=0.5, what="a run embedding images")
        for name, process in zip(["code server", "webserver", "daemon"], server.processes):
            started = time.monotonic()
            process.send_signal(signal.SIGTERM)  # to the process alone, as `docker stop` does
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pytest.fail(f"the {name} still runs 10 s after SIGTERM:\n{server.log_tail()}")
            assert process.returncode == 0, f"the {name} exited {process.returncode}:\n{server.log_tail()}"
            while group_members(process.pid) and time.monotonic() < started + 10:
                time.sleep(0.2)
            assert not group_members(process.pid), f"the {name} left processes behind: {group_members(process.pid)}"
    assert production.get_run_by_id(run.run_id).status == DagsterRunStatus.CANCELED
    assert production.event_log_storage.get_concurrency_info(OUTPUTS_POOL).claimed_slots == []


LOCATION_QUERY = """{ workspaceOrError { ... on Workspace { locationEntries {
    name updatedTimestamp locationOrLoadError { __typename } } } } }"""


def loaded_location(server: DagsterDev) -> dict | None:
    """The webserver's entry of the code location, once it has loaded it (else None)."""
    [entry] = server.graphql(LOCATION_QUERY)["workspaceOrError"]["locationEntries"]
    return entry if entry["locationOrLoadError"]["__typename"] == "RepositoryLocation" else None


def test_the_webserver_and_the_daemon_reconnect_to_a_restarted_code_server(production, tmp_path):
    """A deploy restarts the code server while the webserver and the daemon keep running: they reconnect by
    themselves. The daemon's sensor, evaluated by the new code server, registers a class dropped in after the
    restart, and the webserver reloads the code location from the new server."""
    first, new = SAMPLE_CLASSES[:1], SAMPLE_CLASSES[1]
    data = copy_classes(tmp_path / "data", first, per_split=1)
    env = {
        "FRUITS_DATA_ROOT": str(data),
        "FRUITS_OUTPUT_ROOT": str(tmp_path / "out"),
        "FRUITS_WEIGHTS": "random:0",
        "FRUITS_AUTOMATION": "0",  # the sensor registers classes and requests no run: a short test
        "FRUITS_SENSOR_INTERVAL_SECONDS": "5",
        "FRUITS_DEPLOYMENT": "local",
    }

    def registered(classes):
        return lambda: production.get_dynamic_partitions(fruit_classes.name) == classes

    with running_production(Path(os.environ["DAGSTER_HOME"]), env) as server:
        location = partial(loaded_location, server)
        server.wait_until(registered(first), timeout=180, interval=1, what="the first class registered")
        loaded = server.wait_until(location, timeout=60, what="the code location in the webserver")
        server.restart(0)
        copy_classes(data, [new], per_split=1)
        server.wait_until(registered([*first, new]), timeout=120, interval=1, what="the sensor, by the new server")
        server.wait_until(
            lambda: (entry := location()) and entry["updatedTimestamp"] > loaded["updatedTimestamp"],
            timeout=60,
            what="the webserver's reload from the new server",
        )


LAUNCH_BACKFILL = """mutation ($params: LaunchBackfillParams!) { launchPartitionBackfill(backfillParams: $params) {
    __typename ... on LaunchBackfillSuccess { backfillId } ... on Error { message } } }"""


def test_a_backfill_survives_its_daemon_killed_before_and_after_it_launches_runs(production, tmp_path):
    """The daemon SIGKILLed (a crash, the OOM killer) with a backfill requested as the UI does, before it launched
    any run, then again the moment its first run appears (it was then between the two runs it creates); each time
    a new daemon takes over. The backfill completes, each of its runs launched once, every image written once."""
    classes, wanted = SAMPLE_CLASSES[:4], [SAMPLE_CLASSES[0], SAMPLE_CLASSES[1], SAMPLE_CLASSES[3]]
    data = copy_classes(tmp_path / "data", classes, per_split=2)
    out = tmp_path / "out"
    env = {**services_env(data, out), "FRUITS_AUTOMATION": "0"}  # no run but the backfill's
    production.add_dynamic_partitions(fruit_classes.name, classes)
    embedding = [{"path": [asset]} for asset in PER_CLASS_ASSETS[:2]]
    params = {"assetSelection": embedding, "partitionNames": wanted, "fromFailure": False, "tags": []}
    daemon = 2
    with running_production(Path(os.environ["DAGSTER_HOME"]), env) as server:
        server.wait_until(partial(loaded_location, server), timeout=60, what="the code location in the webserver")
        launched = server.graphql(LAUNCH_BACKFILL, {"params": params})["launchPartitionBackfill"]
        assert launched["__typename"] == "LaunchBackfillSuccess", launched
        backfill_id = launched["backfillId"]

        def runs():
            return production.get_runs(RunsFilter.for_backfill(backfill_id))

        def ended():
            backfill = production.get_backfill(backfill_id)
            return backfill if backfill.status in BULK_ACTION_TERMINAL_STATUSES else None

        assert not runs()  # the daemon looks for backfills every 30 s: it has not launched any run yet
        server.restart(daemon, kill=True)
        server.wait_until(runs, timeout=120, interval=0.1, what="the backfill's first run")
        server.restart(daemon, kill=True)
        backfill = server.wait_until(ended, timeout=300, interval=1, what="the backfill's end")
        assert backfill.status == BulkActionStatus.COMPLETED_SUCCESS, server.log_tail()
    # The single-run policy: one run per range of consecutive classes, [0, 1] and [3].
    ranges = sorted((run.tags[RANGE_START], run.tags[RANGE_END]) for run in runs())
    assert ranges == [(wanted[0], wanted[1]), (wanted[2], wanted[2])]
    assert all(run.is_success for run in runs())
    assert_every_image_once(
        out, PER_CLASS_ASSETS[:2], images=sum(1 for name in wanted for _ in data.glob(f"*/{name}/*"))
    )


def test_a_run_recording_its_events_goes_on_through_a_restart_of_postgresql(postgres_server, production, tmp_path):
    """PostgreSQL restarted (an upgrade, a failover, a reboot) while a `fruits-platform materialize` run records
    its events: every process's kept connections are gone, and each is replaced at its next use. The run goes on
    and succeeds (had the restart ended a write in flight: the command fails in one line and the same command
    succeeds); the instance, open across the restart, still answers."""
    data = copy_classes(tmp_path / "data", SAMPLE_CLASSES[:2], per_split=2)
    out = tmp_path / "out"
    args = ["materialize", "--data-root", str(data), "--output-root", str(out), "--weights", "random:0"]

    def materialize() -> tuple[int, str]:
        done = subprocess.run(CLI + args, check=False, capture_output=True, text=True, timeout=300)  # no hang
        return done.returncode, done.stderr

    def recording() -> str | None:
        """The command's run, once past the start of its first step (it records events as it goes)."""
        for run in production.get_runs(RunsFilter(statuses=[DagsterRunStatus.STARTED])):
            if production.all_logs(run.run_id, of_type=DagsterEventType.STEP_START):
                return run.run_id
        return None

    with ThreadPoolExecutor(1) as pool:
        first = pool.submit(materialize)
        deadline = time.monotonic() + 180
        while not (run_id := recording()):
            assert not first.done() and time.monotonic() < deadline, "no run started its first step"
            time.sleep(0.2)
        restarted = time.time()
        restart_postgres(postgres_server)
        returncode, stderr = first.result()
    if returncode:
        assert stderr.startswith("error: ") and len(stderr.strip().splitlines()) == 1, stderr[-3000:]
        returncode, stderr = materialize()
    assert returncode == 0, stderr[-3000:]

    # This process's instance, open across the restart, answers too: its connections were replaced as well.
    runs = production.get_runs()
    assert runs[0].is_success and runs[-1].run_id == run_id, [(run.run_id, run.status) for run in runs]
    if len(runs) == 1:  # the run went on through the restart: what it recorded after it is all there
        materialized = production.all_logs(run_id, of_type=DagsterEventType.ASSET_MATERIALIZATION)
        after = {entry.dagster_event.asset_key.path[-1] for entry in materialized if entry.timestamp > restarted}
        assert after == set(EVERY_ASSET)
    assert_every_image_once(out, PER_CLASS_ASSETS, images=sum(1 for _ in data.glob("*/*/*")))
    assert production.event_log_storage.get_concurrency_info(OUTPUTS_POOL).claimed_slots == []
