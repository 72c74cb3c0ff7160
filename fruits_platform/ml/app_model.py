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
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np

from fruits_platform.ml.identify import AppModel
from fruits_platform.ml.images import decode_rgb
from fruits_platform.ml.mobilenet import ModelWeights, _keras, keras_model
from fruits_platform.ml.quality import Scores, score
from fruits_platform.sources import read_bytes

PHOTO, FEATURES, PROBABILITIES = "photo", "pca_features", "probabilities"
FLOAT32, INT8 = "float32", "int8"
# The classifiers tried, by the widths of their hidden ReLU layers: the one with the lowest log-loss on held-out
# Training images is refitted on every Training image.
CANDIDATES = {"softmax regression": (), "MLP 1024": (1024,)}
DROPOUT, EPOCHS, BATCH, SEED = 0.5, 20, 256, 0


@dataclass(frozen=True)
class Classifier:
    """A softmax classifier on PCA features, possibly with hidden ReLU layers: its dense layers' (kernel, bias)."""

    classes: list[str]
    kind: str
    layers: list[tuple[np.ndarray, np.ndarray]]
    validation: dict[str, dict[str, float]]  # by candidate: accuracy and log-loss on held-out Training images
    training_images: int

    def probabilities(self, features: np.ndarray) -> np.ndarray:
        values = np.asarray(features, dtype=np.float64)
        for index, (kernel, bias) in enumerate(self.layers):
            values = values @ kernel + bias
            if index < len(self.layers) - 1:
                values = np.maximum(values, 0.0)
        values -= values.max(axis=1, keepdims=True)
        exp = np.exp(values)
        return exp / exp.sum(axis=1, keepdims=True)


def classifier_head(keras, features, hidden: Iterable[int], classes: int, dropout: float = 0.0):
    """The classifier's layers on a features tensor: hidden ReLU layers (with dropout while training), softmax."""
    for index, units in enumerate(hidden):
        features = keras.layers.Dense(units, activation="relu", name=f"hidden_{index}")(features)
        if dropout:
            features = keras.layers.Dropout(dropout, seed=SEED)(features)
    return keras.layers.Dense(classes, activation="softmax", name=PROBABILITIES)(features)


