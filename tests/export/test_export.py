"""Export to the vehicle: the CLI, the ONNX graph (dynamic agents, parity with torch), bundle.json, hashes, MLflow."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

import forecast
from forecast.cli import main
from forecast.config import to_dict
from forecast.data.atomic import sha256_file
from forecast.data.schema import AgentType
from forecast.export.onnx_export import (
    ParityError,
    check_onnx,
    synthetic_map_layers,
    synthetic_sample,
    verify_parity,
)
from forecast.features.raster import rasterize_map_layers
from forecast.model.batch import MODEL_INPUT_NAMES, MODEL_OUTPUT_NAMES, collate
from forecast.model.checkpoint import load_model
from forecast.model.world_model import WorldModel
from forecast.runtime import BundleIntegrityError, OptionError, Predictor
from tests.conftest import tiny_features_and_model

FEATURES, MODEL = tiny_features_and_model()


def test_cli_export_writes_a_checked_bundle(exported):
    bundle = exported / "bundle"
    assert sorted(p.name for p in bundle.iterdir()) == ["bundle.json", "model.onnx", "model.ort.onnx", "model_fp16.onnx", "model_fp16.ort.onnx", "model_int8.onnx", "model_int8.ort.onnx"]
    for name in ("model.onnx", "model_fp16.onnx", "model_int8.onnx"):
        proto = check_onnx(bundle / name)  # onnx.checker + names
        onnx.checker.check_model(proto)
        a_dims = {i.name: i.type.tensor_type.shape.dim[1] for i in proto.graph.input}
        assert all(d.dim_param and not d.dim_value for d in a_dims.values()), a_dims  # agents: symbolic
        assert all(i.type.tensor_type.shape.dim[0].dim_value == 1 for i in proto.graph.input)


def test_bundle_json_fields_and_hashes(exported):
    bundle = exported / "bundle"
    m = json.loads((bundle / "bundle.json").read_text())
    assert m["format"] == "forecast-bundle" and m["format_version"] == 1
    assert [i["name"] for i in m["inputs"]] == list(MODEL_INPUT_NAMES)
    assert [o["name"] for o in m["outputs"]] == list(MODEL_OUTPUT_NAMES)
    shapes = {i["name"]: i["shape"] for i in m["inputs"] + m["outputs"]}
    assert shapes["hist"] == [1, "A", 8, 7] and shapes["raster"] == [1, "A", 9, 16, 16]
    assert shapes["plan"] == [1, "A", 6, 2] and shapes["traj"] == [1, "A", 3, 6, 2] and shapes["prob"] == [1, "A", 3]
    dtypes = {i["name"]: i["dtype"] for i in m["inputs"]}
    assert dtypes == {"hist": "float32", "hist_mask": "bool", "agent_type": "int64", "pose": "float32",
                      "raster": "uint8", "agent_mask": "bool", "plan": "float32", "plan_mask": "bool"}
    traj = next(o for o in m["outputs"] if o["name"] == "traj")
    assert traj["units"] == "m" and "t0" in traj["frame"]
    assert "sum to 1" in next(o for o in m["outputs"] if o["name"] == "prob")["meaning"]
    s = m["sample"]
    assert s["feature_config"] == json.loads(json.dumps(to_dict(FEATURES)))
    assert s["dt"] == 0.1 and s["history_steps"] == 8 and s["future_steps"] == 6 and s["modes"] == 3
    assert s["agent_types"] == {t.label: int(t) for t in AgentType}
    assert s["raster"]["size"] == 16 and s["raster"]["channels"][-1] == "traffic_signal" and len(s["raster"]["channels"]) == 9 and s["scene_scale"] == 50.0
    assert m["model_version"] == forecast.__version__ and m["training_run_id"] == "run-tiny"
    assert m["max_agents"] == 256
    assert m["models"] == {"fp32": "model.onnx", "fp16": "model_fp16.onnx", "int8": "model_int8.onnx"}
    opt = m["onnxruntime_optimized"]
    assert opt["onnxruntime"] == ort.__version__ and opt["level"] == "ORT_ENABLE_EXTENDED"
    assert opt["models"] == {v: f.replace(".onnx", ".ort.onnx") for v, f in m["models"].items()}
    # every file but bundle.json itself is hashed, and the hashes are right
    assert set(m["files"]) == {p.name for p in bundle.iterdir()} - {"bundle.json"}
    assert all(sha256_file(bundle / n) == h for n, h in m["files"].items())
    # --verify ran at 1, 7, 64, 256 agents for every file (each variant, plain and optimised) and passed
    rows = {(r["variant"], r["agents"]): r for r in m["verification"]}
    variants = {v + suffix for v in ("fp32", "fp16", "int8") for suffix in ("", ".ort")}
    assert set(rows) == {(v, n) for v in variants for n in (1, 7, 64, 256)}
    assert all(r["ok"] for r in rows.values())
    assert max(r["max_abs_traj_m"] for r in rows.values() if r["variant"].startswith("fp32")) <= 1e-3
    assert max(r["max_abs_traj_m"] for r in rows.values() if r["variant"].startswith("fp16")) <= 5e-2


@pytest.mark.parametrize("agents", [1, 7, 64])
def test_onnxruntime_matches_torch(exported, agents):
    loaded = load_model(exported / "model.pt")
    sess = ort.InferenceSession(str(exported / "bundle" / "model.onnx"), providers=["CPUExecutionProvider"])
    raster = rasterize_map_layers(synthetic_map_layers(), FEATURES.raster.resolution)
    sample, _, _ = synthetic_sample(agents, FEATURES, seed=100 + agents, map_raster=raster)
    batch = collate([sample], FEATURES.future_steps)
    if agents > 1:  # one agent follows a plan
        batch.plan[0, 1] = torch.linspace(0.5, 3.0, FEATURES.future_steps)[:, None] * torch.tensor([1.0, 0.2])
        batch.plan_mask[0, 1] = True
    with torch.no_grad():
        ref = [t.numpy() for t in loaded.model(*batch.model_inputs())]
    out = sess.run(list(MODEL_OUTPUT_NAMES), {n: t.numpy() for n, t in zip(MODEL_INPUT_NAMES, batch.model_inputs(),
                                                                          strict=True)})
    assert out[0].shape == (1, agents, 3, 6, 2) and out[2].shape == (1, agents, 3)
    assert np.abs(out[0] - ref[0]).max() <= 1e-3
    assert np.abs(out[1] - ref[1]).max() <= 1e-3 and np.abs(out[2] - ref[2]).max() <= 1e-5
    np.testing.assert_allclose(out[2].sum(-1), 1.0, atol=1e-5)
    assert np.abs(ref[0]).max() > 0.1  # a non-trivial output was compared


def test_parity_failure_raises_with_the_numbers(exported):
    other = WorldModel(MODEL, FEATURES.scene_scale).eval()
    torch.nn.init.normal_(other.rollout.head[-1].weight, std=0.5)  # not the exported weights
    with pytest.raises(ParityError, match=r"max\|dtraj\| m[\s\S]*fp32\s+7"):
        verify_parity(other, FEATURES, {"fp32": exported / "bundle" / "model.onnx"}, agent_counts=(7,))


def test_tampered_model_is_refused_before_onnxruntime(exported, tmp_path, monkeypatch):
    bundle = tmp_path / "bundle"
    shutil.copytree(exported / "bundle", bundle)
    Predictor(bundle)  # intact: loads
    data = bytearray((bundle / "model.onnx").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (bundle / "model.onnx").write_bytes(bytes(data))

    def no_session(*args, **kwargs):
        raise AssertionError("onnxruntime saw a file that failed its hash check")

    monkeypatch.setattr(ort, "InferenceSession", no_session)
    with pytest.raises(BundleIntegrityError, match="model.onnx does not match its sha256"):
        Predictor(bundle)
    with pytest.raises(BundleIntegrityError, match="model.onnx"):  # every file is checked, whichever variant runs
        Predictor(bundle, variant="fp16")


@pytest.mark.parametrize("damage, message", [
    (lambda b: (b / "model_fp16.onnx").unlink(), "model_fp16.onnx is missing"),
    (lambda b: (b / "bundle.json").unlink(), "bundle.json is missing"),
    (lambda b: (b / "bundle.json").write_text("{"), "unreadable"),
])
def test_incomplete_bundle_is_refused(exported, tmp_path, damage, message):
    bundle = tmp_path / "bundle"
    shutil.copytree(exported / "bundle", bundle)
    damage(bundle)
    with pytest.raises(BundleIntegrityError, match=message):
        Predictor(bundle)


def test_an_edited_bundle_json_is_refused_when_its_digest_is_pinned(exported, tmp_path):
    """bundle.json holds every other file's sha256, so nothing inside the bundle can vouch for it: an edited
    sample time step loaded silently. The digest export prints, passed to the Predictor, refuses it."""
    bundle = tmp_path / "bundle"
    shutil.copytree(exported / "bundle", bundle)
    digest = sha256_file(bundle / "bundle.json")
    assert Predictor(bundle, bundle_sha256=digest).dt == Predictor(bundle).dt
    assert Predictor(bundle, bundle_sha256=digest.upper() + "\n").modes  # as read from a file: either case, a newline
    with pytest.raises(OptionError, match="bundle_sha256 must be a sha256 digest"):
        Predictor(bundle, bundle_sha256=digest[:16])
    manifest = json.loads((bundle / "bundle.json").read_text())
    manifest["sample"]["feature_config"]["dt"] *= 2
    (bundle / "bundle.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleIntegrityError, match=f"differs from the expected {digest}"):
        Predictor(bundle, bundle_sha256=digest)


def test_a_file_given_for_a_bundle_is_named_as_such(exported):
    with pytest.raises(BundleIntegrityError, match="model.pt is a file; a bundle is the directory"):
        Predictor(exported / "model.pt")


def test_fp16_variant_runs_close_to_fp32(exported):
    from forecast.export.onnx_export import synthetic_tracks

    tracks, t0 = synthetic_tracks(20, FEATURES, seed=5)
    p32 = Predictor(exported / "bundle").predict(tracks, t0)
    p16 = Predictor(exported / "bundle", variant="fp16").predict(tracks, t0)
    assert np.abs(p16.traj_world - p32.traj_world).max() <= 5e-2


def test_runtime_loads_the_optimised_graph_and_it_predicts_the_same(exported):
    from forecast.export.onnx_export import synthetic_tracks

    tracks, t0 = synthetic_tracks(12, FEATURES, seed=7)
    fast = Predictor(exported / "bundle")
    plain = Predictor(exported / "bundle", optimized=False)
    assert fast.model_file == "model.ort.onnx" and plain.model_file == "model.onnx"
    a, b = fast.predict(tracks, t0), plain.predict(tracks, t0)
    assert np.abs(a.traj_world - b.traj_world).max() <= 1e-4 and np.abs(a.prob - b.prob).max() <= 1e-5
    assert Predictor(exported / "bundle", variant="int8").model_file == "model_int8.ort.onnx"


def test_optimised_graph_of_another_onnxruntime_is_not_used(exported, tmp_path):
    bundle = tmp_path / "bundle"
    shutil.copytree(exported / "bundle", bundle)
    m = json.loads((bundle / "bundle.json").read_text())
    m["onnxruntime_optimized"]["onnxruntime"] = "0.0.1"
    (bundle / "bundle.json").write_text(json.dumps(m))  # bundle.json is not in its own hash list
    assert Predictor(bundle).model_file == "model.onnx"


def test_int8_variant_runs_close_to_fp32(exported):
    from forecast.export.onnx_export import synthetic_tracks

    tracks, t0 = synthetic_tracks(20, FEATURES, seed=5)
    p32 = Predictor(exported / "bundle").predict(tracks, t0)
    p8 = Predictor(exported / "bundle", variant="int8").predict(tracks, t0)
    assert p8.traj_world.shape == p32.traj_world.shape
    assert np.abs(p8.traj_world - p32.traj_world).max() <= 0.5
    np.testing.assert_allclose(p8.prob.sum(-1), 1.0, atol=1e-4)


def test_cli_errors_are_clear(exported, tmp_path, capsys):
    assert main(["export", "--model", str(tmp_path / "nope.pt"), "--out", str(tmp_path / "b")]) == 2
    assert "does not exist" in capsys.readouterr().err
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "notes.txt").write_text("keep me")
    assert main(["export", "--model", str(exported / "model.pt"), "--out", str(precious)]) == 2
    assert "not a bundle" in capsys.readouterr().err and (precious / "notes.txt").exists()


def test_export_registers_only_when_asked(exported, tmp_path, monkeypatch, capsys):
    """$MLFLOW_TRACKING_URI says where a registration goes, not that there is one: with a team's server set,
    every ad-hoc export and every test run registered a version of the production model name."""
    uri = f"sqlite:///{tmp_path / 'team.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "bundle"
    assert main(["--quiet", "export", "--model", str(exported / "model.pt"), "--out", str(out)]) == 0
    assert not (out / "registration.json").exists()
    assert not (tmp_path / "team.db").exists() and not (tmp_path / "mlflow.db").exists()
    assert main(["--quiet", "export", "--model", str(exported / "model.pt"), "--out", str(out),
                 "--tracking-uri", uri]) == 2
    assert "without --register nothing is registered" in capsys.readouterr().err


@pytest.mark.slow  # about 10 s: a fresh SQLite tracking store runs MLflow's migrations
def test_register_in_mlflow_keeps_bundle_json_stable(exported, tmp_path, monkeypatch):
    from mlflow.tracking import MlflowClient

    from forecast.export.bundle import register_bundle

    monkeypatch.chdir(tmp_path)  # MLflow's default artifact root is ./mlruns
    bundle = tmp_path / "bundle"
    shutil.copytree(exported / "bundle", bundle)
    before = sha256_file(bundle / "bundle.json")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    reg = register_bundle(bundle, uri, "tiny-model")
    assert reg["version"] == "1" and reg["name"] == "tiny-model"
    assert sha256_file(bundle / "bundle.json") == before
    assert json.loads((bundle / "registration.json").read_text())["version"] == "1"
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    mv = client.get_model_version("tiny-model", "1")
    assert mv.run_id == reg["run_id"] and mv.source == reg["source"]
    run = client.get_run(reg["run_id"])
    assert run.data.tags["forecast.training_run_id"] == "run-tiny"
    assert mv.tags["forecast.bundle_json_sha256"] == before
    # the version is an MLflow model whose artifacts are the bundle's files (tests/export/test_mlflow_model.py)
    import mlflow

    from forecast.export.mlflow_model import tracking

    with tracking(uri):
        local = Path(mlflow.artifacts.download_artifacts(reg["source"], dst_path=str(tmp_path / "logged")))
    logged = {p.name for p in (local / "artifacts" / "bundle").iterdir()}
    assert logged == {"bundle.json", "model.onnx", "model.ort.onnx", "model_fp16.onnx", "model_fp16.ort.onnx",
                      "model_int8.onnx", "model_int8.ort.onnx"}
    Predictor(bundle)  # registration.json beside the bundle is not part of it
    # the same bundle again (a scheduled rerun of `forecast export`): the same version, no new run
    again = register_bundle(bundle, uri, "tiny-model", alias="champion")
    assert (again["version"], again["run_id"], again["reused"]) == ("1", reg["run_id"], True)
    assert [str(v.version) for v in client.search_model_versions("name='tiny-model'")] == ["1"]
    assert str(client.get_model_version_by_alias("tiny-model", "champion").version) == "1"
