"""Model settings: MobileNetV2 weights and input size, scaler/PCA choices."""

from __future__ import annotations

from dagster import ConfigurableResource, Failure
from pydantic import Field, PrivateAttr

from fruits_platform.ml.mobilenet import (
    DEFAULT_ENGINE,
    DEFAULT_IMAGE_SIZE,
    CompiledModel,
    ModelWeights,
    WeightsUnavailableError,
    check_weights,
    compile_model,
    load_weights,
)

DEFAULT_MODEL_CACHE = "~/.cache/fruits-platform"


class MobileNetWeights(ConfigurableResource):
    """The MobileNetV2 weights (FRUITS_WEIGHTS), input size (FRUITS_IMAGE_SIZE), engine (FRUITS_ENGINE),
    images per model call (FRUITS_BATCH_SIZE) and the driver's cache of converted models (FRUITS_MODEL_CACHE)."""

    weights: str = Field(
        default="imagenet",
        description="'imagenet' (Keras download), a local weights file, an s3:// URI, or 'random:<seed>' (tests only)",
    )
    image_size: int = Field(default=DEFAULT_IMAGE_SIZE, description="Input size in pixels: 96, 128, 160, 192 or 224")
    engine: str = Field(
        default=DEFAULT_ENGINE,
        description="'litert' (LiteRT's XNNPACK kernels, faster on CPU) or 'keras' (the reference); the same "
        "network and weights, vectors equal to float rounding",
    )
    batch_size: int = Field(
        default=0,
        ge=0,
        description="Images per model call on each Spark worker; 0 = the engine's best (litert 1, keras 8: small "
        "batches are faster on CPU; results agree to float rounding whatever the size)",
    )
    model_cache: str = Field(
        default=DEFAULT_MODEL_CACHE,
        description="Local folder where the driver keeps the LiteRT conversion of the weights for later processes "
        "(a conversion takes seconds); empty: no cache",
    )
    # Loaded and compiled once per run (a resource instance serves one run), shared by its steps.
    _loaded: ModelWeights | None = PrivateAttr(default=None)
    _compiled: CompiledModel | None = PrivateAttr(default=None)

    def setup_for_execution(self, context) -> None:
        """Wrong settings fail the run before any step starts (a missing file, an unknown engine...)."""
        try:
            check_weights(self.weights, self.image_size, self.engine)
        except (WeightsUnavailableError, ValueError) as error:
            raise Failure(description=str(error), allow_retries=False) from error

    def load(self) -> ModelWeights:
        """Load once per process (on the driver); Spark broadcasts the arrays to the workers."""
        if self._loaded is None:
            try:
                self._loaded = load_weights(self.weights, self.image_size)
            except (WeightsUnavailableError, ValueError) as error:
                raise Failure(description=str(error), allow_retries=False) from error
        return self._loaded

    def compiled(self) -> CompiledModel:
        """The weights in the engine's form, what Spark broadcasts to the workers (once per process)."""
        if self._compiled is None:
            try:
                self._compiled = compile_model(self.load(), self.engine, self.model_cache)
            except ValueError as error:  # an unknown engine
                raise Failure(description=f"FRUITS_ENGINE: {error}", allow_retries=False) from error
        return self._compiled


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

    evaluation_max_images: int = Field(
        default=10_000,
        ge=0,
        description="feature_quality scores at most about this many images (a deterministic sample by uri, its "
        "size recorded), so that its time and driver memory stay bounded whatever the data; 0 = every image",
    )

    def describe(self) -> str:
        if self.pca_k:
            return f"fixed k={self.pca_k}"
        if self.k_rule == "accuracy":
            return f"accuracy within {self.accuracy_tolerance:g} of unreduced (1-NN, held-out Training)"
        return f"variance threshold {self.variance_threshold:g}"


class AppModelSettings(ConfigurableResource):
    """How the app's model is calibrated and measured (FRUITS_APP_TRAINING_IMAGES, FRUITS_APP_CALIBRATION_IMAGES,
    FRUITS_APP_EVALUATION_IMAGES)."""

    calibration_images: int = Field(
        default=200, ge=1, description="Training images that calibrate the 8-bit variant (a deterministic sample)"
    )
    training_images: int = Field(
        default=200_000,
        ge=0,
        description="Training images the classifier is trained on, in the driver's memory (a deterministic sample; "
        "0 = every one)",
    )
    evaluation_images: int = Field(
        default=2000,
        ge=0,
        description="Test images on which both variants are measured (a deterministic sample; 0 = every one)",
    )
