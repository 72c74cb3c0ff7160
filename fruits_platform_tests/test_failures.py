"""Failure modes, end to end (docs/failure-modes.md): bad files, odd class folders, interrupted and
failed writes, reruns, a Python worker killed mid-task, and AWS keys that must never be written.

One in-process materialization (`world`, random weights, 96 px) serves the catalogue, class-name and
rerun tests; the CLI tests run `python -m fruits_platform.cli` as a user would, with fake AWS keys.
"""

from __future__ import annotations

import functools
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.dataset as ds
import pytest
from dagster import instance_for_test
from hypothesis import given, settings
from hypothesis import strategies as st

from fruits_platform.ml.images import inspect_image
from fruits_platform.ml.mobilenet import FeatureExtractor, load_weights
from fruits_platform.partitions import unusable_key_reason
from fruits_platform.resources.model import MobileNetWeights
from fruits_platform.runner import first_error_line, latest_metadata, materialize_classes, register_classes
from fruits_platform.sources import class_dir_name, list_class_files
from fruits_platform.spark.datasets import MissingPartitionError, PartitionedDataset
from fruits_platform_tests.corpus import bad_and_odd_files, write_corpus
from fruits_platform_tests.helpers import SAMPLE_ROOT, copy_classes
from fruits_platform_tests.helpers import resources as local_test_resources

WEIGHTS, SIZE = "random:0", 96
CORPUS_CLASS = "Apple mixed é"  # the whole bad-file corpus + real images; spaces and unicode
EMPTY_CLASS = "Empty"
ODD_CLASSES = {"a..b": "Banana", "Kiwi fruit ü": "Lemon", "kiwi fruit u": "Strawberry"}  # name -> real source
REFUSED = {
    "Bad ... name": "contains '...'",
    "back\\slash": "path-like name",
    "tab\tname": "contains '\\t'",
    "x" * 201: "longer than 200 characters",
}
USABLE = sorted([CORPUS_CLASS, EMPTY_CLASS, *ODD_CLASSES])
ASSETS = ["raw_images", "mobilenet_features", "scaled_features", "pca_features"]
# Reasons that do not depend on a library's wording: asserted exactly.
EXACT_REASONS = {
    "empty.jpg": "empty_file: 0 bytes",
    "notes.jpg": "not_an_image: text content",
    "page.jpg": "not_an_image: HTML/XML text content",
    "truncated_header.jpg": "corrupt: JPEG header is truncated or damaged",
    "png_inside.jpg": "format_mismatch: PNG content in a .jpg file",
    "webp_inside.jpg": "format_mismatch: WEBP content in a .jpg file",
    "rgba_inside.jpg": "format_mismatch: PNG content in a .jpg file",
    ".DS_Store": "unsupported_file: '.DS_Store' is not a .jpg/.jpeg/.png/.webp file",
    "Thumbs.db": "unsupported_file: 'Thumbs.db' is not a .jpg/.jpeg/.png/.webp file",
    "readme.txt": "unsupported_file: 'readme.txt' is not a .jpg/.jpeg/.png/.webp file",
}
SAFE_DIR = re.compile(r"^[a-z0-9][a-z0-9-]*-[0-9a-f]{10}$")  # one plain component: no dot, slash, _


resources = functools.partial(local_test_resources, weights=WEIGHTS, image_size=SIZE, pca_k=3)


def table(path):
    return ds.dataset(str(path)).to_table().sort_by("uri")


def real_images(source_class: str, split: str, count: int) -> list[Path]:
    return sorted((SAMPLE_ROOT / split / source_class).iterdir())[:count]


def parquet_bytes(folder: Path) -> list[bytes]:
    """The content of a class folder's Parquet files (names carry a random job id, contents must not)."""
    return [p.read_bytes() for p in sorted(folder.glob("*.parquet"), key=lambda p: p.read_bytes())]


def byte_difference(old_root: Path, new_root: Path, asset: str, name: str) -> str:
    """Where two versions of a class folder differ (for the failure message)."""
    import pyarrow.parquet as pq

    old, new = [pq.read_table(next((r / asset / class_dir_name(name)).glob("*.parquet"))) for r in (old_root, new_root)]
    if old.column_names != new.column_names or old.schema != new.schema:
        return f"schema {old.schema} != {new.schema}"
    for column in old.column_names:
        a, b = old.column(column).to_pylist(), new.column(column).to_pylist()
        if column in {"features", "scaled_features", "pca_features"}:
            a, b = (
                [np.asarray(v, np.float32).view(np.uint32).tolist() for v in a],
                [np.asarray(v, np.float32).view(np.uint32).tolist() for v in b],
            )
        if a != b:
            return (
                f"column {column} differs (row order {old.column('uri').to_pylist()} / {new.column('uri').to_pylist()})"
            )
    return f"same values; footers {pq.read_metadata(next((old_root / asset / class_dir_name(name)).glob('*.parquet')))}"


