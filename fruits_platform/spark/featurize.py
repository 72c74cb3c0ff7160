"""The Spark layer: thin adapters between DataFrames and the pure functions in `fruits_platform.ml`.

- `catalogue_images`: file listing -> one catalogue row per file (`inspect_image` in mapInPandas).
- `embed_images`: catalogue rows -> 1280-d MobileNetV2 vectors with an iterator pandas UDF; the model
  is built once per Python worker (one TensorFlow thread per Spark core) from weights the driver
  broadcast, and called on small batches (`batch_size`) within each Arrow batch.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import pandas as pd
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.functions import pandas_udf
from pyspark.sql.types import ArrayType, FloatType

from fruits_platform.ml.images import inspect_image
from fruits_platform.ml.mobilenet import DEFAULT_BATCH_SIZE, FeatureExtractor, ModelWeights, configure_threads
from fruits_platform.sources import ImageFile, read_bytes

LISTING_SCHEMA = "uri string, label string, split string"
CATALOGUE_SCHEMA = (
    "uri string, label string, split string, size_bytes long, sha256 string, format string, "
    "width int, height int, mode string, status string, reason string"
)
# Rows per Spark task when featurizing: big enough to amortise task start, small enough to balance.
ROWS_PER_TASK = 512


def task_count(spark: SparkSession, rows: int) -> int:
    """A multiple of the cluster's parallelism, so that every core gets an equal share."""
    parallelism = spark.sparkContext.defaultParallelism
    waves = max(1, math.ceil(rows / (ROWS_PER_TASK * parallelism)))
    return parallelism * waves


RECORD_COLUMNS = ["size_bytes", "sha256", "format", "width", "height", "mode", "status", "reason"]


def _inspect_one(uri: str) -> dict:
    try:
        data = read_bytes(uri)
    except OSError as error:  # this file vanished or cannot be read: recorded, the batch goes on
        return dict(status="rejected", reason=f"unreadable: {type(error).__name__}: {error}"[:300])
    return inspect_image(uri, data).as_dict()


def _inspect_batches(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
    for batch in batches:
        details = pd.DataFrame.from_records([_inspect_one(uri) for uri in batch["uri"]], columns=RECORD_COLUMNS)
        yield pd.concat([batch.reset_index(drop=True), details], axis=1)


def catalogue_images(spark: SparkSession, files: list[ImageFile]) -> DataFrame:
    listing = spark.createDataFrame([(f.uri, f.label, f.split) for f in files], LISTING_SCHEMA)
    return listing.repartition(task_count(spark, len(files))).mapInPandas(_inspect_batches, CATALOGUE_SCHEMA)


_extractors: dict[str, FeatureExtractor] = {}


def _worker_extractor(weights_broadcast, threads: int, batch_size: int) -> FeatureExtractor:
    """The model of this Python worker, built on first use and kept while the worker lives."""
    weights: ModelWeights = weights_broadcast.value
    if weights.signature not in _extractors:
        configure_threads(threads)
        _extractors.clear()
        _extractors[weights.signature] = FeatureExtractor(weights)
    extractor = _extractors[weights.signature]
    extractor.batch_size = batch_size
    return extractor


def mobilenet_udf(weights_broadcast, threads: int, batch_size: int, progress=None):
    @pandas_udf(ArrayType(FloatType()))
    def mobilenet_embedding(uri_batches: Iterator[pd.Series]) -> Iterator[pd.Series]:
        extractor = _worker_extractor(weights_broadcast, threads, batch_size)
        for uris in uri_batches:
            features = extractor.featurize_bytes([read_bytes(uri) for uri in uris])
            if progress is not None:
                progress.add(len(uris))
            yield pd.Series(list(features), index=uris.index)

    return mobilenet_embedding


def embed_images(
    spark: SparkSession,
    images: DataFrame,
    rows: int,
    weights_broadcast,
    progress=None,
    batch_size: int = DEFAULT_BATCH_SIZE,
) -> DataFrame:
    """Add a `features` column (1280 float32) to `images` (which has `uri`)."""
    threads = int(spark.conf.get("spark.task.cpus", "1"))
    udf = mobilenet_udf(weights_broadcast, threads, batch_size, progress)
    return images.repartition(task_count(spark, rows)).withColumn("features", udf(F.col("uri")))
