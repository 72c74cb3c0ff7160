"""What the tests share besides fixtures (conftest.py holds those): the repository's paths and sample data,
a free port, a Fruits-360 layout of some sample classes, the local resources of a test run."""

from __future__ import annotations

import os
import shutil
import socket
from pathlib import Path

from fruits_platform.ml.mobilenet import DEFAULT_IMAGE_SIZE
from fruits_platform.resources import local_resources
from fruits_platform.resources.model import MobileNetWeights, ReductionSettings

REPO = Path(__file__).resolve().parents[1]
SAMPLE_ROOT = REPO / "fruits_platform" / "sample_data" / "fruits360"
SAMPLE_CLASSES = sorted(p.name for p in (SAMPLE_ROOT / "Training").iterdir())
# Real ImageNet weights live beside the checkout (never committed); FRUITS_TEST_WEIGHTS overrides.
REAL_WEIGHTS = Path(
    os.getenv(
        "FRUITS_TEST_WEIGHTS", REPO.parent / "shared" / "models" / "mobilenet_v2_1.0_224_imagenet_qat_no_top.weights.h5"
    )
)
FULL_SAMPLE = REPO.parent / "shared" / "data" / "fruits360-sample"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


# The tests' S3 endpoint (a moto server that tests start and stop): chosen once, since Spark's Python workers
# inherit the environment of the JVM, which starts once per test session.
S3_TEST_PORT = free_port()


def copy_classes(target: Path, classes: list[str], source: Path = SAMPLE_ROOT, per_split: int | None = None) -> Path:
    """A Fruits-360 layout with some classes of `source` (optionally the first N files per split)."""
    for split in ("Training", "Test"):
        for name in classes:
            folder = target / split / name
            folder.mkdir(parents=True, exist_ok=True)
            files = sorted((source / split / name).iterdir())
            for file in files[:per_split] if per_split else files:
                shutil.copy(file, folder / file.name)
    return target


def resources(
    data_root, output_root, weights: str = "random:0", image_size: int = DEFAULT_IMAGE_SIZE, **reduction
) -> dict:
    """The local profile's resources for a test run: these roots and weights, the reduction settings given."""
    model = MobileNetWeights(weights=str(weights), image_size=image_size)
    return local_resources(data_root, output_root, model, ReductionSettings(**reduction))
