"""`feature_quality`: how well the features separate the fruit classes, and what the PCA reduction costs."""

from dagster import AssetExecutionContext, AutomationCondition, Failure, MaterializeResult, MetadataValue, asset
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from fruits_platform.assets.feature_model import weights_source
from fruits_platform.assets.metadata import (
    PAIRS_HEADER,
    Stopwatch,
    markdown_table,
    png_markdown,
    pyplot,
    runtime_metadata,
)
from fruits_platform.assets.specs import EVERY_CLASS_ROWS, PER_CLASS, StepLauncherParam
from fruits_platform.assets.versioned_writes import content_hash, data_version
from fruits_platform.ml.quality import CLASSIFIERS, LOGREG, NEAREST, QualityReport
from fruits_platform.resources.model import ReductionSettings
from fruits_platform.resources.model_store import FittedModel
from fruits_platform.spark.evaluation import evaluate_model

NAMES = {LOGREG: "logistic regression", NEAREST: "1-NN (Euclidean)"}
FEATURES = {"pca": "PCA", "scaled": "scaled 1280-d"}


def accuracy_curve_plot(report: QualityReport) -> MetadataValue:
    plt = pyplot()
    ks = sorted(report.curve)
    figure, axis = plt.subplots(figsize=(7, 3.8))
    axis.plot(ks, [report.curve[k][NEAREST] for k in ks], marker="o", color="#e4572e", label=NAMES[NEAREST])
    for classifier, colour in zip(CLASSIFIERS, ["#2f7ed8", "#e4572e"]):
        axis.axhline(
            report.accuracy(classifier, "scaled"),
            color=colour,
            linestyle="--",
            linewidth=1,
            label=f"{NAMES[classifier]}, unreduced",
        )
    axis.axvline(report.pca_k, color="#555555", linestyle=":", linewidth=1, label=f"model k = {report.pca_k}")
    if report.variance_k != report.pca_k:
        axis.axvline(
            report.variance_k, color="#999999", linestyle="-.", linewidth=1, label=f"variance k = {report.variance_k}"
        )
    axis.set_xscale("log", base=2)
    axis.set_xticks(ks, [str(k) for k in ks])
    axis.set_xlabel("principal components kept (k)")
    axis.set_ylabel("Test accuracy")
    axis.set_title(f"Accuracy vs k ({len(report.classes)} classes, {report.test_images} Test images)")
    axis.legend(fontsize=7, loc="lower right")
    try:
        return png_markdown(figure, "Accuracy vs k")
    finally:
        plt.close(figure)


def per_class_table(report: QualityReport) -> MetadataValue:
    keys = [(c, f) for c in CLASSIFIERS for f in FEATURES]
    support = report.scores[keys[0]].support
    header = "| class | Test images | " + " | ".join(f"{NAMES[c]}, {FEATURES[f]}" for c, f in keys) + " |"
    lines = [header, "|" + "---|" * (len(keys) + 2)]
    per_class = {key: report.scores[key].per_class_accuracy for key in keys}
    for name in report.classes:
        cells = [f"{per_class[key][name]:.3f}" if name in per_class[key] else "n/a" for key in keys]
        lines.append(f"| {name} | {support[name]} | " + " | ".join(cells) + " |")
    return MetadataValue.md("\n".join(lines))


def confused_pairs_table(report: QualityReport, top: int = 10) -> tuple[MetadataValue, dict]:
    values = {c: [list(pair) for pair in report.scores[(c, "pca")].confused_pairs(top)] for c in CLASSIFIERS}
    rows = [(f"{NAMES[c]}, PCA", *pair) for c in CLASSIFIERS for pair in values[c]]
    return markdown_table(["classifier", *PAIRS_HEADER], rows, "(no confusion)"), values


EVALUATED_COLUMNS = ["uri", "label", "split", "sha256", "features"]


