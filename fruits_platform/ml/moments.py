"""StandardScaler + PCA from moments: NumPy only, no Spark.

The moments of a set of rows (their count, sum and X^T X) add up: computed per part of the data (a Spark
partition, a worker's share) and summed, they give the mean, the standard deviation and the covariance of
the whole, from which the scaler and every principal axis follow (an SVD of a d x d matrix), without a
second pass over the rows. The same estimators as pyspark.ml's StandardScaler (unbiased standard
deviation; a constant feature scales to 0) and PCA (the covariance of the scaled rows, explained variance as
fractions of its trace), with pyspark.ml's sign for each axis: the same LAPACK SVD of the same matrix.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fruits_platform.ml.neighbours import nearest_neighbour_predict

# k values tried by the accuracy rule, smallest first (capped at the number of usable components).
ACCURACY_CANDIDATES = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024, 1280)
VALIDATION_EVERY = 4  # the accuracy rule holds out every 4th Training image of each class (25 %)


@dataclass(frozen=True)
class Moments:
    count: int
    total: np.ndarray  # (d,) float64: the sum of the rows
    cross: np.ndarray  # (d, d) float64: X^T X

    @classmethod
    def of(cls, rows: np.ndarray) -> Moments:
        rows = np.asarray(rows, dtype=np.float64)
        return cls(len(rows), rows.sum(axis=0), rows.T @ rows)

    def __add__(self, other: Moments) -> Moments:
        return Moments(self.count + other.count, self.total + other.total, self.cross + other.cross)


@dataclass(frozen=True)
class ScalerAndAxes:
    mean: np.ndarray  # (d,)
    std: np.ndarray  # (d,) unbiased; 0 for a constant feature
    spectrum: list[float]  # explained-variance ratio of every component, largest first
    axes: np.ndarray  # (d, d) principal axes as columns, in the order of `spectrum`

    def scale(self, rows: np.ndarray) -> np.ndarray:
        """(rows - mean) / std, 0 where std is 0 (as pyspark.ml's StandardScaler), float64."""
        inverse = np.divide(1.0, self.std, out=np.zeros_like(self.std), where=self.std > 0)
        return (np.asarray(rows, dtype=np.float64) - self.mean) * inverse

    def project(self, scaled: np.ndarray, k: int) -> np.ndarray:
        """The first k principal components of scaled rows (float64)."""
        return np.asarray(scaled, dtype=np.float64) @ self.axes[:, :k]


def fit_scaler_and_axes(moments: Moments) -> ScalerAndAxes:
    """The scaler and every principal axis of the rows whose moments these are (at least 2 rows)."""
    n = moments.count
    if n < 2:
        raise ValueError(f"fitting the scaler and PCA needs at least 2 rows, got {n}")
    mean = moments.total / n
    covariance = (moments.cross - n * np.outer(mean, mean)) / (n - 1)
    std = np.sqrt(np.clip(np.diag(covariance), 0.0, None))
    inverse = np.divide(1.0, std, out=np.zeros_like(std), where=std > 0)
    scaled_covariance = covariance * np.outer(inverse, inverse)
    axes, variances, _ = np.linalg.svd(scaled_covariance)  # as Spark's PCA: an eigendecomposition has other signs
    total = variances.sum()
    spectrum = [float(v) for v in (variances / total if total > 0 else variances)]
    return ScalerAndAxes(mean, std, spectrum, axes)


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


def principal_axes(training: np.ndarray) -> tuple[list[float], np.ndarray]:
    """PCA of `training` (rows x dimension): the explained-variance ratio of every component (the spectrum,
    min(rows, dimension) of them) and the principal axes as columns, largest variance first."""
    centred = training - training.mean(axis=0)
    rows, dimension = centred.shape
    if rows < dimension:
        _, singular, axes = np.linalg.svd(centred, full_matrices=False)
        variances, axes = singular**2, axes.T
    else:  # the eigenvectors of the d x d scatter matrix: an SVD of every row costs ~10 times more
        eigenvalues, eigenvectors = np.linalg.eigh(centred.T @ centred)
        order = np.argsort(eigenvalues)[::-1]
        variances, axes = np.clip(eigenvalues[order], 0.0, None), eigenvectors[:, order]
    total = variances.sum()
    return [float(v) for v in (variances / total if total > 0 else variances)], axes


def choose_k_by_accuracy(
    fit_x: np.ndarray,
    fit_y: np.ndarray,
    validation_x: np.ndarray,
    validation_y: np.ndarray,
    components: np.ndarray,
    tolerance: float,
    candidates=ACCURACY_CANDIDATES,
) -> tuple[int, dict[int, float], float]:
    """The smallest k whose 1-NN (Euclidean) validation accuracy on the first k principal components is
    within `tolerance` of the accuracy on the unreduced (scaled) features.

    `fit_x`/`validation_x` are scaled features, `components` the (dimension, k_max) principal axes fitted
    on `fit_x`. Returns (k, {k tried: accuracy}, unreduced accuracy); when no candidate reaches the target,
    the most accurate one tried."""
    if not 0 <= tolerance <= 1:
        raise ValueError(f"accuracy tolerance must be in [0, 1], got {tolerance}")
    if len(validation_y) == 0:
        raise ValueError(
            f"choosing k by accuracy holds out every {VALIDATION_EVERY}th Training image of each class: "
            f"at least one class needs {VALIDATION_EVERY} Training images"
        )

    def accuracy(fit, validation) -> float:
        return float(np.mean(nearest_neighbour_predict(fit, fit_y, validation) == validation_y))

    full = accuracy(fit_x, validation_x)
    k_max = components.shape[1]
    fit_projected, validation_projected = fit_x @ components, validation_x @ components
    tried: dict[int, float] = {}
    for k in sorted({min(k, k_max) for k in candidates}):
        tried[k] = accuracy(fit_projected[:, :k], validation_projected[:, :k])
        if tried[k] >= full - tolerance - 1e-12:
            return k, tried, full
    return max(tried, key=lambda k: (tried[k], -k)), tried, full
