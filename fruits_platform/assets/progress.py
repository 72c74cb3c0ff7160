"""Progress of a long Spark job in the run's log: done / total and the rate, every few seconds."""

from __future__ import annotations

import threading
import time
from contextlib import contextmanager


@contextmanager
def progress_logger(log, total: int, counter, label: str = "images", every_seconds: float = 10.0):
    """Log `done / total` and the rate every few seconds while the block runs (counter: a Spark accumulator)."""
    stop = threading.Event()
    started = time.perf_counter()

    def report():
        while not stop.wait(every_seconds):
            done, elapsed = counter.value, time.perf_counter() - started
            log.info(f"{label}: {done}/{total} done, {done / elapsed:.1f} {label}/s")

    thread = threading.Thread(target=report, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
        elapsed = time.perf_counter() - started
        rate = counter.value / elapsed if elapsed > 0 else 0.0
        log.info(f"{label}: {counter.value}/{total} done in {elapsed:.1f}s, {rate:.1f} {label}/s")
