"""The MLflow view of a run: a parent run (experiment forecast-pipeline by default), one nested run per step with its status."""

from __future__ import annotations

from mlflow.tracking import MlflowClient

from forecast.pipeline.gate import GateConfig
from forecast.pipeline.runner import RunOptions, run_pipeline
from forecast.pipeline.tracking import MlflowTracker
from tests.pipeline.test_runner import gated_chain


def test_parent_and_nested_runs(tmp_path, mlflow_uri):
    uri = mlflow_uri
    steps = gated_chain(1.0)
    opts = RunOptions(name="t", progress=False, log=lambda m: None, params={"gate.max_metrics.minFDE@6": "2"},
                      gate=GateConfig(enabled=True, max_metrics={"minFDE@6": 2.0}))
    run_pipeline(steps, tmp_path / "work", opts, MlflowTracker(uri, "test-tracking"))
    run_pipeline(steps, tmp_path / "work", opts, MlflowTracker(uri, "test-tracking"))  # everything skipped

    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("test-tracking")
    runs = client.search_runs([exp.experiment_id], order_by=["start_time ASC"])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert len(parents) == 2 and all(p.info.status == "FINISHED" for p in parents)
    first, second = parents
    assert first.data.tags["git.revision"] and first.data.tags["gate.passed"] == "true"
    assert first.data.params["gate.max_metrics.minFDE_6"] == "2"  # '@' is not allowed in MLflow names
    assert "train/duration_s" in first.data.metrics
    children = {r.data.tags["pipeline.step"]: r for r in runs if r.data.tags.get("mlflow.parentRunId") == first.info.run_id}
    assert set(children) == {"simulate", "ingest", "train", "evaluate", "export"}
    assert all(c.data.tags["pipeline.status"] == "ran" and "duration_s" in c.data.metrics for c in children.values())
    again = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == second.info.run_id]
    assert {r.data.tags["pipeline.status"] for r in again} == {"skipped"}
