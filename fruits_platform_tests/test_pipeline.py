"""The whole asset graph on real bundled images, through Dagster, checked against independent
computations (single-process Keras, NumPy scaler and PCA)."""

from pathlib import Path

import numpy as np
import pyarrow.dataset as ds
import pytest
from dagster import instance_for_test
from pyspark.ml import PipelineModel

from fruits_platform.ml.images import decode_batch
from fruits_platform.ml.mobilenet import FeatureExtractor, load_weights
from fruits_platform.resources.model import MobileNetWeights
from fruits_platform.runner import latest_metadata, materialize_classes, register_classes
from fruits_platform_tests.helpers import copy_classes, resources

CLASSES = ["Apple Braeburn", "Banana", "Lemon", "Strawberry"]


def table(output_root, asset):
    return ds.dataset(f"{output_root}/{asset}").to_table().sort_by("uri")


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory, spark, real_weights_path):
    root = tmp_path_factory.mktemp("pipeline")
    data = copy_classes(root / "data", CLASSES)
    (root / "home").mkdir()
    with instance_for_test(temp_dir=str(root / "home")) as instance:
        selected, _ = register_classes(instance, str(data))
        results = materialize_classes(instance, resources(data, root / "out", real_weights_path), selected)
        yield {
            "root": root,
            "data": data,
            "out": root / "out",
            "instance": instance,
            "results": results,
            "weights": real_weights_path,
        }


def test_output_contract(pipeline):
    widths = {"mobilenet_features": 1280, "scaled_features": 1280}
    k = latest_metadata(pipeline["results"], "pca_features")["pca_k"]
    for asset, column in [
        ("mobilenet_features", "features"),
        ("scaled_features", "scaled_features"),
        ("pca_features", "pca_features"),
    ]:
        data = table(pipeline["out"], asset)
        assert data.num_rows == 16 * len(CLASSES)
        assert {"uri", "label", "split", column} <= set(data.column_names)
        assert str(data.schema.field(column).type.value_type) == "float"
        assert {len(v) for v in data.column(column).to_pylist()} == {widths.get(asset, k)}
        assert set(data.column("label").to_pylist()) == set(CLASSES)
        assert set(data.column("split").to_pylist()) == {"Training", "Test"}
    catalogue = table(pipeline["out"], "raw_images")
    assert set(catalogue.column("status").to_pylist()) == {"ok"}
    assert set(zip(catalogue.column("width").to_pylist(), catalogue.column("height").to_pylist())) == {(100, 100)}


def test_spark_features_equal_single_process_keras(pipeline):
    features = table(pipeline["out"], "mobilenet_features")
    uris = features.column("uri").to_pylist()
    extractor = FeatureExtractor(load_weights(pipeline["weights"]))
    blobs = [Path(uri).read_bytes() for uri in uris]
    expected = np.concatenate(
        [extractor.featurize_arrays(decode_batch(blobs[i : i + 32], 224)) for i in range(0, len(blobs), 32)]
    )
    actual = np.stack(features.column("features").to_numpy(zero_copy_only=False))
    np.testing.assert_allclose(actual, expected, rtol=1e-4, atol=1e-4)
    assert np.abs(actual).sum() > 0


def test_scaler_and_pca_match_numpy_fitted_on_training_only(pipeline):
    features = table(pipeline["out"], "mobilenet_features")
    x = np.stack(features.column("features").to_numpy(zero_copy_only=False)).astype(np.float64)
    training = np.array(features.column("split").to_pylist()) == "Training"
    mean, std = x[training].mean(axis=0), x[training].std(axis=0, ddof=1)
    scaled_expected = np.where(std > 0, (x - mean) / np.where(std > 0, std, 1), 0.0)
    scaled = np.stack(
        table(pipeline["out"], "scaled_features").column("scaled_features").to_numpy(zero_copy_only=False)
    )
    np.testing.assert_allclose(scaled, scaled_expected, rtol=1e-3, atol=1e-3)

    z = scaled_expected[training]
    eigenvalues, eigenvectors = np.linalg.eigh(np.cov(z, rowvar=False))
    order = np.argsort(eigenvalues)[::-1]
    ratios = eigenvalues[order] / eigenvalues.sum()
    expected_k = int(np.searchsorted(np.cumsum(ratios), 0.95) + 1)
    metadata = latest_metadata(pipeline["results"], "feature_model")
    assert metadata["pca_k"] == expected_k
    saved = PipelineModel.load(str(pipeline["out"] / "feature_model")).stages[1].explainedVariance.toArray()
    np.testing.assert_allclose(saved, ratios[:expected_k], atol=1e-5)
    assert metadata["explained_variance_total"] == pytest.approx(saved.sum(), abs=1e-6)
    assert 0.95 <= saved.sum() <= 1.0
    last_row = metadata["explained_variance_by_k"].splitlines()[-1]
    assert last_row == f"| {expected_k} | {saved[-1]:.4f} | {np.cumsum(saved)[-1]:.4f} |"

    projected = np.stack(table(pipeline["out"], "pca_features").column("pca_features").to_numpy(zero_copy_only=False))
    components = eigenvectors[:, order[:expected_k]]
    expected = scaled_expected @ components
    # Each component is defined up to its sign.
    signs = np.sign((projected * expected).sum(axis=0))
    np.testing.assert_allclose(projected, expected * signs, rtol=1e-2, atol=1e-2)


