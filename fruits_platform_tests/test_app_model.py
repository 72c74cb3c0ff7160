"""`app_model` and `fruits-platform identify` on the bundled real sample with the real weights: the exported
LiteRT file reproduces `pca_features` and the trained classifier, and answers photos without Spark or TensorFlow."""

import io
import json
import os
import subprocess
import sys

import numpy as np
import pyarrow.dataset as ds
import pytest
from dagster import AssetKey, instance_for_test
from PIL import Image

import fruits_platform.assets.app_model as app_model_asset
from fruits_platform.ml.app_model import (
    CANDIDATES,
    load_photos,
    train_classifier,
    unsupported_requantization,
)
from fruits_platform.ml.identify import MANIFEST, AppModel
from fruits_platform.ml.images import decode_photo, decode_rgb
from fruits_platform.ml.isolated import NativeCrash, run_isolated
from fruits_platform.runner import MaterializationError, materialize_classes, register_classes
from fruits_platform.spark.reduction import HELD_OUT, with_held_out
from fruits_platform_tests.helpers import SAMPLE_CLASSES, copy_classes, resources

CLASSES = SAMPLE_CLASSES[:4]


@pytest.fixture(scope="module")
def built(tmp_path_factory, spark, real_weights_path):
    root = tmp_path_factory.mktemp("app_model")
    data = copy_classes(root / "data", CLASSES)
    (root / "home").mkdir()
    with instance_for_test(temp_dir=str(root / "home")) as instance:
        selected, _ = register_classes(instance, str(data))
        run = resources(data, root / "out", real_weights_path)
        materialize_classes(instance, run, selected, evaluate=False, app_model=True)
        record = instance.get_latest_materialization_event(AssetKey("app_model"))
        materialization = record.asset_materialization
        yield {
            "out": root / "out",
            "metadata": materialization.metadata,
            "partition": materialization.partition,
            "rebuild": lambda: materialize_classes(instance, run, selected, evaluate=False, app_model=True),
        }


def pca_rows(out, split):
    table = ds.dataset(f"{out}/pca_features").to_table().to_pandas()
    return table[table["split"] == split].sort_values("uri").reset_index(drop=True)


def test_float_model_reproduces_pca_features_and_the_classifier(built, spark):
    out = built["out"]
    model = AppModel.load(str(out / "app_model"))
    test = pca_rows(out, "Test")
    photos = load_photos(test["uri"].tolist(), model.image_size)
    predictions = [model.predict(photo) for photo in photos]
    expected = np.stack(test["pca_features"].to_numpy())
    features = np.stack([p.features for p in predictions])
    assert features.shape == expected.shape
    np.testing.assert_allclose(features, expected, atol=1e-3 * np.abs(expected).max())
    # The same classifier, fitted again on the same Training rows, predicts what the file predicts.
    training = spark.createDataFrame(pca_rows(out, "Training")[["uri", "label", "split", "sha256", "pca_features"]])
    fit = with_held_out(training).orderBy("label", "sha256", "uri").toPandas()
    features = np.stack(fit["pca_features"].to_numpy())
    classifier = train_classifier(sorted(CLASSES), fit["label"], features, fit[HELD_OUT])
    assert classifier.classes == model.classes == sorted(CLASSES)
    top1 = [classifier.classes[i] for i in classifier.probabilities(expected).argmax(axis=1)]
    assert [p.top(model.classes, 1)[0][0] for p in predictions] == top1
    assert np.mean(np.array(top1) == test["label"].to_numpy()) > 0.9  # real weights on real photos


def test_the_classifier_is_chosen_on_held_out_training_images():
    # Two classes on two rings around the origin: no linear boundary separates them, one hidden layer does.
    rng = np.random.default_rng(0)
    angles, labels = rng.uniform(0, 2 * np.pi, 400), np.repeat(["inner", "outer"], 200)
    radii = np.where(labels == "inner", 1.0, 3.0) + rng.normal(0, 0.1, 400)
    x = np.stack([radii * np.cos(angles), radii * np.sin(angles)], axis=1)
    held_out = np.arange(400) % 4 == 0
    classifier = train_classifier(["inner", "outer"], labels, x, held_out)
    assert set(classifier.validation) == set(CANDIDATES) and classifier.training_images == 400
    softmax, mlp = (classifier.validation[kind] for kind in CANDIDATES)
    assert classifier.kind == "MLP 1024" and mlp["log_loss"] < softmax["log_loss"]
    assert mlp["accuracy"] > 0.95 and softmax["accuracy"] < 0.75
    assert np.mean(classifier.probabilities(x).argmax(axis=1) == (labels == "outer")) > 0.95
    # Without held-out rows there is nothing to choose on: the simplest candidate.
    assert train_classifier(["inner", "outer"], labels, x, np.zeros(400, bool)).kind == "softmax regression"


