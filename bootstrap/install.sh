#!/usr/bin/env bash
# EMR bootstrap action: installs on every node exactly the Python packages that CI tested for the
# cluster's release: the release's lock file (bootstrap/locks/<release>.txt, written by lock.sh from
# pyproject.toml's pins, with pyspark at the release's Spark version), staged to S3 beside this script.
#   Bootstrap action: s3://<bucket>/<prefix>/install.sh  s3://<bucket>/<prefix>/<release>.txt
# CI builds its node environments with this same script (FRUITS_PYTHON = a venv's python, a local lock).
set -euo pipefail
LOCK_URI="${1:?usage: install.sh s3://.../<release>.txt (or a local path)}"
PYTHON="${FRUITS_PYTHON:-/usr/bin/python3.11}"

if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' 2>/dev/null; then
  echo "install.sh: $PYTHON is not Python 3.11: use a supported EMR release (see fruits_platform/releases.py)" >&2
  exit 1
fi
sudo=""
[ "$(id -u)" = 0 ] || sudo=sudo
workdir="$(mktemp -d)"
case "$LOCK_URI" in
  s3://*) aws s3 cp --only-show-errors "$LOCK_URI" "$workdir/lock.txt" ;;
  *) cp "$LOCK_URI" "$workdir/lock.txt" ;;
esac
"$PYTHON" -m pip --version >/dev/null 2>&1 || $sudo "$PYTHON" -m ensurepip
# Every package of the lock at its version and nothing else; pip check proves the set consistent.
$sudo "$PYTHON" -m pip install --quiet --no-deps -r "$workdir/lock.txt"
$sudo "$PYTHON" -m pip check
