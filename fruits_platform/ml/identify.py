"""What the app does with the exported model: a photo's bytes -> the likeliest fruits. LiteRT, Pillow and NumPy
only (no Spark, no TensorFlow), so that it runs where the app runs.

The `app_model` folder holds the variants (`<name>-float32.tflite`, `<name>-int8.tflite`) and `manifest.json`:
the class names in the order of the model's probabilities, the input size, and what the model was built from.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

import numpy as np

from fruits_platform.ml.images import STATUS_OK, decode_photo, inspect_image

MANIFEST = "manifest.json"
DEFAULT_VARIANT = "float32"


class AppModelError(RuntimeError):
    """The model file or its manifest cannot be used; the message says which and why."""


@dataclass(frozen=True)
class Prediction:
    features: np.ndarray  # (k,) float32
    probabilities: np.ndarray  # (classes,) float32

    def top(self, classes: list[str], n: int = 3) -> list[tuple[str, float]]:
        order = np.argsort(-self.probabilities, kind="stable")[:n]
        return [(classes[i], float(self.probabilities[i])) for i in order]


class AppModel:
    """One variant of the app's model in LiteRT's interpreter (`threads` CPU threads), with its class names."""

    def __init__(self, flatbuffer: bytes, classes: list[str], threads: int = 1):
        from ai_edge_litert.interpreter import Interpreter

        self.classes = classes
        interpreter = Interpreter(model_content=flatbuffer, num_threads=threads)
        self._run = interpreter.get_signature_runner()
        [(self._input, details)] = self._run.get_input_details().items()
        self.image_size = int(details["shape"][1])

    def predict(self, photo: np.ndarray) -> Prediction:
        """photo: (size, size, 3) uint8 RGB."""
        outputs = self._run(**{self._input: photo[None]})
        return Prediction(np.array(outputs["pca_features"][0]), np.array(outputs["probabilities"][0]))

    def identify(self, name: str, data: bytes, top: int = 3) -> list[tuple[str, float]]:
        """The `top` likeliest classes for a photo file's bytes; ValueError with the reason for a file that is not a
        readable image."""
        record = inspect_image(name, data)
        if record.status != STATUS_OK:
            raise ValueError(record.reason)
        return self.predict(decode_photo(data, self.image_size)).top(self.classes, top)

    @classmethod
    def load(cls, path: str, variant: str = DEFAULT_VARIANT, threads: int = 1) -> AppModel:
        """`path`: the app_model folder (its `variant`) or one of its .tflite files (manifest.json beside it)."""
        if not os.path.exists(path):
            raise AppModelError(
                f"no app model at {path}: materialize app_model, or pass --model with its folder or .tflite file"
            )
        folder, file = (path, None) if os.path.isdir(path) else (os.path.dirname(path), path)
        try:
            with open(os.path.join(folder, MANIFEST)) as handle:
                manifest = json.load(handle)
            file = file or os.path.join(folder, manifest["variants"][variant]["file"])
            with open(file, "rb") as handle:
                flatbuffer = handle.read()
        except (OSError, ValueError, KeyError) as error:
            raise AppModelError(
                f"no app model at {path} ({type(error).__name__}: {error}); materialize app_model, "
                "or pass --model with its folder or .tflite file"
            ) from error
        try:
            return cls(flatbuffer, manifest["classes"], threads)
        except (ValueError, RuntimeError, KeyError) as error:
            raise AppModelError(f"{file} is not a usable app model: {error}") from error
