"""`fruits_platform.ml.moments`: the scaler and principal axes from summed moments equal those of the rows."""

import numpy as np
import pytest

from fruits_platform.ml.moments import Moments, choose_k, fit_scaler_and_axes


def rows(seed=0, n=300, d=12):
    generator = np.random.default_rng(seed)
    x = generator.normal(size=(n, d)) @ generator.normal(size=(d, d)) + generator.uniform(0, 5, size=d)
    x[:, 3] = 2.5  # a constant feature: scaled to 0, as pyspark.ml's StandardScaler does
    return x


def test_moments_of_parts_add_up_to_the_moments_of_the_whole():
    x = rows()
    whole, parts = Moments.of(x), Moments.of(x[:100]) + Moments.of(x[100:250]) + Moments.of(x[250:])
    assert parts.count == whole.count == 300
    np.testing.assert_allclose(parts.total, whole.total)
    np.testing.assert_allclose(parts.cross, whole.cross)


def test_scaler_and_axes_equal_numpy_on_the_rows():
    x = rows()
    fitted = fit_scaler_and_axes(Moments.of(x[:150]) + Moments.of(x[150:]))
    np.testing.assert_allclose(fitted.mean, x.mean(axis=0))
    np.testing.assert_allclose(fitted.std, x.std(axis=0, ddof=1), atol=1e-12)
    std = x.std(axis=0, ddof=1)
    scaled = np.where(std > 0, (x - x.mean(axis=0)) / np.where(std > 0, std, 1), 0.0)
    np.testing.assert_allclose(fitted.scale(x), scaled, atol=1e-9)
    singular = np.linalg.svd(scaled - scaled.mean(axis=0), compute_uv=False) ** 2
    expected = np.zeros(x.shape[1])
    expected[: len(singular)] = singular / singular.sum()
    np.testing.assert_allclose(fitted.spectrum, expected, atol=1e-12)
    # Axes are orthonormal and diagonalise the covariance of the scaled rows, largest variance first.
    axes = fitted.axes
    np.testing.assert_allclose(axes.T @ axes, np.eye(x.shape[1]), atol=1e-10)
    projected = fitted.project(fitted.scale(x), 5)
    variances = projected.var(axis=0, ddof=1)
    assert np.all(np.diff(variances) <= 1e-9)
    np.testing.assert_allclose(variances / np.trace(np.cov(scaled, rowvar=False)), fitted.spectrum[:5], rtol=1e-9)


def test_fewer_than_two_rows_are_refused():
    with pytest.raises(ValueError, match="at least 2 rows"):
        fit_scaler_and_axes(Moments.of(rows()[:1]))


def test_choose_k_fixed_capped_or_by_variance():
    spectrum = [0.5, 0.3, 0.15, 0.05, 0.0]
    assert choose_k(spectrum, None, 0.95) == 3
    assert choose_k(spectrum, 10, 0.95) == 4  # components beyond the rank are never kept
    assert choose_k(spectrum, None, 1.0) == 4
