"""`feature_quality` and the pure functions behind it, on real images, checked against independent NumPy
computations (brute-force 1-NN, metrics counted by hand); incremental featurization counted in metadata."""

import hashlib
import shutil
import subprocess
import sys

import numpy as np
import pyarrow.dataset as ds
import pytest
from dagster import instance_for_test, materialize
from pyspark.sql import functions as F

from fruits_platform.assets.feature_quality import EVALUATED_COLUMNS
from fruits_platform.ml.logistic import fit_softmax_regression
from fruits_platform.ml.moments import choose_k_by_accuracy
from fruits_platform.ml.quality import (
    LOGREG,
    NEAREST,
    logistic_regression_predict,
    score,
)
from fruits_platform.partitions import range_tags
from fruits_platform.resources.storage import FruitsStorage
from fruits_platform.runner import latest_metadata, materialize_classes, register_classes
from fruits_platform.spark.evaluation import evaluate_features, evaluate_model, evaluation_sample
from fruits_platform.spark.jvm import model_fingerprint
from fruits_platform.spark.reduction import fit_feature_model, scaler_and_axes, transform_features, validation_split
from fruits_platform_tests.helpers import FULL_SAMPLE, SAMPLE_CLASSES, SAMPLE_ROOT, copy_classes, resources


def run_graph(root, data, weights, **reduction):
    (root / "home").mkdir()
    with instance_for_test(temp_dir=str(root / "home")) as instance:
        selected, _ = register_classes(instance, str(data))
        results = materialize_classes(instance, resources(data, root / "out", weights, **reduction), selected)
    return {"out": root / "out", "data": data, "results": results, "classes": selected}


@pytest.fixture(scope="module")
def real(tmp_path_factory, spark, real_weights_path):
    """The whole graph, feature_quality included, on the bundled real sample with the real weights."""
    root = tmp_path_factory.mktemp("quality_real")
    return run_graph(root, copy_classes(root / "data", SAMPLE_CLASSES), real_weights_path)


# On the 6 bundled classes even random weights separate the fruits (measured: 95.8% vs 100%), so the
# real-vs-random contrast uses many classes: all 119 of the shared sample, 2 Training + 2 Test images each
# (measured beforehand with NumPy: 1-NN 82% real vs 66% random; chance 0.8%).
CONTRAST_PER_SPLIT = 2


def contrast_run(tmp_path_factory, weights):
    if not FULL_SAMPLE.is_dir():
        pytest.skip(f"the 119-class sample is not at {FULL_SAMPLE}")
    root = tmp_path_factory.mktemp("quality_contrast")
    classes = sorted(p.name for p in (FULL_SAMPLE / "Training").iterdir())
    data = copy_classes(root / "data", classes, source=FULL_SAMPLE, per_split=CONTRAST_PER_SPLIT)
    return run_graph(root, data, weights)


@pytest.fixture(scope="module")
def contrast_real(tmp_path_factory, spark, real_weights_path):
    return contrast_run(tmp_path_factory, real_weights_path)


@pytest.fixture(scope="module")
def contrast_random(tmp_path_factory, spark):
    return contrast_run(tmp_path_factory, "random:0")


def feature_frame(spark, run):
    storage = FruitsStorage(data_root=str(run["data"]), output_root=str(run["out"]))
    pca = storage.dataset(spark, "pca_features").read(run["classes"])
    scaled = storage.dataset(spark, "scaled_features").read(run["classes"]).select("uri", "scaled_features")
    return pca.join(scaled, "uri")


def numpy_features(run):
    pca = ds.dataset(f"{run['out']}/pca_features").to_table().sort_by("uri")
    scaled = ds.dataset(f"{run['out']}/scaled_features").to_table().sort_by("uri")
    assert pca.column("uri").equals(scaled.column("uri"))
    stack = lambda column: np.stack(column.to_numpy(zero_copy_only=False)).astype(np.float64)
    return {
        "label": np.array(pca.column("label").to_pylist()),
        "training": np.array(pca.column("split").to_pylist()) == "Training",
        "pca": stack(pca.column("pca_features")),
        "scaled": stack(scaled.column("scaled_features")),
    }


# ---------------------------------------------------------------- independent reference computations