def test_metadata_and_checks_are_recorded(pipeline):
    results = pipeline["results"]
    for asset in ["raw_images", "mobilenet_features", "scaled_features", "pca_features"]:
        metadata = latest_metadata(results, asset)
        assert metadata["runtime_seconds"] > 0
        assert metadata["throughput_images_per_second"] > 0
        assert metadata["dagster/row_count"] == 16 * len(CLASSES)
        assert "dagster/column_schema" in metadata
    embedding = latest_metadata(results, "mobilenet_features")
    assert embedding["weights_source"] == f"file:{pipeline['weights']}"
    assert embedding["images_embedded"] == 64
    pca = latest_metadata(results, "pca_features")
    assert pca["scree_plot"].startswith("![PCA scree plot](data:image/png;base64,")
    assert pca["explained_variance_by_k"].splitlines()[-1].endswith(f"| {pca['explained_variance_total']:.4f} |")
    checks = [e for r in results for e in r.all_events if e.event_type_value == "ASSET_CHECK_EVALUATION"]
    evaluations = {e.event_specific_data.check_name: e.event_specific_data.passed for e in checks}
    assert evaluations == {
        "features_are_finite_1280d": True,
        "one_row_per_ok_image": True,
        "explained_variance_in_range": True,
        "pca_dimension_is_k": True,
    }
    versions = {
        e.materialization.asset_key.to_user_string(): e.materialization.tags.get("dagster/data_version")
        for r in results
        for e in r.get_asset_materialization_events()
    }
    assert all(versions.values()) and len(versions) == 6, versions


def test_rerun_gives_identical_content_and_reuses_embeddings(pipeline):
    before = {
        a: table(pipeline["out"], a) for a in ["raw_images", "mobilenet_features", "scaled_features", "pca_features"]
    }
    results = materialize_classes(
        pipeline["instance"], resources(pipeline["data"], pipeline["out"], pipeline["weights"]), CLASSES
    )
    assert latest_metadata(results, "mobilenet_features")["images_embedded"] == 0
    for asset, data in before.items():
        assert table(pipeline["out"], asset).equals(data), asset


def test_fixed_k_and_threshold_are_followed(pipeline, tmp_path):
    (tmp_path / "home").mkdir()
    with instance_for_test(temp_dir=str(tmp_path / "home")) as instance:
        register_classes(instance, str(pipeline["data"]))
        results = materialize_classes(
            instance, resources(pipeline["data"], tmp_path / "out", "random:3", pca_k=5), CLASSES
        )
    assert latest_metadata(results, "feature_model")["pca_k"] == 5
    assert {len(v) for v in table(tmp_path / "out", "pca_features").column("pca_features").to_pylist()} == {5}


def test_weights_are_loaded_once_per_run_and_follow_the_file(tmp_path, real_weights_path):
    import shutil

    path = tmp_path / "weights.weights.h5"
    shutil.copy(real_weights_path, path)
    resource = MobileNetWeights(weights=str(path))  # a run's instance, shared by its steps
    first = resource.load()
    assert resource.load() is first and resource.compiled() is resource.compiled()
    assert MobileNetWeights(weights=str(path), image_size=96).load().signature != first.signature
    second = MobileNetWeights(weights=f"file://{path}").load()
    assert second.fingerprint == first.fingerprint
    # The file replaced in place (new content, new mtime): loaded again, and the fingerprint follows it.
    arrays = [np.asarray(a) for a in first.arrays]
    keras_model = FeatureExtractor(first).model
    keras_model.set_weights([a * 0.5 if a.ndim == 4 else a for a in arrays])
    keras_model.save_weights(str(path))
    assert MobileNetWeights(weights=str(path)).load().fingerprint != first.fingerprint


