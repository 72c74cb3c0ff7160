"""The production instance's storage (deploy/dagster.yaml, `storage: custom:`): dagster-postgres's, with its
connections kept open between calls. As shipped, every storage call of a run, the daemon or a command opens a new
TCP connection and authenticates; only `dagster-webserver` keeps one open (`optimize_for_webserver`). The
same call here makes every process of the deployment do so (benchmarks/event_log.py)."""

from __future__ import annotations

from dagster_postgres import PostgresEventLogStorage, PostgresRunStorage, PostgresScheduleStorage
from dagster_postgres.storage import DagsterPostgresStorage
from dagster_postgres.utils import get_token_provider_from_config, pg_url_from_config

# A connection unused this long is reopened (PostgreSQL or a proxy may have closed it); overflow connections
# serve calls from several threads at once (the daemon's) and close when returned.
POOL_RECYCLE_SECONDS, MAX_OVERFLOW = 3600, 10
NO_STATEMENT_TIMEOUT = 0


class _Pooled:
    """A dagster-postgres storage holding one open connection, closed when its instance is disposed."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.optimize_for_webserver(NO_STATEMENT_TIMEOUT, POOL_RECYCLE_SECONDS, MAX_OVERFLOW)

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