def brute_force_1nn(train_x, train_y, test_x):
    predicted = []
    for row in test_x:
        distances = [np.sqrt(((row - other) ** 2).sum()) for other in train_x]
        predicted.append(train_y[int(np.argmin(distances))])
    return np.array(predicted)


def metrics_by_hand(true, predicted):
    labels = sorted(set(true) | set(predicted))
    f1 = []
    for label in labels:
        tp = sum(1 for t, p in zip(true, predicted) if t == label and p == label)
        fp = sum(1 for t, p in zip(true, predicted) if t != label and p == label)
        fn = sum(1 for t, p in zip(true, predicted) if t == label and p != label)
        f1.append(2 * tp / (2 * tp + fp + fn))
    per_class = {
        label: sum(1 for t, p in zip(true, predicted) if t == label and p == label) / list(true).count(label)
        for label in set(true)
    }
    return sum(1 for t, p in zip(true, predicted) if t == p) / len(true), sum(f1) / len(f1), per_class


def numpy_pca(training_scaled, k):
    eigenvalues, eigenvectors = np.linalg.eigh(np.cov(training_scaled, rowvar=False))
    return eigenvectors[:, np.argsort(eigenvalues)[::-1][:k]]


# ------------------------------------------------------------------------------------------------ tests


def test_scores_from_a_hand_made_confusion():
    # true 0 0 1 1 2 / predicted 0 1 1 1 0: F1 = 2/4, 4/5, 0 -> macro 13/30; per class 1/2, 1, 0
    scores = score(["a", "b", "c"], [0, 0, 1, 1, 2], [0, 1, 1, 1, 0])
    assert scores.accuracy == pytest.approx(3 / 5)
    assert scores.macro_f1 == pytest.approx(13 / 30)
    assert scores.per_class_accuracy == {"a": 0.5, "b": 1.0, "c": 0.0}
    assert scores.confused_pairs() == [("a", "b", 1, 0), ("a", "c", 0, 1)]


def test_evaluation_refuses_what_no_classifier_can_score(spark):
    schema = "uri string, label string, split string, scaled_features array<float>, pca_features array<float>"
    one_class = [(f"u{i}", "A", "Training" if i < 3 else "Test", [float(i), 1.0], [float(i)]) for i in range(4)]
    with pytest.raises(ValueError, match="Training images of at least 2 classes"):
        evaluate_features(spark.createDataFrame(one_class, schema))
    no_test = [row for row in one_class if row[2] == "Training"] + [("v", "B", "Training", [0.0, 2.0], [2.0])]
    with pytest.raises(ValueError, match="need Training and Test images, got 4 and 0"):
        evaluate_features(spark.createDataFrame(no_test, schema))


def test_evaluation_of_exactly_two_classes(real, spark):
    # Two classes make a binary model, which Spark 4.0 could not use in a job once a write had observed metrics.
    two = SAMPLE_CLASSES[:2]
    report = evaluate_features(feature_frame(spark, real).where(F.col("label").isin(two)), ks=(3,))
    assert report.classes == two and report.test_images == 8
    assert report.accuracy(LOGREG, "pca") >= 0.9 and report.accuracy(NEAREST, "pca") >= 0.9


def test_test_images_of_a_class_without_training_images_are_left_out(real, spark):
    frame = feature_frame(spark, real)
    untrained = SAMPLE_CLASSES[0]
    report = evaluate_features(frame.where((F.col("label") != untrained) | (F.col("split") == "Test")), ks=(3,))
    assert report.untrained_classes == [untrained]
    assert report.test_images == 4 * (len(SAMPLE_CLASSES) - 1)
    assert untrained not in report.scores[(NEAREST, "pca")].per_class_accuracy


