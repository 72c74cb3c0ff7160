"""`benchmarks/direct.py`, the anchor of the benchmarks: its four datasets hold what its figures claim."""

import json
import subprocess
import sys

import numpy as np
import pyarrow.dataset as ds

from fruits_platform.ml.moments import Moments, choose_k, fit_scaler_and_axes
from fruits_platform.sources import class_dir_name
from fruits_platform_tests.helpers import REPO, SAMPLE_ROOT


def matrix(table, column):
    return np.stack(table.column(column).to_numpy(zero_copy_only=False)).astype(np.float64)


def test_direct_script_writes_four_datasets_one_file_per_class(tmp_path):
    out, report = tmp_path / "out", tmp_path / "direct.json"
    command = [sys.executable, str(REPO / "benchmarks" / "direct.py"), "--data-root", str(SAMPLE_ROOT)]
    command += ["--output-root", str(out), "--weights", "random:0", "--processes", "2", "--json", str(report)]
    done = subprocess.run(command, check=False, capture_output=True, text=True, cwd=REPO, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    figures = json.loads(report.read_text())
    files = sorted(p for split in ("Training", "Test") for p in (SAMPLE_ROOT / split).glob("*/*") if p.is_file())
    classes = sorted({p.parent.name for p in files})
    assert figures["images"] == len(files) and figures["classes"] == len(classes)
    for name in ("raw_images", "mobilenet_features", "scaled_features", "pca_features"):
        assert sorted(p.name for p in (out / name).iterdir()) == sorted(class_dir_name(c) for c in classes)
        assert all([f.name for f in (out / name / class_dir_name(c)).iterdir()] == ["part-0.parquet"] for c in classes)
    catalogue = ds.dataset(out / "raw_images").to_table().sort_by("uri")
    assert catalogue.num_rows == len(files) and set(catalogue.column("status").to_pylist()) == {"ok"}
    features = ds.dataset(out / "mobilenet_features").to_table().sort_by("uri")
    scaled = ds.dataset(out / "scaled_features").to_table().sort_by("uri")
    pca = ds.dataset(out / "pca_features").to_table().sort_by("uri")
    assert features.column("sha256").equals(catalogue.column("sha256"))
    # The scaler and PCA are fitted on the Training rows only, k by the platform's default rule.
    x = matrix(features, "features")
    training = np.array(features.column("split").to_pylist()) == "Training"
    fitted = fit_scaler_and_axes(Moments.of(x[training]))
    k = choose_k(fitted.spectrum, None, 0.95)
    assert figures["pca_k"] == k == matrix(pca, "pca_features").shape[1]
    np.testing.assert_allclose(matrix(scaled, "scaled_features"), fitted.scale(x), atol=1e-4)
    np.testing.assert_allclose(matrix(pca, "pca_features"), fitted.project(fitted.scale(x), k), atol=1e-3)
    assert set(figures["stages_seconds"]) >= {"conversion", "catalogue_and_embed", "fit", "writes"}
