"""The EMR bootstrap action installs exactly what pyproject.toml pins (pyspark: the cluster's)."""

import os
import stat
import subprocess
import sys
import tomllib
from pathlib import Path

from packaging.requirements import Requirement

from fruits_platform_tests.conftest import REPO


def stub(folder: Path, name: str, body: str) -> None:
    path = folder / name
    path.write_text("#!/usr/bin/env bash\n" + body)
    path.chmod(path.stat().st_mode | stat.S_IEXEC)


def test_bootstrap_installs_the_pyproject_pins(tmp_path):
    requirements = subprocess.run(
        [sys.executable, "-m", "fruits_platform.cli", "emr-requirements"], capture_output=True, text=True, check=True
    ).stdout
    (tmp_path / "requirements.txt").write_text(requirements)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    # Stand-ins for the node's tools: `aws s3 cp` copies, `sudo` runs, python records what pip installs.
    stub(bin_dir, "aws", f'cp "{tmp_path}/requirements.txt" "$4"\n')
    stub(bin_dir, "sudo", '"$@"\n')
    stub(
        bin_dir,
        "python3.11",
        f'if [ "$3" = "install" ] && [ "$4" = "-r" ]; then cp "$5" "{tmp_path}/installed.txt"; fi\n',
    )
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "EMR_PYSPARK_VERSION": "3.5.6"}
    subprocess.run(
        ["bash", str(REPO / "bootstrap" / "install.sh"), "s3://bucket/bootstrap/requirements.txt"],
        env=env,
        check=True,
        capture_output=True,
        text=True,
    )

    installed = {Requirement(line).name: Requirement(line) for line in (tmp_path / "installed.txt").read_text().split()}
    pinned = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    expected = {Requirement(line).name: Requirement(line) for line in pinned}
    assert installed.keys() == expected.keys()
    for name, requirement in expected.items():
        if name == "pyspark":  # Spark comes with the EMR release; its Python side must match it
            assert str(installed[name].specifier) == "==3.5.6"
        else:
            assert installed[name].specifier == requirement.specifier, name
    assert str(expected["dagster-aws"].specifier) == "==0.29.27"  # the family is pinned together
