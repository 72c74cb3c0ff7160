"""`app_model`: the on-device model of the Fruits! app, built from `feature_model` and `pca_features`."""

import hashlib
import json

import numpy as np
from dagster import AssetExecutionContext, DataVersion, Failure, MetadataValue, Output, asset
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from fruits_platform.assets.metadata import PAIRS_HEADER, Stopwatch, markdown_table, runtime_metadata
from fruits_platform.assets.specs import EVERY_CLASS_ROWS, PER_CLASS, StepLauncherParam
from fruits_platform.ml.app_model import (
    FLOAT32,
    VariantReport,
    build_variants,
    evaluate_variants,
    load_photos,
    read_photos,
    reduction_layer,
    train_classifier,
)
from fruits_platform.ml.isolated import NativeCrash, run_isolated
from fruits_platform.resources.model import AppModelSettings, MobileNetWeights
from fruits_platform.resources.model_store import AppModelFiles, FittedModel
from fruits_platform.spark.evaluation import evaluation_sample
from fruits_platform.spark.reduction import HELD_OUT, with_held_out

# The float variant computes what the platform computes: beyond this (relative to the features' scale), the
# pca_features were made with other weights or another feature_model than the ones configured now.
FLOAT_TOLERANCE = 1e-3


@asset(
    **PER_CLASS,
    ins={"pca_features": EVERY_CLASS_ROWS},
    io_manager_key="app_model_store",
    output_required=False,  # fewer than two classes with Training images: nothing to classify
    kinds={"tensorflow", "keras"},
    tags={"layer": "app"},
    code_version="2",
    description=(
        "The app's model: one LiteRT file that takes a photo (RGB uint8 at the model's input size) and gives its "
        "k PCA features (equal to `pca_features`) and the probabilities of every class, from a classifier trained "
        "on the Training split's `pca_features` (softmax regression or a one-hidden-layer MLP, chosen on held-out "
        "Training images). Two variants, float32 and 8-bit (calibrated on Training images), in "
        "`<output-root>/app_model/` with `manifest.json` (class names, input size, fingerprints). Measured on "
        "Test images: size, latency, top-1/top-5 accuracy, feature difference, confused pairs. Built on demand."
    ),
)
def app_model(
    context: AssetExecutionContext,
    pyspark_step_launcher: StepLauncherParam,
    weights: MobileNetWeights,
    app: AppModelSettings,
    pca_features: DataFrame,
    feature_model: FittedModel,
):
    stopwatch = Stopwatch()
    rows = pca_features.select("uri", "label", "split", "sha256", "pca_features")
    training = rows.where(F.col("split") == "Training")
    classes = sorted(row[0] for row in training.select("label").distinct().collect())
    if len(classes) < 2:
        context.log.warning(f"no app model: the classifier needs Training images of two classes, found {len(classes)}")
        return
    fit = sample_rows(with_held_out(training), app.training_images)
    context.log.info(f"training the classifier on {len(fit)} Training images of {len(classes)} classes")
    classifier = train_classifier(classes, fit["label"], np.stack(fit["pca_features"].to_numpy()), fit[HELD_OUT])
    loaded = weights.load()
    calibration = sample_rows(training, app.calibration_images)
    context.log.info(
        f"classifier: {classifier.kind} (validation {classifier.validation}); converting and calibrating on "
        f"{len(calibration)} Training images"
    )
    variants, skipped = convert_variants(context, loaded, feature_model, classifier, calibration)
    test = sample_rows(
        rows.where(F.col("split") == "Test").where(F.col("label").isin(classifier.classes)), app.evaluation_images
    )
    reports = measure_variants(variants, classifier, test, loaded)
    built = app_files(loaded, feature_model, classifier, variants)
    for label in context.partition_keys:
        context.add_asset_metadata(class_accuracy(reports[FLOAT32], label), partition_key=label)
    metadata = app_metadata(stopwatch, loaded, feature_model, classifier, len(calibration), test, skipped, reports)
    yield Output(built, metadata=metadata, data_version=built_from(built))


def convert_variants(context, loaded, feature_model: FittedModel, classifier, calibration) -> tuple[dict, dict]:
    """The app model's LiteRT variants ({variant: flatbuffer}) and those not built ({variant: why}): the
    conversion runs in a child process, so that a native crash fails the step in one line."""
    kernel, bias = reduction_layer(
        feature_model.scaler.mean.toArray(), feature_model.scaler.std.toArray(), feature_model.pca.pc.toArray()
    )
    photos = list(load_photos(calibration["uri"].tolist(), loaded.image_size))
    try:
        variants, skipped = run_isolated(
            "the LiteRT conversion", build_variants, loaded, kernel, bias, classifier, photos
        )
    except NativeCrash as error:
        raise Failure(description=str(error), allow_retries=False) from error
    for variant, reason in skipped.items():
        context.log.warning(f"no {variant} variant: {reason}")
    return variants, skipped


