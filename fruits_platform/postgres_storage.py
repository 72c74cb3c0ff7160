"""The production instance's storage (deploy/dagster.yaml, `storage: custom:`): dagster-postgres's, with its
connections kept open between calls. As shipped, every storage call of a run, the daemon or a command opens a new
TCP connection and authenticates; only `dagster-webserver` keeps one open (`optimize_for_webserver`). The
same call here makes every process of the deployment do so (benchmarks/event_log.py)."""

from __future__ import annotations

from dagster_postgres import DagsterPostgresStorage
from dagster_postgres.utils import get_token_provider_from_config, pg_url_from_config

# A connection unused this long is reopened (PostgreSQL or a proxy may have closed it); overflow connections
# serve calls from several threads at once (the daemon's) and close when returned.
POOL_RECYCLE_SECONDS, MAX_OVERFLOW = 3600, 10
NO_STATEMENT_TIMEOUT = 0


class PooledPostgresStorage(DagsterPostgresStorage):
    """`DagsterPostgresStorage` whose run, event log and schedule storages each keep a connection open."""

    def __init__(self, postgres_url: str, should_autocreate_tables: bool = True, inst_data=None, token_provider=None):
        super().__init__(postgres_url, should_autocreate_tables, inst_data, token_provider)
        for storage in (self.run_storage, self.event_log_storage, self.schedule_storage):
            storage.optimize_for_webserver(NO_STATEMENT_TIMEOUT, POOL_RECYCLE_SECONDS, MAX_OVERFLOW)

    @classmethod
    def from_config_value(cls, inst_data, config_value) -> PooledPostgresStorage:
        return cls(
            pg_url_from_config(config_value),
            config_value.get("should_autocreate_tables", True),
            inst_data,
            get_token_provider_from_config(config_value),
        )
