"""A multinomial logistic regression in NumPy: pyspark.ml's model and objective, fitted on the driver.

The objective is pyspark.ml `LogisticRegression`'s (family multinomial, L2 penalty, standardization off, an
intercept per class, not penalised): the mean log-loss plus reg_param / 2 * |W|^2, minimised by L-BFGS as
Spark does (10 corrections, at most `max_iter` iterations, stopping as Breeze's L-BFGS does: when the objective
changed by at most `tol` times its initial value over the last `HISTORY` iterations, or the gradient vanishes). On rows already on the driver it needs no Spark job per
iteration: each iteration is two matrix products of the rows with the coefficients.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

CORRECTIONS = 10  # L-BFGS memory, as Spark's (Breeze's default m)
HISTORY = 10  # iterations over which the objective's relative change is judged, as Breeze does
ARMIJO = 1e-4  # sufficient decrease of the backtracking line search
MAX_BACKTRACKS = 30


@dataclass(frozen=True)
class SoftmaxModel:
    coefficients: np.ndarray  # (classes, features)
    intercepts: np.ndarray  # (classes,)
    objective: float
    iterations: int

    def margins(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(x, dtype=np.float64) @ self.coefficients.T + self.intercepts

    def predict(self, x: np.ndarray) -> np.ndarray:
        """The class index of the largest margin, as the Spark model's `transform` predicts."""
        return np.argmax(self.margins(x), axis=1)


def objective_and_gradient(
    x: np.ndarray,
    one_hot: np.ndarray,
    reg_param: float,
    coefficients: np.ndarray,
    intercepts: np.ndarray,
    penalty_weights: np.ndarray | float = 1.0,
) -> tuple[float, np.ndarray, np.ndarray]:
    """Mean log-loss + reg_param / 2 * sum(penalty_weights * W^2) and its gradient in W and b. `x` float32 (the
    products run in single precision, the sums that follow are in double)."""
    margins = (x @ coefficients.T.astype(np.float32)).astype(np.float64) + intercepts
    margins -= margins.max(axis=1, keepdims=True)
    exponentials = np.exp(margins)
    sums = exponentials.sum(axis=1, keepdims=True)
    rows = len(x)
    loss = float((np.log(sums[:, 0]) - (margins * one_hot).sum(axis=1)).mean())
    residuals = exponentials / sums - one_hot
    weighted = penalty_weights * coefficients
    gradient_w = (residuals.T.astype(np.float32) @ x).astype(np.float64) / rows + reg_param * weighted
    gradient_b = residuals.sum(axis=0) / rows
    return loss + 0.5 * reg_param * float((weighted * coefficients).sum()), gradient_w, gradient_b


def fit_softmax_regression(
    x: np.ndarray, y: np.ndarray, classes: int, reg_param: float = 0.01, max_iter: int = 100, tol: float = 1e-6
) -> SoftmaxModel:
    """Fit on rows `x` (n, d) with class indexes `y` in [0, classes).

    As Spark does, the fit runs on the features divided by their standard deviations (the penalty divided
    accordingly, so the objective is the same): on PCA components, whose variances span orders of magnitude,
    L-BFGS needs far fewer iterations. A constant feature gets a coefficient of 0."""
    std = np.asarray(x, dtype=np.float64).std(axis=0, ddof=1) if len(x) > 1 else np.ones(np.shape(x)[1])
    inverse = np.divide(1.0, std, out=np.zeros_like(std), where=std > 0)
    x = np.ascontiguousarray(np.asarray(x, dtype=np.float64) * inverse, dtype=np.float32)
    penalty_weights = inverse**2
    y = np.asarray(y, dtype=np.int64)
    one_hot = np.zeros((len(y), classes))
    one_hot[np.arange(len(y)), y] = 1.0
    features = x.shape[1]
    # The intercepts start at the classes' log-frequencies (what Spark starts from), the coefficients at 0.
    counts = np.bincount(y, minlength=classes).astype(np.float64)
    intercepts = np.where(counts > 0, np.log(np.maximum(counts, 1.0)), -20.0)
    params = np.concatenate([np.zeros(classes * features), intercepts - intercepts.mean()])

    def evaluate(params: np.ndarray) -> tuple[float, np.ndarray]:
        value, gradient_w, gradient_b = objective_and_gradient(
            x,
            one_hot,
            reg_param,
            params[: classes * features].reshape(classes, features),
            params[classes * features :],
            penalty_weights,
        )
        return value, np.concatenate([gradient_w.ravel(), gradient_b])

    value, gradient = evaluate(params)
    history, steps, changes = [value], [], []
    iteration = 0
    for iteration in range(1, max_iter + 1):
        direction = -two_loop(gradient, steps, changes)
        slope = dot(gradient, direction)
        if slope >= 0:  # not a descent direction (numerical): start again from the gradient
            steps.clear(), changes.clear()
            direction, slope = -gradient, -dot(gradient, gradient)
        step = 1.0 if steps else min(1.0, 1.0 / max(np.abs(gradient).sum(), 1e-12))
        for _ in range(MAX_BACKTRACKS):
            candidate = params + step * direction
            new_value, new_gradient = evaluate(candidate)
            if new_value <= value + ARMIJO * step * slope:
                break
            step *= 0.5
        else:
            break  # no decrease along this direction: converged as far as the arithmetic allows
        step_taken, change = candidate - params, new_gradient - gradient
        if dot(step_taken, change) > 1e-12:  # keeps the inverse Hessian estimate positive definite
            steps.append(step_taken), changes.append(change)
            if len(steps) > CORRECTIONS:
                steps.pop(0), changes.pop(0)
        params, value, gradient = candidate, new_value, new_gradient
        history.append(value)
        if np.abs(gradient).max() <= max(tol * abs(value), 1e-8):
            break
        if len(history) > HISTORY and history[-HISTORY - 1] - value <= tol * abs(history[0]):
            break
    coefficients = params[: classes * features].reshape(classes, features) * inverse  # back to the features' units
    return SoftmaxModel(coefficients, params[classes * features :], value, iteration)


def two_loop(gradient: np.ndarray, steps: list[np.ndarray], changes: list[np.ndarray]) -> np.ndarray:
    """L-BFGS's estimate of the inverse Hessian times `gradient`, from the last steps and gradient changes."""
    q = gradient.copy()
    alphas = []
    for s, c in zip(reversed(steps), reversed(changes)):
        alpha = dot(s, q) / dot(c, s)
        q -= alpha * c
        alphas.append(alpha)
    if steps:
        q *= dot(steps[-1], changes[-1]) / dot(changes[-1], changes[-1])
    for (s, c), alpha in zip(zip(steps, changes), reversed(alphas)):
        beta = dot(c, q) / dot(c, s)
        q += (alpha - beta) * s
    return q


def dot(a: np.ndarray, b: np.ndarray) -> float:
    """A vector dot product without BLAS: a threaded BLAS call costs ~0.1 s per call on a busy machine."""
    return float(np.multiply(a, b).sum())
