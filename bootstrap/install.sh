#!/usr/bin/env bash
# EMR bootstrap action: installs on every node exactly the Python packages pinned in pyproject.toml
# (the project's single list of versions, staged to S3 next to this script as requirements.txt by
# `python -m fruits_platform.deploy requirements`). Usage as a bootstrap action:
#   s3://<bucket>/<prefix>/bootstrap/install.sh s3://<bucket>/<prefix>/bootstrap/requirements.txt
set -euo pipefail
REQUIREMENTS_URI="${1:?usage: install.sh s3://.../requirements.txt}"
PYTHON="${FRUITS_PYTHON:-python3.11}"

if ! command -v "$PYTHON" >/dev/null 2>&1; then
  sudo dnf install -y python3.11 python3.11-pip
fi
tmp="$(mktemp -d)"
aws s3 cp "$REQUIREMENTS_URI" "$tmp/requirements.txt"
sudo "$PYTHON" -m pip install --upgrade pip
sudo "$PYTHON" -m pip install -r "$tmp/requirements.txt"
