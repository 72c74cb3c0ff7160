"""What Dagster's event log costs per class, on SQLite (`dagster dev`'s default) and on PostgreSQL (the production
instance, deploy/dagster.yaml), with and without event batching (DAGSTER_EVENT_BATCH_SIZE).

    .venv/bin/python benchmarks/event_log.py [--classes 119] [--assets 6] [--batch-size 100]

Materializes a chain of `--assets` class-partitioned assets with the platform's partitioning and single-run
backfill policy over `--classes` partitions in one run, each step yielding one materialization with metadata
per class, as the platform's steps do, but without Spark: the time is Dagster's. Each configuration runs in its
own process (the batch size is read per process) on a fresh instance. Prints seconds per run and per
materialization event.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml
from dagster import AssetExecutionContext, BackfillPolicy, DagsterEventType, DagsterInstance, MaterializeResult, asset

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def chain(assets: int) -> list:
    from fruits_platform.partitions import fruit_classes

    def build(index: int):
        @asset(
            name=f"a{index}",
            deps=[f"a{index - 1}"] if index else [],
            partitions_def=fruit_classes,
            backfill_policy=BackfillPolicy.single_run(),
        )
        def step(context: AssetExecutionContext) -> MaterializeResult:
            for key in context.partition_keys:
                context.add_asset_metadata({"dagster/row_count": 80, "images_ok": 80}, partition_key=key)
            return MaterializeResult()

        return step

    return [build(index) for index in range(assets)]


def measure(classes: int, assets: int) -> dict:
    """One run of the chain over every class on $DAGSTER_HOME's instance (in this process)."""
    from dagster import materialize

    keys = [f"Class {index:04d}" for index in range(classes)]
    with DagsterInstance.get() as instance:
        instance.add_dynamic_partitions("fruit_classes", keys)
        tags = {"dagster/asset_partition_range_start": keys[0], "dagster/asset_partition_range_end": keys[-1]}
        started = time.perf_counter()
        result = materialize(chain(assets), instance=instance, tags=tags)
        seconds = time.perf_counter() - started
        events = len(instance.all_logs(result.run_id, of_type=DagsterEventType.ASSET_MATERIALIZATION))
    return {"seconds": round(seconds, 2), "materializations": events, "ms_per_event": round(1000 * seconds / events, 2)}


def stock_storage(home: Path) -> None:
    """The home's production instance with dagster-postgres's own storage instead of the pooled one."""
    config = yaml.safe_load((home / "dagster.yaml").read_text())
    config["storage"] = {"postgres": config["storage"]["custom"]["config"]}
    (home / "dagster.yaml").write_text(yaml.safe_dump(config))


def configuration(name: str, env: dict, classes: int, assets: int) -> dict:
    with tempfile.TemporaryDirectory(prefix="fruits-events-") as home:
        if name.startswith("postgres"):
            from fruits_platform_tests.postgres import production_home

            production_home(Path(home))
            if "as shipped" in name:
                stock_storage(Path(home))
        command = [sys.executable, __file__, "--child", "--classes", str(classes), "--assets", str(assets)]
        done = subprocess.run(
            command, env={**os.environ, **env, "DAGSTER_HOME": home}, capture_output=True, text=True, check=False
        )
    if done.returncode:
        raise RuntimeError(f"{name} failed: {done.stderr.strip()[-2000:]}")
    return {"instance": name, **json.loads(done.stdout.strip().splitlines()[-1])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--classes", type=int, default=119)
    parser.add_argument("--assets", type=int, default=6)
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.classes, args.assets)))
        return
    from fruits_platform_tests.postgres import running_postgres

    with running_postgres() as postgres:
        rows = [configuration("sqlite", {"DAGSTER_EVENT_BATCH_SIZE": "0"}, args.classes, args.assets)]
        for storage in ("postgres, dagster-postgres as shipped", "postgres, pooled (deploy/)"):
            for batch in (0, args.batch_size):
                name = f"{storage}, batches of {batch}" if batch else storage
                env = {**postgres, "DAGSTER_EVENT_BATCH_SIZE": str(batch)}
                rows.append(configuration(name, env, args.classes, args.assets))
    print(f"{args.assets} assets x {args.classes} classes, one run each")
    print(f"{'instance':<52} {'seconds':>8} {'events':>7} {'ms/event':>9} {'x sqlite':>9}")
    for row in rows:
        ratio = row["ms_per_event"] / rows[0]["ms_per_event"]
        print(
            f"{row['instance']:<52} {row['seconds']:>8} {row['materializations']:>7} {row['ms_per_event']:>9} "
            f"{ratio:>9.2f}"
        )


if __name__ == "__main__":
    main()
