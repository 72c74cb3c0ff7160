"""A step that failed on an unreachable storage: a clear Failure, retried after a pause; missing upstream data:
a Failure that no retry can mend."""

from __future__ import annotations

import re
from contextlib import contextmanager

from dagster import DagsterInvariantViolationError, Failure, OpExecutionContext, RetryRequested

from fruits_platform.sources import StorageUnreachableError
from fruits_platform.spark.datasets import MissingPartitionError

STORAGE_RETRIES, STORAGE_RETRY_DELAY = 2, 5  # seconds, doubled at each retry


@contextmanager
def storage_failures():
    """Turn a Spark job that died because the storage was unreachable into a clear, retryable Failure
    (Spark buries the worker's error deep in its own message); missing upstream data into a Failure that
    no retry can mend."""
    try:
        yield
    except MissingPartitionError as error:
        raise Failure(description=str(error), allow_retries=False) from error
    except StorageUnreachableError as error:  # the driver's own listing or read
        raise retry_later(Failure(description=f"Storage unreachable: {error}", allow_retries=True), error)
    except Exception as error:
        found = re.search(r"StorageUnreachableError: ([^\n]+)", str(error))
        if found is None:
            raise
        failure = Failure(description=f"Storage unreachable: {found.group(1)}", allow_retries=True)
        raise retry_later(failure, error)


def retry_later(failure: Failure, cause: BaseException) -> RetryRequested:
    """Dagster's request to retry the step after a pause (5 s, then 10 s), caused by `failure` (which the run's
    events and the command's error line show)."""
    failure.__cause__ = cause
    try:
        attempt = OpExecutionContext.get().retry_number
    except DagsterInvariantViolationError:  # called outside a step
        attempt = 0
    retry = RetryRequested(max_retries=STORAGE_RETRIES, seconds_to_wait=STORAGE_RETRY_DELAY * 2**attempt)
    retry.__cause__ = failure
    return retry
