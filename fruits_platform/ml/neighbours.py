"""1-nearest-neighbour classification with the Euclidean distance, in NumPy (pyspark.ml has none): the
classifier that shows what a reduction costs, PCA being the best rank-k approximation in that distance."""

from __future__ import annotations

import numpy as np


def nearest_neighbour_predict(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, chunk: int = 512):
    """1-NN with the Euclidean distance: the label of the closest training row (ties: the first one).

    |a - b|^2 = |a|^2 - 2 a.b + |b|^2, one matrix product per chunk of test rows (float64)."""
    train_x = np.asarray(train_x, dtype=np.float64)
    test_x = np.asarray(test_x, dtype=np.float64)
    if len(train_x) == 0:
        raise ValueError("1-NN needs at least one training row")
    train_norms = (train_x**2).sum(axis=1)
    nearest = np.empty(len(test_x), dtype=np.int64)
    for start in range(0, len(test_x), chunk):
        block = test_x[start : start + chunk]
        distances = train_norms[None, :] - 2.0 * block @ train_x.T  # + |block|^2, constant per row
        nearest[start : start + chunk] = np.argmin(distances, axis=1)
    return np.asarray(train_y)[nearest]