def build_data(root: Path) -> tuple[Path, dict]:
    """The data root of `world`; returns it and name -> (status, reason prefix) of the corpus class."""
    data = root / "data"
    expected = {("Training", name): case for name, case in write_corpus(data / "Training" / CORPUS_CLASS).items()}
    for split, count in [("Training", 3), ("Test", 2)]:
        (data / split / CORPUS_CLASS).mkdir(parents=True, exist_ok=True)
        for image in real_images("Apple Braeburn", split, count):
            shutil.copy(image, data / split / CORPUS_CLASS / image.name)
            expected[(split, image.name)] = ("ok", None)
    (data / "Training" / EMPTY_CLASS).mkdir(parents=True)
    for name, source in {**ODD_CLASSES, **{n: "Avocado" for n in REFUSED}}.items():
        for split in ("Training", "Test"):
            (data / split / name).mkdir(parents=True)
            for image in real_images(source, split, 1):
                shutil.copy(image, data / split / name / image.name)
    return data, expected


@pytest.fixture(scope="module")
def world(tmp_path_factory, spark):
    root = tmp_path_factory.mktemp("failures")
    data, expected = build_data(root)
    (root / "home").mkdir()
    with instance_for_test(temp_dir=str(root / "home")) as instance:
        selected, refused = register_classes(instance, str(data))
        results = materialize_classes(instance, resources(data, root / "out"), selected)
        yield dict(
            root=root,
            data=data,
            out=root / "out",
            expected=expected,
            instance=instance,
            selected=selected,
            refused=refused,
            results=results,
        )


def corpus_rows(world) -> dict:
    catalogue = table(world["out"] / "raw_images" / class_dir_name(CORPUS_CLASS)).to_pylist()
    return {(row["split"], Path(row["uri"]).name): row for row in catalogue}


# -- 1. bad files -------------------------------------------------------------------------------------


def test_every_file_is_catalogued_with_its_exact_status_and_reason(world):
    rows = corpus_rows(world)
    assert set(rows) == set(world["expected"])
    for key, (status, reason) in world["expected"].items():
        row = rows[key]
        assert row["status"] == status, (key, row["reason"])
        assert row["label"] == CORPUS_CLASS
        if reason is None:
            assert row["reason"] is None, key
        else:
            assert row["reason"].startswith(reason), (key, row["reason"])
        if key[1] in EXACT_REASONS:
            assert row["reason"] == EXACT_REASONS[key[1]], key
    assert rows[("Training", "truncated.jpg")]["reason"].startswith("corrupt: OSError: image file is truncated")
    for bomb in ["bomb.jpg", "bomb.png"]:
        assert re.fullmatch(
            r"too_large: Image size \(\d+ pixels\) exceeds limit .*", rows[("Training", bomb)]["reason"]
        )
    # Converted colour modes and other sizes are accepted, with what was found recorded.
    found = {name: (r["format"], r["mode"], r["width"], r["height"]) for (_, name), r in rows.items()}
    assert found["grey.jpg"] == ("JPEG", "L", 100, 100)
    assert found["cmyk.jpg"] == ("JPEG", "CMYK", 100, 100)
    assert found["rgba.png"] == ("PNG", "RGBA", 100, 100)
    assert found["palette.png"] == ("PNG", "P", 100, 100)
    assert found["large_200x150.jpg"] == ("JPEG", "RGB", 200, 150)
    assert found["empty.jpg"] == (None, None, None, None)
    metadata = latest_metadata(world["results"], "raw_images")
    assert metadata["images_rejected"] == sum(s == "rejected" for s, _ in world["expected"].values())


def test_only_ok_images_reach_the_model_and_converted_ones_embed_like_single_process_keras(world):
    ok = sorted(
        str(world["data"] / split / CORPUS_CLASS / name)
        for (split, name), (s, _) in world["expected"].items()
        if s == "ok"
    )
    assert len(ok) == 14  # 9 ok corpus files + 5 real images
    for asset in ["mobilenet_features", "scaled_features", "pca_features"]:
        rows = table(world["out"] / asset / class_dir_name(CORPUS_CLASS))
        assert rows.column("uri").to_pylist() == ok, asset
    features = table(world["out"] / "mobilenet_features" / class_dir_name(CORPUS_CLASS))
    extractor = FeatureExtractor(load_weights(WEIGHTS, SIZE))
    blobs = [Path(uri).read_bytes() for uri in ok]
    expected = extractor.featurize_bytes(blobs)
    actual = np.stack(features.column("features").to_numpy(zero_copy_only=False))
    np.testing.assert_allclose(actual, expected, rtol=1e-4, atol=1e-4)
    checks = {
        e.event_specific_data.check_name: e.event_specific_data.passed
        for r in world["results"]
        for e in r.all_events
        if e.event_type_value == "ASSET_CHECK_EVALUATION"
    }
    assert checks["one_row_per_ok_image"] and checks["features_are_finite_1280d"]


