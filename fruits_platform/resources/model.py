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
                raise Failure(description=str(error), allow_retries=False) from error
        return self._loaded


class ReductionSettings(ConfigurableResource):
    """How many principal components to keep: a fixed k (FRUITS_PCA_K), else by `k_rule` (FRUITS_PCA_K_RULE):
    `variance` (FRUITS_PCA_VARIANCE) or `accuracy` (FRUITS_PCA_ACCURACY_TOLERANCE)."""

    pca_k: int = Field(default=0, description="Fixed number of components; 0 = chosen by k_rule")
    variance_threshold: float = Field(default=0.95, gt=0, le=1, description="Explained-variance target")
    k_rule: str = Field(
        default="variance",
        description="When pca_k is 0: 'variance' = smallest k reaching variance_threshold; 'accuracy' = smallest "
        "k whose 1-NN accuracy on held-out Training images (every 4th per class) is within accuracy_tolerance "
        "of the unreduced features' (the Test split is never used)",
    )
    accuracy_tolerance: float = Field(
        default=0.01, ge=0, le=1, description="For k_rule 'accuracy': accuracy that may be given up (0.01 = 1 point)"
    )

    def describe(self) -> str:
        if self.pca_k:
            return f"fixed k={self.pca_k}"
        if self.k_rule == "accuracy":
            return f"accuracy within {self.accuracy_tolerance:g} of unreduced (1-NN, held-out Training)"
        return f"variance threshold {self.variance_threshold:g}"
