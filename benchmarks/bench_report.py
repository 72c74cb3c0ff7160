"""bench.py's report: the typed results of a run, the ratios against the targets, the Markdown table it prints
and writes beside the JSON, and what each row means."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from bench_bare import BarePhase, BareRun
from bench_platform import PlatformPhase
from bench_unpartitioned import UnpartitionedPhase
from common import BATCH, OPTIONAL, Record

TARGETS = {
    "platform_vs_bare": ">= 0.8",
    "backfill_vs_unpartitioned": "<= 1.25",
    "add_class_vs_direct": "<= 2.0",
    "rss_full_vs_small": "<= 1.2",
}
SMALLER = "platform_small_"  # the results' key of the platform at a smaller input size: platform_small_<px>

DEFINITIONS = {
    "bare Keras": "fruits_platform.ml.mobilenet.FeatureExtractor.featurize_bytes (read + decode_batch + "
    "predict_on_batch), batches of 64, one process, TensorFlow on every core; model build excluded; the best of "
    "--repeats passes: the issue's limit. The platform runs one Python worker per core, each with a one-thread "
    "model of its engine (FRUITS_ENGINE, default LiteRT: the same network and weights run by LiteRT's XNNPACK "
    "kernels, built from a flatbuffer the driver converts with TensorFlow's converter), calling it on 1 image at a "
    "time (8 for keras; FRUITS_BATCH_SIZE).",
    "platform end-to-end": "runner.materialize_classes over every class (one key range = one Dagster run with "
    "BackfillPolicy.single_run, one SparkSession; this is also how a UI backfill of all partitions runs), "
    "Spark session start and weights loading included; run --repeats times (the later runs without "
    "feature_quality), interleaved with the unpartitioned run, and the ratios use the best of each.",
    "unpartitioned run": "catalogue_and_embed + fit_feature_model + scale + project over all images in "
    "one fresh SparkSession with the same Spark config, plain Parquet writes, no Dagster.",
    "add class": "on the materialized 1/5 subset, a copy of a class under a new name, registered, then "
    "materialize_classes over every class (materialize_classes([new]) alone refits feature_model, leaves the other "
    "classes' pca_features stale and feature_quality fails); embeddings reused by sha256. direct = catalogue+embed "
    "of its images (Parquet write) + fit_feature_model on all Training embeddings, same session.",
    "5 % new": "mirrored copies of 4 Training images added to one class, materialize_classes over every class "
    "(reuse by sha256) vs the same after deleting that class's embeddings. The small-subset rows after these "
    "(bare/platform 96 px) ran on that modified subset (1,988 images).",
    "peak RSS": "max over the phase of the summed RSS of the process tree (driver + Spark JVM + Python workers), "
    "sampled every 0.25 s from /proc.",
}


@dataclass
class Results(Record):
    """Each phase's result, as it is run (a partial run has the first ones)."""

    bare: BarePhase | None = field(default=None, metadata=OPTIONAL)
    platform_full: PlatformPhase | None = field(default=None, metadata=OPTIONAL)
    unpartitioned: UnpartitionedPhase | None = field(default=None, metadata=OPTIONAL)
    # The seconds of each run of the phases the ratios compare: {"platform_full": [...], "unpartitioned": [...]}
    repeats: dict[str, list[float]] | None = field(default=None, metadata=OPTIONAL)
    platform_small: PlatformPhase | None = field(default=None, metadata=OPTIONAL)
    bare_small: BarePhase | None = field(default=None, metadata=OPTIONAL)
    smaller: dict[str, PlatformPhase] = field(default_factory=dict)  # {px: the platform at that input size}

    def to_json(self) -> dict:
        out = super().to_json()
        smaller = out.pop("smaller")
        return {**out, **{f"{SMALLER}{size}": run for size, run in smaller.items()}}

    @classmethod
    def from_json(cls, data: dict) -> Results:
        smaller = {
            k[len(SMALLER) :]: v for k, v in data.items() if k.startswith(SMALLER) and k[len(SMALLER) :].isdigit()
        }
        return super().from_json({**data, "smaller": smaller})


@dataclass
class Summary(Record):
    ratios: dict[str, float]
    targets: dict[str, str]
    passed: dict[str, bool]


@dataclass(kw_only=True)
class Report(Record):
    started: str
    machine: str
    loadavg_start: list[float]
    loadavg_end: list[float]
    wall_seconds: float
    weights_name: str
    resumed_at: str | None = field(default=None, metadata=OPTIONAL)
    loadavg_at_resume: list[float] | None = field(default=None, metadata=OPTIONAL)
    spark_conf: dict[str, str]
    engine: str
    data: dict
    definitions: dict[str, str] = field(default_factory=lambda: dict(DEFINITIONS))
    results: Results
    max_abs_diff_platform_vs_bare: float
    max_abs_value_bare: float
    summary: Summary | None = None