def test_bomb_is_rejected_quickly_with_bounded_memory():
    import tracemalloc

    for name in ["bomb.jpg", "bomb.png"]:
        data = bad_and_odd_files()[name][0]
        tracemalloc.start()
        started = time.perf_counter()
        record = inspect_image(name, data)
        elapsed, peak = time.perf_counter() - started, tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert record.status == "rejected" and record.reason.startswith("too_large")
        assert elapsed < 0.5 and peak < 2_000_000, (name, elapsed, peak)  # a decoded 50k x 50k would be 7.5 GB


# -- empty class, odd names, output paths -------------------------------------------------------------


def test_empty_class_is_registered_and_has_zero_rows_everywhere(world):
    assert EMPTY_CLASS in world["instance"].get_dynamic_partitions("fruit_classes")
    assert all(r.success for r in world["results"])
    for asset in ASSETS:
        folder = world["out"] / asset / class_dir_name(EMPTY_CLASS)
        assert folder.is_dir(), asset
        assert ds.dataset(str(folder)).to_table().num_rows == 0, asset
        assert "uri" in ds.dataset(str(folder)).schema.names


def test_odd_class_names_are_safe_keys_and_safe_folders(world):
    assert world["refused"] == REFUSED
    assert sorted(world["selected"]) == USABLE
    assert sorted(world["instance"].get_dynamic_partitions("fruit_classes")) == USABLE
    out = world["out"].resolve()
    for path in out.rglob("*"):
        assert path.resolve().is_relative_to(out), path
    for asset in ASSETS:
        children = {p.name for p in (out / asset).iterdir()}
        # Nothing left behind by a successful run but the (empty) working folders.
        assert children - {"_staging", "_trash"} == {class_dir_name(n) for n in USABLE}, asset
        assert not any(p.is_file() for n in ["_staging", "_trash"] for p in (out / asset / n).rglob("*")), asset
        assert all(SAFE_DIR.match(class_dir_name(n)) for n in USABLE)
        labels = set(table(out / asset).column("label").to_pylist())
        assert labels == set(USABLE) - {EMPTY_CLASS}, asset  # exact unicode names round-trip
        for name in REFUSED:  # refused folders are read by nothing
            assert not any(name in uri for uri in table(out / asset).column("uri").to_pylist())
    assert class_dir_name("Kiwi fruit ü") != class_dir_name("kiwi fruit u")  # same slug, distinct folders


@pytest.mark.parametrize("name", ["..", "../etc", "a/b", ".", ""])
def test_path_like_class_names_are_refused(name, tmp_path):
    assert unusable_key_reason(name) in {"path-like name", "blank name"}
    with pytest.raises(ValueError, match="invalid class name"):
        list_class_files(str(tmp_path), name)


@settings(max_examples=200, deadline=None)
@given(st.text(min_size=1, max_size=300))
def test_any_class_name_maps_to_one_safe_folder_name(name):
    folder = class_dir_name(name)
    assert SAFE_DIR.match(folder), folder
    assert len(folder) <= 71 and folder == class_dir_name(name)


# -- 2. atomic and idempotent outputs -----------------------------------------------------------------


def _versioned(spark, version: int, rows_per_label=3):
    rows = [
        (f"/img/{label}/{i}.jpg", label, f"v{version}-{label}-{i}") for label in "AB" for i in range(rows_per_label)
    ]
    return spark.createDataFrame(rows, "uri string, label string, value string")


def test_write_summarizes_the_rows_it_writes_as_a_read_back_would(spark, tmp_path):
    from pyspark.sql import functions as F

    from fruits_platform.assets.versioned_writes import summarize, write_summarized

    dataset = PartitionedDataset(spark, str(tmp_path / "asset"))
    observed = dataset.write(_versioned(spark, 1), ["A"], observe={"values": F.sort_array(F.collect_list("value"))})
    assert observed["values"] == ["v1-A-0", "v1-A-1", "v1-A-2"]  # the rows written: class B was not
    aggregates = dict(rows=F.count("*"), values=F.size(F.collect_set("value")))
    for frame in (_versioned(spark, 2), _versioned(spark, 3).where(F.col("uri") == "none")):  # the empty one: read back
        stats, version = write_summarized(dataset, frame, ["A", "B"], ["uri", "value"], "salt", **aggregates)
        expected, expected_version = summarize(dataset.read(["A", "B"]), ["uri", "value"], "salt", **aggregates)
        assert (stats["rows"], stats["values"], version) == (expected["rows"], expected["values"], expected_version)
    assert stats["rows"] == 0 and dataset.read(["A", "B"]).count() == 0


