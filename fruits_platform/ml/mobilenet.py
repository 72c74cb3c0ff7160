"""MobileNetV2 feature extractor: weights loading and batch featurization (Keras / LiteRT, no Spark).

Weights are specified by one string (FRUITS_WEIGHTS):
  imagenet        the real Keras download (cached in ~/.keras/models), the default for users
  /path/x.h5      a local Keras weights file (file:// accepted)
  s3://bucket/key a weights file on S3, downloaded once by the driver
  random:<seed>   seeded random initialisation, for fast unit tests only
The driver loads them once into a `ModelWeights` (plain NumPy arrays) and, for the `litert` engine,
converts that Keras model into a LiteRT (TensorFlow Lite) flatbuffer, kept in a file cache for the next
processes (`litert_flatbuffer`): `compile_model` gives the `CompiledModel` that Spark broadcasts and each
worker turns into its `Featurizer` (`CompiledModel.extractor`).

Engines (FRUITS_ENGINE), the same network and weights, vectors equal to float rounding:
  litert  the default: LiteRT's XNNPACK CPU kernels, faster than Keras per core, and workers need no
          TensorFlow (docs/decisions.md has the figures)
  keras   Keras on TensorFlow: the reference (the benchmark's "bare Keras")
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import io
import logging
import os
import tempfile
from dataclasses import dataclass

import numpy as np

from fruits_platform.ml.images import decode_batch
from fruits_platform.notices import quiet_stderr

FEATURE_DIM = 1280
DEFAULT_IMAGE_SIZE = 224
# MobileNetV2 has ImageNet weights for these input sizes.
SUPPORTED_IMAGE_SIZES = (96, 128, 160, 192, 224)
# Bump when decode/resize/preprocess change: it invalidates features reused by content hash.
PREPROCESS_VERSION = "rgb-bilinear-v1"
ENGINES = ("litert", "keras")
DEFAULT_ENGINE = "litert"
# Images per model call, by engine: on CPU, small batches keep MobileNetV2's activations in cache.
DEFAULT_BATCH_SIZES = {"litert": 1, "keras": 8}
DEFAULT_BATCH_SIZE = DEFAULT_BATCH_SIZES["keras"]  # FeatureExtractor's (Keras) default
# Bump when `to_litert` changes how it converts: it invalidates the flatbuffers in the file cache.
LITERT_CONVERSION = "float32-v1"

log = logging.getLogger(__name__)


class WeightsUnavailableError(RuntimeError):
    """The configured weights cannot be loaded; the message says how to fix it."""


@dataclass(frozen=True)
class ModelWeights:
    source: str  # recorded in metadata: "imagenet", "file:<path>", "s3://...", "random:<seed>"
    image_size: int
    arrays: tuple[np.ndarray, ...]
    fingerprint: str  # sha256 of the arrays, shortened

    @property
    def signature(self) -> str:
        """Everything that determines a feature vector besides the image content."""
        return f"mobilenet_v2/{self.fingerprint}/{self.image_size}/{PREPROCESS_VERSION}"


@functools.cache  # imported once per process: its notices are held back once
def _keras():
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    with quiet_stderr():  # TensorFlow's C++ notices at import
        import keras

    return keras


def build_feature_extractor(image_size: int, weights: str | None = None):
    """MobileNetV2 without its classifier, global average pooling: image -> 1280-d vector."""
    if image_size not in SUPPORTED_IMAGE_SIZES:
        raise ValueError(f"image_size must be one of {SUPPORTED_IMAGE_SIZES}, got {image_size}")
    keras = _keras()
    return keras.applications.MobileNetV2(
        include_top=False, weights=weights, pooling="avg", input_shape=(image_size, image_size, 3)
    )


def keras_model(weights: ModelWeights):
    """The feature extractor with these weights."""
    model = build_feature_extractor(weights.image_size)
    model.set_weights(list(weights.arrays))
    return model


def _fingerprint(arrays) -> str:
    digest = hashlib.sha256()
    for array in arrays:
        digest.update(str(array.shape).encode())
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()[:16]


def _download_s3(uri: str) -> str:
    import boto3

    bucket, _, key = uri[len("s3://") :].partition("/")
    target = os.path.join(tempfile.mkdtemp(prefix="fruits-weights-"), os.path.basename(key) or "weights.h5")
    try:
        boto3.client("s3").download_file(bucket, key, target)
    except Exception as error:
        raise WeightsUnavailableError(f"Could not download the weights file {uri}: {error}") from error
    return target


def check_weights(spec: str, image_size: int = DEFAULT_IMAGE_SIZE, engine: str = DEFAULT_ENGINE) -> None:
    """What can be known of the weights settings without loading them (a file that exists, an S3 object
    that exists, a known size and engine), so that a run with wrong settings fails before any work.
    Raises WeightsUnavailableError or ValueError with the fix in the message."""
    if image_size not in SUPPORTED_IMAGE_SIZES:
        raise ValueError(f"FRUITS_IMAGE_SIZE must be one of {SUPPORTED_IMAGE_SIZES}, got {image_size}")
    if engine not in ENGINES:
        raise ValueError(f"FRUITS_ENGINE must be one of {', '.join(ENGINES)}, got {engine!r}")
    spec = spec.strip()
    if spec == "imagenet":
        return  # whether the download works is only known by trying it (load_weights says what to do)
    if spec.startswith("random:"):
        if not spec.split(":", 1)[1].isdigit():
            raise ValueError(f"random weights need an integer seed, e.g. random:0, got {spec!r}")
        return
    if spec.startswith("s3://"):
        import boto3

        bucket, _, key = spec[len("s3://") :].partition("/")
        try:
            boto3.client("s3").head_object(Bucket=bucket, Key=key)
        except Exception as error:
            raise WeightsUnavailableError(f"Weights object not readable: {spec} ({error}).") from error
        return
    path = spec.removeprefix("file://")
    if not os.path.isfile(path):
        raise WeightsUnavailableError(
            f"Weights file not found: {path!r}. FRUITS_WEIGHTS must be 'imagenet', 'random:<seed>', "
            "a local .weights.h5 file or an s3:// URI."
        )


def load_weights(spec: str, image_size: int = DEFAULT_IMAGE_SIZE) -> ModelWeights:
    """Load the weights named by `spec` (see module docstring) on the driver."""
    spec = spec.strip()
    if spec.startswith("random:"):
        seed = int(spec.split(":", 1)[1])
        _keras().utils.set_random_seed(seed)
        model = build_feature_extractor(image_size)
        source = f"random:{seed}"
    elif spec == "imagenet":
        try:
            model = build_feature_extractor(image_size, weights="imagenet")
        except Exception as error:
            raise WeightsUnavailableError(
                f"Could not download the ImageNet weights for MobileNetV2 ({type(error).__name__}: {error}). "
                "Without internet access, point FRUITS_WEIGHTS (or --weights) at a local Keras weights file, "
                "e.g. mobilenet_v2_1.0_224_imagenet_qat_no_top.weights.h5, or at an s3:// URI of one."
            ) from error
        source = "imagenet"
    else:
        path = _download_s3(spec) if spec.startswith("s3://") else spec.removeprefix("file://")
        if not os.path.isfile(path):
            raise WeightsUnavailableError(
                f"Weights file not found: {path!r}. FRUITS_WEIGHTS must be 'imagenet', 'random:<seed>', "
                "a local .weights.h5 file or an s3:// URI."
            )
        model = build_feature_extractor(image_size)
        try:
            model.load_weights(path)
        except Exception as error:
            raise WeightsUnavailableError(f"Could not load weights from {spec}: {error}") from error
        source = spec if spec.startswith("s3://") else f"file:{os.path.abspath(path)}"
    arrays = tuple(np.asarray(w) for w in model.get_weights())
    return ModelWeights(source=source, image_size=image_size, arrays=arrays, fingerprint=_fingerprint(arrays))


def configure_threads(threads: int) -> None:
    """Bound TensorFlow's thread pools (call before the first model is built in a process)."""
    _keras()
    import tensorflow as tf

    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    except RuntimeError:  # already initialised in this process: keep what it has
        pass


