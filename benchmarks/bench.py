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

Nothing here re-implements pipeline logic: it calls fruits_platform's own functions.
"""

from __future__ import annotations

import argparse
import json
import os
import platform as pyplatform
import shutil
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_TAR = REPO.parent / "shared" / "data" / "fruits360-bench.tar"
DEFAULT_WEIGHTS = REPO.parent / "shared" / "models" / "mobilenet_v2_1.0_224_imagenet_qat_no_top.weights.h5"
DEFAULT_OUT = REPO / "benchmarks" / "results" / "latest.json"
BATCH = 64
NEW_CLASS = "Bench New Class"
TARGETS = {
    "platform_vs_bare": ">= 0.8",
    "backfill_vs_unpartitioned": "<= 1.25",
    "add_class_vs_direct": "<= 2.0",
    "rss_full_vs_small": "<= 1.2",
}

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


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


# --------------------------------------------------------------------------- data preparation


def extract(tar: Path, target: Path) -> Path:
    with tarfile.open(tar) as archive:
        archive.extractall(target, filter="data")
    roots = [p for p in target.iterdir() if (p / "Training").is_dir()]
    if len(roots) != 1:
        raise SystemExit(f"{tar} does not contain one Fruits-360 layout root")
    return roots[0]


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


def subsets(full: Path, work: Path, subset: int | None) -> dict:
    """The measured data root (all classes or the first `subset`) and its 1/5 subset (RSS reference)."""
    classes = sorted(p.name for p in (full / "Training").iterdir())
    if subset:
        classes = classes[:subset]
    counts = {c: {s: len(files_of(full, c, s)) for s in ("Training", "Test")} for c in classes}
    total = sum(sum(v.values()) for v in counts.values())
    everything = {c: {"Training": None, "Test": None} for c in classes}
    main = link_layout(full, work / "main", everything)
    # platform_full adds a class and images to its data root: its own copy, so other phases never see them
    link_layout(full, work / "main_platform", everything)
    # About total/5 images: the first classes in order (at least 2, which feature_quality needs), each
    # keeping its Training:Test proportion (full set: 24 classes x ~79 = 1,904 images).
    wanted = total // 5
    per_class = max(sum(counts[c].values()) for c in classes)
    chosen = classes[: min(len(classes), max(2, -(-wanted // per_class)))]
    plan, left = {}, wanted
    for index, label in enumerate(chosen):
        n = min(sum(counts[label].values()), -(-left // (len(chosen) - index)))
        train = round(n * counts[label]["Training"] / sum(counts[label].values()))
        plan[label] = {"Training": train, "Test": n - train}
        left -= n
    small = link_layout(full, work / "small", plan)
    spare = [c for c in classes if c not in plan]
    return {
        "main": str(main),
        "small": str(small),
        "main_platform": str(work / "main_platform"),
        "classes": classes,
        "images": total,
        "small_classes": list(plan),
        "small_images": sum(sum(v.values()) for v in plan.values()),
        # the class copied as the "new class": one not in the measured set when there is one
        "new_class_source": str(full),
        "new_class_from": spare[0] if spare else classes[-1],
    }


# --------------------------------------------------------------------------- child phases


def platform_resources(data_root, output_root, weights, image_size, spark_conf, engine):
    from fruits_platform.resources import local_resources
    from fruits_platform.resources.model import MobileNetWeights, ReductionSettings

    # A cache of converted models of this phase's own: every phase converts (cold), as in a first run.
    model = MobileNetWeights(
        weights=str(weights),
        image_size=image_size,
        engine=engine,
        model_cache=str(Path(output_root).parent / "model_cache"),
    )
    return local_resources(data_root, output_root, model, ReductionSettings(), spark_conf=spark_conf)


def asset_stages(results) -> dict:
    from fruits_platform.runner import asset_names, latest_metadata

    stages = {}
    for asset in asset_names():
        metadata = latest_metadata(results, asset)
        if metadata:
            stages[asset] = round(float(metadata.get("runtime_seconds", 0.0)), 2)
    embedded = latest_metadata(results, "mobilenet_features").get("images_embedded")
    return {"stages_seconds": stages, "images_embedded": embedded}


def timed_materialize(instance, resources, classes, sampler=None) -> dict:
    from fruits_platform.runner import materialize_classes

    if sampler:
        sampler.reset()
    started = time.perf_counter()
    # The featurization pipeline; feature_quality (an evaluation, not a step of it) is timed on its own.
    results = materialize_classes(instance, resources, classes, log_level="WARNING", evaluate=False)
    seconds = time.perf_counter() - started
    out = {"seconds": round(seconds, 2), "runs": len(results), **asset_stages(results)}
    out["overhead_seconds"] = round(seconds - sum(out["stages_seconds"].values()), 2)
    if sampler:
        out["peak_rss_mb"] = sampler.peak_mb()
    return out


def timed_evaluation(instance, resources) -> dict:
    """feature_quality alone, over the materialized classes."""
    from dagster import materialize

    from fruits_platform.definitions import defs
    from fruits_platform.partitions import fruit_classes, range_tags
    from fruits_platform.runner import latest_metadata

    classes = instance.get_dynamic_partitions(fruit_classes.name)
    started = time.perf_counter()
    result = materialize(
        defs.assets,
        selection=["feature_quality"],
        instance=instance,
        resources=resources,
        tags=range_tags(classes),
    )
    metadata = latest_metadata([result], "feature_quality")
    return {
        "seconds": round(time.perf_counter() - started, 2),
        "accuracy_logreg_pca": metadata.get("accuracy_logreg_pca"),
        "accuracy_1nn_pca": metadata.get("accuracy_1nn_pca"),
    }


def featurize_paths(extractor, paths: list[str]) -> list:
    """Read + decode + featurize `paths` in batches of BATCH, as bare Keras does."""
    return [
        extractor.featurize_bytes([Path(p).read_bytes() for p in paths[i : i + BATCH]])
        for i in range(0, len(paths), BATCH)
    ]


def phase_bare(args, sampler) -> dict:
    """Bare Keras: read + decode (+ predict), batch 64, one process, TF on every core."""
    import numpy as np

    from fruits_platform.ml.images import decode_batch
    from fruits_platform.ml.mobilenet import (
        DEFAULT_BATCH_SIZE,
        FeatureExtractor,
        LiteRTFeatureExtractor,
        load_weights,
        to_litert,
    )

    root = Path(args["data_root"])
    paths = sorted(str(p) for split in ("Training", "Test") for p in (root / split).glob("*/*") if p.is_file())
    out = {"images": len(paths)}
    for size in args["sizes"]:
        started = time.perf_counter()
        weights = load_weights(args["weights"], size)
        extractor = FeatureExtractor(weights)
        extractor.featurize_bytes([Path(p).read_bytes() for p in paths[:BATCH]])  # warm-up (graph tracing)
        build = time.perf_counter() - started

        started = time.perf_counter()
        for i in range(0, len(paths), BATCH):
            decode_batch([Path(p).read_bytes() for p in paths[i : i + BATCH]], size)
        decode = time.perf_counter() - started

        sampler.reset()
        runs = []
        for _ in range(args.get("repeats", 1)):
            started = time.perf_counter()
            features = featurize_paths(extractor, paths)
            runs.append(time.perf_counter() - started)
        total = min(runs)
        out[str(size)] = {
            "model_build_and_warmup_seconds": round(build, 2),
            "read_decode_seconds": round(decode, 2),
            "read_decode_predict_seconds": round(total, 2),
            "runs_seconds": [round(run, 2) for run in runs],
            "inference_seconds_estimate": round(total - decode, 2),
            "images_per_second": round(len(paths) / total, 2),
            "peak_rss_mb": sampler.peak_mb(),
        }
        if args.get("save_features") and size == args["sizes"][0]:
            np.save(args["save_features"], np.concatenate(features))
            Path(args["save_features"] + ".uris.json").write_text(json.dumps(paths))
            # The same process and batches of 64, the model called on DEFAULT_BATCH_SIZE images at a time
            # (what each platform worker does with the keras engine, there with one thread per worker).
            extractor.batch_size = DEFAULT_BATCH_SIZE
            started = time.perf_counter()
            featurize_paths(extractor, paths)
            total = time.perf_counter() - started
            out[str(size)]["model_batch"] = {
                "batch_size": DEFAULT_BATCH_SIZE,
                "read_decode_predict_seconds": round(total, 2),
                "images_per_second": round(len(paths) / total, 2),
            }
            # The platform's default engine in the same process: LiteRT on every core, one image per call.
            lite = LiteRTFeatureExtractor(to_litert(weights), size, batch_size=1, threads=os.cpu_count() or 1)
            lite.featurize_bytes([Path(p).read_bytes() for p in paths[:BATCH]])  # warm-up
            started = time.perf_counter()
            lite_features = featurize_paths(lite, paths)
            total = time.perf_counter() - started
            out[str(size)]["litert"] = {
                "read_decode_predict_seconds": round(total, 2),
                "images_per_second": round(len(paths) / total, 2),
                "max_abs_diff_vs_keras": float(np.abs(np.concatenate(lite_features) - np.concatenate(features)).max()),
            }
    return out


def phase_platform(args, sampler) -> dict:
    from dagster import instance_for_test

    import fruits_platform.definitions  # noqa: F401  (imports stay outside the timings, as in the other phases)
    from fruits_platform.runner import register_classes

    work = Path(args["work"])
    (work / "home").mkdir(parents=True)
    data, output = Path(args["data_root"]), work / "out"
    resources = platform_resources(
        data, output, args["weights"], args["image_size"], args["spark_conf"], args["engine"]
    )
    result = {}
    with instance_for_test(temp_dir=str(work / "home")) as instance:
        classes, _ = register_classes(instance, str(data))
        images = sum(1 for p in data.glob("*/*/*") if p.is_file())
        run = timed_materialize(instance, resources, classes, sampler)
        run.update(images=images, classes=len(classes), images_per_second=round(images / run["seconds"], 2))
        result["all_classes"] = run
        if args.get("evaluate", True):
            result["evaluation"] = timed_evaluation(instance, resources)
        save = lambda: Path(args["result_file"] + ".partial").write_text(json.dumps(result))  # noqa: E731
        save()
        if not args.get("extras"):
            return result

        # 1. One new class of 80 images (a copy of a class under a new name) on the materialized dataset.
        source = Path(args["new_class_source"])
        for split in ("Training", "Test"):
            shutil.copytree(source / split / args["new_class_from"], data / split / NEW_CLASS)
        new_images = sum(1 for _ in data.glob(f"*/{NEW_CLASS}/*"))
        register_classes(instance, str(data), [NEW_CLASS])
        # materialize_classes([new]): catalogue + embed the new class, refit feature_model over all classes,
        # refresh scaled/pca of every class (the refit changes them all).
        added = timed_materialize(instance, resources, [NEW_CLASS])
        added["images"] = new_images
        result["add_class"] = added
        save()

        # ... versus featurizing those images alone + refitting scaler/PCA alone (same functions, same session).
        result["add_class_direct"] = direct_featurize_and_refit(resources, data, output, NEW_CLASS)
        save()

        # 2. 5 % new images in one class (new content: mirrored copies of some of its Training images).
        target = args["classes"][0]
        folder = data / "Training" / target
        originals = sorted(folder.iterdir())
        count = max(1, round(0.05 * sum(1 for _ in data.glob(f"*/{target}/*"))))
        from PIL import Image, ImageOps

        for file in originals[:count]:
            with Image.open(file) as image:
                ImageOps.mirror(image.convert("RGB")).save(folder / f"bench_new_{file.stem}.jpg", quality=95)
        incremental = timed_materialize(instance, resources, [target])
        incremental.update(images=sum(1 for _ in data.glob(f"*/{target}/*")), new_images=count, label=target)
        result["class_5pct_new"] = incremental
        save()

        # 3. Full recompute of that class: its embeddings removed first, so that nothing is reused.
        from fruits_platform.sources import class_dir_name

        shutil.rmtree(output / "mobilenet_features" / class_dir_name(target))
        full = timed_materialize(instance, resources, [target])
        full.update(images=incremental["images"], label=target)
        result["class_full_recompute"] = full
        save()
    return result


def direct_featurize_and_refit(resources, data, output, label) -> dict:
    """Featurize the class's images with the platform's Spark functions (catalogue + embed, no Dagster,
    forced by a Parquet write) + refit scaler/PCA on the Training embeddings of every class."""
    from pyspark.sql import functions as F

    from fruits_platform.sources import list_class_files
    from fruits_platform.spark.featurize import catalogue_and_embed
    from fruits_platform.spark.reduction import fit_feature_model

    spark = resources["spark"].spark_session
    model = resources["weights"].compiled()
    storage = resources["storage"]
    scratch = output.parent / "direct"
    started = time.perf_counter()
    files = list_class_files(str(data), label)
    broadcast, known = spark.sparkContext.broadcast(model), spark.sparkContext.broadcast(frozenset())
    rows = catalogue_and_embed(spark, files, broadcast, known).where(F.col("status") == "ok")
    rows.write.mode("overwrite").parquet(str(scratch / "features"))
    broadcast.unpersist()
    featurize = time.perf_counter() - started

    started = time.perf_counter()
    features = storage.dataset(spark, "mobilenet_features").read(storage.classes())
    fit_feature_model(features.where(F.col("split") == "Training"))
    refit = time.perf_counter() - started
    return {
        "images": len(files),
        "featurize_seconds": round(featurize, 2),
        "refit_seconds": round(refit, 2),
        "seconds": round(featurize + refit, 2),
    }


def phase_unpartitioned(args, sampler) -> dict:
    """The same plain functions over every image, one SparkSession, no Dagster, no partitions."""
    from pyspark import StorageLevel
    from pyspark.sql import SparkSession
    from pyspark.sql import functions as F

    from fruits_platform.ml.mobilenet import compile_model, load_weights
    from fruits_platform.resources import LOCAL_SPARK_CONFIG, use_local_spark_env
    from fruits_platform.sources import list_class_files, list_classes
    from fruits_platform.spark.featurize import CATALOGUE_COLUMNS, catalogue_and_embed
    from fruits_platform.spark.reduction import fit_feature_model, project, scale

    out, data = Path(args["work"]) / "out", args["data_root"]
    stages, started_all = {}, time.perf_counter()

    def stage(name, started):
        stages[name] = round(time.perf_counter() - started, 2)

    sampler.reset()
    t = time.perf_counter()
    use_local_spark_env()
    builder = SparkSession.builder.appName("fruits-bench-unpartitioned")
    for key, value in {**LOCAL_SPARK_CONFIG, **args["spark_conf"]}.items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    stage("spark_session", t)

    t = time.perf_counter()
    files = [f for label in list_classes(data) for f in list_class_files(data, label)]
    stage("listing", t)

    t = time.perf_counter()
    model = compile_model(load_weights(args["weights"], args["image_size"]), args["engine"])
    broadcast, known = spark.sparkContext.broadcast(model), spark.sparkContext.broadcast(frozenset())
    stage("load_weights", t)

    t = time.perf_counter()
    rows = catalogue_and_embed(spark, files, broadcast, known).persist(StorageLevel.DISK_ONLY)
    rows.select(*CATALOGUE_COLUMNS).write.parquet(str(out / "raw_images"))
    stage("catalogue_embed_write", t)

    t = time.perf_counter()
    images = rows.where(F.col("status") == "ok").select("uri", "label", "split", "sha256", "features")
    images.write.parquet(str(out / "mobilenet_features"))
    rows.unpersist()
    stage("features_write", t)

    t = time.perf_counter()
    features = spark.read.parquet(str(out / "mobilenet_features"))
    model, summary = fit_feature_model(features.where(F.col("split") == "Training"))
    stage("fit_scaler_pca", t)

    t = time.perf_counter()
    scale(model, features).write.parquet(str(out / "scaled_features"))
    stage("scale_write", t)

    t = time.perf_counter()
    project(model, spark.read.parquet(str(out / "scaled_features"))).write.parquet(str(out / "pca_features"))
    stage("project_write", t)

    seconds = time.perf_counter() - started_all
    return {
        "seconds": round(seconds, 2),
        "images": len(files),
        "images_per_second": round(len(files) / seconds, 2),
        "pca_k": summary.k,
        "stages_seconds": stages,
        "peak_rss_mb": sampler.peak_mb(),
    }


PHASES = {"bare": phase_bare, "platform": phase_platform, "unpartitioned": phase_unpartitioned}


def child_main(phase: str, args_file: str) -> None:
    args = json.loads(Path(args_file).read_text())
    sampler = RssSampler()
    started = time.perf_counter()
    result = PHASES[phase](args, sampler)
    result["process_seconds"] = round(time.perf_counter() - started, 2)
    result["process_peak_rss_mb"] = sampler.peak_mb()
    Path(args["result_file"]).write_text(json.dumps(result))


def run_child(name: str, phase: str, args: dict, work: Path, log) -> dict:
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
            [sys.executable, __file__, "--child", phase, str(args_file)], stdout=child_log, stderr=subprocess.STDOUT
        )
    if code != 0:
        tail = (work / f"{name}.log").read_text()[-3000:]
        raise SystemExit(f"phase {name} failed (exit {code}); end of its log:\n{tail}")
    result = json.loads(Path(args["result_file"]).read_text())
    log(f"[{time.strftime('%H:%M:%S')}] {name} done in {time.perf_counter() - started:.0f}s")
    return result


# --------------------------------------------------------------------------- report


def compare_features(bare_file: str, output_root: Path) -> tuple[float, float]:
    """Largest absolute difference between the platform's vectors and bare Keras's (same images), and the
    largest absolute value of bare Keras's vectors (for scale)."""
    import numpy as np
    import pyarrow.dataset as ds

    expected = np.load(bare_file)
    uris = json.loads(Path(bare_file + ".uris.json").read_text())
    table = ds.dataset(str(output_root / "mobilenet_features")).to_table(columns=["uri", "features"])
    tail = lambda uri: "/".join(uri.split("/")[-3:])  # split/class/file: the two runs use different roots  # noqa: E731
    by_uri = {tail(uri): index for index, uri in enumerate(table.column("uri").to_pylist())}
    vectors = table.column("features").combine_chunks().flatten().to_numpy().reshape(table.num_rows, -1)
    actual = vectors[[by_uri[tail(u)] for u in uris]]
    return float(np.abs(actual - expected).max()), float(np.abs(expected).max())