def test_json_documents_round_trip_and_records_of_earlier_versions_are_read(spark, tmp_path):
    from fruits_platform.spark.datasets import read_json, write_json

    document = {"inputs": "abc", "summary": {"k": 3, "spectrum": [0.5, 0.25], "name": "Kiwi fruit ü"}}
    path = f"file://{tmp_path}/record"
    assert read_json(spark, path) is None
    write_json(spark, path, document)
    assert read_json(spark, path) == document
    write_json(spark, path, {"inputs": "new"})  # replaced, not appended
    assert read_json(spark, path) == {"inputs": "new"}
    # Earlier versions wrote a one-line Spark text dataset (a folder of part files): still read.
    spark.createDataFrame([(json.dumps(document),)], "value string").coalesce(1).write.text(f"{tmp_path}/old")
    assert read_json(spark, f"file://{tmp_path}/old") == document


def test_failed_spark_write_keeps_the_previous_version(spark, tmp_path):
    from pyspark.sql import functions as F

    dataset = PartitionedDataset(spark, str(tmp_path / "asset"))
    dataset.write(_versioned(spark, 1), ["A", "B"])
    before = {label: parquet_bytes(tmp_path / "asset" / class_dir_name(label)) for label in "AB"}

    @F.udf("string")
    def explode_on_b(value):
        if "-B-2" in value:
            raise RuntimeError("fault injected while writing B")
        return value

    broken = _versioned(spark, 2).withColumn("value", explode_on_b("value"))
    with pytest.raises(Exception, match="fault injected while writing B"):
        dataset.write(broken, ["A", "B"])
    for label in "AB":  # neither class was swapped: the write is all or nothing
        assert parquet_bytes(tmp_path / "asset" / class_dir_name(label)) == before[label]
    assert list((tmp_path / "asset" / "_staging").iterdir()) == []  # the partial write is removed
    values = table(tmp_path / "asset").column("value").to_pylist()
    assert values == [f"v1-{label}-{i}" for label in "AB" for i in range(3)]


class SimulatedCrash(BaseException):
    pass


def test_a_replaced_folder_changes_whole_or_not_at_all(spark, tmp_path):
    """The model stores' stage-then-swap (`replacing`): a block that fails leaves the previous version and no
    staging folder; one that ends swaps the new version in."""
    from fruits_platform.spark.datasets import HadoopFs, qualify, replacing

    target = qualify(str(tmp_path / "model"))
    fs = HadoopFs(spark, target)
    fs.write_text(f"{target}/version", "1")
    with pytest.raises(RuntimeError), replacing(fs, target) as staged:
        fs.write_text(f"{staged}/version", "2")
        raise RuntimeError("the write failed")
    assert fs.read_text(f"{target}/version") == "1" and fs.children(str(tmp_path / "_staging")) == []
    with replacing(fs, target) as staged:
        fs.write_text(f"{staged}/version", "2")
    assert fs.read_text(f"{target}/version") == "2" and fs.children(f"{tmp_path}/_staging") == []


def test_crash_between_the_two_renames_is_recovered(spark, tmp_path, monkeypatch):
    root = tmp_path / "asset"
    dataset = PartitionedDataset(spark, str(root))
    dataset.write(_versioned(spark, 1), ["A", "B"])
    v1 = parquet_bytes(root / class_dir_name("A"))
    real_rename = type(dataset.fs).rename

    def crash_before_moving_the_new_version_in(self, source, target):
        if "/_staging/" in source:  # the old version went to _trash/ already: die here
            raise SimulatedCrash()
        real_rename(self, source, target)

    monkeypatch.setattr(type(dataset.fs), "rename", crash_before_moving_the_new_version_in)
    with pytest.raises(SimulatedCrash):
        dataset.write(_versioned(spark, 2), ["A", "B"])
    monkeypatch.undo()
    assert not (root / class_dir_name("A")).exists()
    (trashed,) = (root / "_trash").iterdir()
    assert trashed.name.startswith(class_dir_name("A") + ".") and parquet_bytes(trashed) == v1

    # The next reader (or writer) of the asset puts the previous version back first.
    recovered = PartitionedDataset(spark, str(root)).read(["A", "B"]).orderBy("uri").collect()
    assert [r["value"] for r in recovered] == [f"v1-{label}-{i}" for label in "AB" for i in range(3)]
    assert parquet_bytes(root / class_dir_name("A")) == v1 and list((root / "_trash").iterdir()) == []
    dataset.write(_versioned(spark, 2), ["A", "B"])
    assert table(root).column("value").to_pylist() == [f"v2-{label}-{i}" for label in "AB" for i in range(3)]