def preprocess(images: np.ndarray) -> np.ndarray:
    """MobileNetV2's ImageNet preprocessing, as `keras.applications.mobilenet_v2.preprocess_input` does it
    (its "tf" mode, the same float32 operations): uint8 [0, 255] -> float32 [-1, 1]."""
    inputs = images.astype(np.float32)
    inputs /= 127.5
    inputs -= 1.0
    return inputs


class Featurizer:
    """Images -> 1280-d vectors: decode, preprocess, then the model (`_predict`, per engine) called on
    `batch_size` images at a time (None: the whole array given in one call)."""

    def __init__(self, image_size: int, batch_size: int | None = None):
        if batch_size is not None and batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self.image_size = image_size
        self.batch_size = batch_size

    def _predict(self, inputs: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def featurize_arrays(self, images: np.ndarray) -> np.ndarray:
        """(n, s, s, 3) uint8 RGB -> (n, 1280) float32, in model calls of `batch_size` images."""
        if len(images) == 0:
            return np.zeros((0, FEATURE_DIM), dtype=np.float32)
        inputs = preprocess(images)
        step = self.batch_size or len(inputs)
        return np.concatenate([self._predict(inputs[i : i + step]) for i in range(0, len(inputs), step)])

    def featurize_bytes(self, blobs: list[bytes]) -> np.ndarray:
        return self.featurize_arrays(decode_batch(blobs, self.image_size))


class FeatureExtractor(Featurizer):
    """The Keras model, built once (per process) from weights."""

    def __init__(self, weights: ModelWeights, batch_size: int | None = None):
        super().__init__(weights.image_size, batch_size)
        self.model = keras_model(weights)

    def _predict(self, inputs: np.ndarray) -> np.ndarray:
        return np.asarray(self.model.predict_on_batch(inputs), dtype=np.float32)


def to_litert(weights: ModelWeights) -> bytes:
    """The Keras model with these weights as a LiteRT flatbuffer (float32, no quantization or other
    optimization: the same network, the same values), converted by TensorFlow's own converter (seconds)."""
    import tensorflow as tf

    model = keras_model(weights)
    with contextlib.redirect_stdout(io.StringIO()):  # Keras's export prints every variable's spec
        return tf.lite.TFLiteConverter.from_keras_model(model).convert()


def _cached_flatbuffer(path: str, image_size: int) -> bytes | None:
    """The flatbuffer in `path` if there is one that LiteRT loads with the expected shapes, else None."""
    from ai_edge_litert.interpreter import Interpreter

    try:
        with open(path, "rb") as handle:
            flatbuffer = handle.read()
        interpreter = Interpreter(model_content=flatbuffer)
        shapes = (interpreter.get_input_details()[0]["shape"], interpreter.get_output_details()[0]["shape"])
    except (OSError, ValueError, RuntimeError, IndexError) as error:
        if os.path.exists(path):
            log.warning("LiteRT model cache: %s is unusable (%s); converting again", path, error)
        return None
    if [list(shape[1:]) for shape in shapes] != [[image_size, image_size, 3], [FEATURE_DIM]]:
        log.warning("LiteRT model cache: %s has other input/output shapes; converting again", path)
        return None
    return flatbuffer


def litert_flatbuffer(weights: ModelWeights, cache_dir: str | None = None) -> bytes:
    """`to_litert(weights)`, kept in the local folder `cache_dir` (None or "": no cache) for the next processes:
    a conversion takes seconds, reading the file milliseconds. The file is named by everything the flatbuffer depends on
    (weights fingerprint, input size, TensorFlow and Keras versions, LITERT_CONVERSION), written atomically, and
    checked by loading it before use; a cache that cannot be written only costs the conversion (a warning)."""
    if not cache_dir:
        return to_litert(weights)
    import keras
    import tensorflow as tf

    name = (
        f"mobilenet_v2-{weights.fingerprint}-{weights.image_size}px-tf{tf.__version__}-keras{keras.__version__}"
        f"-{LITERT_CONVERSION}.tflite"
    )
    path = os.path.join(os.path.expanduser(cache_dir), name)
    flatbuffer = _cached_flatbuffer(path, weights.image_size)
    if flatbuffer is not None:
        return flatbuffer
    flatbuffer = to_litert(weights)
    part = f"{path}.{os.getpid()}.part"  # this process's own: concurrent writers never mix
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(part, "wb") as handle:
            handle.write(flatbuffer)
        os.replace(part, path)
    except OSError as error:
        with contextlib.suppress(OSError):
            os.unlink(part)
        log.warning("LiteRT model cache: could not write %s (%s); the next process converts again", path, error)
    return flatbuffer


class LiteRTFeatureExtractor(Featurizer):
    """The same network run by LiteRT's interpreter (XNNPACK CPU kernels) on a `to_litert` flatbuffer.
    Needs only the `ai-edge-litert` package, not TensorFlow. `threads`: the interpreter's CPU threads."""

    def __init__(self, flatbuffer: bytes, image_size: int, batch_size: int | None = None, threads: int = 1):
        from ai_edge_litert.interpreter import Interpreter

        super().__init__(image_size, batch_size)
        self.interpreter = Interpreter(model_content=flatbuffer, num_threads=threads)
        self._input = self.interpreter.get_input_details()[0]["index"]
        self._output = self.interpreter.get_output_details()[0]["index"]
        self._batch = None  # the input batch size the interpreter is allocated for

    def _predict(self, inputs: np.ndarray) -> np.ndarray:
        if len(inputs) != self._batch:
            self.interpreter.resize_tensor_input(self._input, inputs.shape)
            self.interpreter.allocate_tensors()
            self._batch = len(inputs)
        self.interpreter.set_tensor(self._input, np.ascontiguousarray(inputs))
        self.interpreter.invoke()
        return np.array(self.interpreter.get_tensor(self._output), dtype=np.float32)  # a copy: the buffer is reused


@dataclass(frozen=True)
class CompiledModel:
    """What the workers need to build the model: the engine's own form of the weights (NumPy arrays for
    Keras, a flatbuffer for LiteRT) and the signature of the vectors it gives."""

    engine: str
    image_size: int
    signature: str
    payload: object

    def batch_size(self, requested: int | None = None) -> int:
        """Images per model call: `requested`, else (None or 0) the engine's best."""
        return requested or DEFAULT_BATCH_SIZES[self.engine]

    def extractor(self, batch_size: int | None = None, threads: int = 1) -> Featurizer:
        if self.engine == "litert":
            return LiteRTFeatureExtractor(self.payload, self.image_size, batch_size, threads)
        configure_threads(threads)
        return FeatureExtractor(self.payload, batch_size)


def signature(weights: ModelWeights, engine: str) -> str:
    """Everything that determines a vector besides the image content. Keras's vectors keep the signature they
    had before engines existed (features computed then stay reusable)."""
    return weights.signature if engine == "keras" else f"{weights.signature}/{engine}"


def compile_model(weights: ModelWeights, engine: str = DEFAULT_ENGINE, cache_dir: str | None = None) -> CompiledModel:
    """The weights in `engine`'s form; `cache_dir`: where LiteRT flatbuffers are kept (`litert_flatbuffer`)."""
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {', '.join(ENGINES)}, got {engine!r}")
    payload = litert_flatbuffer(weights, cache_dir) if engine == "litert" else weights
    return CompiledModel(engine, weights.image_size, signature(weights, engine), payload)