def test_the_evaluation_on_the_driver_is_that_of_the_models_transform(real, spark):
    """feature_quality scales and projects its sample with the model's arrays in NumPy (`evaluate_model`): the
    vectors and the scores of the rows that the model's transform (pyspark.ml, in the JVM) gives."""
    storage = FruitsStorage(data_root=str(real["data"]), output_root=str(real["out"]))
    features = storage.dataset(spark, "mobilenet_features").read(real["classes"]).select(*EVALUATED_COLUMNS)
    model, summary = fit_feature_model(features.where(F.col("split") == "Training"))
    transformed = transform_features(model, features).orderBy("uri").collect()
    fitted = scaler_and_axes(model)
    scaled = fitted.scale(np.array([row["features"] for row in transformed]))
    assert fitted.axes.shape == (1280, summary.k)
    np.testing.assert_allclose(scaled, [row["scaled_features"] for row in transformed], rtol=1e-5, atol=1e-5)
    projected = fitted.project(scaled, summary.k)
    np.testing.assert_allclose(projected, [row["pca_features"] for row in transformed], rtol=1e-5, atol=1e-4)
    by_jvm = evaluate_features(transform_features(model, features), ks=(3, 8))
    on_driver = evaluate_model(features, model, ks=(3, 8), max_images=10_000)
    assert on_driver.test_images == by_jvm.test_images and on_driver.pca_k == by_jvm.pca_k == summary.k
    for key, scores in by_jvm.scores.items():
        assert on_driver.scores[key].accuracy == pytest.approx(scores.accuracy, abs=1.5 / by_jvm.test_images), key
    assert on_driver.curve == by_jvm.curve


def test_evaluation_sample_is_deterministic_and_stratified(spark):
    rows = [(f"img-{i}", f"class {i % 4}", "Test" if i % 5 == 0 else "Training") for i in range(4000)]
    frame = spark.createDataFrame(rows, "uri string, label string, split string")
    sample, total, fraction = evaluation_sample(frame, 1000)
    assert (total, fraction) == (4000, 0.25)
    picked = sample.collect()
    assert sorted(r.uri for r in picked) == sorted(r.uri for r in evaluation_sample(frame, 1000)[0].collect())
    assert 850 <= len(picked) <= 1150
    for label in {r[1] for r in rows}:  # every class and split keeps about its share
        for split, share in (("Training", 0.8), ("Test", 0.2)):
            kept = sum(1 for r in picked if r.label == label and r.split == split)
            assert abs(kept - 250 * share) <= 0.35 * 250 * share, (label, split, kept)
    unsampled, total, fraction = evaluation_sample(frame, 0)
    assert unsampled is frame and (total, fraction) == (None, 1.0)
    assert evaluation_sample(frame, 5000)[1:] == (4000, 1.0)


