"""The lines that libraries print at start-up and that ask nothing of anyone (docs/failure-modes.md), left out of
the terminal in two ways: a child's stderr read through a filter (the local Spark JVM, which also relays its
Python workers'), and this process's own stderr around a block (TensorFlow's import). Every other line passes."""

from __future__ import annotations

import contextlib
import os
import re
import sys
import tempfile
import threading
from collections.abc import Iterator
from typing import IO

NOTICES = re.compile(
    rb"WARNING: Using incubator modules: jdk\.incubator\.vector"  # the JVM: Spark 4 starts it with that module
    rb"|WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR"  # TensorFlow
    rb"|I\d{4} [\d:. ]+\d+ port\.cc:\d+\] oneDNN custom operations are on\b.*"  # TensorFlow, at import
    rb"|INFO: Created TensorFlow Lite XNNPACK delegate for CPU\."  # LiteRT, once per Python worker
)


def without_notices(text: bytes) -> bytes:
    """`text` without its lines that are notices."""
    return b"".join(line for line in text.splitlines(keepends=True) if not NOTICES.fullmatch(line.rstrip(b"\r\n")))


def forward(stream: IO[bytes], fd: int = 2) -> threading.Thread:
    """Copy `stream` (a child's stderr) to `fd` line by line, notices left out, in a daemon thread until it ends."""

    def copy() -> None:
        for line in iter(stream.readline, b""):
            if kept := without_notices(line):
                os.write(fd, kept)

    thread = threading.Thread(target=copy, name="stderr-without-notices", daemon=True)
    thread.start()
    return thread


@contextlib.contextmanager
def stderr_to(target: IO[bytes]) -> Iterator[None]:
    """This process's file descriptor 2 (where native libraries write, not only sys.stderr) sent to `target`
    for the block."""
    sys.stderr.flush()
    saved = os.dup(2)
    os.dup2(target.fileno(), 2)
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)


@contextlib.contextmanager
def quiet_stderr() -> Iterator[None]:
    """This process's stderr held for the block, then written out without its notices: lines written meanwhile
    by other threads come out late, none is lost."""
    with tempfile.TemporaryFile() as held:
        try:
            with stderr_to(held):
                yield
        finally:
            held.seek(0)
            if kept := without_notices(held.read()):
                os.write(2, kept)
