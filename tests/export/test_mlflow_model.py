"""The bundle as an MLflow pyfunc model: logged with signature and input example, registered with an alias,
loaded by alias in a fresh process, refused when a file was altered."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from forecast.export.mlflow_model import (
    DEFAULT_PARAMS,
    INPUT_COLUMNS,
    input_example,
    log_bundle_model,
    predict_frame,
)
from forecast.runtime import InputError, Predictor

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow  # a fresh SQLite tracking store runs MLflow's migrations (seconds)


@pytest.fixture(scope="module")
def registered(exported, tmp_path_factory):
    """The tiny bundle logged and registered as "tiny-forecast" with alias champion in a store of its own."""
    root = tmp_path_factory.mktemp("mlflow_model")
    bundle = root / "bundle"
    shutil.copytree(exported / "bundle", bundle)
    uri = f"sqlite:///{root / 'mlflow.db'}"
    cwd = os.getcwd()
    os.chdir(root)  # MLflow's default artifact root is ./mlruns
    try:
        logged = log_bundle_model(bundle, uri, experiment="test-export", registered_name="tiny-forecast",
                                  alias="champion", version_tags={"pipeline.export_hash": "e1"})
    finally:
        os.chdir(cwd)
    return root, uri, bundle, logged


def test_predict_frame_matches_the_predictor(exported):
    predictor = Predictor(exported / "bundle")
    example = input_example(exported / "bundle")
    assert list(example.columns) == list(INPUT_COLUMNS)
    out = predict_frame(predictor, example, DEFAULT_PARAMS)
    k, t_f = predictor.modes, predictor.future_steps
    assert len(out) == 3 * k * t_f
    assert np.allclose(out.groupby(["track_id", "step"])["probability"].sum(), 1.0, atol=1e-5)
    # the same scene through the runtime directly: same futures
    from forecast.features.tracks import AgentTracks

    ids = list(pd.unique(example["track_id"]))
    steps = example["step"].max() + 1
    xy = np.stack([example[example.track_id == i][["x", "y"]].to_numpy() for i in ids])
    heading = np.stack([example[example.track_id == i]["heading"].to_numpy() for i in ids])
    types = np.array([0, 2, 1])  # vehicle, cyclist, pedestrian
    pred = predictor.predict(AgentTracks(xy, heading, np.ones((3, steps), bool), types, predictor.dt,
                                         np.array(ids)), steps - 1)
    car = out[(out.track_id == "car-1") & (out["mode"] == 1)].sort_values("step")
    row = list(pred.track_ids).index("car-1")
    assert np.allclose(car[["x", "y"]].to_numpy(), pred.traj_world[row, 1])
    assert np.isclose(car["probability"].iloc[0], pred.prob[row, 1])
    assert np.allclose(car["t"].to_numpy(), np.arange(1, t_f + 1) * predictor.dt)


def test_bad_input_is_an_input_error(exported):
    predictor = Predictor(exported / "bundle")
    example = input_example(exported / "bundle")
    with pytest.raises(InputError, match="missing column"):
        predict_frame(predictor, example.drop(columns=["heading"]), DEFAULT_PARAMS)
    with pytest.raises(InputError, match="appears twice"):
        predict_frame(predictor, pd.concat([example, example.iloc[:1]]), DEFAULT_PARAMS)
    with pytest.raises(InputError, match="unknown agent type"):
        predict_frame(predictor, example.assign(agent_type="tram"), DEFAULT_PARAMS)


def test_registered_with_signature_example_and_alias(registered):
    from mlflow.tracking import MlflowClient

    root, uri, bundle, logged = registered
    client = MlflowClient(uri, uri)
    mv = client.get_model_version_by_alias("tiny-forecast", "champion")
    assert str(mv.version) == logged.version == "1" and mv.tags["pipeline.export_hash"] == "e1"
    import mlflow

    from forecast.export.mlflow_model import tracking

    with tracking(uri):
        info = mlflow.models.get_model_info(logged.model_uri)
    inputs = [c.name for c in info.signature.inputs.inputs]
    assert inputs == list(INPUT_COLUMNS)
    assert {p.name for p in info.signature.params.params} == set(DEFAULT_PARAMS)
    assert {c.name for c in info.signature.outputs.inputs} >= {"track_id", "mode", "probability", "step", "x", "y"}


def test_load_by_alias_in_a_fresh_process(registered):
    root, uri, bundle, logged = registered
    script = (
        "import json, mlflow\n"
        f"mlflow.set_tracking_uri({uri!r}); mlflow.set_registry_uri({uri!r})\n"
        "m = mlflow.pyfunc.load_model('models:/tiny-forecast@champion')\n"
        "out = m.predict(m.input_example)\n"
        "print(json.dumps({'rows': len(out), 'columns': list(out.columns), 'agents': sorted(set(out.track_id)),"
        " 'prob': out.groupby(['track_id', 'step'])['probability'].sum().round(4).unique().tolist()}))\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    env.pop("MLFLOW_TRACKING_URI", None)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=root, env=env,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    predictor = Predictor(bundle)
    assert result["rows"] == 3 * predictor.modes * predictor.future_steps
    assert result["agents"] == ["bike-1", "car-1", "ped-1"] and result["prob"] == [1.0]
    assert result["columns"][:3] == ["scene_id", "track_id", "agent_type"]


def test_an_altered_logged_bundle_is_refused(registered, tmp_path):
    """The sha256 checks survive the trip through MLflow: a flipped byte in a logged file stops the load."""
    import mlflow

    root, uri, bundle, logged = registered
    from forecast.export.mlflow_model import tracking

    with tracking(uri):
        local = Path(mlflow.artifacts.download_artifacts(logged.model_uri, dst_path=str(tmp_path / "copy")))
    onnx_file = local / "artifacts" / "bundle" / "model.onnx"
    original = onnx_file.read_bytes()
    data = bytearray(original)
    data[len(data) // 2] ^= 0xFF
    onnx_file.write_bytes(bytes(data))
    from forecast.runtime import BundleIntegrityError

    with pytest.raises(BundleIntegrityError, match="sha256"):
        mlflow.pyfunc.load_model(str(local))
    # a bundle.json swapped for another (with matching file hashes) is refused by the recorded manifest hash
    onnx_file.write_bytes(original)
    mlflow.pyfunc.load_model(str(local))  # restored: loads again
    manifest = json.loads((local / "artifacts/bundle/bundle.json").read_text())
    manifest["training_run_id"] = "someone-else"
    (local / "artifacts/bundle/bundle.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleIntegrityError, match="recorded when the model was exported or logged"):
        mlflow.pyfunc.load_model(str(local))


def test_mlflows_download_bar_stays_out_of_a_log(registered, tmp_path, capfd, monkeypatch):
    """MLflow draws a tqdm bar for every artifact transfer; in a scheduler's log (no terminal) that is carriage
    returns, like the ones forecast.progress keeps out. Inside ``tracking`` it is off, unless asked for."""
    import mlflow

    from forecast.export.mlflow_model import ARTIFACT_BAR, tracking

    root, uri, bundle, logged = registered
    monkeypatch.delenv(ARTIFACT_BAR, raising=False)
    with tracking(uri):
        mlflow.artifacts.download_artifacts(logged.model_uri, dst_path=str(tmp_path / "a"))
    assert "Downloading artifacts" not in capfd.readouterr().err and ARTIFACT_BAR not in os.environ
    monkeypatch.setenv(ARTIFACT_BAR, "true")  # the user's own choice wins
    with tracking(uri):
        mlflow.artifacts.download_artifacts(logged.model_uri, dst_path=str(tmp_path / "b"))
    assert "Downloading artifacts" in capfd.readouterr().err and os.environ[ARTIFACT_BAR] == "true"
