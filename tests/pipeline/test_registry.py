"""The MLflow registry as the gate and the register step use it."""

from __future__ import annotations

import shutil

import pytest

from forecast.pipeline.registry import MlflowRegistry


@pytest.mark.slow  # logs the tiny bundle as an MLflow model twice (seconds each)
def test_register_then_champion(exported, tmp_path, mlflow_uri, monkeypatch):
    import mlflow

    from forecast.export.mlflow_model import input_example, tracking

    monkeypatch.chdir(tmp_path)  # MLflow's default artifact root is ./mlruns
    bundle = tmp_path / "bundle"
    shutil.copytree(exported / "bundle", bundle)
    reg = MlflowRegistry(mlflow_uri, "test-registry")
    name = f"m-{tmp_path.name}"
    assert reg.champion(name, "champion") is None
    tags = {"pipeline.export_hash": "e1", "pipeline.evaluate_hash": "v1"}
    v1 = reg.register(name, "champion", bundle, {"minFDE@6": 1.25}, tags)
    assert v1 == "1"
    champ = reg.champion(name, "champion")
    assert champ.version == "1" and champ.metrics == {"minFDE@6": 1.25} and champ.evaluate_hash == "v1"
    assert reg.register(name, "champion", bundle, {"minFDE@6": 1.25}, tags) == "1"  # same export: no new version
    v2 = reg.register(name, "champion", bundle, {"minFDE@6": 1.0}, {"pipeline.export_hash": "e2"})
    assert v2 == "2" and reg.champion(name, "champion").metrics["minFDE@6"] == 1.0
    # the version is a pyfunc model that predicts
    with tracking(mlflow_uri):
        model = mlflow.pyfunc.load_model(f"models:/{name}@champion")
    out = model.predict(input_example(bundle))
    assert set(out["track_id"]) == {"car-1", "bike-1", "ped-1"}


class _Upstream:
    """Stand-in train/evaluate/export steps writing what the register step reads (the tiny bundle as export)."""

    def __init__(self, name: str, inputs: tuple[str, ...], write):
        self.name, self.inputs, self.resumable, self.write = name, inputs, False, write

    def spec(self) -> dict:
        return {}

    def run(self, ctx):
        from forecast.pipeline.steps import StepResult

        self.write(ctx.out)
        return StepResult()


@pytest.mark.slow
def test_register_step_in_a_tracked_run_registers_a_pyfunc_champion(exported, tmp_path, mlflow_uri, monkeypatch):
    """The register step logs the model into its own nested MLflow run, after the gate passed."""
    import json

    import mlflow
    from mlflow.tracking import MlflowClient

    from forecast.export.mlflow_model import input_example, tracking
    from forecast.pipeline.config import RegisterStepConfig
    from forecast.pipeline.gate import GateConfig
    from forecast.pipeline.runner import RunOptions, run_pipeline
    from forecast.pipeline.steps import RegisterStep
    from forecast.pipeline.tracking import MlflowTracker

    monkeypatch.chdir(tmp_path)
    metrics = {"split": "test", "overall": {"minFDE@6": 1.0}, "baselines": {"constant_velocity": {"overall": {"minFDE@6": 2.0}}}}
    steps = [
        _Upstream("train", (), lambda out: (out / "train_summary.json").write_text(json.dumps({"run_id": "r1"}))),
        _Upstream("evaluate", ("train",), lambda out: (out / "metrics.json").write_text(json.dumps(metrics))),
        _Upstream("export", ("train",), lambda out: shutil.copytree(exported / "bundle", out / "bundle")),
        RegisterStep(RegisterStepConfig(model_name=f"champ-{tmp_path.name}"), MlflowRegistry(mlflow_uri, "test-reg")),
    ]
    opts = RunOptions(name="t", progress=False, log=lambda m: None,
                      gate=GateConfig(enabled=True, must_beat_baselines=["constant_velocity"]))
    result = run_pipeline(steps, tmp_path / "work", opts, MlflowTracker(mlflow_uri, "test-reg"))
    assert result.status == "ok" and result.gate.passed, result.error
    info = json.loads((result.path("register") / "registered.json").read_text())
    client = MlflowClient(mlflow_uri, mlflow_uri)
    mv = client.get_model_version_by_alias(info["model_name"], "champion")
    assert str(mv.version) == info["version"] == "1"
    step_run = client.get_run(mv.run_id)
    assert step_run.data.tags["pipeline.step"] == "register" and step_run.info.status == "FINISHED"
    with tracking(mlflow_uri):
        model = mlflow.pyfunc.load_model(f"models:/{info['model_name']}@champion")
    assert len(model.predict(input_example(exported / "bundle"))) > 0
