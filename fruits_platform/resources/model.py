"""Model settings: MobileNetV2 weights and input size, scaler/PCA choices."""

from __future__ import annotations

from dagster import ConfigurableResource, Failure
from pydantic import Field, PrivateAttr

from fruits_platform.ml.mobilenet import DEFAULT_IMAGE_SIZE, ModelWeights, WeightsUnavailableError, load_weights


class MobileNetWeights(ConfigurableResource):
    """The MobileNetV2 weights (FRUITS_WEIGHTS) and input size (FRUITS_IMAGE_SIZE)."""

    weights: str = Field(
        default="imagenet",
        description="'imagenet' (Keras download), a local weights file, an s3:// URI, or 'random:<seed>' (tests only)",
    )
    image_size: int = Field(default=DEFAULT_IMAGE_SIZE, description="Input size in pixels: 96, 128, 160, 192 or 224")
    _loaded: ModelWeights | None = PrivateAttr(default=None)

    def load(self) -> ModelWeights:
        """Load once per process (on the driver); Spark broadcasts the arrays to the workers."""
        if self._loaded is None:
            try:
                self._loaded = load_weights(self.weights, self.image_size)
            except (WeightsUnavailableError, ValueError) as error:
                raise Failure(description=str(error)) from error
        return self._loaded


class ReductionSettings(ConfigurableResource):
    """How many principal components to keep."""

    pca_k: int = Field(default=0, description="Fixed number of components; 0 = smallest k reaching the threshold")
    variance_threshold: float = Field(default=0.95, gt=0, le=1, description="Explained-variance target")