def measure_variants(variants: dict, classifier, test, loaded) -> dict[str, VariantReport]:
    """Each variant run on the `test` photos as the app runs it; fails the step when the float variant's PCA
    features are not `pca_features` (they were made with other weights or another feature_model)."""
    labels = np.array([classifier.classes.index(label) for label in test["label"]], dtype=np.int64)
    k = len(test["pca_features"].iloc[0]) if len(test) else 0
    expected = np.stack(test["pca_features"].to_numpy()) if len(test) else np.zeros((0, k))
    reports = evaluate_variants(
        variants, classifier.classes, read_photos(test["uri"], loaded.image_size), labels, expected
    )
    scale = float(np.abs(expected).max()) if len(expected) else 1.0
    if reports[FLOAT32].max_feature_difference > FLOAT_TOLERANCE * max(scale, 1.0):
        raise Failure(
            allow_retries=False,
            description=f"the app model's PCA features differ from pca_features by up to "
            f"{reports[FLOAT32].max_feature_difference:.4g}: pca_features were computed with other weights or "
            f"another feature_model than the configured ones ({loaded.source}); materialize the graph again",
        )
    return reports


def app_files(loaded, feature_model: FittedModel, classifier, variants: dict[str, bytes]) -> AppModelFiles:
    """The variants and their manifest, named by the weights' and the feature model's fingerprints."""
    name = f"fruits-app-{loaded.fingerprint}-{feature_model.fingerprint[:16]}"
    manifest = {
        "name": name,
        "classes": classifier.classes,
        "image_size": loaded.image_size,
        "input": "photo: uint8 RGB, image_size x image_size x 3 (MobileNetV2 preprocessing inside the model)",
        "outputs": {"pca_features": feature_model.pca.getK(), "probabilities": len(classifier.classes)},
        "weights": {"source": loaded.source, "fingerprint": loaded.fingerprint},
        "feature_model_fingerprint": feature_model.fingerprint,
        "classifier": classifier.kind,
        "variants": {
            variant: {"file": f"{name}-{variant}.tflite", "sha256": hashlib.sha256(flatbuffer).hexdigest()}
            for variant, flatbuffer in variants.items()
        },
    }
    return AppModelFiles(name, variants, manifest)


def built_from(built: AppModelFiles) -> DataVersion:
    """What the model was built from (the files' bytes also carry Keras's layer names, which differ between builds)."""
    inputs = {key: value for key, value in built.manifest.items() if key != "variants"}
    return DataVersion(hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()[:24])


def app_metadata(stopwatch, loaded, feature_model, classifier, calibrated: int, test, skipped, reports) -> dict:
    return {
        **runtime_metadata(stopwatch),
        "classes": MetadataValue.int(len(classifier.classes)),
        "class_names": MetadataValue.json(classifier.classes),
        "weights_source": MetadataValue.text(loaded.source),
        "weights_fingerprint": MetadataValue.text(loaded.fingerprint),
        "feature_model_fingerprint": MetadataValue.text(feature_model.fingerprint),
        "classifier": MetadataValue.text(classifier.kind),
        "classifier_validation": MetadataValue.json(
            {kind: {k: round(v, 5) for k, v in figures.items()} for kind, figures in classifier.validation.items()}
        ),
        "training_images": MetadataValue.int(classifier.training_images),
        "calibration_images": MetadataValue.int(calibrated),
        "test_images": MetadataValue.int(len(test)),
        **{f"{variant}_not_built": MetadataValue.text(reason) for variant, reason in skipped.items()},
        **{key: value for report in reports.values() for key, value in variant_metadata(report).items()},
        "confused_pairs": confused_pairs_table(reports[FLOAT32]),
    }


def sample_rows(frame: DataFrame, images: int):
    """A deterministic sample of about `images` rows (0: all), as pandas, in a stable order."""
    sampled, _, _ = evaluation_sample(frame, images or None)
    return sampled.orderBy("label", "sha256", "uri").toPandas()


def variant_metadata(report: VariantReport) -> dict:
    prefix = report.variant
    return {
        f"{prefix}_size_bytes": MetadataValue.int(report.size_bytes),
        f"{prefix}_latency_ms": MetadataValue.float(round(report.latency_ms, 3)),
        f"{prefix}_top1_accuracy": MetadataValue.float(round(report.top1, 4)),
        f"{prefix}_top5_accuracy": MetadataValue.float(round(report.top5, 4)),
        f"{prefix}_max_feature_difference": MetadataValue.float(float(f"{report.max_feature_difference:.4g}")),
        # What the difference compares with: 8-bit weights and activations round every layer, float32 only sums.
        f"{prefix}_max_feature_difference_share": MetadataValue.text(
            f"{report.max_feature_difference / report.feature_scale:.2%} of the largest |pca_features| value "
            f"({report.feature_scale:.4g}); top-1 accuracy is what the app sees"
            if report.feature_scale
            else "no Test photo measured"
        ),
    }


def class_accuracy(report: VariantReport, label: str) -> dict:
    """One class's own figures for its partition: its Test images measured and the float model's top-1 on them."""
    accuracy = report.scores.per_class_accuracy
    return {
        "class_test_images": report.scores.support.get(label, 0),
        "class_top1_accuracy_float32": round(accuracy.get(label, 0.0), 4),
    }


def confused_pairs_table(report: VariantReport, top: int = 10) -> MetadataValue:
    return markdown_table(PAIRS_HEADER, report.scores.confused_pairs(top), "(no confusion)")
