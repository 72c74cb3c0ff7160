"""Growth curve: the headless command, the direct script and bare LiteRT on the same images, over growing parts
of Fruits-360.

    .venv/bin/python benchmarks/growth.py --full-root DIR --bench-root DIR [--weights FILE]
        [--sizes 20000,40000,0] [--quick] [--out-dir benchmarks/results] [--keep]

Points: the bench set (--bench-root, 9,520 images), then whole classes of the full set (--full-root) in sorted
order until each of --sizes is reached (0 = the full set itself); a part is a layout of hard links in a temp dir
on the data's filesystem (the platform skips symlinks). --quick: the bench set cut to ~500 images, then ~1,000 and
~2,000 of the full set. For each point, one after the other:

  platform     `fruits-platform materialize` (every asset, feature_quality included, the real weights, 224 px) as a
               subprocess with a fresh DAGSTER_HOME, output root and model cache (the conversion is paid at every
               point, as in bench.py): wall seconds (process start included), images/s, peak RSS of its process
               tree (driver + Spark JVM + Python workers, common.py's RssSampler), and each step's seconds
               (STEP_START to STEP_SUCCESS, read from that DAGSTER_HOME).
  direct       `benchmarks/direct.py` on the same images, a subprocess timed whole (the card work with no Spark and
               no Dagster: issue #27's anchor), its output in the point's temp dir; the command's speed against it
               is (the command's seconds - its feature_quality step) / the direct script's seconds, inverted.
  bare LiteRT  the same images, one process per core, each with a one-thread LiteRT interpreter (the platform's
               default engine, one image per call) on the same flatbuffer: read + decode + resize + invoke, timed
               from the moment every process holds a warmed interpreter to the end of the last one.
At the first point only, bare Keras (bench.py's `bare` phase: one process, TensorFlow on every core; slow).

Prints a table (N, classes, seconds, images/s, peak RSS MB, direct seconds, platform/direct, bare LiteRT images/s,
platform/bare, per-step seconds) and, at the largest N, the targets: the command without feature_quality >= 0.8 x
the direct script's speed (issue #27), platform >= 0.8 x bare LiteRT images/s, peak RSS <= 1.2 x the first point's,
feature_quality <= 20 s (figures, not asserts). Writes growth.json and growth.png (seconds and peak RSS against N)
to --out-dir.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import BATCH, DEFAULT_WEIGHTS, REPO, RssSampler, files_of, link_layout, run_child, step_seconds

DEFAULT_OUT_DIR = REPO / "benchmarks" / "results"
DEFAULT_SIZES = "20000,40000,0"
QUICK_SIZES = "1000,2000"
QUICK_BENCH_IMAGES = 500
IMAGE_SIZE = 224
SPLITS = ("Training", "Test")
# A bare LiteRT worker that died never reaches the barrier nor reports: fail instead of waiting for ever.
WORKER_TIMEOUT_SECONDS = 3600
TARGETS = {
    "platform_vs_direct": ">= 0.8",
    "platform_vs_bare_litert": ">= 0.8",
    "rss_vs_first_point": "<= 1.2",
    "feature_quality_seconds": "<= 20",
}
DIRECT_SCRIPT = Path(__file__).resolve().with_name("direct.py")


# --------------------------------------------------------------------------- points


def class_counts(root: Path) -> dict[str, int]:
    """Images per class folder (both splits), classes in sorted order."""
    from fruits_platform.sources import list_classes

    return {label: sum(len(files_of(root, label, split)) for split in SPLITS) for label in list_classes(str(root))}


def classes_until(counts: dict[str, int], target: int) -> list[str]:
    """Whole classes in order until their images reach `target` (0: every class)."""
    chosen, images = [], 0
    for label, count in counts.items():
        if target and images >= target:
            break
        chosen.append(label)
        images += count
    return chosen


def make_point(name: str, source: Path, target: int, work: Path) -> dict:
    """The data root of one point: `source` itself when it takes every class, else a linked part of it."""
    counts = class_counts(source)
    chosen = classes_until(counts, target)
    root = source
    if len(chosen) < len(counts):
        plan = {label: {split: None for split in SPLITS if files_of(source, label, split)} for label in chosen}
        root = link_layout(source, work / "data" / name, plan)
    return {"name": name, "root": str(root), "classes": len(chosen), "images": sum(counts[c] for c in chosen)}


def image_paths(root: str) -> list[str]:
    return sorted(str(p) for split in SPLITS for p in Path(root, split).glob("*/*") if p.is_file())


# --------------------------------------------------------------------------- platform


def home_step_seconds(home: Path) -> dict[str, float]:
    """`step_seconds` of every run of the Dagster home."""
    from dagster import DagsterInstance

    with DagsterInstance.from_config(str(home)) as instance:
        return step_seconds(instance)


def run_platform(point: dict, weights: str, work: Path) -> dict:
    """`fruits-platform materialize` over the point, as a user runs it, in a fresh DAGSTER_HOME."""
    home, output = work / "home", work / "out"
    home.mkdir(parents=True)
    command = [str(Path(sys.executable).with_name("fruits-platform")), "materialize", "--data-root", point["root"]]
    command += ["--output-root", str(output), "--weights", weights, "--image-size", str(IMAGE_SIZE)]
    env = {**os.environ, "DAGSTER_HOME": str(home), "FRUITS_MODEL_CACHE": str(work / "model_cache")}
    started = time.perf_counter()
    with open(work / "command.log", "w") as log:
        process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
        sampler = RssSampler(process.pid)
        code = process.wait()
    seconds = time.perf_counter() - started
    sampler.stop()
    if code:
        raise SystemExit(
            f"{point['name']}: the command failed (exit {code}):\n{(work / 'command.log').read_text()[-3000:]}"
        )
    steps = home_step_seconds(home)
    output_lines = (work / "command.log").read_text().splitlines()  # Dagster's warnings (stderr) come first
    return {
        "seconds": round(seconds, 2),
        "images_per_second": round(point["images"] / seconds, 2),
        "peak_rss_mb": sampler.peak_mb(),
        "steps_seconds": steps,
        "outside_steps_seconds": round(seconds - sum(steps.values()), 2),
        "summary": next((line for line in output_lines if line.startswith("materialized ")), ""),
    }


def run_direct(point: dict, weights: str, work: Path) -> dict:
    """`benchmarks/direct.py` over the point, timed whole as a subprocess (imports and conversion included)."""
    work.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, str(DIRECT_SCRIPT), "--data-root", point["root"], "--output-root", str(work / "out")]
    command += ["--weights", weights, "--json", str(work / "direct.json")]
    started = time.perf_counter()
    with open(work / "direct.log", "w") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=REPO)
        sampler = RssSampler(process.pid)
        code = process.wait()
    seconds = time.perf_counter() - started
    sampler.stop()
    if code:
        raise SystemExit(
            f"{point['name']}: direct.py failed (exit {code}):\n{(work / 'direct.log').read_text()[-3000:]}"
        )
    report = json.loads((work / "direct.json").read_text())
    return {
        "seconds": round(seconds, 2),
        "images_per_second": round(point["images"] / seconds, 2),
        "peak_rss_mb": sampler.peak_mb(),
        "stages_seconds": report["stages_seconds"],
        "pca_k": report["pca_k"],
    }


def platform_vs_direct(platform: dict, direct: dict) -> float:
    """Issue #27's ratio: the direct script's seconds over the command's without its feature_quality step."""
    card_work = platform["seconds"] - platform["steps_seconds"].get("feature_quality", 0.0)
    return round(direct["seconds"] / card_work, 3)


