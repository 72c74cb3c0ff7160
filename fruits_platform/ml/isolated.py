"""Native code that can abort (TensorFlow's converter, LiteRT's first invocations) run in a child Python process,
so that a crash there fails the caller with one line instead of ending the orchestrating process.

`python -m fruits_platform.ml.isolated FOLDER` is the child: it calls the pickled function of FOLDER/call.pkl and
pickles its result or exception to FOLDER/result.pkl.
"""

from __future__ import annotations

import os
import pickle
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

CALL, RESULT = "call.pkl", "result.pkl"


class NativeCrash(RuntimeError):
    """The child process died without an answer (a signal, or an exit before it could write one)."""


def run_isolated(description: str, function, *args):
    """`function(*args)` (an importable function, picklable arguments) in a new Python process; its exception is
    raised here, and its death by a signal raises NativeCrash naming `description`, the signal and its last line
    on stderr. What the child prints goes to this process's stderr."""
    with tempfile.TemporaryDirectory(prefix="fruits-isolated-") as folder:
        Path(folder, CALL).write_bytes(pickle.dumps((function, args)))
        # glibc writes its abort messages (e.g. "double free or corruption") to stderr only with this set.
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "LIBC_FATAL_STDERR_": "1"}
        child = subprocess.run(
            [sys.executable, "-m", __name__, folder],
            check=False,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=env,
        )
        sys.stderr.flush()
        os.write(sys.stderr.fileno(), child.stdout)
        answer = Path(folder, RESULT)
        if answer.exists():
            failed, value = pickle.loads(answer.read_bytes())
            if failed:
                raise value
            return value
    lines = [line.strip() for line in child.stdout.decode(errors="replace").splitlines() if line.strip()]
    how = signal.Signals(-child.returncode).name if child.returncode < 0 else f"exit status {child.returncode}"
    raise NativeCrash(f"{description} crashed ({how}: {lines[-1] if lines else 'nothing printed'})")


def _main(folder: str) -> None:
    function, args = pickle.loads(Path(folder, CALL).read_bytes())
    try:
        outcome = (False, function(*args))
    except Exception as error:  # noqa: BLE001 - handed to the parent, which raises it
        outcome = (True, error)
    try:
        payload = pickle.dumps(outcome)
    except Exception as error:  # noqa: BLE001 - an exception that cannot be pickled still gets its message across
        payload = pickle.dumps((True, RuntimeError(f"{type(outcome[1]).__name__}: {outcome[1]} ({error})")))
    Path(folder, RESULT).write_bytes(payload)


if __name__ == "__main__":
    _main(sys.argv[1])
