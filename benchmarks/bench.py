"""End-to-end benchmark of the Fruits! feature platform against bare Keras, on real Fruits-360 images.

    .venv/bin/python benchmarks/bench.py [--subset N_CLASSES] [--out benchmarks/results/latest.json]

Extracts ../shared/data/fruits360-bench.tar (119 classes x 80 images) to a temp dir, then runs each
measured phase in its own child process (so that peak RSS and TensorFlow's thread settings of one
phase never leak into another), sampling the RSS of the child's whole process tree (Python driver +
Spark JVM + Python workers) from /proc. Phases:

  bare          bare Keras in one process (FeatureExtractor + decode_batch, batch 64, TF on every core):
                a read+decode-only pass, then read+decode+predict (the limit), at 224 px.
  bare_small    the same at the optional smaller input size on the 1/5 subset (+ 224 px for comparison).
  platform_full   `materialize_classes` on every selected class (one key range = one run = a UI backfill
                with BackfillPolicy.single_run, one SparkSession).
  platform_small  the same on the 1/5 subset (peak RSS reference); then, in the same instance: add one
                class of 80 images; 5 % new images in one class; full recompute of that class.
  unpartitioned the same plain functions (catalogue_and_embed, fit_feature_model, scale,
                project) over all images in one SparkSession, no Dagster, no partitions, plain Parquet.
  platform_small_<px>  the platform at the smaller input size on the 1/5 subset.

The machine's speed varies from run to run (bare Keras took 49.9-62.3 s in five runs of one day): bare Keras
repeats its pass, and platform_full and unpartitioned run again, interleaved (--repeats, default 2), which shows
whether one run's figures are stable; the ratios use the best run of each.

Nothing here re-implements pipeline logic: it calls fruits_platform's own functions. This script is the command
and runs the phases; each phase is a module (bench_bare.py, bench_platform.py, bench_unpartitioned.py), as are the
data (bench_data.py) and the report (bench_report.py); what other benchmarks use too is in common.py.
"""

from __future__ import annotations

import argparse
import json
import os
import platform as pyplatform
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from bench_bare import BarePhase, phase_bare
from bench_data import BenchData, extract, subsets
from bench_platform import PlatformPhase, phase_platform
from bench_report import DEFINITIONS, Report, Results, compare_features, summarize, table
from bench_unpartitioned import UnpartitionedPhase, phase_unpartitioned
from common import DEFAULT_WEIGHTS, REPO, Record, RssSampler, run_child

DEFAULT_TAR = REPO.parent / "shared" / "data" / "fruits360-bench.tar"
DEFAULT_OUT = REPO / "benchmarks" / "results" / "latest.json"

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

PHASES = {"bare": phase_bare, "platform": phase_platform, "unpartitioned": phase_unpartitioned}


def child_main(phase: str, args_file: str) -> None:
    """In the child process: run `phase`, write its result (with the process's own seconds and peak RSS)."""
    args = json.loads(Path(args_file).read_text())
    sampler = RssSampler()
    started = time.perf_counter()
    result = PHASES[phase](args, sampler).to_json()
    result["process_seconds"] = round(time.perf_counter() - started, 2)
    result["process_peak_rss_mb"] = sampler.peak_mb()
    Path(args["result_file"]).write_text(json.dumps(result))


def log(message: str) -> None:
    print(message, flush=True)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--subset", type=int, help="only the first N classes (for development)")
    parser.add_argument("--out", default=str(DEFAULT_OUT))
    parser.add_argument("--tar", default=str(DEFAULT_TAR))
    parser.add_argument("--weights", default=str(DEFAULT_WEIGHTS))
    parser.add_argument("--engine", default="litert", help="the platform's engine: litert (default) or keras")
    parser.add_argument("--small-size", type=int, default=96, help="optional smaller input size row (0 = none)")
    parser.add_argument("--spark-conf", action="append", default=[], help="key=value over LOCAL_SPARK_CONFIG")
    parser.add_argument("--skip-extras", action="store_true", help="no add-class / 5 %% rows")
    parser.add_argument(
        "--repeats", type=int, default=2, help="runs of bare Keras, the platform and the unpartitioned run (best kept)"
    )
    parser.add_argument(
        "--no-results-md", action="store_true", help="do not write the Markdown report beside the JSON (--out, .md)"
    )
    parser.add_argument("--keep", action="store_true", help="keep the temp dir")
    parser.add_argument("--resume", help="a kept temp dir of a failed attempt: re-run only the phases without result")
    return parser.parse_args()