def compare_features(bare_file: str, output_root: Path) -> tuple[float, float]:
    """Largest absolute difference between the platform's vectors and bare Keras's (same images), and the
    largest absolute value of bare Keras's vectors (for scale)."""
    import numpy as np
    import pyarrow.dataset as ds

    expected = np.load(bare_file)
    uris = json.loads(Path(bare_file + ".uris.json").read_text())
    table = ds.dataset(str(output_root / "mobilenet_features")).to_table(columns=["uri", "features"])
    tail = lambda uri: "/".join(uri.split("/")[-3:])  # split/class/file: the two runs use different roots
    by_uri = {tail(uri): index for index, uri in enumerate(table.column("uri").to_pylist())}
    vectors = table.column("features").combine_chunks().flatten().to_numpy().reshape(table.num_rows, -1)
    actual = vectors[[by_uri[tail(u)] for u in uris]]
    return float(np.abs(actual - expected).max()), float(np.abs(expected).max())


def best_seconds(results: Results, phase: str) -> float:
    """The best of the phase's runs (only the first when the benchmark ran it once)."""
    first = results.platform_full.all_classes.seconds if phase == "platform_full" else results.unpartitioned.seconds
    return min((results.repeats or {}).get(phase) or [first])


def summarize(results: Results) -> Summary:
    bare = results.bare.sizes["224"]
    full = results.platform_full.all_classes
    platform, unpartitioned = best_seconds(results, "platform_full"), best_seconds(results, "unpartitioned")
    ratios = {
        "platform_vs_bare": round(full.images / platform / bare.images_per_second, 3),
        "backfill_vs_unpartitioned": round(platform / unpartitioned, 3),
        "rss_full_vs_small": round(full.peak_rss_mb / results.platform_small.all_classes.peak_rss_mb, 3),
    }
    extra = results.platform_small
    if extra.add_class is not None:
        ratios["add_class_vs_direct"] = round(extra.add_class.seconds / extra.add_class_direct.seconds, 3)
        ratios["class_5pct_new_vs_full_recompute"] = round(
            extra.class_5pct_new.seconds / extra.class_full_recompute.seconds, 3
        )
        ratios["class_5pct_new_vs_full_recompute_mobilenet_only"] = round(
            extra.class_5pct_new.stages_seconds["mobilenet_features"]
            / extra.class_full_recompute.stages_seconds["mobilenet_features"],
            3,
        )
    passed = {}
    for key, rule in TARGETS.items():
        if key in ratios:
            op, bound = rule.split()
            passed[key] = ratios[key] >= float(bound) if op == ">=" else ratios[key] <= float(bound)
    return Summary(ratios=ratios, targets=TARGETS, passed=passed)


# --------------------------------------------------------------------------- the Markdown table


def table(report: Report) -> str:
    """The report as it is printed: what ran where, a row per measurement, the ratios, the definitions."""
    r = report.results
    lines = [*heading(report), "", "| row | images | seconds | images/s | peak RSS MB | notes |"]
    lines += ["|---|---:|---:|---:|---:|---|", *bare_rows(r.bare), *platform_rows(r), *extra_rows(r.platform_small)]
    lines += smaller_rows(r)
    lines += ["", "| ratio | value | target | pass |", "|---|---:|---|---|", *ratio_rows(report.summary)]
    if report.max_abs_diff_platform_vs_bare is not None:
        lines += [
            "",
            (
                f"max |platform − bare Keras| over all vectors: {report.max_abs_diff_platform_vs_bare:.2e} "
                f"(largest |value| {report.max_abs_value_bare:.3g}; the platform runs the same "
                "network with the engine of the run, on batches of another size, which rounds differently)"
            ),
        ]
    lines += ["", "Definitions: " + " ".join(f"**{k}**: {v}" for k, v in DEFINITIONS.items())]
    return "\n".join(lines)


def heading(report: Report) -> list[str]:
    data = report.data
    resumed = f" (resumed at {report.resumed_at}, load then {report.loadavg_at_resume})" if report.resumed_at else ""
    return [
        f"Fruits! feature platform benchmark — {report.started}, {report.machine}",
        (
            f"data: {data['images']} images / {len(data['classes'])} classes "
            f"(1/5 subset: {data['small_images']} images); weights {report.weights_name}; "
            f"platform engine {report.engine}; spark overrides: {report.spark_conf or 'none'}"
        ),
        f"load average (1, 5, 15 min): start {report.loadavg_start}, end {report.loadavg_end}; "
        f"wall time {report.wall_seconds:.0f}s" + resumed,
    ]


def bare_rows(phase: BarePhase) -> list[str]:
    bare = phase.sizes["224"]
    passes = f"; passes {fmt_runs(bare.runs_seconds)}, the best shown" if len(bare.runs_seconds) > 1 else ""
    rows = [
        f"| bare Keras 224 px (read+decode+predict, batch {BATCH}, 1 process) | {phase.images} | "
        f"{bare.read_decode_predict_seconds} | {bare.images_per_second} | {bare.peak_rss_mb} | "
        f"read+decode alone {bare.read_decode_seconds}s, inference ≈ {bare.inference_seconds_estimate}s, "
        f"model build+warm-up {bare.model_build_and_warmup_seconds}s (excluded)" + passes + " |"
    ]
    if bare.model_batch:
        mb = bare.model_batch
        rows.append(
            f"| bare Keras 224 px, same process, model called on {mb.batch_size} images at a time | "
            f"{phase.images} | {mb.read_decode_predict_seconds} | {mb.images_per_second} | | "
            "for reference: the keras engine's model calls, but one process with TensorFlow on every core |"
        )
    if bare.litert:
        lt = bare.litert
        rows.append(
            f"| bare LiteRT 224 px, same process, 1 image per call | {phase.images} | "
            f"{lt.read_decode_predict_seconds} | {lt.images_per_second} | | for reference: the platform's "
            f"default engine (the same network and weights) in one process on every core; "
            f"max |LiteRT − Keras| {lt.max_abs_diff_vs_keras:.1e} |"
        )
    return rows