# -- 3. a Python worker killed mid-task ---------------------------------------------------------------


def test_python_worker_killed_mid_task_is_retried_and_the_result_is_complete(world, spark):
    from pyspark import TaskContext
    from pyspark.sql import functions as F
    from pyspark.sql.functions import pandas_udf

    from fruits_platform.sources import ImageFile
    from fruits_platform.spark.featurize import catalogue_and_embed

    features = table(world["out"] / "mobilenet_features")
    model = MobileNetWeights(weights=WEIGHTS, image_size=SIZE).compiled()  # the world's (cached in this process)
    catalogue = table(world["out"] / "raw_images").to_pylist()
    files = [ImageFile(row["uri"], row["label"], row["split"]) for row in catalogue]

    @pandas_udf("int")
    def kill_first_attempt(uris: pd.Series, vectors: pd.Series) -> pd.Series:
        context = TaskContext.get()
        if context.partitionId() == 0 and context.attemptNumber() == 0:
            os.kill(os.getpid(), signal.SIGKILL)  # this Python worker dies in the middle of its task
        return vectors.map(len)

    broadcast, known = spark.sparkContext.broadcast(model), spark.sparkContext.broadcast(frozenset())
    group = f"worker-kill-{time.time_ns()}"
    spark.sparkContext.setJobGroup(group, "worker kill test")
    try:
        embedded = catalogue_and_embed(spark, files, broadcast, known).where(F.col("status") == "ok")
        rows = embedded.withColumn("dim", kill_first_attempt(F.col("uri"), F.col("features"))).collect()
    finally:
        spark.sparkContext.setLocalProperty("spark.jobGroup.id", None)
        broadcast.unpersist()
        known.unpersist()
    tracker = spark.sparkContext.statusTracker()
    stages = [s for j in tracker.getJobIdsForGroup(group) for s in tracker.getJobInfo(j).stageIds]
    infos = [tracker.getStageInfo(s) for s in stages]  # None: a stage skipped (its shuffle output was reused)
    assert sum(info.numFailedTasks for info in infos if info is not None) == 1  # killed once, then retried

    result = pd.DataFrame([r.asDict() for r in rows]).sort_values("uri")
    assert result["uri"].tolist() == features.column("uri").to_pylist()  # every image, once
    assert set(result["dim"]) == {1280}
    expected = np.stack(features.column("features").to_numpy(zero_copy_only=False))
    np.testing.assert_allclose(np.stack(result["features"].to_numpy()), expected, rtol=1e-4, atol=1e-4)


# -- 2 (end to end). rerun is byte-identical; removed images lose their rows -------------------------


def test_rerun_is_byte_identical_and_removed_images_lose_their_rows(world):
    out, data = world["out"], world["data"]
    shutil.copytree(out, world["root"] / "out_before")
    before = {(a, n): parquet_bytes(out / a / class_dir_name(n)) for a in ASSETS for n in USABLE}
    tables = {a: table(out / a) for a in ASSETS}
    # Remove a Test image (the model is fitted on Training only, so nothing else may change) and a bad file.
    removed = [data / "Test" / CORPUS_CLASS / real_images("Apple Braeburn", "Test", 1)[0].name]
    removed.append(data / "Training" / CORPUS_CLASS / "notes.jpg")
    for path in removed:
        path.unlink()
    results = materialize_classes(world["instance"], resources(data, out), world["selected"])
    assert latest_metadata(results, "mobilenet_features")["images_embedded"] == 0  # all reused

    gone = {str(p) for p in removed}
    for asset in ASSETS:
        after = table(out / asset)
        kept = [uri not in gone for uri in tables[asset].column("uri").to_pylist()]
        assert after.equals(tables[asset].filter(kept)), asset
        assert not gone & set(after.column("uri").to_pylist())
        assert after.num_rows == tables[asset].num_rows - (2 if asset == "raw_images" else 1)
        for name in USABLE:
            if name != CORPUS_CLASS:
                same = parquet_bytes(out / asset / class_dir_name(name)) == before[(asset, name)]
                assert same, (asset, name, byte_difference(world["root"] / "out_before", out, asset, name))


# -- 2 and 4 through the CLI: a killed run, a failed run, and AWS keys --------------------------------

FAKE_KEYS = {
    "AWS_ACCESS_KEY_ID": "AKIAFRUITSFAKE7Q3ZK9",
    "AWS_SECRET_ACCESS_KEY": "fRuItSsEcReT/do+not+log/9f8e7d6c5b4a3210",
    "AWS_SESSION_TOKEN": "FwoGZXIvYXdzEFruitsFakeSessionToken0123456789abcdefXYZ==",
}
CLI_CLASS = "Banana split"


