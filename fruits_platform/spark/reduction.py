"""StandardScaler + PCA as pyspark.ml models: fitted once on the Training split of every class, applied to all.

The fitted `PipelineModel` (stages: StandardScaler, PCA on a vector column) is what the app side
loads: `transform_features(model, frame)` turns a frame with a `features` array column into
`scaled_features` and `pca_features` arrays in one call.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from pyspark.ml import PipelineModel
from pyspark.ml.feature import PCA, StandardScaler
from pyspark.ml.functions import array_to_vector, vector_to_array
from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F

from fruits_platform.ml.moments import (
    VALIDATION_EVERY,
    ScalerAndAxes,
    choose_k,
    choose_k_by_accuracy,
    fit_scaler_and_axes,
)
from fruits_platform.spark.jvm import pca_model as jvm_pca_model
from fruits_platform.spark.jvm import standard_scaler_model
from fruits_platform.spark.moments import moments as spark_moments

FEATURES_VECTOR = "features_vector"
SCALED_VECTOR = "scaled_vector"
PCA_VECTOR = "pca_vector"
K_RULES = ("variance", "accuracy")  # how k is chosen when no fixed k is given


@dataclass(frozen=True)
class ReductionSummary:
    k: int
    training_rows: int
    explained_variance: list[float]  # per kept component, as fractions of the total variance
    spectrum: list[float]  # every component that could be computed (for the scree plot)
    k_rule: str = "variance"  # "fixed", "variance" or "accuracy"
    # The accuracy rule's evidence: 1-NN accuracy on the held-out Training images per k tried, and unreduced.
    validation_accuracy: dict[int, float] = field(default_factory=dict)
    validation_full_accuracy: float | None = None
    validation_images: int = 0

    @property
    def cumulative_variance(self) -> list[float]:
        return np.cumsum(self.explained_variance).tolist()


def validation_split(training: DataFrame, every: int = VALIDATION_EVERY) -> tuple[DataFrame, DataFrame]:
    """A deterministic stratified split of the Training rows: per class, ordered by image hash (then uri),
    every `every`-th row is held out for validation (classes with fewer rows keep them all for fitting)."""
    rank = F.row_number().over(Window.partitionBy("label").orderBy("sha256", "uri"))
    ranked = training.withColumn("_rank", rank)
    held_out = F.col("_rank") % every == 0
    return ranked.where(~held_out).drop("_rank"), ranked.where(held_out).drop("_rank")


def _k_by_accuracy(training: DataFrame, tolerance: float) -> tuple[int, dict[int, float], float, int]:
    """Fit scaler + PCA on 3/4 of the Training rows, choose k by 1-NN accuracy on the other 1/4.
    The Test split is never looked at. The data (Training only, 1280 floats per image) is collected."""
    fit, validation = validation_split(training)
    columns = [array_to_vector("features").alias(FEATURES_VECTOR), "label"]
    fit, validation = fit.select(*columns).cache(), validation.select(*columns)
    try:
        rows = fit.count()
        scaler = StandardScaler(inputCol=FEATURES_VECTOR, outputCol=SCALED_VECTOR, withMean=True, withStd=True)
        scaler_model = scaler.fit(fit)
        scaled_fit = scaler_model.transform(fit)
        dimension = len(fit.first()[FEATURES_VECTOR])
        pca = PCA(k=min(dimension, rows), inputCol=SCALED_VECTOR, outputCol=PCA_VECTOR).fit(scaled_fit)
        usable = max(1, sum(1 for value in pca.explainedVariance.toArray() if value > 1e-9))
        components = pca.pc.toArray()[:, :usable]

        def collect(frame):
            table = scaler_model.transform(frame).select("label", vector_to_array(SCALED_VECTOR).alias("x")).toArrow()
            x = table.column("x").combine_chunks().flatten().to_numpy().reshape(table.num_rows, dimension)
            return x, np.asarray(table.column("label").to_pylist())

        fit_x, fit_y = collect(fit)
        validation_x, validation_y = collect(validation)
    finally:
        fit.unpersist()
    k, tried, full = choose_k_by_accuracy(fit_x, fit_y, validation_x, validation_y, components, tolerance)
    return k, tried, full, len(validation_y)


def fit_feature_model(
    training: DataFrame,
    fixed_k: int | None = None,
    variance_threshold: float = 0.95,
    k_rule: str = "variance",
    accuracy_tolerance: float = 0.01,
) -> tuple[PipelineModel, ReductionSummary]:
    """Fit scaler and PCA on `training` (a frame with a `features` array column).

    k: `fixed_k` when given; else by `k_rule`: "variance" (smallest k reaching `variance_threshold`) or
    "accuracy" (smallest k whose 1-NN accuracy on held-out Training images is within `accuracy_tolerance`
    of the unreduced features'; needs `label`, `sha256` and `uri` columns)."""
    if k_rule not in K_RULES:
        raise ValueError(f"k rule must be one of {', '.join(K_RULES)}, got {k_rule!r}")
    by_accuracy = not fixed_k and k_rule == "accuracy"
    validation: dict[int, float] = {}
    full_accuracy, validation_images = None, 0
    if by_accuracy:
        fixed_k, validation, full_accuracy, validation_images = _k_by_accuracy(training, accuracy_tolerance)
    # One pass: each task sends its rows' moments; the scaler and every axis follow on the driver, with
    # pyspark.ml's estimators and signs (its PCA fit, an SVD in the JVM, took seconds whatever the rows).
    moments = spark_moments(training, "features")
    if moments.count < 2:
        raise ValueError(f"fitting the scaler and PCA needs at least 2 Training images, got {moments.count}")
    fitted = fit_scaler_and_axes(moments)
    spectrum = fitted.spectrum[: min(len(fitted.mean), moments.count)]  # as PCA(k=min(dimension, rows))
    k = choose_k(spectrum, fixed_k, variance_threshold)
    spark, rows = training.sparkSession, moments.count
    scaler_model = standard_scaler_model(spark, fitted.mean, fitted.std, FEATURES_VECTOR, SCALED_VECTOR)
    pca_model = jvm_pca_model(spark, fitted.axes[:, :k], np.asarray(spectrum[:k]), SCALED_VECTOR, PCA_VECTOR)
    summary = ReductionSummary(
        k=k,
        training_rows=rows,
        explained_variance=spectrum[:k],
        spectrum=spectrum,
        k_rule="accuracy" if by_accuracy else ("fixed" if fixed_k else "variance"),
        validation_accuracy=validation,
        validation_full_accuracy=full_accuracy,
        validation_images=validation_images,
    )
    return PipelineModel(stages=[scaler_model, pca_model]), summary


def scaler_and_axes(model: PipelineModel) -> ScalerAndAxes:
    """The arrays of a fitted model (its scaler's mean and deviation, its k principal axes), for NumPy."""
    scaler, pca = model.stages
    mean, std = scaler.mean.toArray(), scaler.std.toArray()
    mean = mean if scaler.getWithMean() else np.zeros_like(mean)
    std = std if scaler.getWithStd() else np.ones_like(std)
    return ScalerAndAxes(mean, std, list(pca.explainedVariance), pca.pc.toArray())


def scale(model: PipelineModel, frame: DataFrame) -> DataFrame:
    """`features` (1280) -> `scaled_features` (1280 float32); other columns kept."""
    scaler = model.stages[0]
    out = scaler.transform(frame.withColumn(FEATURES_VECTOR, array_to_vector("features")))
    return out.withColumn("scaled_features", vector_to_array(SCALED_VECTOR, "float32")).drop(
        FEATURES_VECTOR, SCALED_VECTOR, "features"
    )


def project(model: PipelineModel, frame: DataFrame) -> DataFrame:
    """`scaled_features` -> `pca_features` (k float32); other columns kept."""
    pca = model.stages[1]
    out = pca.transform(frame.withColumn(SCALED_VECTOR, array_to_vector("scaled_features")))
    return out.withColumn("pca_features", vector_to_array(PCA_VECTOR, "float32")).drop(
        SCALED_VECTOR, PCA_VECTOR, "scaled_features"
    )


def transform_features(model: PipelineModel, frame: DataFrame) -> DataFrame:
    """The app-side call: `features` arrays -> `scaled_features` and `pca_features` arrays."""
    out = model.transform(frame.withColumn(FEATURES_VECTOR, array_to_vector("features")))
    return out.select(
        *frame.columns,
        vector_to_array(SCALED_VECTOR, "float32").alias("scaled_features"),
        vector_to_array(PCA_VECTOR, "float32").alias("pca_features"),
    )


def explained_variance_valid(values: list[float]) -> bool:
    return bool(values) and all(0 < v <= 1 for v in values) and sum(values) <= 1 + 1e-6


HELD_OUT = "held_out"


def with_held_out(training: DataFrame) -> DataFrame:
    """`training` with a boolean `held_out` column: the rows that `validation_split` holds out."""
    fit, held = validation_split(training)
    return fit.withColumn(HELD_OUT, F.lit(False)).unionByName(held.withColumn(HELD_OUT, F.lit(True)))
