"""The outputs' pool: every asset step runs in the Dagster pool `fruits_outputs`, so that with a limit of one
no two runs (the sensor's, the automation's, a backfill, the command) write, or read while another writes,
the same outputs at once. The limit lives in the Dagster instance (deploy/dagster.yaml: `default_limit: 1`)."""

from __future__ import annotations

from dagster import DagsterInstance

OUTPUTS_POOL = "fruits_outputs"


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


def limit_outputs_pool(instance: DagsterInstance) -> None:
    """Give the pool a limit of one when the instance has none (what the command does for its instance)."""
    if unlimited(instance):
        instance.event_log_storage.set_concurrency_slots(OUTPUTS_POOL, 1)


UNLIMITED_WARNING = (
    f"the Dagster pool {OUTPUTS_POOL!r} has no limit on this instance: another run may write the same outputs at "
    f"the same time. Set it once: `dagster instance concurrency set {OUTPUTS_POOL} 1` (or deploy/dagster.yaml)."
)
