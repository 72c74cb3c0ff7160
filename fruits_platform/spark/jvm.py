"""The Spark internals the platform uses, in one place (what a new Spark may break; tested with each supported
Spark by test_quality.py and test_pipeline.py, which the EMR release matrix runs): Hadoop's FileSystem of the
session (PySpark has no file API), the local JVM started with its stderr through a filter, and the fitted
`StandardScalerModel` and `PCAModel` built from arrays (pyspark.ml has no public constructor: their JVM ones are
`private[ml]` in Scala, public in the bytecode, as pyspark's own model loading calls them)."""

from __future__ import annotations

import subprocess
import uuid

import numpy as np
from pyspark import SparkConf, SparkContext
from pyspark.java_gateway import launch_gateway
from pyspark.ml import PipelineModel
from pyspark.ml.feature import PCAModel, StandardScalerModel
from pyspark.sql import SparkSession

from fruits_platform.notices import forward


def _jvm(spark: SparkSession):
    return spark.sparkContext._jvm


def start_local_jvm(config: dict[str, str]) -> None:
    """Start the JVM of a local session with `config`, unless this process has one, its stderr (which also
    carries its Python workers') copied to ours without the start-up notices: the session then uses it."""
    if SparkContext._gateway is not None:
        return
    gateway = launch_gateway(SparkConf().setAll(list(config.items())), popen_kwargs={"stderr": subprocess.PIPE})
    forward(gateway.proc.stderr)
    SparkContext._gateway, SparkContext._jvm = gateway, gateway.jvm


def hadoop_filesystem(spark: SparkSession, root: str):
    """Hadoop's FileSystem for `root` with the session's configuration (EMRFS for s3:// on EMR), and the JVM's
    `Path` class."""
    path = _jvm(spark).org.apache.hadoop.fs.Path
    return path(root).getFileSystem(spark.sparkContext._jsc.hadoopConfiguration()), path


def commons_io(spark: SparkSession):
    """Apache Commons IO's `IOUtils` (on Spark's class path): a stream's bytes or text in one call."""
    return _jvm(spark).org.apache.commons.io.IOUtils


def _doubles(spark: SparkSession, values: np.ndarray):
    """A JVM double[] of `values` (C order), sent as one byte[]: py4j would send a list value by value."""
    data = np.ascontiguousarray(values, dtype=np.float64).ravel()
    jvm = _jvm(spark)
    array = spark.sparkContext._gateway.new_array(jvm.double, data.size)
    buffer = jvm.java.nio.ByteBuffer.wrap(bytearray(data.tobytes())).order(jvm.java.nio.ByteOrder.nativeOrder())
    buffer.asDoubleBuffer().get(array)
    return array


def _vector(spark: SparkSession, values: np.ndarray):
    return _jvm(spark).org.apache.spark.ml.linalg.DenseVector(_doubles(spark, values))


def standard_scaler_model(
    spark: SparkSession, mean: np.ndarray, std: np.ndarray, input_col: str, output_col: str
) -> StandardScalerModel:
    """The fitted StandardScaler (with mean and std) of these statistics, as `StandardScaler.fit` returns it."""
    java_model = _jvm(spark).org.apache.spark.ml.feature.StandardScalerModel(
        f"StandardScaler_{uuid.uuid4().hex[-12:]}", _vector(spark, std), _vector(spark, mean)
    )
    model = StandardScalerModel(java_model)
    model._set(withMean=True, withStd=True, inputCol=input_col, outputCol=output_col)
    model._transfer_params_to_java()
    return model


def pca_model(
    spark: SparkSession,
    axes: np.ndarray,
    explained_variance: np.ndarray,
    input_col: str,
    output_col: str,
) -> PCAModel:
    """The fitted PCA whose principal components are the columns of `axes` (d x k), as `PCA(k).fit` returns it."""
    rows, k = axes.shape
    jvm = _jvm(spark)
    # DenseMatrix takes its values column-major: the transpose's C order.
    matrix = jvm.org.apache.spark.ml.linalg.DenseMatrix(rows, k, _doubles(spark, np.asarray(axes).T))
    java_model = jvm.org.apache.spark.ml.feature.PCAModel(
        f"PCA_{uuid.uuid4().hex[-12:]}", matrix, _vector(spark, explained_variance)
    )
    model = PCAModel(java_model)
    model._set(k=k, inputCol=input_col, outputCol=output_col)
    model._transfer_params_to_java()
    return model


def model_fingerprint(model: PipelineModel) -> str:
    """Identifies a fitted scaler + PCA model by its parameters: the SHA-256 of the scaler's mean and std and the
    principal components (row-major), as float64 little-endian bytes. Hashed in the JVM, where the arrays are
    (py4j would bring a 1280 x k matrix to Python value by value)."""
    jvm = _jvm(SparkSession.active())
    scaler, pca = (stage._java_obj for stage in model.stages)
    digest = jvm.java.security.MessageDigest.getInstance("SHA-256")
    # Matrix.toArray is column-major: the transpose's is the matrix's row-major order.
    for values in (scaler.mean().toArray(), scaler.std().toArray(), pca.pc().transpose().toArray()):
        buffer = jvm.java.nio.ByteBuffer.allocate(8 * len(values)).order(jvm.java.nio.ByteOrder.LITTLE_ENDIAN)
        buffer.asDoubleBuffer().put(values)
        digest.update(buffer)
    return bytes(digest.digest()).hex()[:24]
