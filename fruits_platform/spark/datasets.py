"""Per-class Parquet datasets with atomic replacement, through Hadoop's FileSystem API so that the
same code serves local folders (file://) and S3 on EMR (s3://).

Layout: `<output-root>/<asset>/<class-dir>/part-*.parquet`, one folder per class (partition),
named by `class_dir_name` (safe and unique). A write goes to `<asset>/_staging/<uuid>/` first and
each class folder is then swapped in by rename; the previous version is kept in `_trash/` until the
new one is in place, and restored from there (by the next read or write of the asset) if a run died
between the two renames. A failed Spark write deletes its staging folder; a killed process leaves it
behind, harmless. Readers such as `pyarrow.dataset.dataset(<output-root>/<asset>)` and Spark skip
`_`-prefixed folders.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

from pyspark.sql import Column, DataFrame, Observation, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import ArrayType, DoubleType, FloatType

from fruits_platform.sources import class_dir_name, is_s3
from fruits_platform.spark.jvm import commons_io, hadoop_filesystem

DIR_COLUMN = "class_dir"


class MissingPartitionError(RuntimeError):
    pass


def qualify(path: str) -> str:
    """A fully qualified URI (so a cluster's default HDFS is never used by accident)."""
    if is_s3(path) or "://" in path:
        return path.rstrip("/")
    return "file://" + os.path.abspath(path)


class HadoopFs:
    """The few FileSystem calls we need, on the JVM of the active SparkSession."""

    def __init__(self, spark: SparkSession, root: str):
        self._fs, self._path = hadoop_filesystem(spark, root)
        self._io_utils = commons_io(spark)

    def exists(self, path: str) -> bool:
        return bool(self._fs.exists(self._path(path)))

    def rename(self, source: str, target: str) -> None:
        self._fs.mkdirs(self._path(target).getParent())
        if not self._fs.rename(self._path(source), self._path(target)):
            raise OSError(f"could not rename {source} to {target}")

    def delete(self, path: str) -> None:
        self._fs.delete(self._path(path), True)

    def write_bytes(self, path: str, data: bytes) -> None:
        stream = self._fs.create(self._path(path), True)
        try:
            stream.write(data)
        finally:
            stream.close()

    def write_text(self, path: str, text: str) -> None:
        self.write_bytes(path, text.encode())

    def read_bytes(self, path: str) -> bytes:
        stream = self._fs.open(self._path(path))
        try:
            return bytes(self._io_utils.toByteArray(stream))
        finally:
            stream.close()

    def read_text(self, path: str) -> str:
        """A file's text, or that of a folder's data files (not `_`/`.` ones) in name order."""
        target = self._path(path)
        files = [target]
        if not self._fs.getFileStatus(target).isFile():
            names = (status.getPath() for status in self._fs.listStatus(target) if status.isFile())
            files = sorted((f for f in names if not f.getName().startswith(("_", "."))), key=lambda f: f.getName())
        text = []
        for file in files:
            stream = self._fs.open(file)
            try:
                text.append(self._io_utils.toString(stream, "UTF-8"))
            finally:
                stream.close()
        return "".join(text)

    def children(self, path: str) -> list[str]:
        if not self.exists(path):
            return []
        return [status.getPath().getName() for status in self._fs.listStatus(self._path(path))]


def replace_directory(fs: HadoopFs, staged: str, final: str) -> None:
    """Swap `staged` in as `final`; the old `final` survives until the new one is in place."""
    parent, name = final.rsplit("/", 1)
    trash = f"{parent}/_trash/{name}.{uuid.uuid4().hex}"
    if fs.exists(final):
        fs.rename(final, trash)
    fs.rename(staged, final)
    fs.delete(trash)


@contextmanager
def replacing(fs: HadoopFs, target: str) -> Iterator[str]:
    """A staging folder for the next version of the folder `target`, swapped in as `target` when the block ends;
    a block that fails leaves `target` as it was and the staging folder deleted."""
    parent, name = target.rsplit("/", 1)
    staged = f"{parent}/_staging/{name}-{uuid.uuid4().hex}"
    try:
        yield staged
    except BaseException:
        fs.delete(staged)
        raise
    replace_directory(fs, staged, target)


def recover_interrupted(fs: HadoopFs, root: str) -> None:
    """Put back any version a run moved to _trash/ and died before replacing."""
    for entry in fs.children(f"{root}/_trash"):
        name = entry.split(".", 1)[0]
        if not fs.exists(f"{root}/{name}"):
            fs.rename(f"{root}/_trash/{entry}", f"{root}/{name}")
        else:
            fs.delete(f"{root}/_trash/{entry}")


class PartitionedDataset:
    """One asset's Parquet dataset, one folder per fruit class."""

    def __init__(self, spark: SparkSession, root: str):
        self.spark = spark
        self.root = qualify(root)
        self.fs = HadoopFs(spark, self.root)

    def path(self, label: str) -> str:
        return f"{self.root}/{class_dir_name(label)}"

    def exists(self, label: str) -> bool:
        return self.fs.exists(self.path(label))

    def read(self, labels: list[str]) -> DataFrame:
        recover_interrupted(self.fs, self.root)
        missing = [label for label in labels if not self.exists(label)]
        if missing:
            raise MissingPartitionError(
                f"{self.root} has no data for {len(missing)} class(es): {', '.join(map(repr, missing[:5]))}: "
                f"materialize {self.root.rsplit('/', 1)[-1]} for them first, or set FRUITS_OUTPUT_ROOT to the output "
                "root they were written to"
            )
        return self.spark.read.parquet(*[self.path(label) for label in labels])

    def read_existing(self, labels: list[str]) -> DataFrame | None:
        present = [label for label in labels if self.exists(label)]
        return self.read(present) if present else None

    def write(
        self, frame: DataFrame, labels: list[str], grouped: bool = False, observe: dict[str, Column] | None = None
    ) -> dict | None:
        """Write `frame` (which has a `label` column) as the new version of each class in `labels`.

        Rows are sorted by uri in each file, so identical inputs give identical files. By default the rows
        are first shuffled so that each class is written by one task, in one file. `grouped=True` says that
        the frame's partitions already hold whole classes (a frame read from per-class folders, where each
        class is a file that Spark splits only beyond its maximum partition size, or one `spread` by class):
        each partition then writes its own classes, with no shuffle.

        `observe`: aggregates ({name: column}) of the rows written, computed by Spark while it writes them
        (observed metrics, no second pass over the data); returned as a dict, or None when Spark reports
        none (no row was written).
        """
        recover_interrupted(self.fs, self.root)
        staging = f"{self.root}/_staging/{uuid.uuid4().hex}"
        folder_of = F.create_map(*[F.lit(v) for label in labels for v in (label, class_dir_name(label))])
        rows = frame.where(F.col("label").isin(labels))
        observation = Observation(f"write-{uuid.uuid4().hex}") if observe else None
        if observation is not None:
            rows = rows.observe(observation, *[column.alias(name) for name, column in observe.items()])
        rows = rows.withColumn(DIR_COLUMN, folder_of[F.col("label")])
        if not grouped:
            # An explicit count: adaptive execution would coalesce small data into a few tasks writing class by class.
            rows = rows.repartition(min(len(labels), 2 * self.spark.sparkContext.defaultParallelism), DIR_COLUMN)
        # Sorted by folder first: that is the order the partitioned writer requires, so Spark adds no sort of its
        # own (which would replace the uri order and make reruns differ).
        writer = rows.sortWithinPartitions(DIR_COLUMN, "uri").write.partitionBy(DIR_COLUMN)
        for field in frame.schema.fields:
            if isinstance(field.dataType, ArrayType) and isinstance(
                field.dataType.elementType, (FloatType, DoubleType)
            ):
                # Vectors: a dictionary of their values never pays (they all differ) and costs write time.
                writer = writer.option(f"parquet.enable.dictionary#{field.name}.list.element", "false")
        try:
            writer.parquet(staging)
        except BaseException:
            # Nothing was swapped: every class keeps its previous version; drop the partial write.
            self.fs.delete(staging)
            raise
        for label in labels:
            staged = f"{staging}/{DIR_COLUMN}={class_dir_name(label)}"
            if not self.fs.exists(staged):  # a class with no rows still gets a (schema-only) file
                self.spark.createDataFrame([], frame.schema).coalesce(1).write.parquet(staged)
            replace_directory(self.fs, staged, self.path(label))
        self.fs.delete(staging)
        if observation is None:
            return None
        try:
            return observation.get
        except Exception:  # Spark reports no metrics when no row was written
            return None


def write_json(spark: SparkSession, path: str, value) -> None:
    """A small JSON document as one file at `path`, through Hadoop's FileSystem (wherever Spark writes, no job)."""
    import json

    HadoopFs(spark, path).write_text(path, json.dumps(value))


def read_json(spark: SparkSession, path: str):
    """The document `write_json` wrote (or, from earlier versions, a one-line text dataset folder), or None if
    there is none."""
    import json

    fs = HadoopFs(spark, path)
    return json.loads(fs.read_text(path)) if fs.exists(path) else None