# --------------------------------------------------------------------------- bare engines


def convert_litert(weights: str, image_size: int) -> bytes:
    """The platform's LiteRT flatbuffer of these weights (in a process of its own: no TensorFlow in this one)."""
    from fruits_platform.ml.mobilenet import load_weights, to_litert

    return to_litert(load_weights(weights, image_size))


def litert_worker(flatbuffer: bytes, image_size: int, paths: list[str], ready, done) -> None:
    """One process: a one-thread interpreter, warmed up, then read + decode + resize + invoke on `paths`."""
    from fruits_platform.ml.mobilenet import LiteRTFeatureExtractor

    extractor = LiteRTFeatureExtractor(flatbuffer, image_size, batch_size=1, threads=1)
    extractor.featurize_bytes([Path(paths[0]).read_bytes()])  # XNNPACK prepares its kernels on the first invoke
    ready.wait()
    for start in range(0, len(paths), BATCH):
        extractor.featurize_bytes([Path(p).read_bytes() for p in paths[start : start + BATCH]])
    done.put(len(paths))


def bare_litert(flatbuffer: bytes, paths: list[str], processes: int) -> dict:
    """LiteRT's limit on this machine: `processes` one-thread interpreters, each on every processes-th image."""
    context = multiprocessing.get_context("spawn")  # fork is unsafe once this process has run threads (RssSampler)
    ready, done = context.Barrier(processes + 1), context.Queue()
    workers = [
        context.Process(target=litert_worker, args=(flatbuffer, IMAGE_SIZE, paths[i::processes], ready, done))
        for i in range(processes)
    ]
    for worker in workers:
        worker.start()
    ready.wait(WORKER_TIMEOUT_SECONDS)
    started = time.perf_counter()
    images = sum(done.get(timeout=WORKER_TIMEOUT_SECONDS) for _ in workers)
    seconds = time.perf_counter() - started
    for worker in workers:
        worker.join()
    return {"seconds": round(seconds, 2), "images": images, "images_per_second": round(images / seconds, 2)}


