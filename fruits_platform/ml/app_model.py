"""The app's model: one LiteRT flatbuffer that takes a photo (uint8 RGB at the model's input size) and gives
its PCA features and the class probabilities: MobileNetV2 (preprocessing inside the graph), the fitted scaler
and PCA as one dense layer, then the classifier trained on the Training split's PCA features.

Built with TensorFlow on the driver; the phone, and `fruits_platform.ml.identify`, need only LiteRT.
No Dagster here: `fruits_platform.assets.app_model` builds it from the assets' data.
"""

from __future__ import annotations

import contextlib
import io
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np
from pyspark.ml.functions import array_to_vector
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from fruits_platform.ml.identify import AppModel
from fruits_platform.ml.images import decode_rgb
from fruits_platform.ml.mobilenet import ModelWeights, _keras, keras_model
from fruits_platform.ml.quality import LABEL_INDEX, Scores, fit_logistic_regression, logistic_regression_predict, score
from fruits_platform.ml.reduction import validation_split
from fruits_platform.sources import read_bytes

PHOTO, FEATURES, PROBABILITIES = "photo", "pca_features", "probabilities"
FLOAT32, INT8 = "float32", "int8"
# L2 penalties tried for the classifier, chosen by accuracy on held-out Training images.
REG_PARAMS = (1e-4, 1e-3, 1e-2)
VECTOR = "app_vector"
MAX_ITER = 200


@dataclass(frozen=True)
class Classifier:
    """A multinomial logistic regression on PCA features: probabilities = softmax(x @ coefficients.T + intercepts)."""

    classes: list[str]
    coefficients: np.ndarray  # (classes, k)
    intercepts: np.ndarray  # (classes,)
    reg_param: float
    validation_accuracy: dict[float, float]  # by reg_param, on held-out Training images

    def probabilities(self, features: np.ndarray) -> np.ndarray:
        margins = np.asarray(features, dtype=np.float64) @ self.coefficients.T + self.intercepts
        margins -= margins.max(axis=1, keepdims=True)
        exp = np.exp(margins)
        return exp / exp.sum(axis=1, keepdims=True)


def train_classifier(training: DataFrame, reg_params: Iterable[float] = REG_PARAMS) -> Classifier:
    """Fit the classifier on `training` (label, sha256, uri, pca_features): its penalty is the one with the best
    accuracy on a held-out quarter of each class's Training images (`validation_split`), then refitted on all."""
    classes = sorted(row[0] for row in training.select("label").distinct().collect())
    if len(classes) < 2:
        raise ValueError(f"the classifier needs Training images of two classes, found {len(classes)}")
    index = F.array_position(F.array(*[F.lit(c) for c in classes]), F.col("label")).cast("double") - 1
    rows = training.select(
        "label", "sha256", "uri", FEATURES, index.alias(LABEL_INDEX), array_to_vector(FEATURES).alias(VECTOR)
    )
    fit_rows, held_out = validation_split(rows)
    held = held_out.select(LABEL_INDEX, FEATURES).toPandas()
    accuracy = {}
    if len(held):  # else (a class or two of a few images) the default penalty
        held_x = np.stack(held[FEATURES].to_numpy()).astype(np.float64)
        for reg_param in reg_params:
            predicted = logistic_regression_predict(fit_rows, held_x, VECTOR, reg_param, MAX_ITER)
            accuracy[reg_param] = float(np.mean(predicted == held[LABEL_INDEX].to_numpy()))
    else:
        accuracy = {REG_PARAMS[1]: 0.0}
    best = max(accuracy, key=lambda reg: (accuracy[reg], reg))  # ties: the stronger penalty
    model = fit_logistic_regression(rows, VECTOR, best, MAX_ITER)
    return Classifier(
        classes,
        model.coefficientMatrix.toArray(),
        model.interceptVector.toArray(),
        best,
        accuracy,
    )