def fit_classifier(x: np.ndarray, y: np.ndarray, classes: int, hidden: Iterable[int]):
    """One candidate trained with Adam on (x, y), deterministically (fixed seeds, rows in the given order)."""
    keras = _keras()
    keras.utils.set_random_seed(SEED)
    inputs = keras.Input((x.shape[1],))
    model = keras.Model(inputs, classifier_head(keras, inputs, hidden, classes, DROPOUT))
    model.compile(keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy")
    model.fit(x, y, batch_size=BATCH, epochs=EPOCHS, verbose=0)
    return [tuple(layer.get_weights()) for layer in model.layers if isinstance(layer, keras.layers.Dense)]


def train_classifier(classes: list[str], labels: Iterable[str], x: np.ndarray, held_out: np.ndarray) -> Classifier:
    """Choose among `CANDIDATES` by log-loss on the `held_out` rows of (x, labels), Training images only, then
    refit the chosen one on every row. Without held-out rows (classes of a few images), the simplest one."""
    if len(classes) < 2:
        raise ValueError(f"the classifier needs Training images of two classes, found {len(classes)}")
    index = {label: position for position, label in enumerate(classes)}
    y = np.array([index[label] for label in labels], dtype=np.int64)
    x, held_out = np.asarray(x, dtype=np.float32), np.asarray(held_out, dtype=bool)
    validation = {}
    if held_out.any():
        for kind, hidden in CANDIDATES.items():
            layers = fit_classifier(x[~held_out], y[~held_out], len(classes), hidden)
            probabilities = Classifier(classes, kind, layers, {}, 0).probabilities(x[held_out])
            truth = probabilities[np.arange(held_out.sum()), y[held_out]]
            validation[kind] = {
                "accuracy": float(np.mean(probabilities.argmax(axis=1) == y[held_out])),
                "log_loss": float(-np.mean(np.log(np.maximum(truth, 1e-12)))),
            }
    kind = min(validation, key=lambda k: validation[k]["log_loss"]) if validation else next(iter(CANDIDATES))
    layers = fit_classifier(x, y, len(classes), CANDIDATES[kind])
    return Classifier(classes, kind, layers, validation, len(y))


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
    hidden = [kernel.shape[1] for kernel, _ in classifier.layers[:-1]]
    probabilities = classifier_head(keras, features, hidden, len(classifier.classes))
    model = keras.Model(photo, {FEATURES: features, PROBABILITIES: probabilities})
    model.get_layer(FEATURES).set_weights([kernel, bias])
    names = [f"hidden_{index}" for index in range(len(hidden))] + [PROBABILITIES]
    for name, layer_weights in zip(names, classifier.layers, strict=True):
        model.get_layer(name).set_weights(list(layer_weights))
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
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():  # Keras's export prints every spec
        # The calibration photos give the input's range: the converter warns of missing input statistics anyway.
        warnings.filterwarnings("ignore", message="Statistics for quantized inputs were expected", category=UserWarning)
        return converter.convert()


# What XNNPACK's integer kernels accept as input scale x weight scale / output scale; beyond it LiteRT corrupts its
# heap instead of refusing the model.
REQUANTIZATION_RANGE = (2.0**-32, 256.0)
_WEIGHTED_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED")


def unsupported_requantization(flatbuffer: bytes) -> str | None:
    """Why LiteRT's integer kernels cannot run this quantized model (the first weighted op whose requantization
    scale is outside REQUANTIZATION_RANGE), or None. Read from the flatbuffer: nothing is invoked."""
    from ai_edge_litert import schema_py_generated as schema

    model = schema.ModelT.InitFromPackedBuf(flatbuffer, 0)
    op_names = {code: name for name, code in vars(schema.BuiltinOperator).items() if not name.startswith("_")}
    low, high = REQUANTIZATION_RANGE
    for graph in model.subgraphs:
        for op in graph.operators:
            code = model.operatorCodes[op.opcodeIndex]
            name = op_names.get(max(code.builtinCode, code.deprecatedBuiltinCode), "")
            if name not in _WEIGHTED_OPS:
                continue
            inputs, weights, outputs = (_scales(graph, tensor) for tensor in (*op.inputs[:2], op.outputs[0]))
            if not (len(inputs) and len(weights) and len(outputs)):
                continue
            requantization = inputs[0] * weights / outputs[0]
            if not np.all((requantization >= low) & (requantization < high)):
                tensor = graph.tensors[op.inputs[1]].name.decode(errors="replace")
                return (
                    f"{name} {tensor!r} needs a requantization scale of {requantization.min():.3g} to "
                    f"{requantization.max():.3g}, outside [2^-32, 256): the features' value ranges are degenerate "
                    "(nearly constant embeddings, e.g. random weights)"
                )
    return None


def _scales(graph, tensor: int) -> np.ndarray:
    quantization = graph.tensors[tensor].quantization
    return np.asarray([] if quantization is None or quantization.scale is None else quantization.scale)


def build_variants(
    weights: ModelWeights, kernel: np.ndarray, bias: np.ndarray, classifier: Classifier, calibration: list[np.ndarray]
) -> tuple[dict[str, bytes], dict[str, str]]:
    """The app model's flatbuffers, each invoked once on a calibration photo: ({variant: flatbuffer}, {variant
    not built: why}). The 8-bit variant is not built when LiteRT's integer kernels cannot run it. Native code
    that can abort: run it with `fruits_platform.ml.isolated.run_isolated`."""
    model = app_keras_model(weights, kernel, bias, classifier)
    variants, skipped = {FLOAT32: convert(model)}, {}
    int8 = convert(model, calibration)
    if problem := unsupported_requantization(int8):
        skipped[INT8] = problem
    else:
        variants[INT8] = int8
    for flatbuffer in variants.values():
        AppModel(flatbuffer, classifier.classes).predict(calibration[0])
    return variants, skipped


@dataclass(frozen=True)
class VariantReport:
    """One variant measured on Test photos: file size, latency per photo (one thread), top-1 and top-5 accuracy,
    the largest |difference| of its PCA features from the platform's, and its confusion matrix;
    `feature_scale`: the largest |value| of the platform's PCA features, what that difference compares with."""

    variant: str
    size_bytes: int
    latency_ms: float
    top1: float
    top5: float
    max_feature_difference: float
    scores: Scores
    feature_scale: float = 0.0


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
        float(np.abs(expected).max()),
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
