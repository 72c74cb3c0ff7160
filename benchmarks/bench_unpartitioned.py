"""bench.py's `unpartitioned` phase: the platform's plain functions (catalogue_and_embed, fit_feature_model,
scale, project) over every image in one fresh SparkSession with the same Spark config, plain Parquet writes, no
Dagster and no partitions: what the platform's orchestration is compared with."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from common import OPTIONAL, Record, RssSampler


@dataclass
class UnpartitionedPhase(Record):
    seconds: float
    images: int
    images_per_second: float
    pca_k: int
    stages_seconds: dict[str, float]
    peak_rss_mb: float
    process_seconds: float | None = field(default=None, metadata=OPTIONAL)
    process_peak_rss_mb: float | None = field(default=None, metadata=OPTIONAL)


def phase_unpartitioned(args, sampler: RssSampler) -> UnpartitionedPhase:
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
    return UnpartitionedPhase(
        seconds=round(seconds, 2),
        images=len(files),
        images_per_second=round(len(files) / seconds, 2),
        pca_k=summary.k,
        stages_seconds=stages,
        peak_rss_mb=sampler.peak_mb(),
    )