def best_seconds(results: dict, phase: str) -> float:
    """The best of the phase's runs (only the first when the benchmark ran it once)."""
    first = results[phase]["all_classes"]["seconds"] if phase == "platform_full" else results[phase]["seconds"]
    return min(results.get("repeats", {}).get(phase) or [first])


def summarize(results: dict) -> dict:
    bare = results["bare"]["224"]
    full = results["platform_full"]["all_classes"]
    platform, unpartitioned = best_seconds(results, "platform_full"), best_seconds(results, "unpartitioned")
    ratios = {
        "platform_vs_bare": round(full["images"] / platform / bare["images_per_second"], 3),
        "backfill_vs_unpartitioned": round(platform / unpartitioned, 3),
        "rss_full_vs_small": round(full["peak_rss_mb"] / results["platform_small"]["all_classes"]["peak_rss_mb"], 3),
    }
    if "add_class" in results["platform_small"]:
        extra = results["platform_small"]
        ratios["add_class_vs_direct"] = round(extra["add_class"]["seconds"] / extra["add_class_direct"]["seconds"], 3)
        ratios["class_5pct_new_vs_full_recompute"] = round(
            extra["class_5pct_new"]["seconds"] / extra["class_full_recompute"]["seconds"], 3
        )
        ratios["class_5pct_new_vs_full_recompute_mobilenet_only"] = round(
            extra["class_5pct_new"]["stages_seconds"]["mobilenet_features"]
            / extra["class_full_recompute"]["stages_seconds"]["mobilenet_features"],
            3,
        )
    passed = {}
    for key, rule in TARGETS.items():
        if key in ratios:
            op, bound = rule.split()
            passed[key] = ratios[key] >= float(bound) if op == ">=" else ratios[key] <= float(bound)
    return {"ratios": ratios, "targets": TARGETS, "passed": passed}


