"""What the benchmarks share: where things are, the RSS of a process tree, Fruits-360 layouts of hard links,
a measured phase run in a child process, and typed results that read and write the benchmarks' JSON."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
import typing
from dataclasses import dataclass, fields, is_dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_WEIGHTS = REPO.parent / "shared" / "models" / "mobilenet_v2_1.0_224_imagenet_qat_no_top.weights.h5"
BATCH = 64
# The script whose `--child PHASE ARGS_FILE` runs one measured phase (bench.py's phases).
CHILD_SCRIPT = REPO / "benchmarks" / "bench.py"


# --------------------------------------------------------------------------- process-tree RSS


# Processes younger than this are not counted: the Spark JVM starts a short-lived helper for every file it
# creates on a local disk (Hadoop sets permissions with `chmod` through jspawnhelper); until it executes,
# such a child shares the JVM's memory and /proc shows it with the JVM's whole RSS, which summed with the
# JVM's own would count 1-3 GB twice for a few milliseconds (seen as isolated spikes in 0.25 s samples).
MIN_PROCESS_AGE_SECONDS = 0.5


def _tree_rss_bytes(root: int) -> int:
    """Sum of VmRSS of `root` and all its descendants (from /proc), except processes younger than
    MIN_PROCESS_AGE_SECONDS."""
    parents: dict[int, int] = {}
    young: set[int] = set()
    with open("/proc/uptime") as handle:
        uptime = float(handle.read().split()[0])
    ticks = os.sysconf("SC_CLK_TCK")
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as handle:
                stat = handle.read()
            fields = stat[stat.rindex(b")") + 2 :].split()
            parents[int(entry)] = int(fields[1])
            if uptime - int(fields[19]) / ticks < MIN_PROCESS_AGE_SECONDS:  # field 22 of stat: start time
                young.add(int(entry))
        except (OSError, ValueError, IndexError):
            continue
    children: dict[int, list[int]] = {}
    for pid, ppid in parents.items():
        children.setdefault(ppid, []).append(pid)
    total, stack, page = 0, [root], os.sysconf("SC_PAGE_SIZE")
    while stack:
        pid = stack.pop()
        stack.extend(children.get(pid, []))
        if pid in young and pid != root:
            continue
        try:
            with open(f"/proc/{pid}/statm") as handle:
                total += int(handle.read().split()[1]) * page
        except (OSError, ValueError, IndexError):
            pass
    return total


class RssSampler:
    """Samples the process tree's RSS in a thread; `peak()` since the last `reset()`."""

    def __init__(self, root: int | None = None, interval: float = 0.25):
        self.root, self.interval = root or os.getpid(), interval
        self._peak, self._stop = 0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        while not self._stop.wait(self.interval):
            self._peak = max(self._peak, _tree_rss_bytes(self.root))

    def reset(self):
        self._peak = _tree_rss_bytes(self.root)

    def peak_mb(self) -> float:
        self._peak = max(self._peak, _tree_rss_bytes(self.root))
        return round(self._peak / 2**20, 1)

    def stop(self):
        self._stop.set()


# --------------------------------------------------------------------------- Fruits-360 layouts


def step_seconds(instance, run_ids: list[str] | None = None) -> dict[str, float]:
    """Each step's seconds in these runs (default: every run of the instance), first STEP_START to last
    STEP_SUCCESS (retries included), in the order they started."""
    from dagster import DagsterEventType

    starts, ends = {}, {}
    kinds = {DagsterEventType.STEP_START, DagsterEventType.STEP_SUCCESS}
    for run_id in run_ids if run_ids is not None else [run.run_id for run in instance.get_runs(ascending=True)]:
        for entry in instance.all_logs(run_id, of_type=kinds):
            if entry.dagster_event_type == DagsterEventType.STEP_START:
                starts.setdefault(entry.step_key, entry.timestamp)
            else:
                ends[entry.step_key] = entry.timestamp
    ordered = sorted(starts, key=starts.get)
    return {key: round(ends[key] - starts[key], 2) for key in ordered if key in ends}


def files_of(root: Path, label: str, split: str) -> list[Path]:
    folder = root / split / label
    return sorted(folder.iterdir()) if folder.is_dir() else []


def link_layout(source: Path, target: Path, plan: dict[str, dict[str, int | None]]) -> Path:
    """A Fruits-360 layout of hard links: {label: {split: how many files (None = all)}}."""
    for label, splits in plan.items():
        for split, count in splits.items():
            folder = target / split / label
            folder.mkdir(parents=True, exist_ok=True)
            for file in files_of(source, label, split)[:count]:
                os.link(file, folder / file.name)
    return target


# --------------------------------------------------------------------------- a phase in a child process


def run_child(name: str, phase: str, args: dict, work: Path, log) -> dict:
    """Run `phase` of CHILD_SCRIPT in a child process (its own peak RSS and TensorFlow threads) with `args`;
    its result as JSON. A result left by an earlier attempt (bench.py --resume) is reused."""
    if (work / f"{name}.result.json").is_file():  # --resume: this phase completed in the earlier attempt
        log(f"{name}: reusing the result of the earlier attempt")
        return json.loads((work / f"{name}.result.json").read_text())
    shutil.rmtree(work / name, ignore_errors=True)
    args = {**args, "result_file": str(work / f"{name}.result.json"), "work": str(work / name)}
    args_file = work / f"{name}.args.json"
    args_file.write_text(json.dumps(args))
    log(f"[{time.strftime('%H:%M:%S')}] {name} ...")
    started = time.perf_counter()
    with open(work / f"{name}.log", "w") as child_log:
        code = subprocess.call(
            [sys.executable, str(CHILD_SCRIPT), "--child", phase, str(args_file)],
            stdout=child_log,
            stderr=subprocess.STDOUT,
        )
    if code != 0:
        tail = (work / f"{name}.log").read_text()[-3000:]
        raise SystemExit(f"phase {name} failed (exit {code}); end of its log:\n{tail}")
    result = json.loads(Path(args["result_file"]).read_text())
    log(f"[{time.strftime('%H:%M:%S')}] {name} done in {time.perf_counter() - started:.0f}s")
    return result


# --------------------------------------------------------------------------- typed results


# A field's metadata, `field(default=None, metadata=OPTIONAL)`: written to the JSON only when it has a value
# (a key the result has only in some runs).
OPTIONAL = {"optional": True}


@dataclass
class Record:
    """A typed result that is written as, and read from, the JSON object of the same keys in the same order."""

    def to_json(self) -> dict:
        out = {}
        for item in fields(self):
            value = getattr(self, item.name)
            if value is None and item.metadata.get("optional"):
                continue
            out[item.name] = _to_json(value)
        return out

    @classmethod
    def from_json(cls, data: dict):
        hints = typing.get_type_hints(cls)
        known = {item.name for item in fields(cls)}
        return cls(**{name: _from_json(hints[name], value) for name, value in data.items() if name in known})


def _to_json(value):
    if is_dataclass(value):
        return value.to_json()
    if isinstance(value, dict):
        return {key: _to_json(item) for key, item in value.items()}
    return value


def _from_json(hint, value):
    """`value` as `hint` says: a Record (or `Record | None`), a dict of Records, else as it is."""
    if value is None:
        return None
    if typing.get_origin(hint) is dict:
        item_hint = typing.get_args(hint)[1]
        return {key: _from_json(item_hint, item) for key, item in value.items()}
    options = [hint, *typing.get_args(hint)]  # `X | None`: X
    record = next((o for o in options if isinstance(o, type) and issubclass(o, Record)), None)
    return value if record is None else record.from_json(value)
