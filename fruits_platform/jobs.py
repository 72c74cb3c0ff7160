"""Asset jobs: featurize classes, then refresh the global model and its per-class outputs."""

from __future__ import annotations

from dagster import AssetSelection, define_asset_job

from fruits_platform.partitions import fruit_classes

embed_classes_job = define_asset_job(
    "embed_classes",
    selection=AssetSelection.assets("raw_images", "mobilenet_features"),
    partitions_def=fruit_classes,
    description="Catalogue and embed the images of the selected fruit classes.",
)