def run_cli_args(root: Path, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "fruits_platform.cli",
        "materialize",
        "--data-root",
        str(root / "data"),
        "--output-root",
        str(root / "out"),
        "--weights",
        WEIGHTS,
        "--image-size",
        str(SIZE),
        "--pca-k",
        "2",
        *extra,
    ]


def cli_env(root: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "FRUITS_"))}
    return {**env, **FAKE_KEYS, "DAGSTER_HOME": str(root / "home"), "PYTHONUNBUFFERED": "1"}


def files_containing(root: Path, needles: list[bytes]) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for path in root.rglob("*"):
        if path.is_file():
            content = path.read_bytes()
            hits = [n.decode() for n in needles if n in content]
            if hits:
                found[str(path)] = hits
    return found


def secret_needles() -> list[bytes]:
    values = list(FAKE_KEYS.values())
    return [v.encode() for v in values] + [v[4:16].encode() for v in values]  # also any partial dump


@pytest.fixture(scope="module")
def cli_world(tmp_path_factory):
    """A first, complete CLI run (fake AWS keys in its environment) over a small class."""
    root = tmp_path_factory.mktemp("cli")
    for split in ("Training", "Test"):
        for name, source in [(CLI_CLASS, "Banana"), ("Lemon", "Lemon")]:  # feature_quality needs 2 classes
            folder = root / "data" / split / name
            folder.mkdir(parents=True)
            for image in real_images(source, split, 3 if name == CLI_CLASS else 2):
                shutil.copy(image, folder / image.name)
    (root / "data" / "Training" / CLI_CLASS / "empty.jpg").write_bytes(b"")
    (root / "home").mkdir()
    (root / "cwd").mkdir()  # whatever the run writes in its working directory is scanned too
    first = subprocess.run(run_cli_args(root), env=cli_env(root), cwd=root / "cwd", capture_output=True, timeout=600)
    (root / "logs").mkdir()
    (root / "logs" / "first.out").write_bytes(first.stdout + first.stderr)
    assert first.returncode == 0, first.stderr[-3000:].decode(errors="replace")
    return dict(root=root, out=root / "out", first={a: table(root / "out" / a) for a in ASSETS})


def test_the_command_names_each_rejected_file_and_why(cli_world):
    summary = (cli_world["root"] / "logs" / "first.out").read_text()
    empty = cli_world["root"] / "data" / "Training" / CLI_CLASS / "empty.jpg"
    assert "images_rejected=1," in summary
    assert f"    rejected {str(empty)!r}: empty_file: 0 bytes\n" in summary


def test_killed_run_leaves_the_previous_version_readable(cli_world, spark):
    root, out = cli_world["root"], cli_world["out"]
    removed = sorted((root / "data" / "Test" / CLI_CLASS).iterdir())[0]
    removed.unlink()
    with open(root / "logs" / "killed.out", "wb") as log:
        process = subprocess.Popen(
            run_cli_args(root), env=cli_env(root), cwd=root / "cwd", stdout=log, stderr=log, start_new_session=True
        )
    staging = out / "mobilenet_features" / "_staging"
    deadline = time.monotonic() + 300
    try:
        while not any(staging.glob("*/_temporary")):  # Spark's job is writing the embeddings
            assert process.poll() is None, "the run ended before writing mobilenet_features"
            assert time.monotonic() < deadline
            time.sleep(0.02)
    finally:
        os.killpg(process.pid, signal.SIGKILL)  # the run, its JVM and its Python workers
        process.wait()
    (in_flight,) = staging.iterdir()
    assert (in_flight / "_temporary").is_dir() and not (in_flight / "_SUCCESS").exists()  # killed before commit
    # The catalogue, written before the kill, is the new version; the embeddings the previous one.
    assert table(out / "raw_images").num_rows == cli_world["first"]["raw_images"].num_rows - 1 == 10
    assert str(removed) not in table(out / "raw_images").column("uri").to_pylist()
    for asset in ASSETS[1:]:
        assert table(out / asset).equals(cli_world["first"][asset]), asset
    # Spark sees the previous version too: the removed image's row is still there, 6 embeddings.
    assert PartitionedDataset(spark, str(out / "mobilenet_features")).read([CLI_CLASS]).count() == 6