def test_a_single_class_is_featurized_and_its_evaluation_skipped(tmp_path, spark):
    # One class is a valid dataset (the first photos of a new platform) but no classifier can be scored.
    data = copy_classes(tmp_path / "data", ["Banana"], per_split=2)
    (tmp_path / "home").mkdir()
    with instance_for_test(temp_dir=str(tmp_path / "home")) as instance:
        selected, _ = register_classes(instance, str(data))
        results = materialize_classes(instance, resources(data, tmp_path / "out", "random:0"), selected)
    assert all(result.success for result in results)
    assert latest_metadata(results, "pca_features")["dagster/row_count"] == 4
    assert latest_metadata(results, "feature_quality") == {}


def test_the_finite_check_finds_nan_and_infinities(spark):
    from fruits_platform.assets.catalogue_and_embed import has_non_finite

    nan, inf = float("nan"), float("inf")
    vectors = [[0.5, 1.0, 2.0], [0.5, nan, 2.0], [inf, 1.0, 2.0], [0.5, -inf, 2.0], [nan, -inf, inf], [-3.0, 0.0, 1e30]]
    frame = spark.createDataFrame([(i, v) for i, v in enumerate(vectors)], "i int, features array<float>")
    found = {row.i: row.bad for row in frame.select("i", has_non_finite("features").alias("bad")).collect()}
    assert found == {0: False, 1: True, 2: True, 3: True, 4: True, 5: False}


def test_classes_are_spread_whole_over_tasks_of_about_equal_size(spark):
    from collections import Counter

    from pyspark.sql import functions as F

    from fruits_platform.spark.featurize import class_bins, spread, task_count, whole_classes

    assert class_bins({"a": 5, "b": 3, "c": 3, "d": 1}, 2) == [["a", "d"], ["b", "c"]]
    sizes = {f"class {i}": 10 + (i * 37) % 90 for i in range(40)}  # 40 classes of 10 to 99 rows
    rows = [(f"{label}/{j}.jpg", label) for label, n in sizes.items() for j in range(n)]
    frame = spark.createDataFrame(rows, "uri string, label string")
    assert whole_classes(spark, sizes)
    spread_out = spread(spark, frame, sizes).withColumn("task", F.spark_partition_id())
    tasks = task_count(spark, len(rows))
    placed = spread_out.groupBy("label").agg(F.min("task").alias("task"), F.max("task").alias("last"), F.count("*"))
    placed = placed.collect()
    assert all(row.task == row.last for row in placed)  # each class in one task
    assert {row.label: row["count(1)"] for row in placed} == sizes
    loads = Counter()
    for row in placed:
        loads[row.task] += row["count(1)"]
    assert len(loads) == tasks and max(loads.values()) - min(loads.values()) <= max(sizes.values())
    # One class: its rows go round robin, every task gets some.
    one = {"class 3": sizes["class 3"]}
    assert not whole_classes(spark, one)
    single = spread(spark, frame.where(F.col("label") == "class 3"), one).select(F.spark_partition_id()).distinct()
    assert single.count() == task_count(spark, sizes["class 3"]) > 1


def test_each_class_of_a_multi_class_run_carries_its_own_figures(pipeline):
    from dagster import AssetKey

    instance = pipeline["instance"]
    versions = {}
    for asset in ["raw_images", "mobilenet_features", "scaled_features", "pca_features"]:
        records = instance.fetch_materializations(AssetKey(asset), limit=100).records
        by_class = {r.asset_materialization.partition: r.asset_materialization.metadata for r in records}
        assert set(by_class) == set(CLASSES), asset
        for label, metadata in by_class.items():
            assert metadata["dagster/row_count"].value == 16, (asset, label)  # the run wrote 64 rows
            versions.setdefault(asset, set()).add(metadata["class_data_version"].value)
            assert metadata["run_figures"].value.endswith(f"over {len(CLASSES)} classes"), (asset, label)
        if asset == "raw_images":
            assert {m["images_ok"].value for m in by_class.values()} == {16}
            assert {m["images_rejected"].value for m in by_class.values()} == {0}
        if asset == "mobilenet_features":
            assert {(m["images_embedded"].value, m["images_reused"].value) for m in by_class.values()} == {(16, 0)}
    assert all(len(found) == len(CLASSES) for found in versions.values())  # each class its own content
