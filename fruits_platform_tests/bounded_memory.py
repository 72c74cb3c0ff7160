"""The evaluation or the model fit in a driver of bounded memory, run by the tests in a JVM of its own:
`python -m fruits_platform_tests.bounded_memory quality ROWS MAX_IMAGES DRIVER_MEMORY` evaluates ROWS generated rows
(1280 + 16 floats each) and prints: rows offered, rows evaluated, sample fraction;
`python -m fruits_platform_tests.bounded_memory fit ROWS K DRIVER_MEMORY` fits the scaler and a k-component PCA on
ROWS generated 1280-d Training rows and prints: rows fitted, k."""

import sys

from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from fruits_platform.resources import LOCAL_SPARK_CONFIG, use_local_spark_env
from fruits_platform.spark.evaluation import evaluate_features
from fruits_platform.spark.reduction import fit_feature_model

use_local_spark_env()
mode, rows, number, memory = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
builder = SparkSession.builder
for key, value in {**LOCAL_SPARK_CONFIG, "spark.driver.memory": memory}.items():
    builder = builder.config(key, value)
spark = builder.getOrCreate()


def wave(width, scale):
    return F.transform(
        F.sequence(F.lit(1), F.lit(width)),
        lambda i: F.sin(F.col("id") * i * scale + F.col("id") % 10).cast("float"),
    )


frame = spark.range(rows).select(
    F.concat(F.lit("u"), F.col("id").cast("string")).alias("uri"),
    (F.col("id") % 10).cast("string").alias("label"),
    F.when(F.col("id") % 4 == 0, "Test").otherwise("Training").alias("split"),
    wave(1280, 0.001).alias("scaled_features"),
    wave(16, 0.01).alias("pca_features"),
)
if mode == "quality":
    report = evaluate_features(frame, ks=(4,), max_iter=5, max_images=number)
    print(report.total_images, report.training_images + report.test_images, report.sample_fraction)
else:
    model, summary = fit_feature_model(frame.withColumnRenamed("scaled_features", "features"), fixed_k=number)
    print(summary.training_rows, summary.k)
