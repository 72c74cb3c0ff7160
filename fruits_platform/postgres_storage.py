"""The production instance's storage (deploy/dagster.yaml, `storage: custom:`): dagster-postgres's, with its
connections kept open between calls. As shipped, every storage call of a run, the daemon or a command opens a new
TCP connection and authenticates; only `dagster-webserver` keeps one open (`optimize_for_webserver`). The
same call here makes every process of the deployment do so (benchmarks/event_log.py). A kept connection may be
closed by the server meanwhile (a restart, a failover): each is checked before use and replaced if so, or the next
call of every process, a run's event write among them, would fail on it (docs/failure-modes.md)."""

from __future__ import annotations

import psycopg2
from dagster_postgres import PostgresEventLogStorage, PostgresRunStorage, PostgresScheduleStorage
from dagster_postgres.storage import DagsterPostgresStorage
from dagster_postgres.utils import get_token_provider_from_config, pg_url_from_config
from sqlalchemy import event
from sqlalchemy.exc import DisconnectionError

# A connection unused this long is reopened (PostgreSQL or a proxy may have closed it); overflow connections
# serve calls from several threads at once (the daemon's) and close when returned.
POOL_RECYCLE_SECONDS, MAX_OVERFLOW = 3600, 10
NO_STATEMENT_TIMEOUT = 0


def _check_alive(dbapi_connection, _record, _proxy) -> None:
    """SQLAlchemy's pool calls this as it hands out a kept connection: a dead one is discarded and a new one
    opened (what `pool_pre_ping` does; Dagster's engine is built without it). If the server is down, opening fails
    and dagster-postgres retries for a few seconds (`retry_pg_connection_fn`)."""
    try:
        with dbapi_connection.cursor() as cursor:
            cursor.execute("SELECT 1")
    except psycopg2.Error as error:  # InterfaceError (closed) or OperationalError (the server ended it)
        raise DisconnectionError(str(error)) from error


class _Pooled:
    """A dagster-postgres storage holding one open connection, closed when its instance is disposed."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.optimize_for_webserver(NO_STATEMENT_TIMEOUT, POOL_RECYCLE_SECONDS, MAX_OVERFLOW)

    def optimize_for_webserver(self, statement_timeout: int, pool_recycle: int, max_overflow: int) -> None:
        """Dagster's pooled engine (the webserver calls this again with its own settings), checked at checkout."""
        super().optimize_for_webserver(statement_timeout, pool_recycle, max_overflow)
        event.listen(self._engine, "checkout", _check_alive)

    def dispose(self) -> None:
        super().dispose()
        self._engine.dispose()  # the stock storages hold no connection, so theirs closes nothing


class PooledRunStorage(_Pooled, PostgresRunStorage):
    pass


class PooledEventLogStorage(_Pooled, PostgresEventLogStorage):
    pass


class PooledScheduleStorage(_Pooled, PostgresScheduleStorage):
    pass


class PooledPostgresStorage(DagsterPostgresStorage):
    """`DagsterPostgresStorage` made of the pooled run, event log and schedule storages."""

    def __init__(self, postgres_url: str, should_autocreate_tables: bool = True, inst_data=None, token_provider=None):
        super().__init__(postgres_url, should_autocreate_tables, inst_data, token_provider)
        args = (postgres_url, should_autocreate_tables)
        self._run_storage = PooledRunStorage(*args, token_provider=token_provider)
        self._event_log_storage = PooledEventLogStorage(*args, token_provider=token_provider)
        self._schedule_storage = PooledScheduleStorage(*args, token_provider=token_provider)

    @classmethod
    def from_config_value(cls, inst_data, config_value) -> PooledPostgresStorage:
        return cls(
            pg_url_from_config(config_value),
            config_value.get("should_autocreate_tables", True),
            inst_data,
            get_token_provider_from_config(config_value),
        )
