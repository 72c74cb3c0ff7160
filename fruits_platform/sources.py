"""Where images come from: a Fruits-360 layout `<root>/{Training,Test}/<Class>/<file>` on a local
disk or under an `s3://bucket/prefix`. Listing runs on the driver (metadata only); `read_bytes`
runs wherever the bytes are needed (Spark executors included) and uses boto3 for S3, which
honours AWS_ENDPOINT_URL (moto in tests) and the instance role on EMR.
"""

from __future__ import annotations

import hashlib
import os
import re
import unicodedata
from dataclasses import dataclass
from functools import lru_cache

SPLITS = ("Training", "Test")
DEFAULT_OUTPUT_ROOT = "fruits_output"  # relative to the working directory


@dataclass(frozen=True)
class ImageFile:
    uri: str
    label: str
    split: str


def is_s3(uri: str) -> bool:
    return uri.startswith("s3://")


def split_s3(uri: str) -> tuple[str, str]:
    bucket, _, key = uri[len("s3://") :].partition("/")
    return bucket, key


def join_uri(root: str, *parts: str) -> str:
    if is_s3(root):
        return "/".join([root.rstrip("/"), *parts])
    return os.path.join(os.path.abspath(root), *parts)


@lru_cache(maxsize=1)
def _s3_client():
    import boto3

    return boto3.client("s3")


def _s3_list(root: str, suffix: str, delimiter: str | None):
    from botocore.exceptions import BotoCoreError, ClientError

    bucket, key = split_s3(join_uri(root, suffix))
    prefix = key.rstrip("/") + "/"
    client = _s3_client()
    kwargs = {"Bucket": bucket, "Prefix": prefix, **({"Delimiter": delimiter} if delimiter else {})}
    try:
        for page in client.get_paginator("list_objects_v2").paginate(**kwargs):
            yield prefix, page
    except (BotoCoreError, ClientError) as error:
        raise StorageUnreachableError(
            f"S3 endpoint {client.meta.endpoint_url} could not list s3://{bucket}/{prefix}: {error}"
        ) from error


def list_classes(data_root: str) -> list[str]:
    """Class folder names found under any split, sorted (exact names, untrusted)."""
    names: set[str] = set()
    for split in SPLITS:
        if is_s3(data_root):
            for prefix, page in _s3_list(data_root, split, "/"):
                names.update(p["Prefix"][len(prefix) :].rstrip("/") for p in page.get("CommonPrefixes", []))
        else:
            folder = os.path.join(data_root, split)
            if os.path.isdir(folder):
                names.update(e.name for e in os.scandir(folder) if e.is_dir(follow_symlinks=False))
    return sorted(n for n in names if n)


def list_class_files(data_root: str, label: str) -> list[ImageFile]:
    """Every file directly inside `<root>/<split>/<label>/`, for both splits, sorted by uri."""
    if label in {"", ".", ".."} or "/" in label or "\x00" in label:
        raise ValueError(f"invalid class name {label!r}")
    files = []
    for split in SPLITS:
        if is_s3(data_root):
            for prefix, page in _s3_list(data_root, f"{split}/{label}", "/"):
                bucket = split_s3(data_root)[0]
                files += [
                    ImageFile(f"s3://{bucket}/{obj['Key']}", label, split)
                    for obj in page.get("Contents", [])
                    if not obj["Key"].endswith("/")
                ]
        else:
            folder = os.path.join(os.path.abspath(data_root), split, label)
            if os.path.isdir(folder):
                files += [
                    ImageFile(entry.path, label, split)
                    for entry in os.scandir(folder)
                    if entry.is_file(follow_symlinks=False)
                ]
    return sorted(files, key=lambda f: f.uri)


class StorageUnreachableError(RuntimeError):
    """The storage itself (S3 endpoint, network) failed, not the file: the run must fail and retry,
    never record valid images as rejected."""


def read_bytes(uri: str) -> bytes:
    """The file's bytes. FileNotFoundError when it is gone; StorageUnreachableError when S3 is."""
    if not is_s3(uri):
        with open(uri, "rb") as handle:
            return handle.read()
    from botocore.exceptions import BotoCoreError, ClientError

    bucket, key = split_s3(uri)
    client = _s3_client()
    try:
        return client.get_object(Bucket=bucket, Key=key)["Body"].read()
    except ClientError as error:
        if error.response.get("Error", {}).get("Code") in {"NoSuchKey", "404"}:
            raise FileNotFoundError(f"{uri} no longer exists") from error
        raise StorageUnreachableError(f"S3 refused {uri} at {client.meta.endpoint_url}: {error}") from error
    except BotoCoreError as error:
        raise StorageUnreachableError(
            f"S3 endpoint {client.meta.endpoint_url} unreachable for {uri}: {error}"
        ) from error


def class_dir_name(label: str) -> str:
    """A safe, unique, readable folder name for a class (never hidden, never a traversal)."""
    ascii_name = unicodedata.normalize("NFKD", label).encode("ascii", "ignore").decode()
    slug = re.sub(r"[^A-Za-z0-9]+", "-", ascii_name).strip("-").lower()[:60] or "class"
    return f"{slug}-{hashlib.sha256(label.encode('utf-8')).hexdigest()[:10]}"
