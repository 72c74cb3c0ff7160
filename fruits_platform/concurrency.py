"""The outputs' pool: every asset step runs in the Dagster pool `fruits_outputs`, so that with a limit of one
no two runs (the sensor's, the automation's, a backfill, the command) write, or read while another writes,
the same outputs at once. The limit lives in the Dagster instance (deploy/dagster.yaml: `default_limit: 1`)."""

from __future__ import annotations

import fcntl
import os
import socket
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from dagster import DagsterInstance
from sqlalchemy.exc import SQLAlchemyError

OUTPUTS_POOL = "fruits_outputs"
SETUP_LOCK = ".fruits-platform.lock"
# Tags of the runs the command executes in its own process (no daemon watches those).
HOST_TAG, PID_TAG = "fruits/host", "fruits/pid"


def pool_limit(instance: DagsterInstance) -> int | None:
    """The pool's limit on this instance (its own, else the instance's default), None when unlimited."""
    storage = instance.event_log_storage
    if not storage.supports_global_concurrency_limits:
        return None
    limits = {pool.name: pool.limit for pool in storage.get_pool_limits()}
    return limits.get(OUTPUTS_POOL, instance.get_concurrency_config().pool_config.default_pool_limit)


def unlimited(instance: DagsterInstance) -> bool:
    """Whether this instance could limit the pool but does not (an ephemeral one, e.g. an EMR step's, cannot)."""
    return instance.event_log_storage.supports_global_concurrency_limits and pool_limit(instance) is None


def _pool_row(instance: DagsterInstance) -> bool:
    return OUTPUTS_POOL in {pool.name for pool in instance.event_log_storage.get_pool_limits()}


def limit_outputs_pool(instance: DagsterInstance) -> bool:
    """Create the pool's limit before any run needs it: one slot when the instance sets no limit (so that no
    setting is needed for two runs never to write the same outputs at once), else the instance's default.
    Runs that start together would otherwise each create it at their first step, and on PostgreSQL the loser's
    transaction aborts and fails its run (Dagster inserts, then updates in the same transaction). Returns
    whether it set one slot."""
    storage = instance.event_log_storage
    if not storage.supports_global_concurrency_limits or _pool_row(instance):
        return False
    try:
        if unlimited(instance):
            storage.set_concurrency_slots(OUTPUTS_POOL, 1)
            return True
        storage.initialize_concurrency_limit_to_default(OUTPUTS_POOL)
    except SQLAlchemyError:
        # Another process created it at the same moment: theirs is as good as ours.
        if not _pool_row(instance):
            raise
    return False


LIMITED = f"the Dagster pool {OUTPUTS_POOL!r} had no limit on this instance: set to 1 (one writing step at a time)"


def process_tags() -> dict[str, str]:
    """Tags naming this process, for a run it executes itself."""
    return {HOST_TAG: socket.gethostname(), PID_TAG: str(os.getpid())}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def release_dead_runs(instance: DagsterInstance) -> list[str]:
    """Fail the runs of this host's dead command processes that still hold a slot of the pool, and free their
    slots: a killed command would otherwise block every later step of the pool for ever (the daemon's run
    monitoring does this for the runs it launched). Returns their run ids."""
    storage = instance.event_log_storage
    if not storage.supports_global_concurrency_limits:
        return []
    released = []
    for run_id in sorted(storage.get_concurrency_info(OUTPUTS_POOL).active_run_ids):
        run = instance.get_run_by_id(run_id)
        if run is None or run.tags.get(HOST_TAG) != socket.gethostname() or PID_TAG not in run.tags:
            continue
        if run.is_finished or not _alive(int(run.tags[PID_TAG])):
            if not run.is_finished:
                instance.report_run_failed(run, "the fruits-platform process running it is gone")
            storage.free_concurrency_slots_for_run(run_id)
            released.append(run_id)
    return released


@contextmanager
def setup_lock(home: str | os.PathLike) -> Iterator[None]:
    """Hold an exclusive lock on `home` (a DAGSTER_HOME) while a command creates or opens its instance and
    registers classes: Dagster's SQLite storages are created and stamped by whoever opens them first, and two
    processes doing it at once leave two alembic heads (every later command then fails). Says, in one line on
    stderr, when it waits for another command. The lock is released when the process ends, however it ends."""
    path = Path(home) / SETUP_LOCK
    with open(path, "a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"waiting for another fruits-platform command to set up {home}", file=sys.stderr, flush=True)
            fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