def bounded_memory(mode: str, rows: int, number: int, driver_memory: str) -> list[str]:
    """What `fruits_platform_tests.bounded_memory` prints, run in a JVM of its own with that driver memory."""
    done = subprocess.run(
        [sys.executable, "-m", "fruits_platform_tests.bounded_memory", mode, str(rows), str(number), driver_memory],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout.split()


def test_evaluation_memory_is_bounded_by_its_sample():
    # The full-size failure (every vector collected to a 1g driver) at a size CI affords: 40,000 rows of
    # 1280 + 16 floats exhaust a 512m driver without the sample (OutOfMemoryError); with it, ~2,000 are scored.
    offered, evaluated, fraction = bounded_memory("quality", 40000, 2000, "512m")[-3:]
    assert int(offered) == 40000 and float(fraction) == 0.05 and 1700 <= int(evaluated) <= 2300


def test_model_fit_memory_does_not_grow_with_the_training_rows():
    # The full-size UI backfill's failure (feature_model cached 57,950 Training vectors in a 1g driver:
    # OutOfMemoryError) at a size CI affords: 40,000 rows of 1280 floats exhaust a 512m driver if cached.
    assert bounded_memory("fit", 40000, 8, "512m")[-2:] == ["40000", "8"]


@pytest.mark.parametrize("run_name", ["real", "contrast_random"])  # 100% accurate / many errors
def test_evaluation_matches_independent_computation(run_name, request, spark):
    run = request.getfixturevalue(run_name)
    x = numpy_features(run)
    train, test = x["training"], ~x["training"]
    report = evaluate_features(feature_frame(spark, run), ks=(3, 8))
    assert report.classes == sorted(set(x["label"]))
    assert (report.training_images, report.test_images) == (train.sum(), test.sum())
    references = {}
    for features in ("pca", "scaled"):
        predicted = brute_force_1nn(x[features][train], x["label"][train], x[features][test])
        accuracy, macro_f1, per_class = metrics_by_hand(list(x["label"][test]), list(predicted))
        scores = report.scores[(NEAREST, features)]
        assert scores.accuracy == pytest.approx(accuracy)
        assert scores.macro_f1 == pytest.approx(macro_f1)
        assert scores.per_class_accuracy == pytest.approx(per_class)
        references[features] = accuracy
    # The curve: 1-NN on the first k components of a PCA fitted (by NumPy here) on the Training rows.
    for k in (3, 8):
        components = numpy_pca(x["scaled"][train], k)
        projected = x["scaled"] @ components
        predicted = brute_force_1nn(projected[train], x["label"][train], projected[test])
        assert report.curve[k][NEAREST] == pytest.approx(np.mean(predicted == x["label"][test]))
    assert report.pca_k == x["pca"].shape[1] and report.pca_k in report.curve
    # Logistic regression: fitted in NumPy on pyspark.ml's objective; pyspark.ml's own fit is the reference.
    frame = feature_frame(spark, run)
    from pyspark.ml.classification import LogisticRegression
    from pyspark.ml.functions import array_to_vector
    from pyspark.sql import functions as F

    index = {c: float(i) for i, c in enumerate(report.classes)}
    frame = frame.withColumn(
        "label_index", F.create_map(*[F.lit(v) for kv in index.items() for v in kv])[F.col("label")]
    )
    frame = frame.withColumn("v", array_to_vector("pca_features"))
    model = LogisticRegression(
        featuresCol="v", labelCol="label_index", family="multinomial", regParam=0.01, standardization=False, tol=1e-6
    ).fit(frame.where("split = 'Training'"))
    spark_rows = model.transform(frame.where("split = 'Test'")).orderBy("uri").collect()
    test_x = np.array([row["pca_features"] for row in spark_rows])
    train_y = np.array([index[label] for label in x["label"][train]], dtype=np.int64)
    ours = fit_softmax_regression(x["pca"][train], train_y, len(report.classes), reg_param=0.01)
    spark_objective = softmax_objective(
        x["pca"][train], train_y, model.coefficientMatrix.toArray(), model.interceptVector.toArray(), 0.01
    )
    # Spark's objective, minimised at least as well as Spark does (its L-BFGS stops at a relative tolerance).
    assert softmax_objective(x["pca"][train], train_y, ours.coefficients, ours.intercepts, 0.01) <= (
        spark_objective * (1 + 1e-4)
    )
    predicted = logistic_regression_predict(x["pca"][train], train_y, len(report.classes), test_x)
    true = [int(row["label_index"]) for row in spark_rows]
    accuracy, macro_f1, _ = metrics_by_hand(true, list(predicted))
    assert report.scores[(LOGREG, "pca")].accuracy == pytest.approx(accuracy)
    assert report.scores[(LOGREG, "pca")].macro_f1 == pytest.approx(macro_f1)
    if run_name == "real":  # on random weights' tiny features Spark's fit stops at its start (class 0 everywhere)
        spark_predicted = np.array([int(row["prediction"]) for row in spark_rows])
        assert np.mean(predicted == spark_predicted) >= 0.98, np.mean(predicted == spark_predicted)


def softmax_objective(x, y, coefficients, intercepts, reg_param):
    """pyspark.ml's multinomial objective, written out: mean log-loss + reg_param / 2 * |W|^2 (float64)."""
    margins = x @ coefficients.T + intercepts
    top = margins.max(axis=1, keepdims=True)
    log_sums = np.log(np.exp(margins - top).sum(axis=1)) + top[:, 0]
    return float(np.mean(log_sums - margins[np.arange(len(y)), y]) + reg_param / 2 * (coefficients**2).sum())


def test_real_weights_far_above_chance_on_the_bundled_sample(real, real_weights_path):
    good = latest_metadata(real["results"], "feature_quality")
    assert good["classes"] == len(SAMPLE_CLASSES) and good["chance_accuracy"] == pytest.approx(1 / 6, abs=1e-3)
    for classifier in ("logreg", "1nn"):
        for features in ("pca", "scaled"):
            assert good[f"accuracy_{classifier}_{features}"] >= 0.9  # chance: 0.167
            assert good[f"macro_f1_{classifier}_{features}"] >= 0.9
    # Which weights produced the features is recorded.
    assert good["weights_source"] == f"file:{real_weights_path}"
    assert (
        f"/{latest_metadata(real['results'], 'mobilenet_features')['weights_fingerprint']}/" in good["model_signature"]
    )
    # Metadata the UI shows.
    assert good["accuracy_vs_k_plot"].startswith("![Accuracy vs k](data:image/png;base64,")
    assert good["per_class_accuracy"].count("\n") == len(SAMPLE_CLASSES) + 1
    assert set(good["accuracy_vs_k"]) >= {"16", "32", str(good["pca_k"])}
    assert good["test_images"] == 4 * len(SAMPLE_CLASSES) and good["training_images"] == 12 * len(SAMPLE_CLASSES)


def test_random_weights_far_below_real_weights(contrast_real, contrast_random):
    good = latest_metadata(contrast_real["results"], "feature_quality")
    bad = latest_metadata(contrast_random["results"], "feature_quality")
    assert good["classes"] == bad["classes"] == 119 and good["test_images"] == bad["test_images"] == 238
    assert bad["weights_source"] == "random:0" and good["model_signature"] != bad["model_signature"]
    for classifier in ("logreg", "1nn"):
        for features in ("pca", "scaled"):
            accuracy = f"accuracy_{classifier}_{features}"
            assert good[accuracy] >= 0.7  # chance: 1/119 = 0.008
            assert bad[accuracy] <= good[accuracy] - 0.08, (accuracy, good[accuracy], bad[accuracy])


def test_k_by_accuracy_uses_held_out_training_only(spark, real):
    features = ds.dataset(f"{real['out']}/mobilenet_features").to_table()
    frame = spark.createDataFrame(features.select(["uri", "label", "split", "sha256", "features"]).to_pandas())
    training = frame.where("split = 'Training'")
    fit, validation = validation_split(training)
    counts = {r["label"]: r["count"] for r in validation.groupBy("label").count().collect()}
    assert counts == {label: 3 for label in SAMPLE_CLASSES}  # every 4th of 12 per class
    assert fit.join(validation, "uri").count() == 0 and fit.count() + validation.count() == training.count()
    assert validation.where("split = 'Test'").count() == 0
    # choose_k_by_accuracy returns the smallest k reaching the unreduced accuracy minus the tolerance.
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(3, 20)) * 4
    fit_y, validation_y = np.repeat([0, 1, 2], 10), np.repeat([0, 1, 2], 4)
    fit_x = centres[fit_y] + rng.normal(size=(30, 20))
    validation_x = centres[validation_y] + rng.normal(size=(12, 20))
    components = numpy_pca(fit_x - fit_x.mean(axis=0), 20)
    k, tried, full = choose_k_by_accuracy(fit_x, fit_y, validation_x, validation_y, components, tolerance=0.0)
    assert full == pytest.approx(np.mean(brute_force_1nn(fit_x, fit_y, validation_x) == validation_y))
    assert tried[k] >= full and all(tried[j] < full for j in tried if j < k)