def test_failed_run_is_one_line_keeps_outputs_and_no_aws_key_is_written_anywhere(cli_world):
    root, out = cli_world["root"], cli_world["out"]
    kept = {a: table(out / a) for a in ASSETS}
    failed = subprocess.run(
        run_cli_args(root)[:-6] + ["--weights", str(root / "missing.weights.h5"), "--image-size", str(SIZE)],
        env=cli_env(root),
        cwd=root / "cwd",
        capture_output=True,
        timeout=600,
    )
    (root / "logs" / "failed.out").write_bytes(failed.stdout + failed.stderr)
    assert failed.returncode == 1
    stderr = failed.stderr.decode()
    last = stderr.strip().splitlines()[-1]
    missing = root / "missing.weights.h5"
    assert last == (
        f"error: run {last.split()[2]} failed at run start: Weights file not found: '{missing}'. FRUITS_WEIGHTS "
        "must be 'imagenet', 'random:<seed>', a local .weights.h5 file or an s3:// URI."
    ), last
    # Said once: the traces stay in the run's logs (--verbose prints them); checked before any step ran.
    assert "Traceback" not in stderr and 'File "' not in stderr
    for asset, data in kept.items():
        assert table(out / asset).equals(data), asset

    # Everything the three runs wrote: DAGSTER_HOME (runs, event logs, compute logs), outputs, working
    # directory, and their captured stdout/stderr.
    assert files_containing(root, secret_needles()) == {}
    # The scan does read what runs record: the class name and the failure are in the instance's files.
    assert files_containing(root / "home", [CLI_CLASS.encode()]) != {}
    assert files_containing(root / "home", [b"Weights file not found"]) != {}


def test_class_registered_from_another_data_root_fails_and_says_why(spark, tmp_path):
    """A partition whose folder is not in the configured data root is an error, never an empty success."""
    assert first_error_of_one_class(tmp_path, ["raw_images", "mobilenet_features"], "Durian") == (
        f"catalogue_and_embed: 1 class(es) have no folder under {SAMPLE_ROOT}/{{Training,Test}}: 'Durian'. They were "
        "registered from another data root: set FRUITS_DATA_ROOT to it, or delete these partitions."
    )
    assert not (tmp_path / "out" / "raw_images").exists()


def test_missing_upstream_data_fails_naming_the_path_and_the_fix(spark, tmp_path):
    assert first_error_of_one_class(tmp_path, ["scaled_features", "pca_features"], "Banana") == (
        f"scale_and_project: No fitted model at file://{tmp_path}/out/feature_model: materialize feature_model first, "
        "or set FRUITS_OUTPUT_ROOT to the output root it was written to"
    )
    with pytest.raises(MissingPartitionError) as missing:
        PartitionedDataset(spark, str(tmp_path / "out" / "mobilenet_features")).read(["Banana"])
    assert str(missing.value) == (
        f"file://{tmp_path}/out/mobilenet_features has no data for 1 class(es): 'Banana': materialize "
        "mobilenet_features for them first, or set FRUITS_OUTPUT_ROOT to the output root they were written to"
    )


