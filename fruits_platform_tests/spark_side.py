"""The other side of test_model_portability, run by another environment's Python (another Spark):
`python -m fruits_platform_tests.spark_side INPUT MODEL_IN OUT_DIR` transforms INPUT (Parquet with a
`features` column) with the model saved at MODEL_IN, then fits and saves its own model on INPUT's Training
rows and transforms INPUT with it; writes OUT_DIR/{theirs,ours}.parquet, OUT_DIR/model and its version."""

import sys
from pathlib import Path

from pyspark.ml import PipelineModel
from pyspark.sql import SparkSession

from fruits_platform.resources import LOCAL_SPARK_CONFIG, use_local_spark_env
from fruits_platform.spark.reduction import fit_feature_model, transform_features


def main(source: str, model_in: str, out_dir: str) -> None:
    use_local_spark_env()
    builder = SparkSession.builder.appName("spark-side")
    for key, value in LOCAL_SPARK_CONFIG.items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    out = Path(out_dir)
    frame = spark.read.parquet(source)
    transform_features(PipelineModel.load(model_in), frame).toPandas().to_parquet(out / "theirs.parquet")
    model, _ = fit_feature_model(frame.where("split = 'Training'"), fixed_k=8)
    model.save(str(out / "model"))
    transform_features(model, frame).toPandas().to_parquet(out / "ours.parquet")
    (out / "spark_version").write_text(spark.version)
    spark.stop()


if __name__ == "__main__":
    main(*sys.argv[1:4])
