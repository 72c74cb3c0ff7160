"""The materializations' metadata: runtime and throughput, Markdown tables, PNG plots (the PCA scree plot)."""

from __future__ import annotations

import base64
import functools
import io
import time

import numpy as np
from dagster import MetadataValue, TableSchema


class Stopwatch:
    def __init__(self):
        self.started = time.perf_counter()

    @property
    def seconds(self) -> float:
        return time.perf_counter() - self.started


def runtime_metadata(stopwatch: Stopwatch) -> dict:
    return {"runtime_seconds": MetadataValue.float(round(stopwatch.seconds, 3))}


def run_metadata(stopwatch: Stopwatch, rows: int, schema: TableSchema, images: int | None = None, **extra) -> dict:
    """Runtime, counts, throughput and schema, the metadata every dataset's materialization carries."""
    seconds = stopwatch.seconds
    images = rows if images is None else images
    return {
        **runtime_metadata(stopwatch),
        "throughput_images_per_second": MetadataValue.float(round(images / seconds, 2) if seconds > 0 else 0.0),
        "dagster/row_count": MetadataValue.int(rows),
        "dagster/column_schema": MetadataValue.table_schema(schema),
        **extra,
    }


def pyplot():
    """matplotlib's pyplot, drawing off-screen (a run worker has no display)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def markdown_table(header: list[str], rows: list, empty: str = "(none)") -> MetadataValue:
    """A Markdown table (the UI renders it), one row saying `empty` when there is none."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += [
        "| " + " | ".join(str(cell) for cell in row) + " |" for row in rows or [(empty, *[""] * (len(header) - 1))]
    ]
    return MetadataValue.md("\n".join(lines))


PAIRS_HEADER = ["class A", "class B", "A predicted as B", "B predicted as A"]


def png_markdown(figure, title: str) -> MetadataValue:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    encoded = base64.b64encode(buffer.getvalue()).decode()
    return MetadataValue.md(f"![{title}](data:image/png;base64,{encoded})")


def scree_plot(explained_variance: list[float], spectrum: list[float], title: str = "PCA scree plot") -> MetadataValue:
    return MetadataValue.md(_scree_markdown(tuple(explained_variance), tuple(spectrum), title))


@functools.lru_cache(maxsize=4)
def _scree_markdown(explained_variance: tuple, spectrum: tuple, title: str) -> str:
    """The plot as Markdown, drawn once per model in a process (feature_model and pca_features show the same)."""
    plt = pyplot()

    k = len(explained_variance)
    shown = spectrum[: max(k * 2, min(len(spectrum), 50))]
    figure, axis = plt.subplots(figsize=(7, 3.6))
    # Two filled step outlines (kept components, then the rest): a bar per component is slow to draw.
    edges = np.arange(len(shown) + 1) + 0.5
    axis.stairs(shown[:k], edges[: min(k, len(shown)) + 1], fill=True, color="#2f7ed8", label="kept")
    if len(shown) > k:
        axis.stairs(shown[k:], edges[k:], fill=True, color="#c8d6e5", label="dropped")
    axis.set_xlabel("principal component")
    axis.set_ylabel("explained variance ratio")
    twin = axis.twinx()
    twin.plot(range(1, len(shown) + 1), np.cumsum(shown), color="#e4572e", marker=".")
    twin.set_ylabel("cumulative")
    twin.set_ylim(0, 1.02)
    axis.set_title(f"{title}: k = {k}, cumulative = {sum(explained_variance):.3f}")
    try:
        return png_markdown(figure, title).value
    finally:
        plt.close(figure)


def pca_metadata(explained_variance: list[float], spectrum: list[float]) -> dict:
    cumulative = [float(v) for v in np.cumsum(explained_variance)]
    return {
        "pca_k": MetadataValue.int(len(explained_variance)),
        "explained_variance_total": MetadataValue.float(round(cumulative[-1], 6) if cumulative else 0.0),
        "explained_variance_by_k": variance_table(explained_variance, cumulative),
        "scree_plot": scree_plot(explained_variance, spectrum),
    }


def variance_table(explained_variance: list[float], cumulative: list[float]) -> MetadataValue:
    """The variance explained by component k and by the first k, for k = 1, 2, 4, ... and the model's k: a
    short table where the k values would make the page hundreds of lines tall (the saved model holds them all)."""
    k = len(explained_variance)
    ks = sorted({2**i for i in range(k.bit_length())} | ({k} if k else set()))
    rows = [(n, f"{explained_variance[n - 1]:.4f}", f"{cumulative[n - 1]:.4f}") for n in ks]
    return markdown_table(["k", "component k", "first k components"], rows)
