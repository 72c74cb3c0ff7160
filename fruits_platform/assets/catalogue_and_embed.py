"""`raw_images` and `mobilenet_features`, one step: each file is read once, catalogued and (when valid and
not embedded before) embedded from the same bytes; the rows are kept on the executors' disks and written twice."""

from dagster import AssetExecutionContext, multi_asset
from dagster_pyspark import LazyPySparkResource
from pyspark import StorageLevel

from fruits_platform.assets.common import (
    PER_CLASS_STEP,
    StepLauncherParam,
    Stopwatch,
    progress_logger,
    storage_failures,
)
from fruits_platform.assets.mobilenet_features import CHECKS, MOBILENET_FEATURES, embedded_before, features_result
from fruits_platform.assets.raw_images import RAW_IMAGES, catalogue_result
from fruits_platform.resources.model import MobileNetWeights
from fruits_platform.resources.storage import FruitsStorage
from fruits_platform.spark.featurize import broadcast, listing_sizes, whole_classes
from fruits_platform.spark.featurize import catalogue_and_embed as catalogue_and_embed_files


@multi_asset(specs=[RAW_IMAGES, MOBILENET_FEATURES], check_specs=CHECKS, **PER_CLASS_STEP)
def catalogue_and_embed(
    context: AssetExecutionContext,
    spark: LazyPySparkResource,
    pyspark_step_launcher: StepLauncherParam,
    storage: FruitsStorage,
    weights: MobileNetWeights,
):
    stopwatch = Stopwatch()
    labels = list(context.partition_keys)
    session, model_weights, model = spark.spark_session, weights.load(), weights.compiled()
    with storage_failures():
        files = storage.class_files(labels)
    features = storage.dataset(session, "mobilenet_features")
    known, known_hashes = embedded_before(features, labels, model.signature)
    context.log.info(f"{len(files)} file(s) in {len(labels)} class(es), {describe(known_hashes, model_weights, model)}")
    progress = session.sparkContext.accumulator(0)
    with broadcast(session, model, known_hashes) as (model_broadcast, known_broadcast):
        rows = catalogue_and_embed_files(session, files, model_broadcast, known_broadcast, progress, weights.batch_size)
        rows = rows.persist(StorageLevel.DISK_ONLY)  # the second write reads these rows, not the files again
        grouped = whole_classes(session, listing_sizes(files))  # as catalogue_and_embed spread them
        try:
            with progress_logger(context.log, len(files), progress, label="files"), storage_failures():
                catalogued = catalogue_result(
                    context, stopwatch, storage.dataset(session, "raw_images"), rows, labels, grouped
                )
            yield catalogued
            with storage_failures():
                embedded = features_result(
                    context, stopwatch, features, rows, known, labels, grouped, model_weights, model, weights.batch_size
                )
            yield embedded
        finally:
            rows.unpersist()


def describe(known_hashes: frozenset[str], model_weights, model) -> str:
    return (
        f"{len(known_hashes)} image(s) embedded before with these weights; weights {model_weights.source} "
        f"({model_weights.fingerprint}), {model_weights.image_size}px, engine {model.engine}"
    )