def platform_rows(r: Results) -> list[str]:
    full, small, unp = r.platform_full.all_classes, r.platform_small.all_classes, r.unpartitioned
    evaluation = r.platform_full.evaluation

    def runs(phase: str) -> str:
        seconds = (r.repeats or {}).get(phase, [])
        return f"; runs {fmt_runs(seconds)}, the ratios use the best" if len(seconds) > 1 else ""

    return [
        (
            f"| platform end-to-end 224 px (materialize_classes: the 4 assets + feature_model, {full.runs} run) | "
            f"{full.images} | {full.seconds} | {full.images_per_second} | {full.peak_rss_mb} | "
            f"per asset {fmt_stages(full.stages_seconds)}; outside the steps {full.overhead_seconds}s"
            f"{runs('platform_full')} |"
        ),
        (
            f"| feature_quality alone (evaluation, after the above) | {full.images} | "
            f"{evaluation and evaluation.seconds} | | | "
            f"accuracy logreg/1-NN on PCA: {evaluation and evaluation.accuracy_logreg_pca} / "
            f"{evaluation and evaluation.accuracy_1nn_pca} |"
        ),
        (
            f"| platform, 1/5 subset 224 px | {small.images} | {small.seconds} | {small.images_per_second} | "
            f"{small.peak_rss_mb} | per asset {fmt_stages(small.stages_seconds)} |"
        ),
        (
            f"| one unpartitioned run (same functions, no Dagster) | {unp.images} | {unp.seconds} | "
            f"{unp.images_per_second} | {unp.peak_rss_mb} | {fmt_stages(unp.stages_seconds)}"
            f"{runs('unpartitioned')} |"
        ),
    ]


def extra_rows(extra: PlatformPhase) -> list[str]:
    if extra.add_class is None:
        return []
    add, direct = extra.add_class, extra.add_class_direct
    inc, rec = extra.class_5pct_new, extra.class_full_recompute
    return [
        (
            f"| add one class ({add.images} images) to the materialized 1/5 subset (all classes re-run) | {add.images} | "
            f"{add.seconds} | | | per asset {fmt_stages(add.stages_seconds)} |"
        ),
        (
            f"| direct: featurize those {direct.images} + refit scaler/PCA | {direct.images} | "
            f"{direct.seconds} | | | featurize {direct.featurize_seconds}s + refit {direct.refit_seconds}s |"
        ),
        (
            f"| re-materialize '{inc.label}' with 5 % new images ({inc.new_images} new) | {inc.images} | "
            f"{inc.seconds} | | | images_embedded={inc.images_embedded}; per asset {fmt_stages(inc.stages_seconds)} |"
        ),
        (
            f"| full recompute of '{rec.label}' (no embedding reused) | {rec.images} | {rec.seconds} | | | "
            f"images_embedded={rec.images_embedded}; per asset {fmt_stages(rec.stages_seconds)} |"
        ),
    ]


def smaller_rows(r: Results) -> list[str]:
    """The bare and platform rows at the optional smaller input size, on the 1/5 subset."""
    rows = []
    sizes: dict[str, BareRun] = r.bare_small.sizes if r.bare_small else {}
    for size, row in sizes.items():
        rows.append(
            f"| bare Keras {size} px, 1/5 subset | {r.bare_small.images} | "
            f"{row.read_decode_predict_seconds} | {row.images_per_second} | {row.peak_rss_mb} | "
            f"read+decode {row.read_decode_seconds}s |"
        )
    for size, phase in r.smaller.items():
        run = phase.all_classes
        rows.append(
            f"| platform {size} px (optional smaller input), 1/5 subset | {run.images} | {run.seconds} | "
            f"{run.images_per_second} | {run.peak_rss_mb} | per asset {fmt_stages(run.stages_seconds)} |"
        )
    return rows


def ratio_rows(summary: Summary) -> list[str]:
    rows = []
    for key, value in summary.ratios.items():
        target = summary.targets.get(key, "")
        verdict = "" if key not in summary.passed else ("yes" if summary.passed[key] else "**no**")
        rows.append(f"| {key} | {value} | {target} | {verdict} |")
    return rows


def fmt_runs(seconds: list[float]) -> str:
    return " / ".join(f"{value}s" for value in seconds)


def fmt_stages(stages: dict) -> str:
    return ", ".join(f"{k} {v}s" for k, v in stages.items())
