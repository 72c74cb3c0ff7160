"""Adding one class to a materialized data set as a user would: through the sensor and the daemon.

    .venv/bin/python benchmarks/add_class.py --data-root DIR [--weights FILE] [--work DIR] [--out FILE.json]

Holds out the class of DIR closest to 500 images, starts `dg dev` with the sensor and automation on
(`FRUITS_AUTOMATION=1`) over the rest and waits until every asset of every class is materialized (the sensor
registers the classes and requests the embedding, automation refits and refreshes: no human action). Then it
copies the held-out class into the data root and measures the seconds until every class's model, scaled and
PCA features are materialized again after that class's embedding, and its evaluation too. Last, with `dg dev`
stopped, the direct work for the same change with the platform's plain functions in one process: catalogue and
embed the new class, refit the model on every class's Training embeddings, re-project every class (written as
Parquet) and evaluate them as `feature_quality` does (issue #27 counts the evaluation in the direct work).
Prints the figures and the ratio (target: ≤ 2).

`--work` (default: a temp folder beside DIR, on the same file system for the hard links) holds the data root,
the outputs and the Dagster home.
"""

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from common import DEFAULT_WEIGHTS, files_of, link_layout
from dagster import DagsterInstance

from fruits_platform_tests.dagster_dev import EVERY_ASSET, fresh_for, running_dagster_dev

EVALUATION_IMAGES = 10_000  # FRUITS_QUALITY_MAX_IMAGES' default
REFRESHED = [asset for asset in EVERY_ASSET if asset != "feature_quality"]


def class_sizes(root: Path) -> dict[str, int]:
    labels = sorted({p.name for split in ("Training", "Test") for p in (root / split).iterdir() if p.is_dir()})
    return {label: len(files_of(root, label, "Training")) + len(files_of(root, label, "Test")) for label in labels}


def through_the_daemon(source: Path, work: Path, weights: str, new: str, others: list[str]) -> dict:
    data = link_layout(source, work / "data", {label: {"Training": None, "Test": None} for label in others})
    home = work / "home"
    env = {
        "FRUITS_DATA_ROOT": str(data),
        "FRUITS_OUTPUT_ROOT": str(work / "out"),
        "FRUITS_WEIGHTS": weights,
        "FRUITS_AUTOMATION": "1",
        "FRUITS_DEPLOYMENT": "local",
    }
    with running_dagster_dev(home, env, log_path=work / "dagster_dev.log") as server:
        os.environ["DAGSTER_HOME"] = str(home)
        with DagsterInstance.get() as instance:
            started = time.perf_counter()
            server.wait_until(
                lambda: fresh_for(instance, others, assets=REFRESHED), timeout=5400, interval=5, what="the data set"
            )
            initial = time.perf_counter() - started
            server.wait_until(lambda: not active_runs(instance), timeout=1800, interval=5, what="the runs to end")
            started = time.perf_counter()
            for split in ("Training", "Test"):
                shutil.copytree(source / split / new, data / split / new)
            every = [*others, new]

            def done():
                return fresh_for(instance, every, after=new, assets=REFRESHED) and fresh_for(instance, [new], after=new)

            server.wait_until(done, timeout=3600, interval=2, what="the new class everywhere")
            added = time.perf_counter() - started
            runs = [(run.job_name, run.status.value) for run in instance.get_runs()]
    return {"initial_seconds": round(initial, 1), "add_seconds": round(added, 1), "runs": runs}


def active_runs(instance: DagsterInstance) -> list:
    from dagster import DagsterRunStatus, RunsFilter

    busy = [DagsterRunStatus.QUEUED, DagsterRunStatus.STARTING, DagsterRunStatus.STARTED, DagsterRunStatus.NOT_STARTED]
    return instance.get_runs(RunsFilter(statuses=busy))


def direct(work: Path, weights: str, new: str) -> dict:
    """Catalogue + embed the new class, refit on every class's Training embeddings, re-project every class."""
    from pyspark.sql import functions as F

    from fruits_platform.assets.feature_quality import EVALUATED_COLUMNS
    from fruits_platform.resources import local_resources
    from fruits_platform.resources.model import MobileNetWeights
    from fruits_platform.spark.evaluation import evaluate_features
    from fruits_platform.spark.featurize import catalogue_and_embed
    from fruits_platform.spark.reduction import fit_feature_model, transform_features

    resources = local_resources(work / "data", work / "out", MobileNetWeights(weights=weights))
    spark, storage = resources["spark"].spark_session, resources["storage"]
    model = resources["weights"].compiled()
    started = time.perf_counter()
    broadcast, known = spark.sparkContext.broadcast(model), spark.sparkContext.broadcast(frozenset())
    embedded = catalogue_and_embed(spark, storage.class_files([new]), broadcast, known)
    embedded.where(F.col("status") == "ok").write.mode("overwrite").parquet(str(work / "direct" / "features"))
    featurize = time.perf_counter() - started
    started = time.perf_counter()
    features = storage.dataset(spark, "mobilenet_features").read(storage.classes())
    fitted, _ = fit_feature_model(features.where(F.col("split") == "Training"))
    refit = time.perf_counter() - started
    started = time.perf_counter()
    projected = transform_features(fitted, features).drop("features")
    projected.write.mode("overwrite").parquet(str(work / "direct" / "projected"))
    project = time.perf_counter() - started
    started = time.perf_counter()
    evaluate_features(transform_features(fitted, features.select(*EVALUATED_COLUMNS)), max_images=EVALUATION_IMAGES)
    evaluate = time.perf_counter() - started
    seconds = featurize + refit + project + evaluate
    return {
        "featurize_seconds": round(featurize, 1),
        "refit_seconds": round(refit, 1),
        "reproject_seconds": round(project, 1),
        "evaluate_seconds": round(evaluate, 1),
        "seconds": round(seconds, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-root", required=True, type=Path)
    parser.add_argument("--weights", default=str(DEFAULT_WEIGHTS))
    parser.add_argument("--work", type=Path)
    parser.add_argument("--out", help="write the figures to this JSON file too")
    args = parser.parse_args()
    sizes = class_sizes(args.data_root)
    new = min(sizes, key=lambda label: abs(sizes[label] - 500))
    others = [label for label in sizes if label != new]
    work = args.work or Path(tempfile.mkdtemp(prefix="fruits-add-class-", dir=args.data_root.parent))
    try:
        daemon = through_the_daemon(args.data_root, work, args.weights, new, others)
        plain = direct(work, args.weights, new)
    finally:
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)
    figures = {
        "data_root": str(args.data_root),
        "classes_before": len(others),
        "images_before": sum(sizes[label] for label in others),
        "new_class": new,
        "new_images": sizes[new],
        "through_the_daemon": daemon,
        "direct": plain,
        "daemon_vs_direct": round(daemon["add_seconds"] / plain["seconds"], 2),
    }
    print(json.dumps(figures, indent=2))
    if args.out:
        Path(args.out).write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
