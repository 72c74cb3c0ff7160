"""The Spark layer: thin adapters between DataFrames and the pure functions in `fruits_platform.ml`.

- `catalogue_and_embed`: file listing -> one row per file, each file read once (mapInPandas): its catalogue
  record (`inspect_image`) and, for a valid image not embedded before, its 1280-d MobileNetV2 vector. The model
  is built once per Python worker (one engine thread per Spark core) from the `CompiledModel` the driver
  broadcast, and called on small batches (`batch_size`).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager

import pandas as pd
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from fruits_platform.ml.images import STATUS_OK, inspect_image
from fruits_platform.ml.mobilenet import CompiledModel, Featurizer
from fruits_platform.sources import ImageFile, read_bytes

LISTING_SCHEMA = "uri string, label string, split string"
CATALOGUE_SCHEMA = (
    "uri string, label string, split string, size_bytes long, sha256 string, format string, "
    "width int, height int, mode string, status string, reason string"
)
# Rows per Spark task when featurizing: big enough to amortise task start, small enough to balance.
ROWS_PER_TASK = 512
# Classes are spread whole over the tasks (so that the per-class write needs no shuffle) only when there are
# at least this many per core; fewer classes are spread image by image, so that every core works.
MIN_CLASSES_PER_CORE = 2


def task_count(spark: SparkSession, rows: int) -> int:
    """A multiple of the cluster's parallelism, so that every core gets an equal share."""
    parallelism = spark.sparkContext.defaultParallelism
    waves = max(1, math.ceil(rows / (ROWS_PER_TASK * parallelism)))
    return parallelism * waves


def class_sizes(frame: DataFrame) -> dict[str, int]:
    """{class: rows} of a frame with a `label` column (one small row per class to the driver)."""
    return {row["label"]: row["count"] for row in frame.groupBy("label").count().collect()}


def listing_sizes(files: list[ImageFile]) -> dict[str, int]:
    """{class: files} of a file listing."""
    return dict(Counter(f.label for f in files))


def class_bins(sizes: dict[str, int], bins: int) -> list[list[str]]:
    """The classes of `sizes` ({class: rows}) in `bins` groups of about equal rows: each class, largest first,
    joins the group with the fewest rows so far (deterministic: ties go to the first group, then by name)."""
    groups: list[list[str]] = [[] for _ in range(bins)]
    totals = [0] * bins
    for label in sorted(sizes, key=lambda name: (-sizes[name], name)):
        smallest = min(range(bins), key=lambda index: (totals[index], index))
        groups[smallest].append(label)
        totals[smallest] += sizes[label]
    return groups


def whole_classes(spark: SparkSession, sizes: dict[str, int]) -> bool:
    """Whether `spread` gives every task whole classes for these class sizes."""
    tasks = task_count(spark, sum(sizes.values()))
    return len(sizes) >= max(tasks, MIN_CLASSES_PER_CORE * spark.sparkContext.defaultParallelism)


_PARTITION_KEYS: dict[int, tuple[int, ...]] = {}


def _partition_keys(spark: SparkSession, partitions: int) -> tuple[int, ...]:
    """For each partition p, a long that Spark's hash partitioning into `partitions` sends to p (Murmur3, a
    fixed function: computed once per process and number of partitions)."""
    if partitions not in _PARTITION_KEYS:
        found = (
            spark.range(64 * partitions)
            .groupBy(F.pmod(F.hash("id"), F.lit(partitions)).alias("p"))
            .agg(F.min("id").alias("id"))
            .collect()
        )
        keys = {row["p"]: row["id"] for row in found}
        _PARTITION_KEYS[partitions] = tuple(keys[p] for p in range(partitions))
    return _PARTITION_KEYS[partitions]


def spread(spark: SparkSession, frame: DataFrame, sizes: dict[str, int]) -> DataFrame:
    """`frame` (which has `label`; {class: rows} in `sizes`) repartitioned over `task_count` tasks. When
    `whole_classes`, each task gets one group of `class_bins` (whole classes, about equal rows), so that the
    per-class write needs no shuffle; else rows go round robin."""
    tasks = task_count(spark, sum(sizes.values()))
    if not whole_classes(spark, sizes):
        return frame.repartition(tasks)
    keys = _partition_keys(spark, tasks)
    pairs = [
        (F.lit(label), F.lit(keys[index]).cast("long"))
        for index, group in enumerate(class_bins(sizes, tasks))
        for label in group
    ]
    return frame.repartition(tasks, F.create_map(*[c for pair in pairs for c in pair])[F.col("label")])


