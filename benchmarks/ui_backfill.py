"""The UI path against the headless command, on the same data: a backfill of every asset and every class
launched through `dagster dev`'s GraphQL (what *Materialize all… → Select all → Launch backfill* sends) and run
by its daemon, then `fruits-platform materialize` over the same classes in a fresh DAGSTER_HOME and output root.

    .venv/bin/python benchmarks/ui_backfill.py --data-root DIR [--weights FILE] [--out FILE.json]

Prints (and writes as JSON) the classes, the backfill's runs, the seconds from its launch to its completion and
the run's own duration, the command's seconds, and the ratio of the two paths.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from fruits_platform.sources import list_classes
from fruits_platform_tests.dagster_dev import running_dagster_dev

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


def ui_backfill(data_root: str, weights: str, work: Path, classes: int) -> dict:
    env = {"FRUITS_DATA_ROOT": data_root, "FRUITS_OUTPUT_ROOT": str(work / "ui_out"), "FRUITS_WEIGHTS": weights}
    with running_dagster_dev(work / "ui_home", env, log_path=work / "dagster_dev.log") as server:
        # The sensor registers the class folders on its first tick.
        server.wait_until(
            lambda: len(server.graphql(PARTITIONS)["assetNodeOrError"]["partitionKeys"]) == classes,
            timeout=180,
            interval=2,
            what="the sensor's partitions",
        )
        assets = [{"path": node["assetKey"]["path"]} for node in server.graphql(ASSETS)["assetNodes"]]
        started = time.perf_counter()
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
        "run_seconds": [round(run["endTime"] - run["startTime"], 1) for run in runs if run["endTime"]],
    }


def headless(data_root: str, weights: str, work: Path) -> dict:
    (work / "cli_home").mkdir()
    command = [str(Path(sys.executable).with_name("fruits-platform")), "materialize", "--data-root", data_root]
    command += ["--output-root", str(work / "cli_out"), "--weights", weights]
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
    args = parser.parse_args()
    classes = len(list_classes(args.data_root))
    with tempfile.TemporaryDirectory(prefix="fruits-ui-bench-") as work:
        ui = ui_backfill(args.data_root, args.weights, Path(work), classes)
        cli = headless(args.data_root, args.weights, Path(work))
    figures = {
        "data_root": args.data_root,
        "classes": classes,
        "ui_backfill": ui,
        "headless": cli,
        "ui_vs_headless": round(ui["seconds_launch_to_done"] / cli["seconds"], 2),
    }
    print(json.dumps(figures, indent=2))
    if args.out:
        Path(args.out).write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
