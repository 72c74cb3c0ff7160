"""The Spark side of `feature_quality`: a deterministic sample of the rows to evaluate, collected once through
Arrow; the scores are computed on the driver in NumPy (`fruits_platform.ml.quality`)."""

from __future__ import annotations

import numpy as np
from pyspark.ml import PipelineModel
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from fruits_platform.ml.quality import DEFAULT_CURVE_KS, QualityReport, evaluate_arrays
from fruits_platform.spark.reduction import scaler_and_axes

SAMPLE_BUCKETS = 1_000_000


def evaluation_sample(
    frame: DataFrame, max_images: int | None, total: int | None = None
) -> tuple[DataFrame, int | None, float]:
    """At most about `max_images` rows of `frame`: those whose uri hashes below the fraction (the same rows at
    every run, each class and split keeping its share on average). `total`: the rows of `frame` when known
    (else counted). Returns (rows, rows in frame or None when not counted, fraction)."""
    if not max_images:
        return frame, total, 1.0
    total = frame.count() if total is None else total
    if total <= max_images:
        return frame, total, 1.0
    fraction = max_images / total
    kept = F.pmod(F.xxhash64("uri"), F.lit(SAMPLE_BUCKETS)) < int(fraction * SAMPLE_BUCKETS)
    return frame.where(kept), total, fraction


def arrays(frame: DataFrame, columns: list[str]) -> dict[str, np.ndarray]:
    """Collect array<float> columns as (rows, width) float32 matrices, in the frame's order, through Arrow."""
    table = frame.select(*columns).toArrow()
    out = {}
    for name in columns:
        column = table.column(name).combine_chunks()
        if hasattr(column, "flatten") and hasattr(column.type, "value_type"):
            values = column.flatten().to_numpy(zero_copy_only=False).astype(np.float32)
            out[name] = values.reshape(len(column), -1) if len(column) else np.zeros((0, 0), np.float32)
        else:
            out[name] = np.asarray(column.to_pylist())
    return out


def evaluate_features(
    frame: DataFrame,
    ks=DEFAULT_CURVE_KS,
    variance_threshold: float = 0.95,
    reg_param: float = 0.01,
    max_iter: int = 100,
    max_images: int | None = None,
) -> QualityReport:
    """`evaluate_arrays` of the rows of `frame` (uri, label, split, scaled_features, pca_features), beyond
    `max_images` rows of its `evaluation_sample`."""
    frame, total_images, fraction = evaluation_sample(frame, max_images)
    collected = arrays(frame, ["uri", "label", "split", "scaled_features", "pca_features"])
    return evaluate_arrays(collected, ks, variance_threshold, reg_param, max_iter, total_images, fraction)


def evaluate_model(
    frame: DataFrame,
    model: PipelineModel,
    ks=DEFAULT_CURVE_KS,
    variance_threshold: float = 0.95,
    max_images: int | None = None,
    total_images: int | None = None,
) -> QualityReport:
    """`evaluate_features` of the rows of `frame` (uri, label, split, features) scaled and projected by `model`:
    only the sample's embeddings are collected, and `model`'s arithmetic is done on them on the driver (what
    its transform does row by row in the JVM). `total_images`: the rows of `frame`, when known."""
    frame, total_images, fraction = evaluation_sample(frame, max_images, total_images)
    collected = arrays(frame, ["uri", "label", "split", "features"])
    fitted = scaler_and_axes(model)
    scaled = fitted.scale(collected.pop("features"))
    collected["scaled_features"] = scaled.astype(np.float32)
    collected["pca_features"] = fitted.project(scaled, fitted.axes.shape[1]).astype(np.float32)
    return evaluate_arrays(collected, ks, variance_threshold, total_images=total_images, fraction=fraction)
