"""Vehicle runtime: torch-free import, same samples and outputs as torch, world frame, plans, input errors."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import shapely
import torch

from forecast.export.onnx_export import synthetic_map_layers, synthetic_tracks
from forecast.features.frames import to_world
from forecast.features.raster import rasterize_map_layers
from forecast.features.sample import build_sample
from forecast.features.tracks import AgentTracks
from forecast.model.batch import collate
from forecast.model.checkpoint import load_model
from forecast.runtime import (
    EmptySceneError,
    InputError,
    InvalidTracksError,
    MapError,
    PlanError,
    Predictor,
    TooManyAgentsError,
    UnitMismatchError,
)
from tests.conftest import tiny_features_and_model

FEATURES, MODEL = tiny_features_and_model()



@pytest.fixture(scope="module")
def torch_model(exported):
    return load_model(exported / "model.pt").model


@pytest.fixture(scope="module")
def layers():
    return synthetic_map_layers()


def test_runtime_import_is_torch_free():
    code = ("import sys, forecast.runtime, forecast.runtime.predictor; "
            # the car carries numpy, shapely, OpenCV and onnxruntime: no training stack, no Arrow
            "bad = sorted(m for m in sys.modules if m.split('.')[0] in "
            "('torch', 'lightning', 'pytorch_lightning', 'pyarrow', 'mlflow')); "
            "assert not bad, bad")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr


def _torch_world(model, tracks, t0, layers, plan_local=None, plan_row=None):
    sample = build_sample(tracks, t0, FEATURES, rasterize_map_layers(layers, FEATURES.raster.resolution),
                          with_future=False)
    batch = collate([sample], FEATURES.future_steps)
    if plan_local is not None:
        batch.plan[0, plan_row] = torch.as_tensor(plan_local, dtype=torch.float32)
        batch.plan_mask[0, plan_row] = True
    with torch.no_grad():
        traj, _, prob = model(*batch.model_inputs())
    return to_world(traj[0].double().numpy(), sample.origin, sample.heading), prob[0].numpy(), sample


@pytest.mark.parametrize("agents", [1, 7, 64])
def test_world_frame_output_equals_torch(predictor, torch_model, layers, agents):
    tracks, t0 = synthetic_tracks(agents, FEATURES, seed=agents, extra_steps=3)
    pred = predictor.predict(tracks, t0, layers)
    ref_traj, ref_prob, _ = _torch_world(torch_model, tracks, t0, layers)
    assert pred.traj_world.shape == (agents, 3, 6, 2) and pred.prob.shape == (agents, 3)
    assert np.abs(pred.traj_world - ref_traj).max() <= 1e-3
    assert np.abs(pred.prob - ref_prob).max() <= 1e-5
    np.testing.assert_allclose(pred.prob.sum(-1), 1.0, atol=1e-5)
    assert pred.track_ids.tolist() == tracks.track_ids.tolist() and pred.agent_type.tolist() == tracks.agent_type.tolist()
    # world frame: the first predicted step lies near each agent's t0 position (one step of motion away)
    step = np.linalg.norm(pred.traj_world[:, :, 0] - tracks.xy[:, t0][:, None], axis=-1)
    assert step.max() < 5.0
    # the one future to read: no mode has a lower expected endpoint error under prob, the most likely included
    ends = pred.traj_world[:, :, -1]
    risk = (np.linalg.norm(ends[:, :, None] - ends[:, None], axis=-1) * pred.prob[:, None]).sum(-1)  # [A, K]
    chosen = pred.least_risk_mode()
    assert chosen.shape == (agents,)
    np.testing.assert_allclose(risk[np.arange(agents), chosen], risk.min(1))


def test_plan_is_followed_in_world_frame(predictor, torch_model, layers):
    tracks, t0 = synthetic_tracks(7, FEATURES, seed=11)
    start = tracks.xy[3, t0]
    plan = start + np.linspace(0.4, 2.4, FEATURES.future_steps)[:, None] * np.array([0.6, -0.8])  # world frame
    free = predictor.predict(tracks, t0, layers)
    planned = predictor.predict(tracks, t0, layers, plan=plan, plan_agent=3)
    np.testing.assert_allclose(planned.traj_world[3], np.broadcast_to(plan, (3, 6, 2)), atol=1e-3)
    assert np.abs(free.traj_world[3] - plan).max() > 0.1
    others = np.arange(7) != 3
    assert np.abs(planned.traj_world[others] - free.traj_world[others]).max() > 0  # the others react
    by_id = predictor.predict(tracks, t0, layers, plan=plan, plan_agent="agent3")
    np.testing.assert_array_equal(by_id.traj_world, planned.traj_world)
    # and torch agrees, given the same plan in the agent's frame
    _, _, sample = _torch_world(torch_model, tracks, t0, layers)
    from forecast.features.frames import to_local

    local = to_local(plan[None], sample.origin[3:4], sample.heading[3:4])[0]
    ref, _, _ = _torch_world(torch_model, tracks, t0, layers, local, 3)
    assert np.abs(planned.traj_world - ref).max() <= 1e-3


def test_dt_that_is_a_whole_fraction_is_resampled(predictor, layers):
    tracks, t0 = synthetic_tracks(5, FEATURES, seed=2)
    a, t = tracks.present.shape
    xy = np.full((a, 2 * t - 1, 2), np.nan)
    xy[:, ::2] = tracks.xy
    xy[:, 1::2] = (tracks.xy[:, :-1] + tracks.xy[:, 1:]) / 2
    present = np.zeros((a, 2 * t - 1), bool)
    present[:, ::2] = tracks.present
    present[:, 1::2] = tracks.present[:, :-1] & tracks.present[:, 1:]
    heading = np.repeat(tracks.heading, 2, axis=1)[:, : 2 * t - 1]
    fine = AgentTracks(xy, heading, present, tracks.agent_type, 0.05, tracks.track_ids)
    np.testing.assert_array_equal(predictor.predict(fine, 2 * t0, layers).traj_world,
                                  predictor.predict(tracks, t0, layers).traj_world)


def _change(tracks, **kw):
    fields = dict(xy=tracks.xy, heading=tracks.heading, present=tracks.present, agent_type=tracks.agent_type,
                  dt=tracks.dt, track_ids=tracks.track_ids)
    return AgentTracks(**(fields | kw))


@pytest.mark.parametrize("make, error, message", [
    (lambda tr, t0: _change(tr, xy=np.where(np.arange(tr.num_steps)[None, :, None] == t0 - 1, np.nan, tr.xy)),
     InvalidTracksError, "NaN"),
    (lambda tr, t0: _change(tr, xy=np.round(np.nan_to_num(tr.xy)).astype(np.int64)), InvalidTracksError, "dtype int64"),
    (lambda tr, t0: _change(tr, agent_type=np.array([0, 1, 7, 0, 2])), InvalidTracksError, r"unknown agent type code\(s\) \[7\]"),
    (lambda tr, t0: _change(tr, agent_type=np.array(["car"] * 5)), InvalidTracksError, "agent_type must be integer"),
    (lambda tr, t0: _change(tr, dt=0.25), UnitMismatchError, "dt=0.25 s but the bundle expects dt=0.1 s"),
    (lambda tr, t0: _change(tr, dt=100.0), UnitMismatchError, "milliseconds"),
    (lambda tr, t0: _change(tr, present=np.where(np.arange(tr.num_steps) == t0, False, tr.present)),
     EmptySceneError, "no agent is present at t0"),
    (lambda tr, t0: AgentTracks(tr.xy[:0], tr.heading[:0], tr.present[:0], tr.agent_type[:0], 0.1), EmptySceneError,
     "empty scene"),
])
def test_bad_input_has_a_clear_error(predictor, make, error, message):
    tracks, t0 = synthetic_tracks(5, FEATURES, seed=3)
    with pytest.raises(error, match=message) as info:
        predictor.predict(make(tracks, t0), t0, None)
    assert isinstance(info.value, InputError) and isinstance(info.value, ValueError)


def test_too_many_agents(predictor):
    tracks, t0 = synthetic_tracks(257, FEATURES, seed=4)
    with pytest.raises(TooManyAgentsError, match="257 agents .* at most 256"):
        predictor.predict(tracks, t0)


def test_map_errors_and_cache(predictor, layers, monkeypatch):
    tracks, t0 = synthetic_tracks(3, FEATURES, seed=5)
    with pytest.raises(MapError, match="'building' is not a layer the model draws; known layers: drivable_area, lane, "):
        predictor.predict(tracks, t0, {"building": [shapely.box(0, 0, 10, 10)]})
    with pytest.raises(MapError, match="no drawable layers"):
        predictor.predict(tracks, t0, {})
    import forecast.runtime.predictor as rp

    calls = []
    real = rp.rasterize_map_layers
    monkeypatch.setattr(rp, "rasterize_map_layers", lambda *a, **k: calls.append(1) or real(*a, **k))
    fresh = {k: list(v) for k, v in layers.items()}
    first = predictor.predict(tracks, t0, fresh)
    again = predictor.predict(tracks, t0, fresh)
    assert len(calls) == 1 and np.array_equal(first.traj_world, again.traj_world)
    predictor.predict(tracks, t0, fresh, map_id="town")
    by_id = predictor.predict(tracks, t0, None, map_id="town")  # cached under its id: no layers needed
    assert len(calls) == 2 and np.array_equal(by_id.traj_world, first.traj_world)
    no_map = predictor.predict(tracks, t0, None)
    assert not np.array_equal(no_map.traj_world, first.traj_world)  # the map is an input


def test_bad_plans(predictor):
    tracks, t0 = synthetic_tracks(4, FEATURES, seed=6)
    good = np.zeros((6, 2))
    with pytest.raises(PlanError, match="shape"):
        predictor.predict(tracks, t0, plan=np.zeros((5, 2)), plan_agent=0)
    with pytest.raises(PlanError, match="NaN"):
        predictor.predict(tracks, t0, plan=np.full((6, 2), np.nan), plan_agent=0)
    with pytest.raises(PlanError, match="not a track id"):
        predictor.predict(tracks, t0, plan=good, plan_agent="nobody")
    with pytest.raises(PlanError, match="both"):
        predictor.predict(tracks, t0, plan=good)


def test_unavailable_provider_falls_back_to_cpu(exported):
    with pytest.warns(RuntimeWarning, match="TensorrtExecutionProvider is not available"):
        p = Predictor(exported / "bundle", providers=["tensorrt"], threads=1)
    assert p.session.get_providers() == ["CPUExecutionProvider"]


def test_runtime_runs_the_graph_onnxruntime_optimised_at_export(exported, tmp_path, layers):
    import json
    import shutil

    import onnxruntime as ort

    bundle = exported / "bundle"
    manifest = json.loads((bundle / "bundle.json").read_text())
    optimised = manifest["onnxruntime_optimized"]["models"]["fp32"]
    fast, plain = Predictor(bundle, threads=1), Predictor(bundle, threads=1, optimized=False)
    assert (fast.model_file, plain.model_file) == (optimised, "model.onnx") and optimised != "model.onnx"
    tracks, t0 = synthetic_tracks(9, FEATURES, seed=3)
    a, b = fast.predict(tracks, t0, layers), plain.predict(tracks, t0, layers)
    np.testing.assert_allclose(a.traj_world, b.traj_world, atol=1e-4)
    # written by another onnxruntime version: its optimised graph may not load here, so the plain one runs
    other = tmp_path / "bundle"
    shutil.copytree(bundle, other)
    manifest["onnxruntime_optimized"]["onnxruntime"] = ort.__version__ + ".other"
    (other / "bundle.json").write_text(json.dumps(manifest))
    assert Predictor(other, threads=1).model_file == "model.onnx"