def table(report: dict) -> str:
    r, s = report["results"], report["summary"]
    bare = r["bare"]["224"]
    full = r["platform_full"]["all_classes"]
    small = r["platform_small"]["all_classes"]
    unp = r["unpartitioned"]
    repeats = r.get("repeats", {})

    def runs(phase: str) -> str:
        return f"; runs {fmt_runs(repeats[phase])}, the ratios use the best" if len(repeats.get(phase, [])) > 1 else ""

    bare_runs = bare.get("runs_seconds", [])
    lines = [
        f"Fruits! feature platform benchmark — {report['started']}, {report['machine']}",
        f"data: {report['data']['images']} images / {len(report['data']['classes'])} classes "
        f"(1/5 subset: {report['data']['small_images']} images); weights {report['weights_name']}; "
        f"platform engine {report.get('engine', 'keras')}; spark overrides: {report['spark_conf'] or 'none'}",
        f"load average (1, 5, 15 min): start {report['loadavg_start']}, end {report['loadavg_end']}; "
        f"wall time {report['wall_seconds']:.0f}s"
        + (
            f" (resumed at {report['resumed_at']}, load then {report['loadavg_at_resume']})"
            if "resumed_at" in report
            else ""
        ),
        "",
        "| row | images | seconds | images/s | peak RSS MB | notes |",
        "|---|---:|---:|---:|---:|---|",
        f"| bare Keras 224 px (read+decode+predict, batch {BATCH}, 1 process) | {r['bare']['images']} | "
        f"{bare['read_decode_predict_seconds']} | {bare['images_per_second']} | {bare['peak_rss_mb']} | "
        f"read+decode alone {bare['read_decode_seconds']}s, inference ≈ {bare['inference_seconds_estimate']}s, "
        f"model build+warm-up {bare['model_build_and_warmup_seconds']}s (excluded)"
        + (f"; passes {fmt_runs(bare_runs)}, the best shown" if len(bare_runs) > 1 else "")
        + " |",
    ]
    if "model_batch" in bare:
        mb = bare["model_batch"]
        lines.append(
            f"| bare Keras 224 px, same process, model called on {mb['batch_size']} images at a time | "
            f"{r['bare']['images']} | {mb['read_decode_predict_seconds']} | {mb['images_per_second']} | | "
            "for reference: the keras engine's model calls, but one process with TensorFlow on every core |"
        )
    if "litert" in bare:
        lt = bare["litert"]
        lines.append(
            f"| bare LiteRT 224 px, same process, 1 image per call | {r['bare']['images']} | "
            f"{lt['read_decode_predict_seconds']} | {lt['images_per_second']} | | for reference: the platform's "
            f"default engine (the same network and weights) in one process on every core; "
            f"max |LiteRT − Keras| {lt['max_abs_diff_vs_keras']:.1e} |"
        )
    lines += [
        f"| platform end-to-end 224 px (materialize_classes: the 4 assets + feature_model, {full['runs']} run) | "
        f"{full['images']} | {full['seconds']} | {full['images_per_second']} | {full['peak_rss_mb']} | "
        f"per asset {fmt_stages(full['stages_seconds'])}; outside assets {full['overhead_seconds']}s"
        f"{runs('platform_full')} |",
        f"| feature_quality alone (evaluation, after the above) | {full['images']} | "
        f"{r['platform_full'].get('evaluation', {}).get('seconds')} | | | "
        f"accuracy logreg/1-NN on PCA: {r['platform_full'].get('evaluation', {}).get('accuracy_logreg_pca')} / "
        f"{r['platform_full'].get('evaluation', {}).get('accuracy_1nn_pca')} |",
        f"| platform, 1/5 subset 224 px | {small['images']} | {small['seconds']} | {small['images_per_second']} | "
        f"{small['peak_rss_mb']} | per asset {fmt_stages(small['stages_seconds'])} |",
        f"| one unpartitioned run (same functions, no Dagster) | {unp['images']} | {unp['seconds']} | "
        f"{unp['images_per_second']} | {unp['peak_rss_mb']} | {fmt_stages(unp['stages_seconds'])}"
        f"{runs('unpartitioned')} |",
    ]
    extra = r["platform_small"]
    if "add_class" in extra:
        add, direct = extra["add_class"], extra["add_class_direct"]
        inc, rec = extra["class_5pct_new"], extra["class_full_recompute"]
        lines += [
            f"| add one class ({add['images']} images) to the materialized 1/5 subset (all classes re-run) | {add['images']} | "
            f"{add['seconds']} | | | per asset {fmt_stages(add['stages_seconds'])} |",
            f"| direct: featurize those {direct['images']} + refit scaler/PCA | {direct['images']} | "
            f"{direct['seconds']} | | | featurize {direct['featurize_seconds']}s + refit {direct['refit_seconds']}s |",
            f"| re-materialize '{inc['label']}' with 5 % new images ({inc['new_images']} new) | {inc['images']} | "
            f"{inc['seconds']} | | | images_embedded={inc['images_embedded']}; per asset {fmt_stages(inc['stages_seconds'])} |",
            f"| full recompute of '{rec['label']}' (no embedding reused) | {rec['images']} | {rec['seconds']} | | | "
            f"images_embedded={rec['images_embedded']}; per asset {fmt_stages(rec['stages_seconds'])} |",
        ]
    for size, row in r.get("bare_small", {}).items():
        if size.isdigit():
            lines.append(
                f"| bare Keras {size} px, 1/5 subset | {r['bare_small']['images']} | "
                f"{row['read_decode_predict_seconds']} | {row['images_per_second']} | {row['peak_rss_mb']} | "
                f"read+decode {row['read_decode_seconds']}s |"
            )
    for key, value in r.items():
        if key.startswith("platform_small_") and key[15:].isdigit():
            run = value["all_classes"]
            lines.append(
                f"| platform {key[15:]} px (optional smaller input), 1/5 subset | {run['images']} | {run['seconds']} | "
                f"{run['images_per_second']} | {run['peak_rss_mb']} | per asset {fmt_stages(run['stages_seconds'])} |"
            )
    lines += ["", "| ratio | value | target | pass |", "|---|---:|---|---|"]
    for key, value in s["ratios"].items():
        target = s["targets"].get(key, "")
        verdict = "" if key not in s["passed"] else ("yes" if s["passed"][key] else "**no**")
        lines.append(f"| {key} | {value} | {target} | {verdict} |")
    if report.get("max_abs_diff_platform_vs_bare") is not None:
        lines += [
            "",
            f"max |platform − bare Keras| over all vectors: {report['max_abs_diff_platform_vs_bare']:.2e} "
            f"(largest |value| {report.get('max_abs_value_bare', float('nan')):.3g}; the platform runs the same "
            "network with the engine of the run, on batches of another size, which rounds differently)",
        ]
    lines += ["", "Definitions: " + " ".join(f"**{k}**: {v}" for k, v in DEFINITIONS.items())]
    return "\n".join(lines)


