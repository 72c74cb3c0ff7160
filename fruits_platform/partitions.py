"""The fruit-class partitions: one dynamic partition per class folder, key = the folder's name."""

from __future__ import annotations

from dagster import DynamicPartitionsDefinition

fruit_classes = DynamicPartitionsDefinition(name="fruit_classes")

RANGE_START, RANGE_END = "dagster/asset_partition_range_start", "dagster/asset_partition_range_end"


def range_tags(keys: list[str]) -> dict[str, str]:
    """The tags of a run over the partition key range from keys[0] to keys[-1]."""
    return {RANGE_START: keys[0], RANGE_END: keys[-1]}


# Dagster refuses these in partition keys; a comma would make a key ambiguous in `--classes`.
_FORBIDDEN = ("...", "\a", "\b", "\f", "\n", "\r", "\t", "\v", "\0", ",")


def unusable_key_reason(name: str) -> str | None:
    """Why a class folder name cannot be a partition key, or None if it can."""
    if not name.strip():
        return "blank name"
    if name in {".", ".."} or "/" in name or "\\" in name:
        return "path-like name"
    bad = [token for token in _FORBIDDEN if token in name]
    if bad:
        return f"contains {', '.join(map(repr, bad))}"
    if len(name) > 200:
        return "longer than 200 characters"
    return None


def split_usable(names: list[str]) -> tuple[list[str], dict[str, str]]:
    usable = [n for n in names if unusable_key_reason(n) is None]
    return usable, {n: unusable_key_reason(n) for n in names if unusable_key_reason(n)}
