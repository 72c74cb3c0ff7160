"""Asset jobs: embed new or changed classes; or the whole graph (CLI, backfills)."""

from dagster import AssetSelection, define_asset_job

from fruits_platform.partitions import fruit_classes

ALL_ASSETS_JOB = "fruit_features_job"

embed_classes_job = define_asset_job(
    "embed_classes",
    selection=AssetSelection.assets("raw_images", "mobilenet_features"),
    partitions_def=fruit_classes,
    description="Catalogue and embed the images of the selected fruit classes.",
)

all_assets_job = define_asset_job(
    ALL_ASSETS_JOB,
    selection=AssetSelection.all(),
    partitions_def=fruit_classes,
    description="Every asset for the selected classes: catalogue, embeddings, model fit, scaled and PCA features.",
)
