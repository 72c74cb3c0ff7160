"""Everyday reliability: commands started together on one DAGSTER_HOME, and the long-lived processes stopping
cleanly on SIGTERM (issue #26)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import pyarrow.dataset as ds
import pytest
from dagster import DagsterInstance, DagsterRunStatus, RunsFilter
from sqlalchemy import event
from sqlalchemy.engine import Engine

from fruits_platform.concurrency import OUTPUTS_POOL, setup_lock
from fruits_platform.partitions import fruit_classes
from fruits_platform.runner import add_classes
from fruits_platform_tests.helpers import SAMPLE_CLASSES, copy_classes

CLI = [sys.executable, "-m", "fruits_platform.cli"]
PER_CLASS = ["raw_images", "mobilenet_features", "scaled_features", "pca_features"]


def start_command(data, out, home) -> subprocess.Popen:
    args = ["materialize", "--data-root", str(data), "--output-root", str(out), "--weights", "random:0"]
    env = {**os.environ, "DAGSTER_HOME": str(home)}
    return subprocess.Popen(CLI + args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def finish(processes: list[subprocess.Popen]) -> list[str]:
    """Each command's stderr, after asserting that every one exited 0."""
    outputs = [process.communicate(timeout=900) for process in processes]
    for process, (_, stderr) in zip(processes, outputs):
        assert process.returncode == 0, stderr[-3000:]
    return [stderr for _, stderr in outputs]


def assert_every_image_once(data, out) -> None:
    images = sum(1 for _ in data.glob("*/*/*"))
    for asset in PER_CLASS:
        uris = ds.dataset(str(out / asset)).to_table().column("uri").to_pylist()
        assert len(uris) == images and len(set(uris)) == images, asset


@pytest.mark.timeout(1800)  # seven commands, three at a time, on two cores
def test_three_commands_started_together_on_a_fresh_home_all_succeed(tmp_path):
    """The issue's failure: two processes creating the SQLite storages of a new home at once left two alembic
    heads, and every later command failed. Three at once, twice, each on a new home; then a fourth."""
    data = copy_classes(tmp_path / "data", SAMPLE_CLASSES[:2], per_split=3)
    for attempt in range(2):
        home, out = tmp_path / f"home{attempt}", tmp_path / f"out{attempt}"
        home.mkdir()
        stderrs = finish([start_command(data, out, home) for _ in range(3)])
        waited = [line for stderr in stderrs for line in stderr.splitlines() if line.startswith("waiting for")]
        assert all(line == f"waiting for another fruits-platform command to set up {home}" for line in waited)
        assert_every_image_once(data, out)
    finish([start_command(data, out, home)])
    assert_every_image_once(data, out)
    with DagsterInstance.from_config(str(home)) as instance:
        assert instance.get_dynamic_partitions(fruit_classes.name) == SAMPLE_CLASSES[:2]
        assert all(run.is_success for run in instance.get_runs())


def test_the_setup_lock_makes_the_second_command_wait_and_say_so(tmp_path, capsys):
    entered = threading.Event()

    def second():
        with setup_lock(tmp_path):
            entered.set()

    with setup_lock(tmp_path):
        waiter = threading.Thread(target=second)
        waiter.start()
        time.sleep(1)
        assert not entered.is_set()  # flock excludes another open file, even in this process
    waiter.join(10)
    assert entered.is_set()
    assert capsys.readouterr().err == f"waiting for another fruits-platform command to set up {tmp_path}\n"
    with setup_lock(tmp_path):  # a free lock is taken silently
        pass
    assert capsys.readouterr().err == ""


def test_a_class_registered_by_another_process_at_the_same_moment_is_not_an_error(tmp_path):
    """Without the lock (another host on the same PostgreSQL, the daemon's sensor) another process may insert
    the same classes between Dagster's check of the registered keys and its insert: the insert fails, and the
    command retries with what is still missing instead of failing. The race is forced, not hoped for: the other
    process's insert runs just before ours reaches the database."""
    (tmp_path / "home").mkdir()
    keys = [f"class {i:03d}" for i in range(5)]
    ours, theirs = (DagsterInstance.from_config(str(tmp_path / "home")) for _ in range(2))
    raced = []

    def other_process_first(conn, cursor, statement, *args):
        if statement.lstrip().upper().startswith("INSERT INTO DYNAMIC_PARTITIONS") and not raced:
            raced.append(statement)
            theirs.add_dynamic_partitions(fruit_classes.name, keys[1:4])

    event.listen(Engine, "before_cursor_execute", other_process_first)
    try:
        add_classes(ours, keys)
    finally:
        event.remove(Engine, "before_cursor_execute", other_process_first)
        ours.dispose()
        theirs.dispose()
    assert raced, "the race was not forced"
    with DagsterInstance.from_config(str(tmp_path / "home")) as instance:
        assert sorted(instance.get_dynamic_partitions(fruit_classes.name)) == keys


def embedding_run(home):
    """The run of a command past its model's load, embedding images, or None."""
    if not (home / "history" / "runs.db").exists():
        return None
    with setup_lock(home), DagsterInstance.from_config(str(home)) as instance:  # not while the command creates it
        for run in instance.get_runs(RunsFilter(statuses=[DagsterRunStatus.STARTED])):
            if any("embedded before" in entry.user_message for entry in instance.all_logs(run.run_id)):
                return run
    return None


def test_a_command_stopped_by_sigterm_ends_its_run_and_frees_its_pool_slot(tmp_path):
    """A supervisor's SIGTERM (or Ctrl-C) while the command embeds images: the command exits within 10 s with one
    line, its run is marked failed and its slot of the outputs' pool freed (not left for the next command)."""
    data = copy_classes(tmp_path / "data", SAMPLE_CLASSES)  # enough images for the embedding to take a while
    (tmp_path / "home").mkdir()
    command = start_command(data, tmp_path / "out", tmp_path / "home")
    deadline = time.monotonic() + 300
    while (run := embedding_run(tmp_path / "home")) is None:
        assert command.poll() is None and time.monotonic() < deadline, command.communicate()[1][-3000:]
        time.sleep(0.5)
    started = time.monotonic()
    command.send_signal(signal.SIGTERM)
    _, stderr = command.communicate(timeout=60)
    assert time.monotonic() - started < 10, f"the command took {time.monotonic() - started:.1f} s to stop"
    assert command.returncode == 1
    last = stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: run {run.run_id} failed at catalogue_and_embed: interrupted"), last
    with DagsterInstance.from_config(str(tmp_path / "home")) as instance:
        assert instance.get_run_by_id(run.run_id).status == DagsterRunStatus.FAILURE
        assert instance.event_log_storage.get_concurrency_info(OUTPUTS_POOL).claimed_slots == []
