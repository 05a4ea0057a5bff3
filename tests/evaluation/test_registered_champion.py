"""The champion can be the registered model: ``models:/NAME@ALIAS`` resolves to its bundle; none yet is no error."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from forecast.evaluation.predictors import is_bundle, resolve_model


@pytest.mark.slow  # registers the tiny bundle in a SQLite MLflow store (seconds)
def test_registered_champion_resolves_to_its_bundle(exported, tmp_path, monkeypatch):
    from forecast.pipeline.registry import MlflowRegistry

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    monkeypatch.chdir(tmp_path)  # MLflow's default artifact root is ./mlruns
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    name = f"champ-{tmp_path.name}"
    logs: list[str] = []
    assert resolve_model(f"models:/{name}@champion", logs.append) is None  # first run: nothing registered
    assert "comparison skipped" in logs[-1]
    bundle = tmp_path / "bundle"
    shutil.copytree(exported / "bundle", bundle)
    MlflowRegistry(uri, "test-champion").register(name, "champion", bundle, {"minFDE@6": 1.0},
                                                  {"pipeline.export_hash": "e1"})
    local = resolve_model(f"models:/{name}@champion", logs.append)
    assert local is not None and is_bundle(Path(local))
    assert resolve_model("constant_velocity") == "constant_velocity"  # anything else passes through