def test_metadata_compares_the_variants(built):
    metadata = {key: getattr(value, "value", value) for key, value in built["metadata"].items()}
    manifest = json.loads((built["out"] / "app_model" / MANIFEST).read_text())
    for variant in ("float32", "int8"):
        path = built["out"] / "app_model" / manifest["variants"][variant]["file"]
        assert path.stat().st_size == metadata[f"{variant}_size_bytes"]
        assert metadata[f"{variant}_latency_ms"] > 0
        assert metadata[f"{variant}_top5_accuracy"] >= metadata[f"{variant}_top1_accuracy"] > 0.5
    assert metadata["float32_max_feature_difference"] < 1e-2
    scale = float(np.abs(np.stack(pca_rows(built["out"], "Test")["pca_features"].to_numpy())).max())
    for variant in ("float32", "int8"):  # the difference against what it compares with
        said = metadata[f"{variant}_max_feature_difference_share"]
        assert said.endswith(f"({scale:.4g}); top-1 accuracy is what the app sees"), said
        share = float(said.split("%")[0]) / 100
        assert share == pytest.approx(metadata[f"{variant}_max_feature_difference"] / scale, abs=1e-4), variant
    assert metadata["int8_size_bytes"] * 3 < metadata["float32_size_bytes"]
    assert manifest["weights"]["fingerprint"] in manifest["name"]
    assert manifest["feature_model_fingerprint"][:16] in manifest["name"]
    test = pca_rows(built["out"], "Test")
    assert metadata["test_images"] == len(test)
    assert metadata["class_test_images"] == (test["label"] == built["partition"]).sum()  # each class its own
    assert 0 <= metadata["class_top1_accuracy_float32"] <= 1


