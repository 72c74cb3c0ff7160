"""Decode path unit tests: no Spark, no Dagster."""

import io

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from fruits_platform.ml.images import decode_rgb, inspect_image
from fruits_platform_tests.corpus import bad_and_odd_files, bomb_jpeg, encode, valid_jpeg

CASES = bad_and_odd_files()


@pytest.mark.parametrize("name", sorted(CASES))
def test_each_case_gets_its_exact_status_and_reason(name):
    data, status, reason = CASES[name]
    record = inspect_image(f"/data/Training/Kiwi/{name}", data)
    assert record.status == status
    assert record.size_bytes == len(data)
    if reason is None:
        assert record.reason is None
        assert decode_rgb(data, 224).shape == (224, 224, 3)
    else:
        assert record.reason.startswith(reason), record.reason


def test_ok_record_describes_the_image():
    record = inspect_image("x/a.JPG", valid_jpeg((120, 80)))
    assert (record.status, record.format, record.width, record.height, record.mode) == ("ok", "JPEG", 120, 80, "RGB")
    assert len(record.sha256) == 64


def test_bomb_is_rejected_from_the_header_without_decoding():
    record = inspect_image("bomb.jpg", CASES["bomb.jpg"][0])
    assert record.reason.startswith("too_large") and "pixels" in record.reason
    small_bomb = inspect_image("bomb.jpg", bomb_jpeg(6000, 6000))  # under Pillow's guard, over ours
    assert (small_bomb.width, small_bomb.height) == (6000, 6000)
    assert small_bomb.reason.startswith("too_large: declared 6000x6000")


def test_alpha_is_composited_on_white():
    transparent = Image.new("RGBA", (4, 4), (255, 0, 0, 0))
    assert (decode_rgb(encode(transparent, "PNG"), 4) == 255).all()


def test_resize_is_bilinear_to_the_model_size():
    data = valid_jpeg((100, 100))
    with Image.open(io.BytesIO(data)) as image:
        expected = np.asarray(image.convert("RGB").resize((224, 224), Image.Resampling.BILINEAR))
    np.testing.assert_array_equal(decode_rgb(data, 224), expected)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=4096), st.sampled_from(["a.jpg", "b.png", "c.webp", "d.txt"]))
def test_random_bytes_never_raise(data, name):
    record = inspect_image(name, data)
    assert record.status in {"ok", "rejected"}
    assert (record.reason is None) == (record.status == "ok")
    if record.status == "ok":  # whatever is accepted must decode
        assert decode_rgb(data, 32).shape == (32, 32, 3)


@settings(max_examples=60, deadline=None)
@given(
    width=st.integers(1, 64),
    height=st.integers(1, 64),
    mode=st.sampled_from(["RGB", "L", "RGBA", "P", "CMYK"]),
    fmt=st.sampled_from(["JPEG", "PNG", "WEBP"]),
    seed=st.integers(0, 2**16),
)
def test_random_valid_images_decode_like_pillow(width, height, mode, fmt, seed):
    if fmt == "JPEG" and mode in {"RGBA", "P"}:
        mode = "RGB"
    if fmt in {"WEBP", "PNG"} and mode == "CMYK":
        mode = "RGB"
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, len(mode) if mode != "P" else 1), np.uint8)
    image = Image.fromarray(pixels.squeeze(-1) if mode in {"L", "P"} else pixels, mode)
    data = encode(image, fmt)
    extension = {"JPEG": "jpg", "PNG": "png", "WEBP": "webp"}[fmt]
    record = inspect_image(f"img.{extension}", data)
    assert record.status == "ok", record.reason
    with Image.open(io.BytesIO(data)) as reference:
        if reference.mode in {"RGBA", "P"} and (reference.mode == "RGBA" or "transparency" in reference.info):
            rgba = reference.convert("RGBA")
            expected_image = Image.alpha_composite(Image.new("RGBA", rgba.size, "white"), rgba).convert("RGB")
        else:
            expected_image = reference.convert("RGB")
        expected = np.asarray(expected_image.resize((48, 48), Image.Resampling.BILINEAR))
    np.testing.assert_array_equal(decode_rgb(data, 48), expected)


def test_preprocess_is_keras_mobilenet_v2_preprocess_input_to_the_bit():
    from keras.applications.mobilenet_v2 import preprocess_input

    from fruits_platform.ml.mobilenet import preprocess

    images = np.arange(256, dtype=np.uint8).reshape(1, 16, 16, 1).repeat(3, axis=3)
    ours = preprocess(images)
    assert ours.dtype == np.float32 and ours.min() == -1.0 and ours.max() == 1.0
    np.testing.assert_array_equal(ours, preprocess_input(images.astype(np.float32)))