def test_the_model_fitted_from_moments_is_what_pyspark_ml_fits(spark, tmp_path):
    """`fit_feature_model` sums moments in one pass and builds the pyspark.ml models from arrays through their
    JVM constructors (`spark/jvm.py`): the same scaler, the same axes with the same signs, the same explained
    variance, the same transform, saved and loaded as a PipelineModel, on this Spark."""
    from pyspark.ml import PipelineModel
    from pyspark.ml.feature import PCA, StandardScaler
    from pyspark.ml.functions import array_to_vector

    rng = np.random.default_rng(1)
    rows = rng.normal(size=(60, 12)) @ rng.normal(size=(12, 12)) + rng.uniform(0, 5, size=12)
    rows[:, 4] = 2.0  # a constant feature scales to 0
    frame = spark.createDataFrame([(row.tolist(),) for row in rows], "features array<float>").repartition(3)
    ours, summary = fit_feature_model(frame, fixed_k=5)
    vectors = frame.select(array_to_vector("features").alias("features_vector"))
    scaler = StandardScaler(inputCol="features_vector", outputCol="scaled_vector", withMean=True, withStd=True)
    scaler = scaler.fit(vectors)
    pca = PCA(k=5, inputCol="scaled_vector", outputCol="pca_vector").fit(scaler.transform(vectors))
    np.testing.assert_allclose(ours.stages[0].mean.toArray(), scaler.mean.toArray(), rtol=1e-12)
    np.testing.assert_allclose(ours.stages[0].std.toArray(), scaler.std.toArray(), rtol=1e-9)
    np.testing.assert_allclose(ours.stages[1].pc.toArray(), pca.pc.toArray(), atol=1e-9)  # signs included
    np.testing.assert_allclose(summary.explained_variance, pca.explainedVariance.toArray(), atol=1e-12)
    assert summary.k == ours.stages[1].getK() == 5 and summary.training_rows == 60
    expected = transform_features(PipelineModel(stages=[scaler, pca]), frame).orderBy("features").toPandas()
    ours.save(str(tmp_path / "model"))
    for model in (ours, PipelineModel.load(str(tmp_path / "model"))):
        got = transform_features(model, frame).orderBy("features").toPandas()
        for column in ("scaled_features", "pca_features"):
            np.testing.assert_allclose(np.stack(got[column]), np.stack(expected[column]), atol=1e-5)