def test_identify_answers_photos_and_refuses_a_broken_one_without_spark_or_tensorflow(built, tmp_path):
    test = pca_rows(built["out"], "Test")
    photo = tmp_path / "phone photo.jpg"  # larger than the model's input, and stored sideways with an EXIF turn
    with Image.open(test["uri"][0]) as image:
        upright = image.convert("RGB").resize((300, 300))
    exif = Image.Exif()
    exif[0x0112] = 6  # the viewer turns it 90 degrees clockwise
    upright.rotate(90, expand=True).save(photo, exif=exif)
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    script = (
        "import sys; from fruits_platform.cli import main; code = main(sys.argv[1:]); "
        "assert not {'pyspark', 'tensorflow', 'keras'} & set(sys.modules), 'imported Spark or TensorFlow'; "
        "sys.exit(code)"
    )
    args = ["identify", str(photo), str(broken), "--model", str(built["out"] / "app_model")]
    done = subprocess.run(
        [sys.executable, "-c", script, *args], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 1, done.stderr  # one photo could not be answered
    answered, refused = done.stdout.strip().splitlines()
    assert answered.startswith(f"{photo}: {test['label'][0]} ")
    assert len(answered.split(", ")) == 3
    assert refused.startswith(f"{broken}: not identified: corrupt")
    missing = tmp_path / "no model here"
    done = subprocess.run(
        [sys.executable, "-m", "fruits_platform.cli", "identify", str(photo), "--model", str(missing)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr.strip().splitlines()[-1] == (
        f"error: no app model at {missing}: materialize app_model, or pass --model with its folder or .tflite file"
    )


def test_exif_orientation_is_applied():
    upright = np.zeros((40, 60, 3), dtype=np.uint8)
    upright[:, :30] = 255  # white left half
    buffer = io.BytesIO()
    exif = Image.Exif()
    exif[0x0112] = 8  # the viewer turns it 90 degrees counter-clockwise
    Image.fromarray(upright).rotate(-90, expand=True).save(buffer, format="PNG", exif=exif)
    expected = decode_rgb(_png(upright), 32)
    assert np.abs(decode_photo(buffer.getvalue(), 32).astype(int) - expected).max() <= 1


def _png(array) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def test_rebuilding_from_the_same_inputs_gives_the_same_predictions(built):
    folder = built["out"] / "app_model"
    photos = load_photos(pca_rows(built["out"], "Test")["uri"].tolist(), 224)

    def predictions(variant):
        model = AppModel.load(str(folder), variant)
        return [model.predict(photo) for photo in photos]

    before = {variant: predictions(variant) for variant in ("float32", "int8")}
    name = json.loads((folder / MANIFEST).read_text())["name"]
    built["rebuild"]()
    assert json.loads((folder / MANIFEST).read_text())["name"] == name
    for variant, old in before.items():
        for previous, new in zip(old, predictions(variant), strict=True):
            np.testing.assert_allclose(new.probabilities, previous.probabilities, atol=1e-5)
            np.testing.assert_allclose(new.features, previous.features, atol=1e-4)


def test_the_real_8_bit_variant_passes_the_requantization_check(built):
    folder = built["out"] / "app_model"
    manifest = json.loads((folder / MANIFEST).read_text())
    assert unsupported_requantization((folder / manifest["variants"]["int8"]["file"]).read_bytes()) is None
    assert "int8_not_built" not in built["metadata"]


def test_a_native_crash_in_the_child_process_is_one_line_and_this_process_goes_on():
    with pytest.raises(NativeCrash, match=r"^the test's call crashed \(SIGABRT: "):
        run_isolated("the test's call", os.abort)
    with pytest.raises(ValueError, match="invalid literal"):
        run_isolated("int", int, "not a number")
    assert run_isolated("sum", sum, [1, 2]) == 3


def abort_conversion(*args):
    """What a crash of the native converter does to its process."""
    os.abort()


@pytest.fixture(scope="module")
def random_weights_run(tmp_path_factory, spark):
    root = tmp_path_factory.mktemp("app_model_random")
    data = copy_classes(root / "data", CLASSES[:2], per_split=4)
    (root / "home").mkdir()
    with instance_for_test(temp_dir=str(root / "home")) as instance:
        selected, _ = register_classes(instance, str(data))
        run = resources(data, root / "out", "random:0")
        materialize_classes(instance, run, selected, evaluate=False, app_model=True)
        yield {
            "instance": instance,
            "out": root / "out",
            "materialize": lambda: materialize_classes(instance, run, selected, evaluate=False, app_model=True),
        }


def test_random_weights_build_the_float_model_and_say_why_no_8_bit_one(random_weights_run):
    """Random weights give nearly constant embeddings: the scaler's 1/std folded into the 8-bit model needs a
    requantization LiteRT cannot do (it used to corrupt the heap and abort the process)."""
    folder = random_weights_run["out"] / "app_model"
    manifest = json.loads((folder / MANIFEST).read_text())
    assert set(manifest["variants"]) == {"float32"}
    metadata = random_weights_run["instance"].get_latest_materialization_event(AssetKey("app_model"))
    reason = metadata.asset_materialization.metadata["int8_not_built"].value
    assert "outside [2^-32, 256)" in reason and "pca_features" in reason, reason
    assert AppModel.load(str(folder)).predict(np.zeros((224, 224, 3), np.uint8)).probabilities.shape == (2,)


def test_a_crashing_conversion_fails_the_step_in_one_line_and_keeps_the_previous_model(random_weights_run, monkeypatch):
    instance, folder = random_weights_run["instance"], random_weights_run["out"] / "app_model"
    before = (folder / MANIFEST).read_bytes()
    monkeypatch.setattr(app_model_asset, "build_variants", abort_conversion)
    with pytest.raises(MaterializationError, match=r"the LiteRT conversion crashed \(SIGABRT"):
        random_weights_run["materialize"]()
    assert (folder / MANIFEST).read_bytes() == before
    [failed] = [run for run in instance.get_runs(limit=1)]
    assert failed.is_failure
    # The run's other assets were materialized before app_model failed.
    assert instance.get_latest_materialization_event(AssetKey("pca_features")).run_id == failed.run_id