def test_litert_engine_gives_keras_vectors_to_float_rounding_in_calls_of_any_size():
    from fruits_platform.ml.mobilenet import CompiledModel, FeatureExtractor, compile_model, load_weights, signature

    rng = np.random.default_rng(5)
    images = rng.integers(0, 256, size=(7, 96, 96, 3), dtype=np.uint8)
    weights = load_weights("random:0", 96)
    keras_vectors = FeatureExtractor(weights).featurize_arrays(images)
    compiled = compile_model(weights, "litert")
    assert isinstance(compiled.payload, bytes) and compiled.signature == signature(weights, "litert")
    assert compiled.signature != weights.signature  # vectors of another engine are never mixed up with Keras's
    lite = compiled.extractor(batch_size=3)
    calls = []
    predict = lite._predict
    lite._predict = lambda batch: calls.append(len(batch)) or predict(batch)
    vectors = lite.featurize_arrays(images)
    assert calls == [3, 3, 1] and vectors.shape == (7, 1280) and vectors.dtype == np.float32
    scale = np.abs(keras_vectors).max()
    np.testing.assert_allclose(vectors, keras_vectors, rtol=1e-4, atol=1e-5 * scale)
    np.testing.assert_array_equal(lite.featurize_arrays(images[:2]), vectors[:2])  # resized back: same values
    assert lite.featurize_arrays(images[:0]).shape == (0, 1280)
    keras_model = compile_model(weights, "keras")
    assert keras_model.signature == weights.signature and isinstance(keras_model, CompiledModel)
    with pytest.raises(ValueError, match="engine"):
        compile_model(weights, "onnx")


def test_litert_conversion_is_kept_in_the_file_cache_and_a_bad_file_is_converted_again(tmp_path, monkeypatch, caplog):
    from fruits_platform.ml import mobilenet

    weights = mobilenet.load_weights("random:0", 96)
    conversions = []
    convert = mobilenet.to_litert
    monkeypatch.setattr(mobilenet, "to_litert", lambda w: conversions.append(w.fingerprint) or convert(w))
    cache = tmp_path / "cache"
    first = mobilenet.compile_model(weights, "litert", str(cache))
    (stored,) = cache.iterdir()
    assert stored.read_bytes() == first.payload and weights.fingerprint in stored.name and "96px" in stored.name
    assert mobilenet.compile_model(weights, "litert", str(cache)).payload == first.payload  # a later process
    assert conversions == [weights.fingerprint]

    stored.write_bytes(first.payload[: len(first.payload) // 2])  # damaged (say, a full disk elsewhere)
    again = mobilenet.compile_model(weights, "litert", str(cache))
    assert stored.read_bytes() == again.payload and len(conversions) == 2 and "unusable" in caplog.text
    # (a conversion is not byte-identical to the previous one, its model is: the same vectors)
    images = np.random.default_rng(0).integers(0, 256, size=(2, 96, 96, 3), dtype=np.uint8)
    vectors = first.extractor().featurize_arrays(images)
    np.testing.assert_array_equal(again.extractor().featurize_arrays(images), vectors)

    blocked = tmp_path / "a file"  # a cache that cannot be written: converted, with a warning, no error
    blocked.write_text("")
    assert isinstance(mobilenet.compile_model(weights, "litert", str(blocked)).payload, bytes)
    assert "could not write" in caplog.text and len(conversions) == 3 and not list(tmp_path.glob("**/*.part"))


def test_model_calls_of_any_batch_size_give_the_same_vectors():
    from fruits_platform.ml.mobilenet import FeatureExtractor, load_weights

    rng = np.random.default_rng(3)
    images = rng.integers(0, 256, size=(11, 96, 96, 3), dtype=np.uint8)
    extractor = FeatureExtractor(load_weights("random:0", 96))
    whole = extractor.featurize_arrays(images)  # one call for the 11 images
    calls = []
    predict = extractor.model.predict_on_batch
    extractor.model.predict_on_batch = lambda batch: calls.append(len(batch)) or predict(batch)
    extractor.batch_size = 4
    in_fours = extractor.featurize_arrays(images)
    assert calls == [4, 4, 3] and in_fours.shape == (11, 1280) and in_fours.dtype == np.float32
    np.testing.assert_allclose(in_fours, whole, rtol=1e-4, atol=1e-6 * np.abs(whole).max())
    assert extractor.featurize_arrays(images[:0]).shape == (0, 1280)
    with pytest.raises(ValueError, match="batch_size"):
        FeatureExtractor(load_weights("random:0", 96), batch_size=0)