@dataclass
class Runner:
    """Runs the phases in child processes, collects their typed results, keeps `--out` up to date (partial)."""

    options: argparse.Namespace
    work: Path
    loadavg_start: list[float]
    common: dict  # every phase's arguments
    results: Results = field(default_factory=Results)

    def child(self, name: str, phase: str, record: type[Record], **args):
        return record.from_json(run_child(name, phase, {**self.common, **args}, self.work, log))

    def partial(self) -> None:
        out = Path(self.options.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        partial = {"partial": True, "loadavg_start": self.loadavg_start, "results": self.results.to_json()}
        out.write_text(json.dumps(partial, indent=2))


def run_phases(runner: Runner, data: BenchData) -> tuple[float, float]:
    """Every phase in order; returns how far the platform's vectors are from bare Keras's (`compare_features`)."""
    options, results = runner.options, runner.results
    bare_features = str(runner.work / "bare_features.npy")
    results.bare = runner.child(
        "bare",
        "bare",
        BarePhase,
        data_root=data.main,
        sizes=[224],
        save_features=bare_features,
        repeats=options.repeats,
    )
    runner.partial()
    results.platform_full = runner.child("platform_full", "platform", PlatformPhase, data_root=data.main_platform)
    difference = compare_features(bare_features, runner.work / "platform_full" / "out")
    runner.partial()
    results.unpartitioned = runner.child("unpartitioned", "unpartitioned", UnpartitionedPhase, data_root=data.main)
    runner.partial()
    run_repeats(runner, data)
    # The 1/5 subset: peak RSS reference, then (same instance) add a class, 5 % new images, full recompute.
    results.platform_small = runner.child(
        "platform_small",
        "platform",
        PlatformPhase,
        data_root=data.small,
        extras=not options.skip_extras,
        classes=data.small_classes,
        new_class_source=data.new_class_source,
        new_class_from=data.new_class_from,
    )
    runner.partial()
    if options.small_size:
        size = options.small_size
        results.bare_small = runner.child("bare_small", "bare", BarePhase, data_root=data.small, sizes=[size, 224])
        runner.partial()
        results.smaller[str(size)] = runner.child(
            f"platform_small_{size}", "platform", PlatformPhase, data_root=data.small, image_size=size
        )
    return difference


def run_repeats(runner: Runner, data: BenchData) -> None:
    """The machine's speed varies from run to run: the phases that the ratios compare run again, interleaved,
    and the ratios use the best run of each (bare Keras repeats its pass in its own process)."""
    results = runner.results
    results.repeats = {
        "platform_full": [results.platform_full.all_classes.seconds],
        "unpartitioned": [results.unpartitioned.seconds],
    }
    for repeat in range(2, runner.options.repeats + 1):
        again = runner.child(
            f"platform_full_{repeat}", "platform", PlatformPhase, data_root=data.main_platform, evaluate=False
        )
        results.repeats["platform_full"].append(again.all_classes.seconds)
        again = runner.child(f"unpartitioned_{repeat}", "unpartitioned", UnpartitionedPhase, data_root=data.main)
        results.repeats["unpartitioned"].append(again.seconds)
        runner.partial()


def prepare_data(options: argparse.Namespace, work: Path) -> BenchData:
    """The tar extracted (once: a resumed attempt reuses it), then the phases' layouts linked anew."""
    started = time.perf_counter()
    full_root = (
        extract(Path(options.tar), work / "extracted")
        if not options.resume
        else next(p for p in (work / "extracted").iterdir() if (p / "Training").is_dir())
    )
    data = subsets(full_root, work / "data", options.subset)
    data.extract_seconds = round(time.perf_counter() - started, 2)
    log(f"{data.images} images in {len(data.classes)} classes; 1/5 subset {data.small_images} images")
    return data


def write_report(report: Report, options: argparse.Namespace) -> None:
    text = table(report)
    print("\n" + text)
    Path(options.out).parent.mkdir(parents=True, exist_ok=True)
    Path(options.out).write_text(json.dumps(report.to_json(), indent=2))
    log(f"\nJSON: {options.out}")
    if not options.no_results_md:
        # Beside the JSON (benchmarks/results/, not committed), never benchmarks/RESULTS.md: that file is
        # the dated log, and a run's figures go into it as a new dated section by hand.
        report_md = Path(options.out).with_suffix(".md")
        report_md.write_text("# Benchmark report\n\n" + text + "\n")
        log(f"Markdown report: {report_md}")


def main() -> None:
    options = parse_args()
    if not Path(options.weights).is_file():
        raise SystemExit(f"weights not found: {options.weights}")
    spark_conf = dict(item.split("=", 1) for item in options.spark_conf)

    started, wall = time.strftime("%Y-%m-%d %H:%M:%S"), time.perf_counter()
    loadavg_start = [round(v, 2) for v in os.getloadavg()]
    work = Path(options.resume) if options.resume else Path(tempfile.mkdtemp(prefix="fruits-bench-"))
    resumed = {}
    if options.resume:
        options.keep = True
        earlier = json.loads(Path(options.out).read_text()) if Path(options.out).is_file() else {}
        resumed = {"resumed_at": started, "loadavg_at_resume": [round(v, 2) for v in os.getloadavg()]}
        loadavg_start = earlier.get("loadavg_start", loadavg_start)
        shutil.rmtree(work / "data", ignore_errors=True)  # phases modify their data roots: relink them
    try:
        data = prepare_data(options, work)
        common = {"weights": options.weights, "spark_conf": spark_conf, "image_size": 224, "engine": options.engine}
        runner = Runner(options, work, loadavg_start, common)
        max_diff, max_value = run_phases(runner, data)
        report = Report(
            started=started,
            machine=f"{os.cpu_count()} CPUs, {pyplatform.python_implementation()} {pyplatform.python_version()}",
            loadavg_start=loadavg_start,
            loadavg_end=[round(v, 2) for v in os.getloadavg()],
            wall_seconds=round(time.perf_counter() - wall, 1),
            weights_name=Path(options.weights).name,
            **resumed,
            spark_conf=spark_conf,
            engine=options.engine,
            data=data.reported(),
            definitions=DEFINITIONS,
            results=runner.results,
            max_abs_diff_platform_vs_bare=max_diff,
            max_abs_value_bare=max_value,
        )
        report.summary = summarize(runner.results)
        write_report(report, options)
    finally:
        if options.keep:
            log(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--child":
        sys.path.insert(0, str(REPO))
        child_main(sys.argv[2], sys.argv[3])
    else:
        main()