def fmt_runs(seconds: list[float]) -> str:
    return " / ".join(f"{value}s" for value in seconds)


def fmt_stages(stages: dict) -> str:
    return ", ".join(f"{k} {v}s" for k, v in stages.items())


DEFINITIONS = {
    "bare Keras": "fruits_platform.ml.mobilenet.FeatureExtractor.featurize_bytes (read + decode_batch + "
    "predict_on_batch), batches of 64, one process, TensorFlow on every core; model build excluded; the best of "
    "--repeats passes: the issue's limit. The platform runs one Python worker per core, each with a one-thread "
    "model of its engine (FRUITS_ENGINE, default LiteRT: the same network and weights run by LiteRT's XNNPACK "
    "kernels, built from a flatbuffer the driver converts with TensorFlow's converter), calling it on 1 image at a "
    "time (8 for keras; FRUITS_BATCH_SIZE).",
    "platform end-to-end": "runner.materialize_classes over every class (one key range = one Dagster run with "
    "BackfillPolicy.single_run, one SparkSession; this is also how a UI backfill of all partitions runs), "
    "Spark session start and weights loading included; run --repeats times (the later runs without "
    "feature_quality), interleaved with the unpartitioned run, and the ratios use the best of each.",
    "unpartitioned run": "catalogue_and_embed + fit_feature_model + scale + project over all images in "
    "one fresh SparkSession with the same Spark config, plain Parquet writes, no Dagster.",
    "add class": "on the materialized 1/5 subset, a copy of a class under a new name, registered, then "
    "materialize_classes over every class (materialize_classes([new]) alone refits feature_model, leaves the other "
    "classes' pca_features stale and feature_quality fails); embeddings reused by sha256. direct = catalogue+embed "
    "of its images (Parquet write) + fit_feature_model on all Training embeddings, same session.",
    "5 % new": "mirrored copies of 4 Training images added to one class, materialize_classes over every class "
    "(reuse by sha256) vs the same after deleting that class's embeddings. The small-subset rows after these "
    "(bare/platform 96 px) ran on that modified subset (1,988 images).",
    "peak RSS": "max over the phase of the summed RSS of the process tree (driver + Spark JVM + Python workers), "
    "sampled every 0.25 s from /proc.",
}


