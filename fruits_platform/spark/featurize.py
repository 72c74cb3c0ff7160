"""The Spark layer: thin adapters between DataFrames and the pure functions in `fruits_platform.ml`.

- `catalogue_images`: file listing -> one catalogue row per file (`inspect_image` in mapInPandas).
- `embed_images`: catalogue rows -> 1280-d MobileNetV2 vectors with an iterator pandas UDF; the model
  is built once per Python worker (one engine thread per Spark core) from the `CompiledModel` the driver
  broadcast, and called on small batches (`batch_size`) within each Arrow batch.
"""

from __future__ import annotations

import hashlib
import math
from collections import Counter
from collections.abc import Iterator

import pandas as pd
from pyspark.accumulators import AccumulatorParam
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.functions import pandas_udf
from pyspark.sql.types import ArrayType, FloatType

from fruits_platform.ml.images import inspect_image
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


def _inspect_one(uri: str) -> dict:
    try:
        data = read_bytes(uri)
    except OSError as error:  # this file vanished or cannot be read: recorded, the batch goes on
        return dict(status="rejected", reason=f"unreadable: {type(error).__name__}: {error}"[:300])
    return inspect_image(uri, data).as_dict()


def _inspector(progress=None):
    def inspect_batches(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        for batch in batches:
            details = pd.DataFrame.from_records([_inspect_one(uri) for uri in batch["uri"]], columns=RECORD_COLUMNS)
            if progress is not None:
                progress.add(len(batch))
            yield pd.concat([batch.reset_index(drop=True), details], axis=1)

    return inspect_batches


def catalogue_images(spark: SparkSession, files: list[ImageFile], progress=None) -> DataFrame:
    """One catalogue row per file, `spread` over the tasks by class (see `whole_classes`); `progress`: a Spark
    accumulator counting the files inspected."""
    listing = spark.createDataFrame([(f.uri, f.label, f.split) for f in files], LISTING_SCHEMA)
    return spread(spark, listing, listing_sizes(files)).mapInPandas(_inspector(progress), CATALOGUE_SCHEMA)


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


class UriList(AccumulatorParam):
    """A Spark accumulator of uris (the files that changed since the catalogue)."""

    def zero(self, value):
        return []

    def addInPlace(self, value1, value2):
        value1.extend(value2)
        return value1


def catalogued_bytes(uri: str, sha256: str) -> bytes | None:
    """The file's bytes if they are still those whose SHA-256 the catalogue recorded, else None (replaced or
    removed since): an image is never embedded under another content's hash."""
    try:
        data = read_bytes(uri)
    except FileNotFoundError:
        return None
    return data if hashlib.sha256(data).hexdigest() == sha256 else None


def mobilenet_udf(model_broadcast, threads: int, batch_size: int | None, progress=None, changed=None):
    @pandas_udf(ArrayType(FloatType()))
    def mobilenet_embedding(batches: Iterator[tuple[pd.Series, pd.Series]]) -> Iterator[pd.Series]:
        extractor = _worker_extractor(model_broadcast, threads, batch_size)
        for uris, hashes in batches:
            blobs = [catalogued_bytes(uri, sha256) for uri, sha256 in zip(uris, hashes)]
            kept = [index for index, data in enumerate(blobs) if data is not None]
            vectors = [None] * len(blobs)
            if kept:
                for index, vector in zip(kept, extractor.featurize_bytes([blobs[i] for i in kept])):
                    vectors[index] = vector
            if changed is not None and len(kept) < len(blobs):
                changed.add([uri for uri, data in zip(uris, blobs) if data is None])
            if progress is not None:
                progress.add(len(uris))
            yield pd.Series(vectors, index=uris.index, dtype=object)

    return mobilenet_embedding


def embed_images(
    spark: SparkSession,
    images: DataFrame,
    sizes: dict[str, int],
    model_broadcast,
    progress=None,
    batch_size: int | None = None,
    changed=None,
) -> DataFrame:
    """Add a `features` column (1280 float32) to `images` (which has `uri`, `sha256` and `label`; {class: rows}
    in `sizes`), `spread` over the tasks by class (see `whole_classes`). `model_broadcast`: a broadcast
    `CompiledModel`; `batch_size`: images per model call (None: the engine's default). A file whose bytes no
    longer have the catalogued SHA-256 gets no row; its uri goes to `changed` (a `UriList` accumulator)."""
    threads = int(spark.conf.get("spark.task.cpus", "1"))
    # Nondeterministic: else the optimizer copies the UDF into the filter below, and every image runs twice.
    udf = mobilenet_udf(model_broadcast, threads, batch_size, progress, changed).asNondeterministic()
    featurized = spread(spark, images, sizes).withColumn("features", udf(F.col("uri"), F.col("sha256")))
    return featurized.where(F.col("features").isNotNull())
