#!/usr/bin/env bash
# EMR bootstrap action: installs, on every node, the Python packages pinned in pyproject.toml.
# The list is not kept here: `fruits-platform emr-requirements > requirements.txt` writes it from the
# installed package's metadata (= pyproject.toml), and it is staged to S3 next to this script.
#   Bootstrap action: s3://<bucket>/<prefix>/install.sh  s3://<bucket>/<prefix>/requirements.txt
# The one exception is pyspark: Spark itself comes with the EMR release, and the Python side must
# match it, so its pin is replaced by the cluster's version (EMR_PYSPARK_VERSION, default for
# emr-7.13.0: 3.5.6). Our code uses only APIs present in Spark 3.5.
set -euo pipefail
REQUIREMENTS_URI="${1:?usage: install.sh s3://.../requirements.txt}"
PYTHON="${FRUITS_PYTHON:-python3.11}"
EMR_PYSPARK_VERSION="${EMR_PYSPARK_VERSION:-3.5.6}"

if ! command -v "$PYTHON" >/dev/null 2>&1; then
  sudo dnf install -y python3.11 python3.11-pip
fi
workdir="$(mktemp -d)"
aws s3 cp "$REQUIREMENTS_URI" "$workdir/requirements.txt"
sed -e "s/^pyspark==.*/pyspark==${EMR_PYSPARK_VERSION}/" "$workdir/requirements.txt" > "$workdir/pinned.txt"
sudo "$PYTHON" -m pip install --upgrade pip
sudo "$PYTHON" -m pip install -r "$workdir/pinned.txt"
