"""How well the features separate fruit classes: classifiers trained on the Training split, scored on Test.

Two classifiers, deliberately simple so that they measure the features rather than the classifier:
  * a multinomial logistic regression, L2-regularised: pyspark.ml `LogisticRegression`'s model and objective,
    fitted by L-BFGS in NumPy (`fruits_platform.ml.logistic`);
  * a 1-nearest-neighbour classifier with the **Euclidean** distance, in NumPy (pyspark.ml has none).
    Euclidean because PCA is the best rank-k approximation in that very distance, so 1-NN
    accuracy on `pca_features` vs `scaled_features` shows exactly what the reduction costs.
Spark reads and samples the rows (`fruits_platform.spark.evaluation`); the evaluated rows are collected once,
through Arrow, and both classifiers run here, on the driver, where each of the logistic regression's iterations is two matrix products instead of a
Spark job. Beyond `max_images` the rows are a deterministic sample by uri (every class keeps its share), so
that the driver's memory and the time stay bounded whatever the data's size. Predictions are reduced to a confusion matrix (classes x classes) from
which accuracy, macro-F1, per-class accuracy and confused pairs all follow: Spark's evaluator has no
macro-F1 (its "f1" is weighted by class support) and its per-label metrics cost one Spark job per class.

No Dagster here: `fruits_platform.assets.feature_quality` turns a `QualityReport` into metadata.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from fruits_platform.ml.logistic import fit_softmax_regression
from fruits_platform.ml.moments import choose_k, principal_axes
from fruits_platform.ml.neighbours import nearest_neighbour_predict

DEFAULT_CURVE_KS = (16, 32, 64, 128, 256)
LOGREG, NEAREST = "logreg", "1nn"
CLASSIFIERS = (LOGREG, NEAREST)
LABEL_INDEX = "label_index"


# --------------------------------------------------------------------------------------------- metrics


@dataclass(frozen=True)
class Scores:
    """Accuracy, macro-F1 and the rest, all derived from one confusion matrix."""

    classes: list[str]
    confusion: np.ndarray  # [true class, predicted class] counts, indexed like `classes`

    @property
    def total(self) -> int:
        return int(self.confusion.sum())

    @property
    def accuracy(self) -> float:
        return float(np.trace(self.confusion) / self.total) if self.total else 0.0

    @property
    def macro_f1(self) -> float:
        """Unweighted mean of the per-class F1 over the classes present in the truth or the predictions."""
        tp = np.diag(self.confusion).astype(float)
        support, predicted = self.confusion.sum(axis=1), self.confusion.sum(axis=0)
        present = (support + predicted) > 0
        f1 = 2 * tp[present] / (support[present] + predicted[present])
        return float(f1.mean()) if present.any() else 0.0

    @property
    def per_class_accuracy(self) -> dict[str, float]:
        """Recall of each class that has test images: the share of its images classified correctly."""
        support = self.confusion.sum(axis=1)
        return {c: float(self.confusion[i, i] / support[i]) for i, c in enumerate(self.classes) if support[i]}

    @property
    def support(self) -> dict[str, int]:
        return {c: int(n) for c, n in zip(self.classes, self.confusion.sum(axis=1))}

    def confused_pairs(self, top: int = 10) -> list[tuple[str, str, int, int]]:
        """The unordered class pairs mistaken for each other most: (a, b, a predicted as b, b as a)."""
        both = self.confusion + self.confusion.T
        rows, cols = np.triu_indices(len(self.classes), k=1)
        counts = both[rows, cols]
        order = [i for i in np.lexsort((cols, rows, -counts)) if counts[i] > 0][:top]
        return [
            (
                self.classes[rows[i]],
                self.classes[cols[i]],
                int(self.confusion[rows[i], cols[i]]),
                int(self.confusion[cols[i], rows[i]]),
            )
            for i in order
        ]


def confusion_matrix(true_index: np.ndarray, predicted_index: np.ndarray, n_classes: int) -> np.ndarray:
    matrix = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(matrix, (np.asarray(true_index, dtype=np.int64), np.asarray(predicted_index, dtype=np.int64)), 1)
    return matrix


def score(classes: list[str], true_index, predicted_index) -> Scores:
    return Scores(classes, confusion_matrix(true_index, predicted_index, len(classes)))


# ----------------------------------------------------------------------------------------- classifiers


def logistic_regression_predict(
    train_x: np.ndarray,
    train_y: np.ndarray,
    classes: int,
    test_x: np.ndarray,
    reg_param: float = 0.01,
    max_iter: int = 100,
) -> np.ndarray:
    """A multinomial logistic regression (L2 penalty `reg_param`, pyspark.ml's objective) fitted on the Training
    rows, then the class index of the largest margin for each row of `test_x`. No internal re-standardisation:
    scaled features are standardised already, and PCA components must keep their variances (equalising them
    would amplify the noisy last components)."""
    return fit_softmax_regression(train_x, train_y, classes, reg_param, max_iter).predict(test_x)


# ------------------------------------------------------------------------------------------ evaluation


@dataclass
class QualityReport:
    classes: list[str]
    training_images: int
    test_images: int
    pca_k: int
    scores: dict[tuple[str, str], Scores]  # (classifier, "pca" | "scaled") -> scores
    curve: dict[int, dict[str, float]]  # k -> {"1nn": accuracy}, PCA refitted on the Training split
    variance_k: int  # smallest k reaching the variance threshold (on the same Training split)
    variance_threshold: float
    spectrum: list[float] = field(default_factory=list)
    total_images: int = 0  # rows offered for evaluation, before sampling
    sample_fraction: float = 1.0
    untrained_classes: list[str] = field(default_factory=list)  # Test images only: left out of the scores

    def accuracy(self, classifier: str, features: str) -> float:
        return self.scores[(classifier, features)].accuracy

    def smallest_k_within(self, classifier: str, tolerance: float) -> int | None:
        """Smallest k of the curve whose Test accuracy is within `tolerance` of the unreduced features'."""
        target = self.accuracy(classifier, "scaled") - tolerance - 1e-12
        reached = [k for k, acc in sorted(self.curve.items()) if acc[classifier] >= target]
        return reached[0] if reached else None


def curve_ks(spectrum: list[float], requested, extra=()) -> list[int]:
    """The k values worth scoring: the requested ones and `extra`, at most the number of usable components."""
    usable = sum(1 for value in spectrum if value > 1e-9)
    return sorted({min(int(k), usable) for k in (*requested, *extra) if int(k) > 0})


def evaluate_arrays(
    collected: dict[str, np.ndarray],
    ks=DEFAULT_CURVE_KS,
    variance_threshold: float = 0.95,
    reg_param: float = 0.01,
    max_iter: int = 100,
    total_images: int | None = None,
    fraction: float = 1.0,
) -> QualityReport:
    """Score the features of the rows `collected` ({uri, label, split, scaled_features, pca_features}: one
    array each, one row per image): both classifiers trained on the Training rows and scored on the Test
    rows, on the PCA and on the unreduced scaled features, plus the 1-NN accuracy-vs-k curve of a PCA refitted
    on the Training rows' scaled features (1-NN only: it needs no fitting, so a curve of many k costs seconds;
    a logistic regression per k would cost minutes). `total_images` and `fraction`: the rows offered before
    sampling, and the sample's fraction. Test images of a class with no Training image cannot be classified
    right: they are left out and the class named."""
    order = np.argsort(collected["uri"], kind="stable")  # a deterministic order (1-NN ties)
    collected = {name: values[order] for name, values in collected.items()}
    classes = sorted(set(collected["label"].tolist()))
    labels = np.searchsorted(classes, collected["label"]).astype(np.int64)
    total_images = len(order) if total_images is None else total_images
    trained = np.unique(labels[collected["split"] == "Training"])
    untrained = sorted({classes[i] for i in labels} - {classes[i] for i in trained})
    scored = (collected["split"] == "Training") | np.isin(labels, trained)
    collected, labels = {name: values[scored] for name, values in collected.items()}, labels[scored]
    is_training = collected["split"] == "Training"
    training_images, test_images = int(is_training.sum()), int((collected["split"] == "Test").sum())
    if training_images < 2 or test_images < 1:
        raise ValueError(f"need Training and Test images, got {training_images} and {test_images}")
    if len(np.unique(labels[is_training])) < 2:
        raise ValueError("a classifier needs Training images of at least 2 classes")
    scaled = collected["scaled_features"].astype(np.float64)

    def nearest(x):
        predicted = nearest_neighbour_predict(x[is_training], labels[is_training], x[~is_training])
        return score(classes, labels[~is_training], predicted)

    def logreg(x) -> Scores:
        predicted = logistic_regression_predict(
            x[is_training], labels[is_training], len(classes), x[~is_training], reg_param, max_iter
        )
        return score(classes, labels[~is_training], predicted)

    # The accuracy-vs-k curve (1-NN): the principal axes of the Training rows (what feature_model
    # fits), computed here on the driver from the rows already collected, the first k for every k.
    spectrum, axes = principal_axes(scaled[is_training])
    variance_k = choose_k(spectrum, None, variance_threshold)
    pca_k = collected["pca_features"].shape[1]
    ks = curve_ks(spectrum, ks, extra=(variance_k, pca_k))
    projected = scaled @ axes[:, : max(ks)]
    curve = {k: {NEAREST: nearest(projected[:, :k]).accuracy} for k in ks}
    scores = {
        (LOGREG, "pca"): logreg(collected["pca_features"]),
        (LOGREG, "scaled"): logreg(collected["scaled_features"]),
        (NEAREST, "pca"): nearest(collected["pca_features"]),
        (NEAREST, "scaled"): nearest(scaled),
    }
    return QualityReport(
        classes=classes,
        training_images=training_images,
        test_images=test_images,
        pca_k=pca_k,
        scores=scores,
        curve=curve,
        variance_k=variance_k,
        variance_threshold=variance_threshold,
        spectrum=spectrum,
        total_images=total_images,
        sample_fraction=fraction,
        untrained_classes=untrained,
    )
