"""The MLflow model registry, as the pipeline uses it: read the champion, register a new version.

A version is an MLflow pyfunc model of the exported bundle (:mod:`forecast.export.mlflow_model`):
``mlflow.pyfunc.load_model("models:/<name>@champion").predict(observations)`` works anywhere
``forecast`` is installed.

A registered version carries what the promotion gate needs later: the evaluation metrics it was
promoted with (tag ``pipeline.metrics``, JSON, since metric names such as ``minFDE@6`` are not valid
tag keys) and the hashes of the pipeline steps that made it
(``pipeline.evaluate_hash``, ``pipeline.export_hash``).
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

from forecast.pipeline.gate import RegisteredModel

METRICS_TAG = "pipeline.metrics"


class MlflowRegistry:
    def __init__(self, tracking_uri: str, experiment: str = "forecast-pipeline"):
        from mlflow.tracking import MlflowClient

        warnings.filterwarnings("ignore", ".*MLflow Model Registry.*")
        self.client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
        self.tracking_uri = tracking_uri
        self.experiment = experiment

    def champion(self, name: str, alias: str) -> RegisteredModel | None:
        """The version ``alias`` points at, with its recorded metrics; None if nothing is registered."""
        from mlflow.exceptions import MlflowException

        try:
            mv = self.client.get_model_version_by_alias(name, alias)
        except MlflowException:
            return None
        tags = dict(mv.tags or {})
        try:
            metrics = {k: float(v) for k, v in json.loads(tags.get(METRICS_TAG, "{}")).items()}
        except (ValueError, TypeError, AttributeError):
            metrics = {}
        return RegisteredModel(name, str(mv.version), metrics, tags.get("pipeline.evaluate_hash"))

    def register(self, name: str, alias: str, bundle_dir: Path, metrics: dict[str, float], tags: dict[str, str],
                 run_id: str | None = None) -> str:
        """Log ``bundle_dir`` as an MLflow pyfunc model in ``run_id`` (or a new run), register it, point ``alias`` at it.

        The model wraps the runtime's Predictor (:mod:`forecast.export.mlflow_model`), so
        ``mlflow.pyfunc.load_model(f"models:/{name}@{alias}")`` predicts from observations.
        Idempotent: a version already registered from the same export (tag ``pipeline.export_hash``)
        is reused, so a rerun after a crash does not register twice. Returns the version number.
        """
        from mlflow.exceptions import MlflowException

        from forecast.export.mlflow_model import log_bundle_model

        export_hash = tags.get("pipeline.export_hash")
        try:
            self.client.get_registered_model(name)
        except MlflowException:
            self.client.create_registered_model(name, description="Forecasting bundles promoted by the pipeline gate")
        for mv in self.client.search_model_versions(f"name='{name}'"):
            if export_hash and (mv.tags or {}).get("pipeline.export_hash") == export_hash:
                self.client.set_registered_model_alias(name, alias, mv.version)
                return str(mv.version)
        all_tags = {**tags, METRICS_TAG: json.dumps({k: float(v) for k, v in metrics.items()}, sort_keys=True)}
        logged = log_bundle_model(bundle_dir, self.tracking_uri, run_id=run_id, experiment=self.experiment,
                                  registered_name=name, alias=alias, version_tags=all_tags)
        return str(logged.version)
