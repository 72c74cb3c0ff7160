"""The direct script: the platform's card work with no Spark and no Dagster, the speed anchor of issue #27.

    .venv/bin/python benchmarks/direct.py --data-root DIR --output-root DIR [--weights FILE] [--json F.json]

Every file of DIR/{Training,Test}/<Class>/* read once: its catalogue record (`inspect_image`: SHA-256 and a
full decode, as the platform's catalogue does) and, for a valid image, its MobileNetV2 vector (the platform's
LiteRT conversion, `decode_rgb` + `preprocess`, one image per call), in a pool of one process per core, each with
a one-thread interpreter; then a StandardScaler fitted on the Training split and a PCA of its scaled rows with
the platform's default k rule (`choose_k`, 95 % of the variance), every image scaled and projected, and four
Parquet datasets written with pyarrow (catalogue, embeddings, scaled, PCA), one file per class each, in the
platform's layout (<output-root>/<dataset>/<class dir>/part-0.parquet). Timed as a whole process: the figure to
compare is the `time` of this command; the script prints its own stages (imports, conversion included).
"""

from __future__ import annotations

import time

STARTED = time.perf_counter()  # before the imports: the process's work is timed whole, as the command's is

import argparse
import json
import multiprocessing
import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from fruits_platform.ml.images import STATUS_OK, inspect_image
from fruits_platform.ml.moments import Moments, choose_k, fit_scaler_and_axes
from fruits_platform.sources import class_dir_name

REPO = Path(__file__).resolve().parents[1]
DEFAULT_WEIGHTS = REPO.parent / "shared" / "models" / "mobilenet_v2_1.0_224_imagenet_qat_no_top.weights.h5"
SPLITS = ("Training", "Test")
IMAGE_SIZE = 224
FILES_PER_TASK = 64  # small enough that the pool's two workers finish together
# The platform's default (ReductionSettings.variance_threshold, FRUITS_PCA_VARIANCE).
VARIANCE_THRESHOLD = 0.95
RECORD_COLUMNS = ["size_bytes", "sha256", "format", "width", "height", "mode", "status", "reason"]
CATALOGUE_SCHEMA = pa.schema(
    [("uri", pa.string()), ("label", pa.string()), ("split", pa.string()), ("size_bytes", pa.int64())]
    + [("sha256", pa.string()), ("format", pa.string()), ("width", pa.int32()), ("height", pa.int32())]
    + [("mode", pa.string()), ("status", pa.string()), ("reason", pa.string())]
)


def listing(root: Path) -> list[tuple[str, str, str]]:
    """(uri, label, split) of every file, sorted: the platform's listing of a local data root."""
    files = []
    for split in SPLITS:
        for folder in sorted(p for p in (root / split).iterdir() if p.is_dir()) if (root / split).is_dir() else []:
            files += [(f"file://{p}", folder.name, split) for p in sorted(folder.iterdir()) if p.is_file()]
    return files


def convert(weights: str) -> bytes:
    """The platform's LiteRT flatbuffer of these weights (TensorFlow's converter, float32)."""
    from fruits_platform.ml.mobilenet import load_weights, to_litert

    return to_litert(load_weights(weights, IMAGE_SIZE))


_extractor = None


def start_worker(flatbuffer: bytes) -> None:
    global _extractor
    from fruits_platform.ml.mobilenet import LiteRTFeatureExtractor

    _extractor = LiteRTFeatureExtractor(flatbuffer, IMAGE_SIZE, batch_size=1, threads=1)


def catalogue_and_embed(uris: list[str]) -> tuple[list[dict], np.ndarray, list[int]]:
    """Each file read once: its catalogue record; the vectors of the valid ones (and their indexes)."""
    records, blobs, embedded = [], [], []
    for index, uri in enumerate(uris):
        data = Path(uri.removeprefix("file://")).read_bytes()
        record = inspect_image(uri, data).as_dict()
        records.append(record)
        if record["status"] == STATUS_OK:
            blobs.append(data)
            embedded.append(index)
    return records, _extractor.featurize_bytes(blobs), embedded


def write_per_class(root: Path, name: str, table: pa.Table, labels: np.ndarray) -> None:
    """One Parquet file per class: <root>/<name>/<class dir>/part-0.parquet."""
    for label in np.unique(labels):
        folder = root / name / class_dir_name(str(label))
        folder.mkdir(parents=True, exist_ok=True)
        pq.write_table(table.filter(pa.array(labels == label)), folder / "part-0.parquet")


