"""The UI path against the headless command, on the same data: a backfill of every asset and every class
launched through `dg dev`'s GraphQL (what *Materialize all… → Select all → Launch backfill* sends) and run
by its daemon, then `fruits-platform materialize` over the same classes in a fresh DAGSTER_HOME and output root.

    .venv/bin/python benchmarks/ui_backfill.py --data-root DIR [--weights FILE] [--out FILE.json]
        [--instance sqlite|postgres] [--event-batch-size N] [--no-headless]

Prints (and writes as JSON) the classes, the backfill's runs, the seconds from its launch to its completion, to
the end of its last run (every asset materialized) and the run's own duration, the materialization events it recorded and the seconds their writing spanned in each
step (first to last), the command's seconds, and the ratio of the two paths. `--instance postgres` runs the
backfill on the production instance (deploy/dagster.yaml) with a PostgreSQL server started for it;
`--event-batch-size` sets DAGSTER_EVENT_BATCH_SIZE (Dagster writes a step's per-partition materializations
in batches of that size; 0 = one by one).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from dagster import DagsterEventType, DagsterInstance

from fruits_platform.sources import list_classes
from fruits_platform_tests.dagster_dev import running_dagster_dev
from fruits_platform_tests.postgres import production_home, running_postgres

DEFAULT_WEIGHTS = REPO.parent / "shared" / "models" / "mobilenet_v2_1.0_224_imagenet_qat_no_top.weights.h5"
PARTITIONS = 'query { assetNodeOrError(assetKey: {path: ["raw_images"]}) { ... on AssetNode { partitionKeys } } }'
ASSETS = "query { assetNodes { assetKey { path } } }"
LAUNCH = """mutation($params: LaunchBackfillParams!) {
  launchPartitionBackfill(backfillParams: $params) {
    __typename ... on LaunchBackfillSuccess { backfillId } ... on PythonError { message }
  }
}"""
STATUS = """query($id: String!) {
  partitionBackfillOrError(backfillId: $id) { ... on PartitionBackfill { status } }
  runsOrError(filter: {tags: [{key: "dagster/backfill", value: $id}]}) {
    ... on Runs { results { runId status startTime endTime } }
  }
}"""


def event_writing(home: Path, run_ids: list[str]) -> dict:
    """The runs' materialization events, and the seconds from each step's first to its last, summed."""
    events, seconds = 0, 0.0
    with DagsterInstance.from_config(str(home)) as instance:
        for run_id in run_ids:
            by_step: dict[str, list[float]] = {}
            for entry in instance.all_logs(run_id, of_type=DagsterEventType.ASSET_MATERIALIZATION):
                by_step.setdefault(entry.step_key, []).append(entry.timestamp)
            events += sum(len(times) for times in by_step.values())
            seconds += sum(max(times) - min(times) for times in by_step.values())
    return {"materializations": events, "seconds_spanned": round(seconds, 2)}


def ui_backfill(data_root: str, weights: str, work: Path, classes: int, env: dict) -> dict:
    home = work / "ui_home"
    env = {**env, "FRUITS_DATA_ROOT": data_root, "FRUITS_OUTPUT_ROOT": str(work / "ui_out"), "FRUITS_WEIGHTS": weights}
    with running_dagster_dev(home, env, log_path=work / "dagster_dev.log") as server:
        # The sensor registers the class folders on its first tick.
        server.wait_until(
            lambda: len(server.graphql(PARTITIONS)["assetNodeOrError"]["partitionKeys"]) == classes,
            timeout=180,
            interval=2,
            what="the sensor's partitions",
        )
        assets = [{"path": node["assetKey"]["path"]} for node in server.graphql(ASSETS)["assetNodes"]]
        started, launched_at = time.perf_counter(), time.time()
        launched = server.graphql(LAUNCH, {"params": {"assetSelection": assets, "allPartitions": True}})
        backfill_id = launched["launchPartitionBackfill"].get("backfillId")
        if not backfill_id:
            raise RuntimeError(f"backfill not launched: {launched}")

        def finished():
            data = server.graphql(STATUS, {"id": backfill_id})
            return data["partitionBackfillOrError"]["status"] not in {"REQUESTED", "CANCELING"} and data

        data = server.wait_until(finished, timeout=7200, interval=2, what="the backfill")
        seconds = time.perf_counter() - started
    runs = data["runsOrError"]["results"]
    return {
        "status": data["partitionBackfillOrError"]["status"],
        "runs": len(runs),
        "seconds_launch_to_done": round(seconds, 1),
        # Every asset is materialized when the last run ends; the backfill is marked done on a later daemon tick.
        "seconds_launch_to_last_run_end": round(max(run["endTime"] or 0 for run in runs) - launched_at, 1),
        "run_seconds": [round(run["endTime"] - run["startTime"], 1) for run in runs if run["endTime"]],
        "events": event_writing(home, [run["runId"] for run in runs]),
    }


def headless(data_root: str, weights: str, work: Path) -> dict:
    (work / "cli_home").mkdir()
    command = [str(Path(sys.executable).with_name("fruits-platform")), "materialize", "--data-root", data_root]
    command += ["--output-root", str(work / "cli_out"), "--weights", weights, "--app-model"]  # as the UI's all assets
    started = time.perf_counter()
    done = subprocess.run(
        command, env={**os.environ, "DAGSTER_HOME": str(work / "cli_home")}, capture_output=True, text=True, check=False
    )
    if done.returncode:
        raise RuntimeError(f"the command failed: {done.stderr.strip()}")
    return {"seconds": round(time.perf_counter() - started, 1), "summary": done.stdout.strip().splitlines()[0]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-root", required=True)
    parser.add_argument("--weights", default=str(DEFAULT_WEIGHTS))
    parser.add_argument("--out", help="write the figures to this JSON file too")
    parser.add_argument("--instance", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--event-batch-size", type=int, default=0)
    parser.add_argument("--no-headless", action="store_true", help="measure the UI backfill only")
    args = parser.parse_args()
    classes = len(list_classes(args.data_root))
    env = {"DAGSTER_EVENT_BATCH_SIZE": str(args.event_batch_size)}
    with tempfile.TemporaryDirectory(prefix="fruits-ui-bench-") as work, ExitStack() as stack:
        if args.instance == "postgres":
            env.update(stack.enter_context(running_postgres()))
            os.environ.update(env)  # for reading the events back
            production_home(Path(work) / "ui_home")
        ui = ui_backfill(args.data_root, args.weights, Path(work), classes, env)
        cli = None if args.no_headless else headless(args.data_root, args.weights, Path(work))
    figures = {
        "data_root": args.data_root,
        "classes": classes,
        "instance": args.instance,
        "event_batch_size": args.event_batch_size,
        "ui_backfill": ui,
        "headless": cli,
        "ui_vs_headless": round(ui["seconds_launch_to_done"] / cli["seconds"], 2) if cli else None,
        "ui_last_run_end_vs_headless": round(ui["seconds_launch_to_last_run_end"] / cli["seconds"], 2) if cli else None,
    }
    print(json.dumps(figures, indent=2))
    if args.out:
        Path(args.out).write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
