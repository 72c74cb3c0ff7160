"""Asset jobs: embed new or changed classes (what the new-images sensor requests); or the whole graph."""

from dagster import AssetSelection, define_asset_job

ALL_ASSETS_JOB = "fruit_features_job"
EMBEDDING = AssetSelection.assets("raw_images", "mobilenet_features")
# What the model's refit changes, for every embedded class: what the automation sensor requests after an embedding.
REFRESH = EMBEDDING.downstream(include_self=False)

embed_classes_job = define_asset_job(
    "embed_classes",
    selection=EMBEDDING,
    description="Catalogue and embed the images of the selected fruit classes.",
)

all_assets_job = define_asset_job(
    ALL_ASSETS_JOB,
    selection=AssetSelection.all(),
    description="Every asset for the selected classes: catalogue, embeddings, model fit, scaled and PCA features, "
    "evaluation.",
)