@asset(
    **PER_CLASS,
    ins={"mobilenet_features": EVERY_CLASS_ROWS},
    output_required=False,  # fewer than two classes: nothing to classify, no materialization
    kinds={"spark", "pyspark.ml"},
    tags={"layer": "evaluation"},
    code_version="1",
    automation_condition=AutomationCondition.eager(),
    description=(
        "How well the features separate the fruit classes: a logistic regression (pyspark.ml's objective, fitted in "
        "NumPy) and a 1-nearest-neighbour classifier (Euclidean) trained on the Training split and scored on the Test "
        "split, on the PCA features and on the unreduced scaled features that `feature_model` gives every class's embeddings (what "
        "`pca_features` and `scaled_features` hold once refreshed), with macro-F1, per-class accuracy, the most "
        "confused pairs, and the 1-NN accuracy-vs-k curve of a PCA refitted on the Training split (to choose k by "
        "accuracy, see `FRUITS_PCA_K_RULE`). Each class's partition adds that class's own accuracy. Records which "
        "weights produced the features. Beyond `FRUITS_QUALITY_MAX_IMAGES` (10,000) images, a deterministic sample "
        "of them (`sample_fraction`). Test images of classes without Training images are left out "
        "(`classes_without_training_images`). Needs two classes."
    ),
)
def feature_quality(
    context: AssetExecutionContext,
    pyspark_step_launcher: StepLauncherParam,
    reduction: ReductionSettings,
    mobilenet_features: DataFrame,
    feature_model: FittedModel,
):
    stopwatch = Stopwatch()
    found = embedded(mobilenet_features)
    if len(found["labels"]) < 2:
        context.log.warning(f"{len(found['labels'])} class(es) embedded: the evaluation needs two; none made")
        return
    signatures = sorted(found["signatures"])
    report = evaluate(mobilenet_features, feature_model, reduction, found["rows"])
    for label in context.partition_keys:
        context.add_asset_metadata(class_scores(report, label), partition_key=label)
    source = weights_source(context.instance, signatures[0]) if len(signatures) == 1 else "mixed"
    yield MaterializeResult(
        metadata={
            **runtime_metadata(stopwatch),
            **report_metadata(report, reduction.accuracy_tolerance),
            "model_signature": MetadataValue.text(",".join(signatures)),
            "weights_source": MetadataValue.text(source),
            "feature_model_fingerprint": MetadataValue.text(feature_model.fingerprint),
        },
        # Inputs: the evaluated rows, the fitted model and the weights that produced the features.
        data_version=data_version(found["content"], f"{feature_model.fingerprint}|{','.join(signatures)}"),
    )


def evaluate(features: DataFrame, feature_model: FittedModel, reduction: ReductionSettings, rows: int) -> QualityReport:
    """`evaluate_model` of the embeddings (`rows` of them) with the fitted model; a step failure when they
    cannot be evaluated."""
    try:
        return evaluate_model(
            features.select(*EVALUATED_COLUMNS),
            feature_model.model,
            variance_threshold=reduction.variance_threshold,
            max_images=reduction.evaluation_max_images,
            total_images=rows,
        )
    except ValueError as error:
        raise Failure(description=f"Cannot evaluate the features: {error}") from error


def embedded(features: DataFrame):
    """In one pass: the classes and model signatures of the embeddings, their rows, and the content of the
    evaluated rows (its data version's input)."""
    return features.agg(
        F.collect_set("label").alias("labels"),
        F.collect_set("model_signature").alias("signatures"),
        F.count("*").alias("rows"),
        content_hash(["uri", "sha256", "split"]).alias("content"),
    ).first()


def class_scores(report: QualityReport, label: str) -> dict:
    """One class's own figures, for its partition: its Test images scored (row count) and their accuracy."""
    support = report.scores[(LOGREG, "pca")].support
    scores = {
        f"class_accuracy_{classifier}_{features}": round(
            report.scores[(classifier, features)].per_class_accuracy[label], 4
        )
        for classifier in CLASSIFIERS
        for features in FEATURES
        if label in report.scores[(classifier, features)].per_class_accuracy
    }
    return {"dagster/row_count": support.get(label, 0), **scores}


def report_metadata(report: QualityReport, tolerance: float) -> dict:
    scores = {
        f"{metric}_{classifier}_{features}": MetadataValue.float(
            round(getattr(report.scores[(classifier, features)], metric), 4)
        )
        for classifier in CLASSIFIERS
        for features in FEATURES
        for metric in ("accuracy", "macro_f1")
    }
    curve = {str(k): {c: round(v, 4) for c, v in accuracies.items()} for k, accuracies in sorted(report.curve.items())}
    pairs_table, pairs = confused_pairs_table(report)
    return {
        **scores,
        "chance_accuracy": MetadataValue.float(round(1 / len(report.classes), 4)),
        "reduction_cost_logreg": MetadataValue.float(
            round(report.accuracy(LOGREG, "scaled") - report.accuracy(LOGREG, "pca"), 4)
        ),
        "reduction_cost_1nn": MetadataValue.float(
            round(report.accuracy(NEAREST, "scaled") - report.accuracy(NEAREST, "pca"), 4)
        ),
        "per_class_accuracy": per_class_table(report),
        "confused_pairs": pairs_table,
        "confused_pairs_values": MetadataValue.json(pairs),
        "accuracy_vs_k": MetadataValue.json(curve),
        "accuracy_vs_k_plot": accuracy_curve_plot(report),
        f"smallest_k_within_tolerance_{NEAREST}": MetadataValue.int(report.smallest_k_within(NEAREST, tolerance) or 0),
        "accuracy_tolerance": MetadataValue.float(tolerance),
        "pca_k": MetadataValue.int(report.pca_k),
        "variance_k": MetadataValue.int(report.variance_k),
        "variance_threshold": MetadataValue.float(report.variance_threshold),
        "classes": MetadataValue.int(len(report.classes)),
        "class_names": MetadataValue.json(report.classes),
        "training_images": MetadataValue.int(report.training_images),
        "test_images": MetadataValue.int(report.test_images),
        "images_available": MetadataValue.int(report.total_images),
        "sample_fraction": MetadataValue.float(round(report.sample_fraction, 6)),
        "classes_without_training_images": MetadataValue.json(report.untrained_classes),
    }
