#!/usr/bin/env bash
# Writes bootstrap/locks/<release>.txt: every package (and version) that a node of the release gets,
# frozen from a fresh Python 3.11 environment built from `fruits-platform emr-requirements`. Run it
# after changing a pin in pyproject.toml (a test says when a lock no longer matches the pins).
#   bootstrap/lock.sh [release]      (default: the default release of fruits_platform/releases.py)
set -euo pipefail
cd "$(dirname "$0")/.."
FRUITS=".venv/bin/fruits-platform"
RELEASE="${1:-$(.venv/bin/python -c 'from fruits_platform.releases import DEFAULT_RELEASE; print(DEFAULT_RELEASE)')}"
env="$(mktemp -d)/node"
python3.11 -m venv "$env"
"$FRUITS" emr-requirements --release "$RELEASE" > "$env/requirements.txt"
# wheel too: astunparse (TensorFlow's) requires it, and pip does not install it as a dependency.
"$env/bin/pip" install --quiet -r "$env/requirements.txt" wheel
{
  echo "# $RELEASE: what bootstrap/install.sh installs on each node (bootstrap/lock.sh, from pyproject.toml)"
  "$env/bin/pip" freeze --all --exclude pip --exclude setuptools
} > "bootstrap/locks/$RELEASE.txt"
rm -rf "$(dirname "$env")"
echo "wrote bootstrap/locks/$RELEASE.txt ($(grep -vc '^#' "bootstrap/locks/$RELEASE.txt") packages)"
