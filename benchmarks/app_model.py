"""The app's model on real data: build it the way a user does and print what its metadata says.

    .venv/bin/python benchmarks/app_model.py --data-root DIR [--weights FILE] [--work DIR] [--out FILE.json]

Runs `fruits-platform materialize --app-model` on DIR (real weights, 224 px) with every Test image measured
(`FRUITS_APP_EVALUATION_IMAGES=0`), then prints, for the float32 and 8-bit variants: file size, latency per
photo (one thread, this CPU), Test top-1 and top-5 accuracy, the largest |difference| of the PCA features from
`pca_features`, and the ratios the app needs (8-bit vs float: accuracy points, speed, size). Targets: float
top-1 >= 98.5 % on the full Fruits-360; 8-bit within 1 point, >= 2x faster, >= 3x smaller.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from dagster import AssetKey, DagsterInstance

REPO = Path(__file__).resolve().parents[1]
DEFAULT_WEIGHTS = REPO.parent / "shared" / "models" / "mobilenet_v2_1.0_224_imagenet_qat_no_top.weights.h5"
FIGURES = ("size_bytes", "latency_ms", "top1_accuracy", "top5_accuracy", "max_feature_difference")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-root", required=True)
    parser.add_argument("--weights", default=str(DEFAULT_WEIGHTS))
    parser.add_argument("--work", help="outputs and Dagster home (default: a temp folder)")
    parser.add_argument("--out", help="write the figures to this JSON file")
    args = parser.parse_args()
    work = Path(args.work or tempfile.mkdtemp(prefix="fruits-app-bench-"))
    (work / "home").mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "DAGSTER_HOME": str(work / "home"), "FRUITS_APP_EVALUATION_IMAGES": "0"}
    command = [sys.executable, "-m", "fruits_platform.cli", "materialize", "--data-root", args.data_root]
    command += ["--output-root", str(work / "out"), "--weights", args.weights, "--app-model"]
    started = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - started
    print(done.stdout, end="")
    if done.returncode != 0:
        print(done.stderr[-3000:], file=sys.stderr)
        return done.returncode
    os.environ["DAGSTER_HOME"] = str(work / "home")
    with DagsterInstance.get() as instance:
        record = instance.get_latest_materialization_event(AssetKey("app_model")).asset_materialization
        metadata = {key: getattr(value, "value", value) for key, value in record.metadata.items()}
    figures = {
        "data_root": args.data_root,
        "whole_run_seconds": round(seconds, 1),
        "app_model_seconds": metadata["runtime_seconds"],
        "classes": metadata["classes"],
        "test_images": metadata["test_images"],
        "classifier": metadata["classifier"],
        "classifier_validation": metadata["classifier_validation"],
        "training_images": metadata["training_images"],
        **{f"{variant}_{name}": metadata[f"{variant}_{name}"] for variant in ("float32", "int8") for name in FIGURES},
    }
    figures["int8_top1_points_below_float"] = round(
        100 * (figures["float32_top1_accuracy"] - figures["int8_top1_accuracy"]), 2
    )
    figures["int8_speedup"] = round(figures["float32_latency_ms"] / figures["int8_latency_ms"], 2)
    figures["int8_size_ratio"] = round(figures["float32_size_bytes"] / figures["int8_size_bytes"], 2)
    for key, value in figures.items():
        print(f"{key:>36}: {value}")
    if args.out:
        Path(args.out).write_text(json.dumps(figures, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
