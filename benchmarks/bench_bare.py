"""bench.py's `bare` phase: bare Keras (read + decode + predict, batch 64, one process, TensorFlow on every
core), the limit the platform is compared with; at the first size also the model called on the keras engine's
batch and LiteRT on every core, for reference."""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from common import BATCH, OPTIONAL, Record, RssSampler


@dataclass
class ModelBatch(Record):
    """The same process and batches of 64, the model called on `batch_size` images at a time."""

    batch_size: int
    read_decode_predict_seconds: float
    images_per_second: float


@dataclass
class LiteRTRun(Record):
    """The platform's default engine in the same process: LiteRT on every core, one image per call."""

    read_decode_predict_seconds: float
    images_per_second: float
    max_abs_diff_vs_keras: float


@dataclass
class BareRun(Record):
    """Bare Keras at one input size."""

    model_build_and_warmup_seconds: float
    read_decode_seconds: float
    read_decode_predict_seconds: float
    runs_seconds: list[float]
    inference_seconds_estimate: float
    images_per_second: float
    peak_rss_mb: float
    model_batch: ModelBatch | None = field(default=None, metadata=OPTIONAL)
    litert: LiteRTRun | None = field(default=None, metadata=OPTIONAL)


@dataclass
class BarePhase(Record):
    """Written as {"images": N, "<size>": BareRun, ...}: one key per input size."""

    images: int
    sizes: dict[str, BareRun] = field(default_factory=dict)
    process_seconds: float | None = field(default=None, metadata=OPTIONAL)
    process_peak_rss_mb: float | None = field(default=None, metadata=OPTIONAL)

    def to_json(self) -> dict:
        out = {"images": self.images, **{size: run.to_json() for size, run in self.sizes.items()}}
        extra = {"process_seconds": self.process_seconds, "process_peak_rss_mb": self.process_peak_rss_mb}
        return {**out, **{key: value for key, value in extra.items() if value is not None}}

    @classmethod
    def from_json(cls, data: dict) -> BarePhase:
        sizes = {key: BareRun.from_json(value) for key, value in data.items() if key.isdigit()}
        return cls(data["images"], sizes, data.get("process_seconds"), data.get("process_peak_rss_mb"))


def featurize_paths(extractor, paths: list[str]) -> list:
    """Read + decode + featurize `paths` in batches of BATCH, as bare Keras does."""
    return [
        extractor.featurize_bytes([Path(p).read_bytes() for p in paths[i : i + BATCH]])
        for i in range(0, len(paths), BATCH)
    ]


def timed_featurize(extractor, paths: list[str]) -> tuple[list, float]:
    started = time.perf_counter()
    features = featurize_paths(extractor, paths)
    return features, time.perf_counter() - started


def phase_bare(args, sampler: RssSampler) -> BarePhase:
    """Bare Keras: read + decode (+ predict), batch 64, one process, TF on every core."""
    from fruits_platform.ml.images import decode_batch
    from fruits_platform.ml.mobilenet import FeatureExtractor, load_weights

    root = Path(args["data_root"])
    paths = sorted(str(p) for split in ("Training", "Test") for p in (root / split).glob("*/*") if p.is_file())
    out = BarePhase(images=len(paths))
    for size in args["sizes"]:
        started = time.perf_counter()
        weights = load_weights(args["weights"], size)
        extractor = FeatureExtractor(weights)
        extractor.featurize_bytes([Path(p).read_bytes() for p in paths[:BATCH]])  # warm-up (graph tracing)
        build = time.perf_counter() - started

        started = time.perf_counter()
        for i in range(0, len(paths), BATCH):
            decode_batch([Path(p).read_bytes() for p in paths[i : i + BATCH]], size)
        decode = time.perf_counter() - started

        sampler.reset()
        runs = []
        for _ in range(args.get("repeats", 1)):
            features, seconds = timed_featurize(extractor, paths)
            runs.append(seconds)
        total = min(runs)
        run = out.sizes[str(size)] = BareRun(
            model_build_and_warmup_seconds=round(build, 2),
            read_decode_seconds=round(decode, 2),
            read_decode_predict_seconds=round(total, 2),
            runs_seconds=[round(run, 2) for run in runs],
            inference_seconds_estimate=round(total - decode, 2),
            images_per_second=round(len(paths) / total, 2),
            peak_rss_mb=sampler.peak_mb(),
        )
        if args.get("save_features") and size == args["sizes"][0]:
            save_and_compare(args["save_features"], paths, extractor, weights, size, features, run)
    return out


def save_and_compare(save_to: str, paths: list[str], extractor, weights, size: int, features: list, run: BareRun):
    """Save bare Keras's vectors (compared with the platform's later), then time the model on the keras engine's
    batch and LiteRT in the same process."""
    import numpy as np

    from fruits_platform.ml.mobilenet import DEFAULT_BATCH_SIZE, LiteRTFeatureExtractor, to_litert

    np.save(save_to, np.concatenate(features))
    Path(save_to + ".uris.json").write_text(json.dumps(paths))
    # The same process and batches of 64, the model called on DEFAULT_BATCH_SIZE images at a time
    # (what each platform worker does with the keras engine, there with one thread per worker).
    extractor.batch_size = DEFAULT_BATCH_SIZE
    _, total = timed_featurize(extractor, paths)
    run.model_batch = ModelBatch(DEFAULT_BATCH_SIZE, round(total, 2), round(len(paths) / total, 2))
    # The platform's default engine in the same process: LiteRT on every core, one image per call.
    lite = LiteRTFeatureExtractor(to_litert(weights), size, batch_size=1, threads=os.cpu_count() or 1)
    lite.featurize_bytes([Path(p).read_bytes() for p in paths[:BATCH]])  # warm-up
    lite_features, total = timed_featurize(lite, paths)
    difference = float(np.abs(np.concatenate(lite_features) - np.concatenate(features)).max())
    run.litert = LiteRTRun(round(total, 2), round(len(paths) / total, 2), difference)