def test_a_spark_error_is_one_line_naming_its_cause_not_the_jvm_call(spark, tmp_path):
    """Spark raises a job's failure as `Py4JJavaError: An error occurred while calling o123.collectToPython.`
    (or a worker's as "An exception was thrown from the Python worker"): the run's one line names the cause."""
    from dagster import asset, materialize
    from pyspark.sql import functions as F

    from fruits_platform.spark.datasets import qualify

    spark.range(3).write.parquet(str(tmp_path / "gone"))
    vanishing = spark.read.parquet(qualify(str(tmp_path / "gone")))
    for part in (tmp_path / "gone").glob("*.parquet"):
        part.unlink()

    @asset
    def read_a_vanished_file():
        vanishing.collect()

    @asset
    def divide_by_zero_in_a_worker():
        spark.range(1).select(F.udf(lambda x: x // 0, "long")("id")).collect()

    lines = []
    for step in (read_a_vanished_file, divide_by_zero_in_a_worker):
        with instance_for_test() as instance:
            lines.append(first_error_line(materialize([step], instance=instance, raise_on_error=False)))
    assert lines[0].startswith("read_a_vanished_file: java.io.FileNotFoundException: File file:"), lines[0]
    assert lines[1] == "divide_by_zero_in_a_worker: ZeroDivisionError: integer division or modulo by zero"


def first_error_of_one_class(tmp_path, assets: list[str], label: str) -> str:
    """The first error of a run of `assets` for the class `label` alone (registered), on the bundled sample."""
    from dagster import materialize

    from fruits_platform.definitions import defs

    (tmp_path / "home").mkdir()
    with instance_for_test(temp_dir=str(tmp_path / "home")) as instance:
        instance.add_dynamic_partitions("fruit_classes", [label])
        result = materialize(
            defs.assets,
            selection=assets,
            instance=instance,
            resources=resources(SAMPLE_ROOT, tmp_path / "out"),
            partition_key=label,
            raise_on_error=False,
        )
    return first_error_line(result)


def test_each_file_is_read_once_and_its_vector_is_of_the_bytes_whose_hash_is_recorded(tmp_path):
    import hashlib

    from fruits_platform.spark.featurize import catalogue_and_embed_batch

    model = MobileNetWeights(weights=WEIGHTS, image_size=SIZE).compiled()
    extractor = model.extractor()
    extractor.batch_size = 2
    given = []

    def featurizer():
        return extractor

    featurize = extractor.featurize_bytes
    extractor.featurize_bytes = lambda blobs: given.append(list(blobs)) or featurize(blobs)

    images = sorted((SAMPLE_ROOT / "Training" / "Banana").iterdir())[:4]
    other = next((SAMPLE_ROOT / "Training" / "Lemon").iterdir()).read_bytes()
    (tmp_path / "notes.txt").write_text("not an image")
    uris = [str(path) for path in images] + [str(tmp_path / "notes.txt")]
    reads = []

    def read(uri):  # the file is replaced right after it is read: a second read would see the Lemon
        reads.append(uri)
        return Path(uri).read_bytes() if reads.count(uri) == 1 else other

    known = frozenset([hashlib.sha256(images[0].read_bytes()).hexdigest()])
    records, vectors = catalogue_and_embed_batch(uris, known, featurizer, read)

    assert reads == uris  # one read per file
    assert [r["status"] for r in records] == ["ok"] * 4 + ["rejected"]
    assert vectors[0] is None and vectors[4] is None  # embedded before / not an image: no model call
    assert [len(blobs) for blobs in given] == [2, 1]  # a model batch of files at a time
    embedded = [blob for blobs in given for blob in blobs]
    assert [hashlib.sha256(blob).hexdigest() for blob in embedded] == [r["sha256"] for r in records[1:4]]
    np.testing.assert_allclose(np.stack(vectors[1:4]), featurize([p.read_bytes() for p in images[1:]]), atol=1e-6)

    built = []
    records, vectors = catalogue_and_embed_batch(uris[:1], known, lambda: built.append(1) or extractor)
    assert vectors == [None] and built == []  # nothing new: the model is not even built


def test_a_replaced_file_is_embedded_again_under_its_new_hash(spark, tmp_path):
    import hashlib

    from dagster import AssetKey, AssetRecordsFilter

    data = copy_classes(tmp_path / "data", ["Banana", "Lemon"], per_split=2)
    replaced = sorted((data / "Training" / "Banana").iterdir())[0]
    (tmp_path / "home").mkdir()
    with instance_for_test(temp_dir=str(tmp_path / "home")) as instance:
        selected, _ = register_classes(instance, str(data))
        materialize_classes(instance, resources(data, tmp_path / "out"), selected, evaluate=False)
        content = next((SAMPLE_ROOT / "Training" / "Strawberry").iterdir()).read_bytes()
        replaced.write_bytes(content)
        materialize_classes(instance, resources(data, tmp_path / "out"), selected, evaluate=False)
        records = instance.fetch_materializations(
            AssetRecordsFilter(AssetKey("mobilenet_features"), asset_partitions=["Banana"]), limit=1
        ).records
    metadata = records[0].asset_materialization.metadata  # the class's own figures, in a run over both
    assert metadata["images_embedded"].value == 1 and metadata["images_reused"].value == 3
    digest = hashlib.sha256(content).hexdigest()
    [row] = [r for r in table(tmp_path / "out" / "raw_images").to_pylist() if r["uri"] == str(replaced)]
    assert row["sha256"] == digest
    [row] = [r for r in table(tmp_path / "out" / "mobilenet_features").to_pylist() if r["uri"] == str(replaced)]
    expected = MobileNetWeights(weights=WEIGHTS, image_size=SIZE).compiled().extractor().featurize_bytes([content])
    assert row["sha256"] == digest
    np.testing.assert_allclose(np.asarray(row["features"]), expected[0], atol=1e-5)


def test_a_clean_up_that_fails_after_an_interruption_still_reads_as_interrupted():
    """A SIGTERM inside a py4j call can leave the connection answering garbage, and the step's clean-up (an
    unpersist in `finally`) then fails: the run's line still says it was interrupted, not the clean-up's error."""
    from dagster._core.errors import DagsterExecutionInterruptedError
    from dagster._utils.error import serializable_error_info_from_exc_info

    from fruits_platform.runner import interrupted

    def raised(during_interruption: bool):
        try:
            try:
                if during_interruption:
                    raise DagsterExecutionInterruptedError()
            finally:
                raise KeyError("c")
        except KeyError:
            return serializable_error_info_from_exc_info(sys.exc_info())

    assert interrupted(raised(during_interruption=True))
    assert not interrupted(raised(during_interruption=False))
