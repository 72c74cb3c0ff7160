"""Fruits! feature platform: images -> MobileNetV2 embeddings -> StandardScaler -> PCA, on Spark + Dagster."""