def reduction_layer(mean: np.ndarray, std: np.ndarray, components: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """StandardScaler (mean, std; a constant feature scales to 0, as Spark's does) then PCA (components:
    1280 x k) as one affine map: (kernel, bias) with pca = embedding @ kernel + bias."""
    scale = np.divide(1.0, std, out=np.zeros_like(std, dtype=np.float64), where=std > 0)
    kernel = scale[:, None] * components
    return kernel.astype(np.float32), (-(mean * scale) @ components).astype(np.float32)


def app_keras_model(weights: ModelWeights, kernel: np.ndarray, bias: np.ndarray, classifier: Classifier):
    """photo (uint8, s x s x 3) -> {pca_features (k), probabilities (classes)}, one Keras model."""
    keras = _keras()
    size = weights.image_size
    photo = keras.Input((size, size, 3), dtype="uint8", name=PHOTO)
    # MobileNetV2's preprocessing (x / 127.5 - 1), in the graph so that the app feeds the photo's pixels.
    inputs = keras.layers.Rescaling(1 / 127.5, offset=-1.0)(photo)
    embedding = keras_model(weights)(inputs)
    features = keras.layers.Dense(kernel.shape[1], name=FEATURES)(embedding)
    probabilities = keras.layers.Dense(len(classifier.classes), activation="softmax", name=PROBABILITIES)(features)
    model = keras.Model(photo, {FEATURES: features, PROBABILITIES: probabilities})
    model.get_layer(FEATURES).set_weights([kernel, bias])
    model.get_layer(PROBABILITIES).set_weights(
        [classifier.coefficients.T.astype(np.float32), classifier.intercepts.astype(np.float32)]
    )
    return model


def convert(model, calibration: list[np.ndarray] | None = None) -> bytes:
    """The Keras model as a LiteRT flatbuffer: float32, or with `calibration` (uint8 photos) 8-bit weights and
    activations (post-training integer quantization calibrated on those photos)."""
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    if calibration is not None:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = lambda: ([photo[None]] for photo in calibration)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8, tf.lite.OpsSet.TFLITE_BUILTINS]
    with contextlib.redirect_stdout(io.StringIO()):  # Keras's export prints every variable's spec
        return converter.convert()


@dataclass(frozen=True)
class VariantReport:
    """One variant measured on Test photos: file size, latency per photo (one thread), top-1 and top-5 accuracy,
    the largest |difference| of its PCA features from the platform's, and its confusion matrix."""

    variant: str
    size_bytes: int
    latency_ms: float
    top1: float
    top5: float
    max_feature_difference: float
    scores: Scores


def evaluate_variants(
    variants: dict[str, bytes],
    classes: list[str],
    photos: Iterable[np.ndarray],
    labels: np.ndarray,
    expected_features: np.ndarray,
    timed: int = 50,
) -> dict[str, VariantReport]:
    """Run each variant's flatbuffer on every photo (s, s, 3) as the app does, one at a time on one thread, each
    photo read once for all variants; `labels`: the photos' class indices; `expected_features`: their
    `pca_features`. Latency: the median of the first `timed` calls."""
    models = {variant: AppModel(flatbuffer, classes, threads=1) for variant, flatbuffer in variants.items()}
    outputs = {variant: ([], [], []) for variant in variants}  # features, probabilities, seconds
    for index, photo in enumerate(photos):
        for variant, model in models.items():
            started = time.perf_counter()
            prediction = model.predict(photo)
            features, probabilities, seconds = outputs[variant]
            if index < timed:
                seconds.append(time.perf_counter() - started)
            features.append(prediction.features)
            probabilities.append(prediction.probabilities)
    return {
        variant: _report(variant, len(variants[variant]), *outputs[variant], labels, expected_features, classes)
        for variant in variants
    }


def _report(variant, size, features, probabilities, seconds, labels, expected, classes) -> VariantReport:
    if not features:
        return VariantReport(variant, size, 0.0, 0.0, 0.0, 0.0, score(classes, labels, labels))
    top5 = np.argsort(-np.stack(probabilities), axis=1)[:, :5]
    return VariantReport(
        variant,
        size,
        float(np.median(seconds) * 1000),
        float(np.mean(top5[:, 0] == labels)),
        float(np.mean((top5 == labels[:, None]).any(axis=1))),
        float(np.abs(np.stack(features) - expected).max()),
        score(classes, labels, top5[:, 0]),
    )


def read_photos(uris: Iterable[str], size: int) -> Iterator[np.ndarray]:
    """The platform's own model input for each image (read, decoded and resized as the embedding does), one at a
    time: the driver's memory does not grow with the images measured."""
    for uri in uris:
        yield decode_rgb(read_bytes(uri), size)


def load_photos(uris: list[str], size: int) -> np.ndarray:
    """`read_photos` as one (n, size, size, 3) array."""
    photos = np.empty((len(uris), size, size, 3), dtype=np.uint8)
    for index, photo in enumerate(read_photos(uris, size)):
        photos[index] = photo
    return photos
