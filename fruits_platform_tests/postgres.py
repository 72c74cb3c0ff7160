"""A real PostgreSQL server on 127.0.0.1 for tests and benchmarks (Debian's `postgresql` package).

`running_postgres()` runs `initdb` and `pg_ctl` in a new temp folder (as the `postgres` user when we are
root: the server refuses to run as root), with a random password for the `dagster` user, and yields the
`DAGSTER_PG_*` environment that `deploy/dagster.yaml` reads. It stops the server and removes the folder on exit;
`restart_postgres(env)` restarts it meanwhile.
"""

from __future__ import annotations

import glob
import os
import secrets
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from fruits_platform_tests.dagster_dev import free_port

REPO = Path(__file__).resolve().parents[1]
PRODUCTION_INSTANCE = REPO / "deploy" / "dagster.yaml"
_RESTARTS: dict[str, Callable[[], None]] = {}  # DAGSTER_PG_PORT: the restart of that running server


def postgres_bin(name: str) -> str | None:
    """A PostgreSQL server program: on PATH, or where Debian installs it (not on PATH)."""
    found = shutil.which(name) or sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return found if isinstance(found, str) else (found[-1] if found else None)


def _as_server_user(command: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *command] if os.geteuid() == 0 else command


@contextmanager
def running_postgres(database: str = "dagster") -> Iterator[dict[str, str]]:
    """A server with the database `database`; yields its DAGSTER_PG_* environment."""
    initdb, pg_ctl = postgres_bin("initdb"), postgres_bin("pg_ctl")
    if not (initdb and pg_ctl):
        raise RuntimeError("PostgreSQL is not installed (Debian: apt-get install postgresql)")
    folder = Path(tempfile.mkdtemp(prefix="fruits-pg-"))
    data, password_file = folder / "data", folder / "password"
    password = secrets.token_hex(16)
    password_file.write_text(password)
    if os.geteuid() == 0:
        shutil.chown(folder, "postgres")
        shutil.chown(password_file, "postgres")
    port = free_port()

    def server(*args: str) -> None:
        subprocess.run(_as_server_user(list(args)), check=True, capture_output=True, text=True)

    try:
        server(initdb, "-D", str(data), "-U", "dagster", f"--pwfile={password_file}", "--auth=scram-sha-256")
        options = f"-c listen_addresses=127.0.0.1 -p {port} -c unix_socket_directories={folder} -c fsync=off"
        server(pg_ctl, "-D", str(data), "-o", options, "-l", str(folder / "server.log"), "-w", "start")
        # The same options again (pg_ctl keeps them); the log too, or the server would write to our pipe.
        _RESTARTS[str(port)] = lambda: server(
            pg_ctl, "-D", str(data), "-l", str(folder / "server.log"), "-m", "fast", "-w", "restart"
        )
        try:
            env = {
                "DAGSTER_PG_HOST": "127.0.0.1",
                "DAGSTER_PG_PORT": str(port),
                "DAGSTER_PG_USERNAME": "dagster",
                "DAGSTER_PG_PASSWORD": password,
                "DAGSTER_PG_DB": database,
            }
            create_database(env)
            yield env
        finally:
            _RESTARTS.pop(str(port), None)
            server(pg_ctl, "-D", str(data), "-m", "fast", "-w", "stop")
    except subprocess.CalledProcessError as error:
        log = folder / "server.log"
        detail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
        raise RuntimeError(f"PostgreSQL failed: {error.cmd[-3:]}: {error.stderr.strip()}\n{detail}") from error
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def restart_postgres(env: dict[str, str]) -> None:
    """Restart the server of `env` (`running_postgres()`'s) as an operator does: fast, ending every session."""
    _RESTARTS[env["DAGSTER_PG_PORT"]]()


def create_database(env: dict[str, str]) -> None:
    """Create the database DAGSTER_PG_DB of `env` on its server."""
    import psycopg2

    connection = psycopg2.connect(
        host=env["DAGSTER_PG_HOST"],
        port=env["DAGSTER_PG_PORT"],
        user=env["DAGSTER_PG_USERNAME"],
        password=env["DAGSTER_PG_PASSWORD"],
        dbname="postgres",
    )
    connection.autocommit = True
    with connection.cursor() as cursor:
        cursor.execute(f'CREATE DATABASE "{env["DAGSTER_PG_DB"]}"')
    connection.close()


def production_home(home: Path) -> Path:
    """A DAGSTER_HOME with the production instance configuration (Postgres, run queue, pools)."""
    home.mkdir(parents=True, exist_ok=True)
    shutil.copy(PRODUCTION_INSTANCE, home / "dagster.yaml")
    return home


@contextmanager
def postgres_for_tests() -> Iterator[dict[str, str]]:
    """`running_postgres()` for a test: skipped where PostgreSQL is not installed, failed in CI (it installs it)."""
    import pytest

    if not postgres_bin("initdb"):
        if os.getenv("CI"):
            pytest.fail("PostgreSQL is not installed: .ci/run installs the Debian package postgresql")
        pytest.skip("PostgreSQL is not installed (Debian: apt-get install postgresql)")
    with running_postgres() as env:
        yield env
