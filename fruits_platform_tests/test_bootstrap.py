"""The EMR bootstrap: each supported release's lock satisfies pyproject.toml's pins (pyspark: the
release's Spark), install.sh installs exactly that lock, and create_cluster.sh asks EMR for a cluster
of the release with a configuration of the shape the release needs."""

import json
import os
import stat
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from fruits_platform.releases import DEFAULT_RELEASE, RELEASES, cluster_configurations
from fruits_platform_tests.helpers import REPO

LOCKS = REPO / "bootstrap" / "locks"


def stub(folder: Path, name: str, body: str) -> None:
    path = folder / name
    path.write_text("#!/usr/bin/env bash\n" + body)
    path.chmod(path.stat().st_mode | stat.S_IEXEC)


def lock_versions(release: str) -> dict[str, str]:
    lines = (LOCKS / f"{release}.txt").read_text().splitlines()
    pins = [Requirement(line) for line in lines if line.strip() and not line.startswith("#")]
    assert all(len(pin.specifier) == 1 and next(iter(pin.specifier)).operator == "==" for pin in pins)
    return {pin.name.lower().replace("_", "-"): next(iter(pin.specifier)).version for pin in pins}


@pytest.mark.parametrize("release", sorted(RELEASES))
def test_lock_satisfies_the_pyproject_pins(release):
    locked = lock_versions(release)
    pinned = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    for requirement in map(Requirement, pinned):
        name = requirement.name.lower()
        assert name in locked, f"{name} missing from bootstrap/locks/{release}.txt: run bootstrap/lock.sh {release}"
        if name == "pyspark":  # Spark comes with the EMR release; its Python side must match it
            assert locked[name] == RELEASES[release].spark_version
        else:
            assert requirement.specifier.contains(locked[name]), f"{name}: run bootstrap/lock.sh {release}"
    assert str(Requirement(next(p for p in pinned if p.startswith("dagster-aws"))).specifier) == "==0.29.27"


def test_install_sh_installs_exactly_the_lock(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    lock = LOCKS / f"{DEFAULT_RELEASE}.txt"
    # Stand-ins for the node's tools: `aws s3 cp` copies the lock, python records what pip is asked.
    stub(bin_dir, "aws", f'cp "{lock}" "${{@: -1}}"\n')
    stub(
        bin_dir,
        "python3.11",
        f'echo "$@" >> "{tmp_path}/calls.txt"\n'
        f'if [ "$3" = "install" ]; then cp "${{@: -1}}" "{tmp_path}/installed.txt"; fi\n',
    )
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "FRUITS_PYTHON": str(bin_dir / "python3.11")}
    subprocess.run(
        ["bash", str(REPO / "bootstrap" / "install.sh"), f"s3://bucket/bootstrap/{DEFAULT_RELEASE}.txt"],
        env=env,
        check=True,
        capture_output=True,
        text=True,
    )
    assert (tmp_path / "installed.txt").read_text() == lock.read_text()
    calls = (tmp_path / "calls.txt").read_text().splitlines()
    assert any("install --quiet --no-deps -r" in call for call in calls) and any(c.endswith("pip check") for c in calls)


def test_install_sh_refuses_a_python_that_is_not_3_11(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    stub(bin_dir, "python3.9", "exit 1\n")  # what `sys.version_info[:2] != (3, 11)` answers on a 3.9
    done = subprocess.run(
        ["bash", str(REPO / "bootstrap" / "install.sh"), str(LOCKS / f"{DEFAULT_RELEASE}.txt")],
        env={**os.environ, "FRUITS_PYTHON": str(bin_dir / "python3.9")},
        capture_output=True,
        text=True,
    )
    assert done.returncode == 1 and "is not Python 3.11" in done.stderr


def create_cluster_arguments(tmp_path, **settings) -> dict[str, list[str]]:
    """The options create_cluster.sh passes to `aws emr create-cluster` (recorded by a stand-in aws)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    stub(bin_dir, "aws", f'printf "%s\\n" "$@" > "{tmp_path}/aws-args.txt"\n')
    env = {
        **os.environ,
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "BUCKET": "my-bucket",
        "SUBNET": "subnet-123",
        "FRUITS": str(Path(sys.executable).parent / "fruits-platform"),
        **settings,
    }
    subprocess.run(["bash", str(REPO / "bootstrap" / "create_cluster.sh")], env=env, check=True, capture_output=True)
    args = (tmp_path / "aws-args.txt").read_text().splitlines()
    assert args[:2] == ["emr", "create-cluster"]
    options: dict[str, list[str]] = {}
    for arg in args[2:]:
        if arg.startswith("--"):
            current = options.setdefault(arg, [])
        else:
            current.append(arg)
    return options


def test_create_cluster_matches_the_release(tmp_path):
    options = create_cluster_arguments(tmp_path)
    release = RELEASES[options["--release-label"][0]]
    assert release.label == DEFAULT_RELEASE
    assert options["--applications"] == ["Name=Spark"]
    groups = [dict(part.split("=", 1) for part in group.split(",")) for group in options["--instance-groups"]]
    assert [g["InstanceGroupType"] for g in groups] == ["MASTER", "CORE"]
    for group in groups:
        assert group["InstanceType"].split(".")[0] in release.instance_families, group
        assert int(group["InstanceCount"]) >= 1
    # The bootstrap action installs the release's lock.
    action = options["--bootstrap-actions"][0]
    assert action.startswith("Path=s3://my-bucket/fruits-platform/bootstrap/install.sh,")
    assert action.endswith(f"Args=[s3://my-bucket/fruits-platform/bootstrap/{release.label}.txt]")
    assert (LOCKS / f"{release.label}.txt").is_file()
    # EMR's configuration objects: a Classification, string Properties, nested Configurations.
    configurations = json.loads(options["--configurations"][0])
    assert configurations == cluster_configurations(release.label)

    def check(entry):
        assert set(entry) <= {"Classification", "Properties", "Configurations"} and entry["Classification"]
        assert all(isinstance(k, str) and isinstance(v, str) for k, v in entry.get("Properties", {}).items())
        for nested in entry.get("Configurations", []):
            check(nested)

    for entry in configurations:
        check(entry)
    by_name = {entry["Classification"]: entry for entry in configurations}
    exports = {c["Classification"]: c["Properties"] for c in by_name["spark-env"]["Configurations"]}["export"]
    assert exports == {"PYSPARK_PYTHON": release.python, "PYSPARK_DRIVER_PYTHON": release.python}
    assert by_name["spark-defaults"]["Properties"]["spark.sql.execution.arrow.pyspark.enabled"] == "true"
    # EMR accepts an idle timeout of 60 s to 7 days.
    (policy,) = options["--auto-termination-policy"]
    assert policy.startswith("IdleTimeout=") and 60 <= int(policy.split("=")[1]) <= 7 * 24 * 3600


def test_create_cluster_refuses_an_unsupported_release(tmp_path):
    with pytest.raises(subprocess.CalledProcessError) as failure:
        create_cluster_arguments(tmp_path, RELEASE="emr-7.13.0")
    assert "unsupported EMR release 'emr-7.13.0'" in failure.value.stderr.decode()
    assert not (tmp_path / "aws-args.txt").exists()