def test_feature_model_with_k_by_accuracy(real, tmp_path):
    (tmp_path / "home").mkdir()
    with instance_for_test(temp_dir=str(tmp_path / "home")) as instance:
        classes, _ = register_classes(instance, str(real["data"]))
        shutil.copytree(real["out"] / "raw_images", tmp_path / "out" / "raw_images")
        shutil.copytree(real["out"] / "mobilenet_features", tmp_path / "out" / "mobilenet_features")
        res = resources(real["data"], tmp_path / "out", "random:0", k_rule="accuracy", accuracy_tolerance=0.0)
        from fruits_platform.definitions import defs

        result = materialize(
            defs.assets, selection=["feature_model"], instance=instance, resources=res, tags=range_tags(classes)
        )
    metadata = latest_metadata([result], "feature_model")
    tried = {int(k): v for k, v in metadata["validation_accuracy_by_k"].items()}
    assert metadata["k_rule"].startswith("accuracy") and metadata["validation_images"] == 3 * len(SAMPLE_CLASSES)
    assert metadata["pca_k"] == min(k for k, v in tried.items() if v >= metadata["validation_accuracy_unreduced"])


def test_incremental_featurization_counts_model_work(tmp_path, spark):
    from fruits_platform.definitions import defs

    source = FULL_SAMPLE if FULL_SAMPLE.is_dir() else SAMPLE_ROOT
    classes = ["Kiwi", "Pepino"] if FULL_SAMPLE.is_dir() else ["Avocado", "Lemon"]
    data = copy_classes(tmp_path / "data", classes, source=source, per_split=2)
    assets = [defs.get_assets_def(name) for name in ["raw_images", "mobilenet_features"]]
    res = resources(data, tmp_path / "out", "random:0")
    (tmp_path / "home").mkdir()
    with instance_for_test(temp_dir=str(tmp_path / "home")) as instance:
        register_classes(instance, str(data))

        def embedded(keys):
            result = materialize(assets, instance=instance, resources=res, tags=range_tags(keys))
            return latest_metadata([result], "mobilenet_features")

        assert embedded(classes)["images_embedded"] == 8
        unchanged = embedded(classes[:1])
        assert (unchanged["images_embedded"], unchanged["images_reused"]) == (0, 4)
        new = sorted((source / "Training" / classes[1]).iterdir())[2:5]  # k = 3 images not there yet
        for file in new:
            shutil.copy(file, data / "Training" / classes[1] / file.name)
        grown = embedded(classes[1:])
        assert (grown["images_embedded"], grown["images_reused"]) == (3, 4)


def test_model_fingerprint_hashes_mean_std_and_components_row_major(spark):
    from pyspark.ml import Pipeline
    from pyspark.ml.feature import PCA, StandardScaler
    from pyspark.ml.linalg import Vectors

    rng = np.random.default_rng(2)
    frame = spark.createDataFrame([(Vectors.dense(row),) for row in rng.normal(size=(30, 6))], ["x"])
    stages = [StandardScaler(inputCol="x", outputCol="s", withMean=True), PCA(k=3, inputCol="s", outputCol="p")]
    model = Pipeline(stages=stages).fit(frame)
    scaler, pca = model.stages
    digest = hashlib.sha256()
    for array in (scaler.mean.toArray(), scaler.std.toArray(), pca.pc.toArray()):
        digest.update(np.ascontiguousarray(array, dtype="<f8").tobytes())
    assert model_fingerprint(model) == digest.hexdigest()[:24]
    # Another k, another model: another fingerprint.
    other = Pipeline(stages=[stages[0], PCA(k=2, inputCol="s", outputCol="p")]).fit(frame)
    assert model_fingerprint(other) != model_fingerprint(model)
