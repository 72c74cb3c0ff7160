"""The IO manager of `feature_model`: the fitted PipelineModel saved at `<output_root>/feature_model`
(swapped in whole, with the record of what it was fitted on), given as a typed input to the assets
that apply it."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from functools import cached_property

from dagster import ConfigurableIOManager, Failure, InputContext, MetadataValue, OutputContext
from dagster_pyspark import LazyPySparkResource
from pydantic import PrivateAttr
from pyspark.ml import PipelineModel

from fruits_platform.ml.identify import MANIFEST
from fruits_platform.resources.storage import FruitsStorage
from fruits_platform.spark.datasets import HadoopFs, qualify, read_json, replacing, write_json
from fruits_platform.spark.jvm import model_fingerprint
from fruits_platform.spark.reduction import ReductionSummary

FIT_RECORD = "fit_record"  # what the saved model was fitted on, beside its stages


@dataclass(frozen=True)
class FittedModel:
    """A PipelineModel (StandardScaler, PCA) and its fit record: `inputs` (a version of the Training images,
    weights and settings it was fitted on), `summary` and `spark_version`."""

    model: PipelineModel
    record: dict

    @property
    def summary(self) -> ReductionSummary | None:  # None for a model saved without its record
        return ReductionSummary(**self.record["summary"]) if "summary" in self.record else None

    @cached_property
    def fingerprint(self) -> str:
        return model_fingerprint(self.model)

    @property
    def scaler(self):
        return self.model.stages[0]

    @property
    def pca(self):
        return self.model.stages[1]

    @classmethod
    def fitted(cls, model: PipelineModel, inputs: str, summary: ReductionSummary, spark_version: str) -> FittedModel:
        # Through JSON, as a later load reads it (tuples become lists, int keys strings).
        record = json.loads(json.dumps({"inputs": inputs, "summary": asdict(summary), "spark_version": spark_version}))
        return cls(model, record)


class FeatureModelIOManager(ConfigurableIOManager):
    """Saves the `FittedModel` an asset returns under `<output_root>/<asset>` and loads it for the assets that
    take it as input, once per run (every class of a run shares the one model)."""

    storage: FruitsStorage
    spark: LazyPySparkResource
    _loaded: dict = PrivateAttr(default_factory=dict)

    def _path(self, context) -> str:
        return qualify(self.storage.asset_root(context.asset_key.path[-1]))

    def saved(self, asset_name: str) -> FittedModel | None:
        """The model saved for `asset_name`, or None when there is none."""
        target = qualify(self.storage.asset_root(asset_name))
        if target not in self._loaded:
            session = self.spark.spark_session
            if not HadoopFs(session, target).exists(target):
                return None
            self._loaded[target] = FittedModel(
                PipelineModel.load(target), read_json(session, f"{target}/{FIT_RECORD}") or {}
            )
        return self._loaded[target]

    def handle_output(self, context: OutputContext, fitted: FittedModel) -> None:
        target = self._path(context)
        previous = self.saved(context.asset_key.path[-1])
        if previous is None or previous.record != fitted.record:
            session = self.spark.spark_session
            with replacing(HadoopFs(session, target), target) as staged:
                fitted.model.write().overwrite().save(staged)
                write_json(session, f"{staged}/{FIT_RECORD}", fitted.record)
        self._loaded[target] = fitted
        context.add_output_metadata({"path": MetadataValue.path(target)})

    def load_input(self, context: InputContext) -> FittedModel:
        fitted = self.saved(context.upstream_output.asset_key.path[-1])
        if fitted is None:
            raise Failure(
                allow_retries=False,
                description=f"No fitted model at {self._path(context.upstream_output)}: materialize feature_model first, or set "
                "FRUITS_OUTPUT_ROOT to the output root it was written to",
            )
        return fitted


@dataclass(frozen=True)
class AppModelFiles:
    """The app's model: each variant's LiteRT flatbuffer by name ("float32", "int8"), and the manifest (the class
    names in the order of its probabilities, the input size, the fingerprints it was built from)."""

    name: str  # the files' stem: carries the weights' and the feature model's fingerprints
    variants: dict[str, bytes]
    manifest: dict

    def file_name(self, variant: str) -> str:
        return f"{self.name}-{variant}.tflite"


class AppModelIOManager(ConfigurableIOManager):
    """Writes `AppModelFiles` as `<output_root>/<asset>/` (each variant's .tflite and manifest.json), the folder
    swapped in whole; reads it back for an asset that takes it as input."""

    storage: FruitsStorage
    spark: LazyPySparkResource

    def handle_output(self, context: OutputContext, files: AppModelFiles) -> None:
        session = self.spark.spark_session
        target = qualify(self.storage.asset_root(context.asset_key.path[-1]))
        fs = HadoopFs(session, target)
        with replacing(fs, target) as staged:
            for variant, flatbuffer in files.variants.items():
                fs.write_bytes(f"{staged}/{files.file_name(variant)}", flatbuffer)
            fs.write_text(f"{staged}/{MANIFEST}", json.dumps(files.manifest, indent=1))
        context.add_output_metadata(
            {"path": MetadataValue.path(target), "manifest": MetadataValue.path(f"{target}/{MANIFEST}")}
        )

    def load_input(self, context: InputContext) -> AppModelFiles:
        target = qualify(self.storage.asset_root(context.upstream_output.asset_key.path[-1]))
        fs = HadoopFs(self.spark.spark_session, target)
        if not fs.exists(f"{target}/{MANIFEST}"):
            raise Failure(allow_retries=False, description=f"No app model at {target}: materialize app_model first")
        manifest = json.loads(fs.read_text(f"{target}/{MANIFEST}"))
        variants = {name: fs.read_bytes(f"{target}/{entry['file']}") for name, entry in manifest["variants"].items()}
        return AppModelFiles(manifest["name"], variants, manifest)
