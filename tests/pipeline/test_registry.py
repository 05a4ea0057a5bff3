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