def vectors_column(matrix: np.ndarray) -> pa.Array:
    """A (rows, width) float32 matrix as a list<float> column, without a Python object per value."""
    rows, width = matrix.shape
    offsets = pa.array(np.arange(0, (rows + 1) * width, width, dtype=np.int32))
    return pa.ListArray.from_arrays(offsets, pa.array(np.ascontiguousarray(matrix, dtype=np.float32).ravel()))


def run(data_root: Path, output_root: Path, weights: str, processes: int) -> dict:
    stages, clock = {}, time.perf_counter()

    def lap(name: str) -> None:
        nonlocal clock
        stages[name] = round(time.perf_counter() - clock, 2)
        clock = time.perf_counter()

    stages["imports"] = round(clock - STARTED, 2)
    files = listing(data_root)
    uris = [uri for uri, _, _ in files]
    lap("listing")
    context = multiprocessing.get_context("spawn")  # TensorFlow's threads make fork unsafe
    with context.Pool(1) as pool:  # TensorFlow stays out of this process and of the workers
        flatbuffer = pool.apply(convert, (weights,))
    lap("conversion")
    tasks = [uris[i : i + FILES_PER_TASK] for i in range(0, len(uris), FILES_PER_TASK)]
    records, vectors = [], np.zeros((len(uris), 1280), dtype=np.float32)
    with context.Pool(processes, initializer=start_worker, initargs=(flatbuffer,)) as pool:
        for number, (task_records, task_vectors, embedded) in enumerate(pool.imap(catalogue_and_embed, tasks)):
            records += task_records
            vectors[[number * FILES_PER_TASK + i for i in embedded]] = task_vectors
    lap("catalogue_and_embed")

    labels = np.array([label for _, label, _ in files])
    splits = np.array([split for _, _, split in files])
    ok = np.array([record["status"] == STATUS_OK for record in records])
    model = fit_scaler_and_axes(Moments.of(vectors[ok & (splits == "Training")]))
    k = choose_k(model.spectrum, None, VARIANCE_THRESHOLD)
    lap("fit")
    scaled = model.scale(vectors[ok]).astype(np.float32)
    projected = model.project(scaled, k).astype(np.float32)
    lap("scale_and_project")

    columns = {"uri": uris, "label": labels.tolist(), "split": splits.tolist()}
    catalogue = pa.table(
        {**columns, **{name: [record[name] for record in records] for name in RECORD_COLUMNS}}, CATALOGUE_SCHEMA
    )
    write_per_class(output_root, "raw_images", catalogue, labels)
    keys = catalogue.filter(pa.array(ok)).select(["uri", "label", "split", "sha256"])
    for name, column, values in (
        ("mobilenet_features", "features", vectors[ok]),
        ("scaled_features", "scaled_features", scaled),
        ("pca_features", "pca_features", projected),
    ):
        write_per_class(output_root, name, keys.append_column(column, vectors_column(values)), labels[ok])
    lap("writes")
    seconds = time.perf_counter() - STARTED
    return {
        "images": len(uris),
        "embedded": int(ok.sum()),
        "classes": len(np.unique(labels)),
        "training_images": int((ok & (splits == "Training")).sum()),
        "pca_k": k,
        "processes": processes,
        "seconds": round(seconds, 2),
        "images_per_second": round(len(uris) / seconds, 2),
        "stages_seconds": stages,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-root", required=True, help="DIR/{Training,Test}/<Class>/*")
    parser.add_argument("--output-root", required=True, help="the four datasets go to DIR/<dataset>/")
    parser.add_argument(
        "--weights", default=str(DEFAULT_WEIGHTS), help="a Keras MobileNetV2 .weights.h5 file (random:<seed> for tests)"
    )
    parser.add_argument("--processes", type=int, default=os.cpu_count() or 1, help="one per core (default)")
    parser.add_argument("--json", help="also write the figures to this file")
    options = parser.parse_args()
    if not options.weights.startswith("random:") and not Path(options.weights).is_file():
        raise SystemExit(f"weights not found: {options.weights}")
    report = run(Path(options.data_root), Path(options.output_root), options.weights, options.processes)
    stages = ", ".join(f"{name} {value}s" for name, value in report["stages_seconds"].items())
    print(
        f"direct: {report['images']} images ({report['embedded']} embedded, {report['classes']} classes), "
        f"k = {report['pca_k']}; {report['seconds']}s, {report['images_per_second']} images/s; {stages}"
    )
    if options.json:
        Path(options.json).write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
