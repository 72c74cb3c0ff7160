"""bench.py's `platform` phase: the platform end to end (`materialize_classes`, one run over every class, as a
UI backfill), then feature_quality alone; with `extras`, on the same instance, a class added against the same
work done directly, 5 % new images in one class, and a full recompute of that class."""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from common import OPTIONAL, Record, RssSampler, step_seconds

NEW_CLASS = "Bench New Class"


@dataclass
class MaterializeRun(Record):
    """One `materialize_classes`: its seconds, runs, each asset's seconds and the rest; what was run on."""

    seconds: float
    runs: int
    stages_seconds: dict[str, float]
    images_embedded: int | None
    overhead_seconds: float
    peak_rss_mb: float | None = field(default=None, metadata=OPTIONAL)
    images: int | None = field(default=None, metadata=OPTIONAL)
    classes: int | None = field(default=None, metadata=OPTIONAL)
    images_per_second: float | None = field(default=None, metadata=OPTIONAL)
    new_images: int | None = field(default=None, metadata=OPTIONAL)
    label: str | None = field(default=None, metadata=OPTIONAL)


@dataclass
class Evaluation(Record):
    """feature_quality alone, over the materialized classes."""

    seconds: float
    accuracy_logreg_pca: float | None
    accuracy_1nn_pca: float | None


@dataclass
class DirectRefit(Record):
    """A class's images featurized with the platform's Spark functions, no Dagster, + scaler/PCA refit."""

    images: int
    featurize_seconds: float
    refit_seconds: float
    seconds: float


@dataclass
class PlatformPhase(Record):
    all_classes: MaterializeRun
    evaluation: Evaluation | None = field(default=None, metadata=OPTIONAL)
    add_class: MaterializeRun | None = field(default=None, metadata=OPTIONAL)
    add_class_direct: DirectRefit | None = field(default=None, metadata=OPTIONAL)
    class_5pct_new: MaterializeRun | None = field(default=None, metadata=OPTIONAL)
    class_full_recompute: MaterializeRun | None = field(default=None, metadata=OPTIONAL)
    process_seconds: float | None = field(default=None, metadata=OPTIONAL)
    process_peak_rss_mb: float | None = field(default=None, metadata=OPTIONAL)


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


def timed_materialize(instance, resources, classes, sampler: RssSampler | None = None) -> MaterializeRun:
    from fruits_platform.runner import asset_names, latest_metadata, materialize_classes

    if sampler:
        sampler.reset()
    started = time.perf_counter()
    # The featurization pipeline; feature_quality (an evaluation, not a step of it) is timed on its own.
    results = materialize_classes(instance, resources, classes, log_level="WARNING", evaluate=False)
    seconds = time.perf_counter() - started
    stages = {}
    for asset in asset_names():
        metadata = latest_metadata(results, asset)
        if metadata:
            stages[asset] = round(float(metadata.get("runtime_seconds", 0.0)), 2)
    return MaterializeRun(
        seconds=round(seconds, 2),
        runs=len(results),
        stages_seconds=stages,
        images_embedded=latest_metadata(results, "mobilenet_features").get("images_embedded"),
        # Two assets of one step report that step's time: what is outside the steps comes from the run's events.
        overhead_seconds=round(seconds - sum(step_seconds(instance, [r.run_id for r in results]).values()), 2),
        peak_rss_mb=sampler.peak_mb() if sampler else None,
    )


def timed_evaluation(instance, resources) -> Evaluation:
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
    return Evaluation(
        seconds=round(time.perf_counter() - started, 2),
        accuracy_logreg_pca=metadata.get("accuracy_logreg_pca"),
        accuracy_1nn_pca=metadata.get("accuracy_1nn_pca"),
    )


def phase_platform(args, sampler: RssSampler) -> PlatformPhase:
    from dagster import instance_for_test

    import fruits_platform.definitions  # noqa: F401  (imports stay outside the timings, as in the other phases)
    from fruits_platform.runner import register_classes

    work = Path(args["work"])
    (work / "home").mkdir(parents=True)
    data, output = Path(args["data_root"]), work / "out"
    resources = platform_resources(
        data, output, args["weights"], args["image_size"], args["spark_conf"], args["engine"]
    )
    with instance_for_test(temp_dir=str(work / "home")) as instance:
        classes, _ = register_classes(instance, str(data))
        images = sum(1 for p in data.glob("*/*/*") if p.is_file())
        run = timed_materialize(instance, resources, classes, sampler)
        run.images, run.classes, run.images_per_second = images, len(classes), round(images / run.seconds, 2)
        result = PlatformPhase(all_classes=run)
        if args.get("evaluate", True):
            result.evaluation = timed_evaluation(instance, resources)

        def save():
            Path(args["result_file"] + ".partial").write_text(json.dumps(result.to_json()))

        save()
        if args.get("extras"):
            extras(args, instance, resources, data, output, result, save)
    return result


def extras(args, instance, resources, data: Path, output: Path, result: PlatformPhase, save) -> None:
    """On the materialized classes: add a class (and the same work done directly), 5 % new images in one class,
    a full recompute of that class; `save` after each."""
    from PIL import Image, ImageOps

    from fruits_platform.runner import register_classes
    from fruits_platform.sources import class_dir_name

    # 1. One new class of 80 images (a copy of a class under a new name) on the materialized dataset.
    source = Path(args["new_class_source"])
    for split in ("Training", "Test"):
        shutil.copytree(source / split / args["new_class_from"], data / split / NEW_CLASS)
    new_images = sum(1 for _ in data.glob(f"*/{NEW_CLASS}/*"))
    register_classes(instance, str(data), [NEW_CLASS])
    # materialize_classes([new]): catalogue + embed the new class, refit feature_model over all classes,
    # refresh scaled/pca of every class (the refit changes them all).
    result.add_class = timed_materialize(instance, resources, [NEW_CLASS])
    result.add_class.images = new_images
    save()

    # ... versus featurizing those images alone + refitting scaler/PCA alone (same functions, same session).
    result.add_class_direct = direct_featurize_and_refit(resources, data, output, NEW_CLASS)
    save()

    # 2. 5 % new images in one class (new content: mirrored copies of some of its Training images).
    target = args["classes"][0]
    folder = data / "Training" / target
    originals = sorted(folder.iterdir())
    count = max(1, round(0.05 * sum(1 for _ in data.glob(f"*/{target}/*"))))
    for file in originals[:count]:
        with Image.open(file) as image:
            ImageOps.mirror(image.convert("RGB")).save(folder / f"bench_new_{file.stem}.jpg", quality=95)
    incremental = result.class_5pct_new = timed_materialize(instance, resources, [target])
    incremental.images, incremental.new_images = sum(1 for _ in data.glob(f"*/{target}/*")), count
    incremental.label = target
    save()

    # 3. Full recompute of that class: its embeddings removed first, so that nothing is reused.
    shutil.rmtree(output / "mobilenet_features" / class_dir_name(target))
    full = result.class_full_recompute = timed_materialize(instance, resources, [target])
    full.images, full.label = incremental.images, target
    save()


def direct_featurize_and_refit(resources, data, output, label) -> DirectRefit:
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
    return DirectRefit(
        images=len(files),
        featurize_seconds=round(featurize, 2),
        refit_seconds=round(refit, 2),
        seconds=round(featurize + refit, 2),
    )
