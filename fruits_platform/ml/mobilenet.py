"""MobileNetV2 feature extractor: weights loading and batch featurization (Keras, no Spark).

Weights are specified by one string (FRUITS_WEIGHTS):
  imagenet        the real Keras download (cached in ~/.keras/models), the default for users
  /path/x.h5      a local Keras weights file (file:// accepted)
  s3://bucket/key a weights file on S3, downloaded once by the driver
  random:<seed>   seeded random initialisation, for fast unit tests only
The driver loads them once into a `ModelWeights` (plain NumPy arrays) that Spark broadcasts.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from dataclasses import dataclass

import numpy as np

from fruits_platform.ml.images import decode_batch

FEATURE_DIM = 1280
DEFAULT_IMAGE_SIZE = 224
# MobileNetV2 has ImageNet weights for these input sizes.
SUPPORTED_IMAGE_SIZES = (96, 128, 160, 192, 224)
# Bump when decode/resize/preprocess change: it invalidates features reused by content hash.
PREPROCESS_VERSION = "rgb-bilinear-v1"
# Images per model call on a Spark worker. On CPU, small batches keep MobileNetV2's activations in cache:
# one TensorFlow thread, 224 px, measured on this 2-core machine with two such processes at once,
# 8 -> 120-130 images/s per process, 64 -> 95 (the vectors agree to float rounding).
DEFAULT_BATCH_SIZE = 8


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


def _keras():
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
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
    import tensorflow as tf

    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    except RuntimeError:  # already initialised in this process: keep what it has
        pass


class FeatureExtractor:
    """A model built once (per process) from weights, applied to batches of images.

    `batch_size`: images per model call (None: the whole array given in one call)."""

    def __init__(self, weights: ModelWeights, batch_size: int | None = None):
        if batch_size is not None and batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self.image_size = weights.image_size
        self.batch_size = batch_size
        self.model = build_feature_extractor(weights.image_size)
        self.model.set_weights(list(weights.arrays))

    def featurize_arrays(self, images: np.ndarray) -> np.ndarray:
        """(n, s, s, 3) uint8 RGB -> (n, 1280) float32, in model calls of `batch_size` images."""
        if len(images) == 0:
            return np.zeros((0, FEATURE_DIM), dtype=np.float32)
        keras = _keras()
        inputs = keras.applications.mobilenet_v2.preprocess_input(images.astype(np.float32))
        step = self.batch_size or len(inputs)
        return np.concatenate(
            [
                np.asarray(self.model.predict_on_batch(inputs[i : i + step]), dtype=np.float32)
                for i in range(0, len(inputs), step)
            ]
        )

    def featurize_bytes(self, blobs: list[bytes]) -> np.ndarray:
        return self.featurize_arrays(decode_batch(blobs, self.image_size))
