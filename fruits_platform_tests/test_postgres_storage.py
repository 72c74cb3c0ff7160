"""The production instance's storage keeps its PostgreSQL connections open between calls (the stock
dagster-postgres storage opens and authenticates a new one for every call)."""

from __future__ import annotations

import psycopg2
import pytest
import yaml
from dagster import DagsterInstance

from fruits_platform.postgres_storage import PooledPostgresStorage
from fruits_platform_tests.postgres import create_database, postgres_for_tests, production_home, restart_postgres


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


def test_the_kept_connections_survive_a_restart_of_the_server(server, tmp_path, monkeypatch):
    """The server ends every session as it restarts: the first call of each storage after it gets a new
    connection instead of failing on the one it kept (it did, once in every process: a run's event write too)."""
    env = {**server, "DAGSTER_PG_DB": "restarted"}
    create_database(env)
    home = production_home(tmp_path / "home")
    for name, value in {**env, "DAGSTER_HOME": str(home)}.items():
        monkeypatch.setenv(name, value)
    with DagsterInstance.from_config(str(home)) as instance:
        instance.add_dynamic_partitions("fruit_classes", ["before"])
        before = backends(env)
        assert before  # the run, event log and schedule storages' kept connections
        restart_postgres(env)
        assert instance.get_runs() == []  # run storage
        instance.add_dynamic_partitions("fruit_classes", ["after"])  # event log storage
        assert instance.get_dynamic_partitions("fruit_classes") == ["before", "after"]
        assert instance.all_instigator_state() == []  # schedule storage
        assert backends(env).isdisjoint(before)
