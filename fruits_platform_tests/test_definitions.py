"""The code location loads, and the sensor registers the class folders as partitions."""

import pydantic
import pytest
from dagster import AssetKey, DefaultSensorStatus, build_sensor_context

from fruits_platform.cli import first_line
from fruits_platform.definitions import defs
from fruits_platform.partitions import fruit_classes, unusable_key_reason
from fruits_platform.resources import model_resources, sensor_intervals
from fruits_platform.resources.storage import FruitsStorage
from fruits_platform.sensors import build_automation_sensor, build_new_images_sensor
from fruits_platform_tests.helpers import SAMPLE_CLASSES, SAMPLE_ROOT


def test_definitions_load_with_lineage():
    graph = defs.resolve_asset_graph()
    keys = {key.to_user_string() for key in graph.get_all_asset_keys()}
    assert {"raw_images", "mobilenet_features", "feature_model", "scaled_features", "pca_features"} <= keys
    parents = lambda name: {k.to_user_string() for k in graph.get(AssetKey(name)).parent_keys}
    assert parents("mobilenet_features") == {"raw_images"}
    assert parents("feature_model") == {"mobilenet_features"}
    assert parents("scaled_features") == {"mobilenet_features", "feature_model"}
    assert parents("pca_features") == {"scaled_features", "feature_model"}
    for name in ["raw_images", "mobilenet_features", "scaled_features", "pca_features"]:
        assert graph.get(AssetKey(name)).partitions_def == fruit_classes
        assert graph.get(AssetKey(name)).description


def test_every_asset_reads_at_a_glance_and_scaled_and_pca_features_are_one_step():
    """Each asset function is at most 35 lines: the work is in named functions of ml/ and spark/. The scaled
    and the PCA features are written by one step, from one read of the embeddings."""
    import inspect

    steps = {}
    for assets_def in defs.assets:
        source, _ = inspect.getsourcelines(assets_def.op.compute_fn.decorated_fn)
        lines = len(source) - next(i for i, line in enumerate(source) if line.startswith("def "))  # no decorator
        assert lines <= 35, f"{assets_def.op.name}: {lines} lines"
        steps.update({key.to_user_string(): assets_def.op.name for key in assets_def.keys})
    assert steps["scaled_features"] == steps["pca_features"] == "scale_and_project"
    assert steps["raw_images"] == steps["mobilenet_features"] == "catalogue_and_embed"


def test_dg_loads_the_project_without_a_warning():
    """The project is a dg project (pyproject's [tool.dg]): `dg check defs` loads the same definitions, and
    like `dg dev` (the README's first command) checks its YAML without printing a warning."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    venv = Path(sys.executable).parent
    env = {**os.environ, "VIRTUAL_ENV": str(venv.parent), "PATH": f"{venv}{os.pathsep}{os.environ['PATH']}"}
    root = Path(__file__).resolve().parents[1]
    checked = subprocess.run(
        [str(venv / "dg"), "check", "defs"], cwd=root, env=env, capture_output=True, text=True, timeout=300, check=False
    )
    assert checked.returncode == 0, checked.stdout[-2000:] + checked.stderr[-2000:]
    assert "All definitions loaded successfully." in checked.stdout + checked.stderr
    assert "Warning" not in checked.stdout + checked.stderr, checked.stderr[-2000:]


def test_local_sensor_registers_classes_and_leaves_runs_to_the_user(instance, tmp_path):
    storage = FruitsStorage(data_root=str(SAMPLE_ROOT), output_root=str(tmp_path))
    sensor = defs.get_sensor_def("new_images_sensor")
    result = sensor(build_sensor_context(instance=instance, resources={"storage": storage}))
    (request,) = result.dynamic_partitions_requests
    assert sorted(request.partition_keys) == SAMPLE_CLASSES
    assert result.run_requests == []  # local profile: FRUITS_AUTOMATION unset
    instance.add_dynamic_partitions(fruit_classes.name, list(request.partition_keys))
    again = sensor(build_sensor_context(instance=instance, cursor=result.cursor, resources={"storage": storage}))
    assert again.dynamic_partitions_requests == [] and again.run_requests == []


def test_untrusted_class_names():
    assert unusable_key_reason("Apple Golden 1") is None
    assert unusable_key_reason("Pomme dorée 🍏") is None
    assert unusable_key_reason("a..b") is None
    assert unusable_key_reason("..") == "path-like name"
    assert unusable_key_reason("x/y") == "path-like name"
    assert "'...'" in unusable_key_reason("wait...")
    assert "','" in unusable_key_reason("a,b")


def test_settings_from_the_environment_are_checked_with_their_real_values(monkeypatch):
    monkeypatch.setenv("FRUITS_PCA_VARIANCE", "0.9")
    monkeypatch.setenv("FRUITS_APP_CALIBRATION_IMAGES", "1000")
    settings = model_resources()
    assert settings["reduction"].variance_threshold == 0.9 and settings["app"].calibration_images == 1000
    monkeypatch.setenv("FRUITS_PCA_VARIANCE", "ninety")
    with pytest.raises(ValueError, match="^FRUITS_PCA_VARIANCE must be a number, got 'ninety'$"):
        model_resources()
    monkeypatch.setenv("FRUITS_PCA_VARIANCE", "1.5")
    with pytest.raises(pydantic.ValidationError) as raised:
        model_resources()
    assert first_line(raised.value) == "ReductionSettings.variance_threshold: Input should be less than or equal to 1"


def test_the_sensors_intervals_are_settings(monkeypatch):
    monkeypatch.setenv("FRUITS_SENSOR_INTERVAL_SECONDS", "5")
    monkeypatch.setenv("FRUITS_AUTOMATION_INTERVAL_SECONDS", "7")
    assert sensor_intervals() == (5, 7)
    sensors = [
        build_new_images_sensor(True, DefaultSensorStatus.RUNNING, interval_seconds=5),
        build_automation_sensor(DefaultSensorStatus.RUNNING, interval_seconds=7),
    ]
    assert [sensor.minimum_interval_seconds for sensor in sensors] == [5, 7]
    monkeypatch.setenv("FRUITS_SENSOR_INTERVAL_SECONDS", "0")
    with pytest.raises(ValueError, match="^FRUITS_SENSOR_INTERVAL_SECONDS must be at least 1, got 0$"):
        sensor_intervals()