def main() -> None:
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
    options = parser.parse_args()
    if not Path(options.weights).is_file():
        raise SystemExit(f"weights not found: {options.weights}")
    spark_conf = dict(item.split("=", 1) for item in options.spark_conf)
    log = lambda message: print(message, flush=True)  # noqa: E731

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
        t = time.perf_counter()
        full_root = (
            extract(Path(options.tar), work / "extracted")
            if not options.resume
            else next(p for p in (work / "extracted").iterdir() if (p / "Training").is_dir())
        )
        data = subsets(full_root, work / "data", options.subset)
        data["extract_seconds"] = round(time.perf_counter() - t, 2)
        log(f"{data['images']} images in {len(data['classes'])} classes; 1/5 subset {data['small_images']} images")
        common = {"weights": options.weights, "spark_conf": spark_conf, "image_size": 224, "engine": options.engine}
        results = {}
        bare_features = str(work / "bare_features.npy")
        results["bare"] = run_child(
            "bare",
            "bare",
            {
                **common,
                "data_root": data["main"],
                "sizes": [224],
                "save_features": bare_features,
                "repeats": options.repeats,
            },
            work,
            log,
        )
        partial = lambda: (
            Path(options.out).parent.mkdir(parents=True, exist_ok=True)
            or Path(  # noqa: E731
                options.out
            ).write_text(json.dumps({"partial": True, "loadavg_start": loadavg_start, "results": results}, indent=2))
        )
        partial()
        results["platform_full"] = run_child(
            "platform_full", "platform", {**common, "data_root": data["main_platform"]}, work, log
        )
        max_diff, max_value = compare_features(bare_features, work / "platform_full" / "out")
        partial()
        results["unpartitioned"] = run_child(
            "unpartitioned", "unpartitioned", {**common, "data_root": data["main"]}, work, log
        )
        partial()
        # The machine's speed varies from run to run: the phases that the ratios compare run again, interleaved,
        # and the ratios use the best run of each (bare Keras repeats its pass in its own process).
        results["repeats"] = {
            "platform_full": [results["platform_full"]["all_classes"]["seconds"]],
            "unpartitioned": [results["unpartitioned"]["seconds"]],
        }
        for repeat in range(2, options.repeats + 1):
            again = run_child(
                f"platform_full_{repeat}",
                "platform",
                {**common, "data_root": data["main_platform"], "evaluate": False},
                work,
                log,
            )
            results["repeats"]["platform_full"].append(again["all_classes"]["seconds"])
            again = run_child(
                f"unpartitioned_{repeat}", "unpartitioned", {**common, "data_root": data["main"]}, work, log
            )
            results["repeats"]["unpartitioned"].append(again["seconds"])
            partial()
        # The 1/5 subset: peak RSS reference, then (same instance) add a class, 5 % new images, full recompute.
        results["platform_small"] = run_child(
            "platform_small",
            "platform",
            {
                **common,
                "data_root": data["small"],
                "extras": not options.skip_extras,
                "classes": data["small_classes"],
                "new_class_source": data["new_class_source"],
                "new_class_from": data["new_class_from"],
            },
            work,
            log,
        )
        partial()
        if options.small_size:
            size = options.small_size
            results["bare_small"] = run_child(
                "bare_small", "bare", {**common, "data_root": data["small"], "sizes": [size, 224]}, work, log
            )
            partial()
            results[f"platform_small_{size}"] = run_child(
                f"platform_small_{size}",
                "platform",
                {**common, "data_root": data["small"], "image_size": size},
                work,
                log,
            )
        report = {
            "started": started,
            "machine": f"{os.cpu_count()} CPUs, {pyplatform.python_implementation()} {pyplatform.python_version()}",
            "loadavg_start": loadavg_start,
            "loadavg_end": [round(v, 2) for v in os.getloadavg()],
            "wall_seconds": round(time.perf_counter() - wall, 1),
            "weights_name": Path(options.weights).name,
            **resumed,
            "spark_conf": spark_conf,
            "engine": options.engine,
            "data": {k: v for k, v in data.items() if k not in {"main", "small", "main_platform", "new_class_source"}},
            "definitions": DEFINITIONS,
            "results": results,
            "max_abs_diff_platform_vs_bare": max_diff,
            "max_abs_value_bare": max_value,
        }
        report["summary"] = summarize(results)
        text = table(report)
        print("\n" + text)
        Path(options.out).parent.mkdir(parents=True, exist_ok=True)
        Path(options.out).write_text(json.dumps(report, indent=2))
        log(f"\nJSON: {options.out}")
        if not options.no_results_md:
            # Beside the JSON (benchmarks/results/, not committed), never benchmarks/RESULTS.md: that file is
            # the dated log, and a run's figures go into it as a new dated section by hand.
            report_md = Path(options.out).with_suffix(".md")
            report_md.write_text("# Benchmark report\n\n" + text + "\n")
            log(f"Markdown report: {report_md}")
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
