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
from pyspark.ml.classification import LogisticRegression
from pyspark.ml.functions import array_to_vector
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from fruits_platform.ml.identify import AppModel
from fruits_platform.ml.images import decode_rgb
from fruits_platform.ml.mobilenet import ModelWeights, _keras, keras_model
from fruits_platform.ml.quality import Scores, score
from fruits_platform.ml.reduction import validation_split
from fruits_platform.sources import read_bytes

PHOTO, FEATURES, PROBABILITIES = "photo", "pca_features", "probabilities"
FLOAT32, INT8 = "float32", "int8"
VARIANTS = (FLOAT32, INT8)
# L2 penalties tried for the classifier, chosen by accuracy on held-out Training images.
REG_PARAMS = (1e-4, 1e-3, 1e-2)
LABEL_INDEX, VECTOR = "label_index", "app_vector"


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


def _fit_logistic(frame: DataFrame, reg_param: float):
    return LogisticRegression(
        featuresCol=VECTOR,
        labelCol=LABEL_INDEX,
        family="multinomial",
        regParam=reg_param,
        elasticNetParam=0.0,
        standardization=False,
        maxIter=200,
        tol=1e-6,
    ).fit(frame)


def _margins_argmax(model, features: np.ndarray) -> np.ndarray:
    margins = features @ model.coefficientMatrix.toArray().T + model.interceptVector.toArray()
    return np.argmax(margins, axis=1)


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
            predicted = _margins_argmax(_fit_logistic(fit_rows, reg_param), held_x)
            accuracy[reg_param] = float(np.mean(predicted == held[LABEL_INDEX].to_numpy()))
    else:
        accuracy = {REG_PARAMS[1]: 0.0}
    best = max(accuracy, key=lambda reg: (accuracy[reg], reg))  # ties: the stronger penalty
    model = _fit_logistic(rows, best)
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


def evaluate_variant(
    variant: str,
    flatbuffer: bytes,
    classes: list[str],
    photos: Iterable[np.ndarray],
    labels: np.ndarray,
    expected_features: np.ndarray,
    timed: int = 50,
) -> VariantReport:
    """Run `flatbuffer` on every photo (s, s, 3) as the app does, one at a time on one thread; `labels`: the
    photos' class indices; `expected_features`: their `pca_features`. Latency: the median of `timed` calls."""
    model = AppModel(flatbuffer, classes, threads=1)
    features, probabilities, seconds = [], [], []
    for index, photo in enumerate(photos):
        started = time.perf_counter()
        prediction = model.predict(photo)
        if index < timed:
            seconds.append(time.perf_counter() - started)
        features.append(prediction.features)
        probabilities.append(prediction.probabilities)
    probabilities = np.stack(probabilities) if probabilities else np.zeros((0, len(classes)))
    top5 = np.argsort(-probabilities, axis=1)[:, :5]
    difference = np.abs(np.stack(features) - expected_features).max() if features else 0.0
    return VariantReport(
        variant,
        len(flatbuffer),
        float(np.median(seconds) * 1000) if seconds else 0.0,
        float(np.mean(top5[:, 0] == labels)) if len(labels) else 0.0,
        float(np.mean((top5 == labels[:, None]).any(axis=1))) if len(labels) else 0.0,
        float(difference),
        score(classes, labels, top5[:, 0] if len(labels) else labels),
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