RECORD_COLUMNS = ["size_bytes", "sha256", "format", "width", "height", "mode", "status", "reason"]
CATALOGUE_COLUMNS = ["uri", "label", "split", *RECORD_COLUMNS]
IMAGES_SCHEMA = f"{CATALOGUE_SCHEMA}, features array<float>"


def read_and_inspect(uri: str, read=read_bytes) -> tuple[bytes | None, dict]:
    """The file's bytes (None if unreadable) and its catalogue record, from one read."""
    try:
        data = read(uri)
    except OSError as error:  # this file vanished or cannot be read: recorded, the batch goes on
        return None, dict(status="rejected", reason=f"unreadable: {type(error).__name__}: {error}"[:300])
    return data, inspect_image(uri, data).as_dict()


def catalogue_and_embed_batch(uris, known: frozenset, featurizer, read=read_bytes) -> tuple[list[dict], list]:
    """Each file read once: its catalogue record, and its vector when it is `ok` and its SHA-256 is not in
    `known` (else None). `featurizer()` gives the model (built on first need); it gets the bytes whose hash
    the record holds, a few images at a time, so that memory holds one model batch of files."""
    records, vectors, pending = [], [], []

    def flush():
        for index, vector in zip([i for i, _ in pending], featurizer().featurize_bytes([d for _, d in pending])):
            vectors[index] = vector
        pending.clear()

    for uri in uris:
        data, record = read_and_inspect(uri, read)
        records.append(record)
        vectors.append(None)
        if record["status"] == STATUS_OK and record["sha256"] not in known:
            pending.append((len(vectors) - 1, data))
            if len(pending) >= (featurizer().batch_size or 1):
                flush()
    if pending:
        flush()
    return records, vectors


_extractors: dict[str, Featurizer] = {}


def _worker_extractor(model_broadcast, threads: int, batch_size: int | None) -> Featurizer:
    """The model of this Python worker, built on first use and kept while the worker lives."""
    model: CompiledModel = model_broadcast.value
    if model.signature not in _extractors:
        _extractors.clear()
        _extractors[model.signature] = model.extractor(threads=threads)
    extractor = _extractors[model.signature]
    extractor.batch_size = model.batch_size(batch_size)
    return extractor


def _cataloguer_and_embedder(model_broadcast, known_broadcast, threads: int, batch_size: int | None, progress):
    def batches(frames: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        known = known_broadcast.value

        def featurizer() -> Featurizer:
            return _worker_extractor(model_broadcast, threads, batch_size)

        for frame in frames:
            records, vectors = catalogue_and_embed_batch(frame["uri"], known, featurizer)
            details = pd.DataFrame.from_records(records, columns=RECORD_COLUMNS)
            details["features"] = pd.Series(vectors, dtype=object)
            if progress is not None:
                progress.add(len(frame))
            yield pd.concat([frame.reset_index(drop=True), details], axis=1)

    return batches


@contextmanager
def broadcast(spark: SparkSession, *values):
    """Broadcast each of `values` to the executors, for the duration of the block."""
    handles = [spark.sparkContext.broadcast(value) for value in values]
    try:
        yield handles
    finally:
        for handle in handles:
            handle.unpersist()


def catalogue_and_embed(
    spark: SparkSession,
    files: list[ImageFile],
    model_broadcast,
    known_broadcast,
    progress=None,
    batch_size: int | None = None,
) -> DataFrame:
    """One row per file, each file read once: its catalogue columns (`CATALOGUE_SCHEMA`) and `features`, the
    1280-d vector of the bytes whose SHA-256 the row holds, for an `ok` image whose hash is not in the broadcast
    set `known_broadcast` (null otherwise: rejected, or embedded before). `spread` over the tasks by class (see
    `whole_classes`). `model_broadcast`: a broadcast `CompiledModel`; `batch_size`: images per model call (None:
    the engine's default); `progress`: a Spark accumulator counting the files done."""
    threads = int(spark.conf.get("spark.task.cpus", "1"))
    listing = spark.createDataFrame([(f.uri, f.label, f.split) for f in files], LISTING_SCHEMA)
    work = _cataloguer_and_embedder(model_broadcast, known_broadcast, threads, batch_size, progress)
    return spread(spark, listing, listing_sizes(files)).mapInPandas(work, IMAGES_SCHEMA)
