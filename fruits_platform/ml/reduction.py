"""StandardScaler + PCA with pyspark.ml: fit once on the Training split of every class, apply to all.

The fitted `PipelineModel` (stages: StandardScaler, PCA on a vector column) is what the app side
loads: `transform_features(model, frame)` turns a frame with a `features` array column into
`scaled_features` and `pca_features` arrays in one call.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from pyspark.ml import PipelineModel
from pyspark.ml.feature import PCA, StandardScaler
from pyspark.ml.functions import array_to_vector, vector_to_array
from pyspark.sql import DataFrame

FEATURES_VECTOR = "features_vector"
SCALED_VECTOR = "scaled_vector"
PCA_VECTOR = "pca_vector"


@dataclass(frozen=True)
class ReductionSummary:
    k: int
    training_rows: int
    explained_variance: list[float]  # per kept component, as fractions of the total variance
    spectrum: list[float]  # every component that could be computed (for the scree plot)

    @property
    def cumulative_variance(self) -> list[float]:
        return np.cumsum(self.explained_variance).tolist()


def choose_k(spectrum: list[float], fixed_k: int | None, variance_threshold: float) -> int:
    """A fixed k (capped at what the data supports), else the smallest k reaching the threshold."""
    if fixed_k:  # components beyond the data's rank explain nothing: never keep them
        usable = sum(1 for value in spectrum if value > 1e-9)
        return max(1, min(fixed_k, usable))
    if not 0 < variance_threshold <= 1:
        raise ValueError(f"variance_threshold must be in (0, 1], got {variance_threshold}")
    cumulative = np.cumsum(spectrum)
    reached = np.nonzero(cumulative >= variance_threshold - 1e-12)[0]
    return int(reached[0]) + 1 if len(reached) else len(spectrum)


def fit_feature_model(
    training: DataFrame, fixed_k: int | None = None, variance_threshold: float = 0.95
) -> tuple[PipelineModel, ReductionSummary]:
    """Fit scaler and PCA on `training` (a frame with a `features` array column)."""
    vectors = training.select(array_to_vector("features").alias(FEATURES_VECTOR)).cache()
    try:
        rows = vectors.count()
        if rows < 2:
            raise ValueError(f"fitting the scaler and PCA needs at least 2 Training images, got {rows}")
        dimension = len(vectors.first()[FEATURES_VECTOR])
        scaler = StandardScaler(inputCol=FEATURES_VECTOR, outputCol=SCALED_VECTOR, withMean=True, withStd=True)
        scaler_model = scaler.fit(vectors)
        scaled = scaler_model.transform(vectors).select(SCALED_VECTOR).cache()
        # The whole spectrum first (at most rank = rows - 1 non-zero components), then the chosen k.
        max_k = min(dimension, rows)
        full = PCA(k=max_k, inputCol=SCALED_VECTOR, outputCol=PCA_VECTOR).fit(scaled)
        spectrum = [float(v) for v in full.explainedVariance.toArray()]
        k = choose_k(spectrum, fixed_k, variance_threshold)
        pca_model = full if k == max_k else PCA(k=k, inputCol=SCALED_VECTOR, outputCol=PCA_VECTOR).fit(scaled)
        scaled.unpersist()
    finally:
        vectors.unpersist()
    summary = ReductionSummary(
        k=k,
        training_rows=rows,
        explained_variance=[float(v) for v in pca_model.explainedVariance.toArray()],
        spectrum=spectrum,
    )
    return PipelineModel(stages=[scaler_model, pca_model]), summary


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


def model_fingerprint(model: PipelineModel) -> str:
    """Identifies a fitted model by its parameters (scaler mean/std, principal components)."""
    import hashlib

    scaler, pca = model.stages
    digest = hashlib.sha256()
    for array in (scaler.mean.toArray(), scaler.std.toArray(), pca.pc.toArray()):
        digest.update(np.ascontiguousarray(array, dtype=np.float64).tobytes())
    return digest.hexdigest()[:24]
