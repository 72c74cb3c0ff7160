"""The production instance's storage keeps its PostgreSQL connections open between calls (the stock
dagster-postgres storage opens and authenticates a new one for every call)."""

from __future__ import annotations

import psycopg2
import pytest
import yaml
from dagster import DagsterInstance

from fruits_platform.postgres_storage import PooledPostgresStorage
from fruits_platform_tests.postgres import postgres_for_tests, production_home


@pytest.fixture(scope="module")
def server():
    with postgres_for_tests() as env:
        yield env


def backends(env: dict) -> set[int]:
    """The server's other sessions on the database."""
    with (
        psycopg2.connect(
            host=env["DAGSTER_PG_HOST"],
            port=env["DAGSTER_PG_PORT"],
            user=env["DAGSTER_PG_USERNAME"],
            password=env["DAGSTER_PG_PASSWORD"],
            dbname=env["DAGSTER_PG_DB"],
        ) as connection,
        connection.cursor() as cursor,
    ):
        cursor.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
        return {pid for (pid,) in cursor.fetchall()}


def sessions_across_calls(home, env, monkeypatch) -> list[set[int]]:
    for name, value in {**env, "DAGSTER_HOME": str(home)}.items():
        monkeypatch.setenv(name, value)
    seen = []
    with DagsterInstance.from_config(str(home)) as instance:
        for index in range(5):
            instance.add_dynamic_partitions("fruit_classes", [f"class {index}"])
            instance.get_runs(limit=1)
            seen.append(backends(env))
    seen.append(backends(env))  # once the instance is disposed
    return seen


@pytest.mark.parametrize("stock", [False, True], ids=["deployed", "stock"])
def test_the_deployed_storage_reuses_its_connections(server, tmp_path, monkeypatch, stock):
    home = production_home(tmp_path / "home")
    if stock:
        config = yaml.safe_load((home / "dagster.yaml").read_text())
        config["storage"] = {"postgres": config["storage"]["custom"]["config"]}
        (home / "dagster.yaml").write_text(yaml.safe_dump(config))
    else:
        assert yaml.safe_load((home / "dagster.yaml").read_text())["storage"]["custom"]["class"] == (
            PooledPostgresStorage.__name__
        )
    seen = sessions_across_calls(home, server, monkeypatch)
    calls, disposed = seen[:-1], seen[-1]
    if stock:
        assert calls == [set()] * 5  # each call's connection closed after it
    else:
        assert calls[0] and all(pids == calls[0] for pids in calls), calls  # the same sessions serve every call
    assert disposed == set()