def bare_keras(point: dict, weights: str, work: Path) -> dict:
    """bench.py's bare Keras (read + decode + predict, batch 64, one process, TensorFlow on every core)."""
    args = {"data_root": point["root"], "sizes": [IMAGE_SIZE], "weights": weights, "repeats": 1}
    result = run_child("bare_keras", "bare", args, work, lambda message: print(message, flush=True))
    return {"images": result["images"], **result[str(IMAGE_SIZE)]}


# --------------------------------------------------------------------------- report


def summarize(points: list[dict]) -> dict:
    first, last = points[0], points[-1]
    values = {
        "platform_vs_direct": last["platform_vs_direct"],
        "platform_vs_bare_litert": last["platform_vs_bare_litert"],
        "rss_vs_first_point": round(last["platform"]["peak_rss_mb"] / first["platform"]["peak_rss_mb"], 3),
        "feature_quality_seconds": last["platform"]["steps_seconds"].get("feature_quality"),
    }
    met = {}
    for key, rule in TARGETS.items():
        op, bound = rule.split()
        if values[key] is not None:
            met[key] = values[key] >= float(bound) if op == ">=" else values[key] <= float(bound)
    return {"at_images": last["images"], "first_point_images": first["images"], "values": values, "met": met}


def table(report: dict) -> str:
    lines = [
        f"Growth curve — {report['started']}, {report['machine']}; weights {report['weights_name']}, {IMAGE_SIZE} px"
        + (" (--quick)" if report["quick"] else ""),
        (
            f"load average (1, 5, 15 min): start {report['loadavg_start']}, end {report['loadavg_end']}; "
            f"wall time {report['wall_seconds']:.0f}s"
        ),
        "",
        (
            "| point | N | classes | seconds | images/s | peak RSS MB | direct seconds | platform/direct | "
            "bare LiteRT images/s | platform/bare | per step (s) |"
        ),
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for point in report["points"]:
        run, bare, direct = point["platform"], point["bare_litert"], point["direct"]
        steps = ", ".join(f"{key} {value}" for key, value in run["steps_seconds"].items())
        lines.append(
            f"| {point['name']} | {point['images']} | {point['classes']} | {run['seconds']} | {run['images_per_second']} "
            f"| {run['peak_rss_mb']} | {direct['seconds']} | {point['platform_vs_direct']} "
            f"| {bare['images_per_second']} | {point['platform_vs_bare_litert']} "
            f"| {steps}; outside steps {run['outside_steps_seconds']} |"
        )
    keras = report["bare_keras"]
    lines += [
        "",
        (
            f"bare LiteRT: {report['litert']['processes']} processes (one per core), 1 interpreter thread each, "
            "read + decode + resize + invoke, 1 image per call; flatbuffer converted once "
            f"({report['litert']['conversion_seconds']}s, excluded)."
        ),
        (
            f"bare Keras at the first point only (slow: one process, TensorFlow on every core, batch {BATCH}): "
            f"{keras['images']} images, {keras['read_decode_predict_seconds']}s, {keras['images_per_second']} images/s."
        ),
        "",
    ]
    summary = report["summary"]
    labels = {
        "platform_vs_direct": "direct script seconds / (command - feature_quality) seconds",
        "platform_vs_bare_litert": "platform / bare LiteRT images/s",
        "rss_vs_first_point": f"peak RSS / at N={summary['first_point_images']}",
        "feature_quality_seconds": "feature_quality seconds",
    }
    for key, label in labels.items():
        verdict = {True: "met", False: "NOT met"}.get(summary["met"].get(key), "n/a")
        lines.append(
            f"at N={summary['at_images']}: {label} {summary['values'][key]} (target {TARGETS[key]}): {verdict}"
        )
    return "\n".join(lines)


def plot(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = report["points"]
    images = [p["images"] for p in points]
    figure, (seconds_axis, rss_axis) = plt.subplots(1, 2, figsize=(11, 4.2))
    seconds_axis.plot(images, [p["platform"]["seconds"] for p in points], "o-", label="platform (headless command)")
    seconds_axis.plot(images, [p["direct"]["seconds"] for p in points], "D-", label="direct script (no Spark/Dagster)")
    seconds_axis.plot(
        images, [p["bare_litert"]["seconds"] for p in points], "s-", label="bare LiteRT (1 thread x core)"
    )
    keras = report["bare_keras"]
    seconds_axis.plot([keras["images"]], [keras["read_decode_predict_seconds"]], "^", label="bare Keras")
    seconds_axis.set(xlabel="images (N)", ylabel="seconds", title="Wall seconds")
    seconds_axis.legend()
    rss_axis.plot(images, [p["platform"]["peak_rss_mb"] for p in points], "o-", color="tab:red")
    rss_axis.set(xlabel="images (N)", ylabel="MB", title="Peak RSS of the platform's process tree")
    rss_axis.set_ylim(bottom=0)
    for axis in (seconds_axis, rss_axis):
        axis.grid(alpha=0.3)
    figure.suptitle(f"Fruits! platform growth, {report['started']}" + (" (--quick)" if report["quick"] else ""))
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


# --------------------------------------------------------------------------- main


def plan_points(options, work: Path) -> list[dict]:
    """The bench set (cut in --quick), then the parts of the full set, smallest first."""
    bench_target = QUICK_BENCH_IMAGES if options.quick else 0
    points = [
        make_point(f"bench_{bench_target}" if bench_target else "bench", Path(options.bench_root), bench_target, work)
    ]
    for size in (int(s) for s in options.sizes.split(",")):
        points.append(make_point(f"full_{size or 'all'}", Path(options.full_root), size, work))
    return points


def measure(point: dict, flatbuffer: bytes, weights: str, work: Path) -> dict:
    def log(message: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {point['name']}: {message}", flush=True)

    log(f"{point['images']} images, {point['classes']} classes; platform ...")
    point = {**point, "loadavg": [round(v, 2) for v in os.getloadavg()]}
    point["platform"] = run_platform(point, weights, work / point["name"])
    log(f"platform {point['platform']['seconds']}s; direct script ...")
    point["direct"] = run_direct(point, weights, work / point["name"] / "direct")
    point["platform_vs_direct"] = platform_vs_direct(point["platform"], point["direct"])
    log(f"direct {point['direct']['seconds']}s; bare LiteRT ...")
    point["bare_litert"] = bare_litert(flatbuffer, image_paths(point["root"]), os.cpu_count() or 1)
    log(f"bare LiteRT {point['bare_litert']['seconds']}s")
    ratio = point["platform"]["images_per_second"] / point["bare_litert"]["images_per_second"]
    point["platform_vs_bare_litert"] = round(ratio, 3)
    return point


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--full-root", required=True, help="the full Fruits-360: DIR/{Training,Test}/<Class>/*.jpg")
    parser.add_argument("--bench-root", required=True, help="the 9,520-image bench set, the first point")
    parser.add_argument("--weights", default=str(DEFAULT_WEIGHTS))
    parser.add_argument("--sizes", help=f"images of the full set per point, 0 = all (default {DEFAULT_SIZES})")
    parser.add_argument(
        "--quick", action="store_true", help=f"bench set cut to ~{QUICK_BENCH_IMAGES}, sizes {QUICK_SIZES}"
    )
    parser.add_argument("--out-dir", default=str(DEFAULT_OUT_DIR))
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (data parts, homes, logs)")
    options = parser.parse_args()
    options.sizes = options.sizes or (QUICK_SIZES if options.quick else DEFAULT_SIZES)
    if not Path(options.weights).is_file():
        raise SystemExit(f"weights not found: {options.weights}")

    started, wall = time.strftime("%Y-%m-%d %H:%M:%S"), time.perf_counter()
    loadavg_start = [round(v, 2) for v in os.getloadavg()]
    work = Path(tempfile.mkdtemp(prefix="fruits-growth-"))  # the parts are hard links: TMPDIR on the data's disk
    try:
        points = plan_points(options, work)
        print(", ".join(f"{p['name']} {p['images']} images" for p in points), flush=True)
        conversion = time.perf_counter()
        with multiprocessing.get_context("spawn").Pool(1) as pool:
            flatbuffer = pool.apply(convert_litert, (options.weights, IMAGE_SIZE))
        conversion = round(time.perf_counter() - conversion, 2)
        measured = [measure(point, flatbuffer, options.weights, work) for point in points]
        keras = bare_keras(points[0], options.weights, work)
        report = {
            "started": started,
            "machine": f"{os.cpu_count()} CPUs, CPython {sys.version.split()[0]}",
            "quick": options.quick,
            "weights_name": Path(options.weights).name,
            "loadavg_start": loadavg_start,
            "loadavg_end": [round(v, 2) for v in os.getloadavg()],
            "wall_seconds": round(time.perf_counter() - wall, 1),
            "litert": {"processes": os.cpu_count() or 1, "threads_per_process": 1, "conversion_seconds": conversion},
            "points": [{k: v for k, v in p.items() if k != "root"} for p in measured],
            "bare_keras": keras,
            "targets": TARGETS,
            "summary": summarize(measured),
        }
        print("\n" + table(report))
        out = Path(options.out_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / "growth.json").write_text(json.dumps(report, indent=2))
        plot(report, out / "growth.png")
        print(f"\nJSON: {out / 'growth.json'}\nplot: {out / 'growth.png'}")
    finally:
        if options.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
