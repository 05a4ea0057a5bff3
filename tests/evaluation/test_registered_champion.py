"""The champion can be the registered model: ``models:/NAME@ALIAS`` resolves to its bundle; none yet is no error."""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest

from forecast.evaluation.config import EvalConfig
from forecast.evaluation.evaluate import CHAMPION_PREFIX, load_predictors
from forecast.evaluation.predictors import is_bundle, resolve_model
from forecast.evaluation.spill import STALE_AFTER_S
from tests.conftest import dead_pid, leftover_dir, tiny_features_and_model


def _register(exported: Path, tmp_path: Path, monkeypatch, name: str) -> str:
    from forecast.pipeline.registry import MlflowRegistry

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    monkeypatch.chdir(tmp_path)  # MLflow's default artifact root is ./mlruns
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    bundle = tmp_path / "bundle"
    shutil.copytree(exported / "bundle", bundle)
    MlflowRegistry(uri, "test-champion").register(name, "champion", bundle, {"minFDE@6": 1.0},
                                                  {"pipeline.export_hash": "e1"})
    return f"models:/{name}@champion"


@pytest.mark.slow  # registers the tiny bundle in a SQLite MLflow store (seconds)
def test_registered_champion_resolves_to_its_bundle(exported, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    name = f"champ-{tmp_path.name}"
    logs: list[str] = []
    dst = tmp_path / "download"
    dst.mkdir()
    assert resolve_model(f"models:/{name}@champion", dst, logs.append) is None  # first run: nothing registered
    assert "comparison skipped" in logs[-1]
    spec = _register(exported, tmp_path, monkeypatch, name)
    local = resolve_model(spec, dst, logs.append)
    assert local is not None and is_bundle(Path(local)) and Path(local).is_relative_to(dst)
    assert resolve_model("constant_velocity", dst) == "constant_velocity"  # anything else passes through


@pytest.mark.slow
def test_registered_champion_comes_from_the_given_store_and_a_wrong_alias_is_an_error(exported, tmp_path,
                                                                                      monkeypatch):
    """``--tracking-uri`` was ignored for the champion (the environment's store was asked), and a mistyped
    alias or version skipped the comparison with exit 0 as if nothing were registered yet."""
    name = f"champ-{tmp_path.name}"
    spec = _register(exported, tmp_path, monkeypatch, name)
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{elsewhere}/other.db")  # no such store: not created
    dst = tmp_path / "download"
    dst.mkdir()
    logs: list[str] = []
    assert resolve_model(spec, dst, logs.append) is None and "comparison skipped" in logs[-1]
    assert not (elsewhere / "other.db").exists()
    local = resolve_model(spec, dst, logs.append, tracking_uri=uri)  # the store given wins over the environment
    assert local is not None and is_bundle(Path(local))
    with pytest.raises(ValueError, match=r"has no alias 'champoin' \(did you mean @champion\?\); its aliases: "
                                         r"@champion \(version 1\)"):
        resolve_model(f"models:/{name}@champoin", dst, tracking_uri=uri)
    with pytest.raises(ValueError, match="has no version 7"):
        resolve_model(f"models:/{name}/7", dst, tracking_uri=uri)
    assert is_bundle(Path(resolve_model(f"models:/{name}/1", tmp_path / "v1", tracking_uri=uri)))
    assert is_bundle(Path(resolve_model(f"models:/{name}/latest", tmp_path / "latest", tracking_uri=uri)))  # MLflow's
    assert resolve_model(f"models:/{name}-typo@champion", dst, logs.append, tracking_uri=uri) is None  # not registered
    assert f"registered there: {name})" in logs[-1] and "comparison skipped" in logs[-1]
    with pytest.raises(ValueError, match="cannot download the registered model models:/m-0123abc"):
        resolve_model("models:/m-0123abc", tmp_path / "lm", tracking_uri=uri)  # an MLflow logged-model id: its own
    # a SQLite URL with options is the same store (it was read as a file named 'mlflow.db?timeout=30')
    assert resolve_model(spec, tmp_path / "opts", tracking_uri=f"{uri}?timeout=30") is not None


@pytest.mark.slow
def test_a_registered_name_never_promoted_is_nothing_to_compare_with_yet(tmp_path, monkeypatch):
    """A name registered without any alias (the old `forecast export` with $MLFLOW_TRACKING_URI set did that)
    must not stop a nightly whose register step, after the gate, sets the first @champion."""
    from mlflow.tracking import MlflowClient

    from forecast.pipeline.registry import MlflowRegistry

    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    MlflowClient(tracking_uri=uri, registry_uri=uri).create_registered_model("forecast-world-model")
    logs: list[str] = []
    spec = "models:/forecast-world-model@champion"
    assert resolve_model(spec, tmp_path, logs.append, tracking_uri=uri) is None
    assert "has no alias yet" in logs[-1] and "comparison skipped" in logs[-1]
    assert MlflowRegistry(uri).champion("forecast-world-model", "champion") is None  # the gate reads it the same way


@pytest.mark.slow
def test_champion_download_is_removed_once_loaded(exported, tmp_path, monkeypatch):
    """A scheduled evaluation against the registered champion runs every day: its download must not pile up
    in the temp folder (it did, 2.3 MB a run), nor when a run is killed, and the loaded champion must still
    predict without it."""
    from forecast.export.onnx_export import synthetic_map_layers, synthetic_tracks
    from forecast.features.raster import rasterize_map_layers
    from forecast.features.sample import build_sample

    spec = _register(exported, tmp_path, monkeypatch, f"champ-{tmp_path.name}")
    temp_root = tmp_path / "temp"
    temp_root.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp_root))
    # a download that a SIGKILLed evaluation left a day ago: its process is gone
    leftover_dir(temp_root, f"{CHAMPION_PREFIX}{dead_pid()}-x", time.time() - STALE_AFTER_S - 60)
    feats, _ = tiny_features_and_model()
    cfg = EvalConfig(features=feats)
    logs: list[str] = []
    names, predictors, _, champion = load_predictors([str(exported / "bundle")], cfg, None, spec, logs.append)
    assert champion is not None and champion.startswith("champion:")
    assert any(line.startswith(f"champion {spec} -> {temp_root}") for line in logs)  # downloaded under temp_root
    assert list(temp_root.iterdir()) == []  # ... and removed once loaded, and the killed run's download swept
    tracks, t0 = synthetic_tracks(5, feats, seed=3)
    sample = build_sample(tracks, t0, feats, rasterize_map_layers(synthetic_map_layers(), feats.raster.resolution),
                          with_future=False)
    traj, prob = predictors[champion].predict(sample)
    ref_traj, ref_prob = predictors[names[0]].predict(sample)  # the same bundle, loaded from its own folder
    np.testing.assert_array_equal(traj, ref_traj)
    np.testing.assert_array_equal(prob, ref_prob)
