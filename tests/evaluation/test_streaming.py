"""The evaluation keeps trajectories on disk and aggregates them in chunks: the same metrics as one
pass over in-memory arrays (issue 11: `forecast evaluate` memory flat in the split's size)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from forecast import joint_metrics as J
from forecast import metrics as M
from forecast import scene_metrics as SM
from forecast.data.types import AgentType
from forecast.evaluation import slices as S
from forecast.evaluation.aggregate import (
    _drivable,
    _means,
    _num,
    agent_metrics,
    calibration_of,
    convention_metrics,
    horizons,
    model_block,
    per_agent_metrics,
    summarise,
)
from forecast.evaluation.collect import collect
from forecast.evaluation.evaluate import load_predictors
from forecast.evaluation.results import CLASSES, AgentTable, Outputs
from forecast.evaluation.spill import Spill, read_rows, row_chunks
from forecast.features.dataset import SceneSet, select_scenarios
from tests.evaluation.test_evaluate import FEATURES, _cfg, tiny_model  # noqa: F401 - a fixture


def offroad_flags(end_world: np.ndarray, agents: AgentTable, drivable: dict[str, object]) -> np.ndarray:
    """Off-road flags ``[N]`` as they were made before the map pass, from every map's drivable area at once:
    1.0 where a vehicle's endpoint is off it, 0.0 on it, NaN otherwise."""
    out = np.full(len(agents), np.nan)
    vehicle = agents.agent_type == int(AgentType.VEHICLE)
    for map_id, area in drivable.items():
        if area is None:
            continue
        sel = vehicle & (agents.map_id == map_id)
        if sel.any():
            out[sel] = SM.offroad(end_world[sel], area).astype(np.float64)
    return out


def _in_memory_block(out: Outputs, agents: AgentTable, cfg, features, drivable, masks) -> dict:
    """model_block as it was before the arrays went to disk: every metric from the whole arrays at once."""
    per = per_agent_metrics(out.pred, agents.gt, out.prob, agents.valid, cfg.miss_threshold)
    conv = convention_metrics(out, agents, features)
    by_class = {c: {**summarise(per, agents.agent_class == c), **_means(conv, agents.agent_class == c)} for c in CLASSES}
    by_horizon, by_class_horizon = {}, {c: {} for c in CLASSES}
    for label, steps in horizons(cfg, features).items():
        pred, gt, valid = M.truncate_horizon(out.pred, agents.gt, agents.valid, steps)
        per_h = per_agent_metrics(pred, gt, out.prob, valid, cfg.miss_threshold)
        by_horizon[label] = summarise(per_h)
        for c in CLASSES:
            by_class_horizon[c][label] = summarise(per_h, agents.agent_class == c)
    ece = M.expected_calibration_error(out.prob, out.pred, agents.gt, agents.valid, bins=cfg.calibration_bins)
    ece_by_class = {c: _num(M.expected_calibration_error(out.prob[sel], out.pred[sel], agents.gt[sel], agents.valid[sel],
                                                         bins=cfg.calibration_bins)) if sel.any() else None
                    for c in CLASSES for sel in [agents.agent_class == c]}
    scene = {
        "offroad_rate": _num(M.aggregate(offroad_flags(out.end_world, agents, drivable))),
        "overlap_rate": _num(M.aggregate(out.overlap)),
        "calibration_ece": _num(ece),
        "calibration_ece_by_class": ece_by_class,
        "offroad_rate_gt": _num(M.aggregate(offroad_flags(agents.gt_end_world, agents, drivable))),
        "overlap_rate_gt": _num(M.aggregate(agents.gt_overlap)),
    }
    return {
        "num_agents": {c: int((agents.agent_class == c).sum()) for c in CLASSES},
        "num_modes": int(out.pred.shape[1]),
        "overall": {**summarise(per), **_means(conv)},
        "by_class": by_class,
        "by_horizon": by_horizon,
        "by_class_horizon": by_class_horizon,
        "scene": scene,
        "joint": J.summarise_joint(J.joint_metrics(out.pred, agents.gt, agents.sample, agents.valid, cfg.miss_threshold)),
        "slices": {fam: {v: summarise(per, m) for v, m in vals.items()} for fam, vals in masks.items()},
    }


@pytest.fixture(scope="module")
def collected(sumo_store, tiny_model):  # noqa: F811
    cfg = _cfg(features=FEATURES)
    _, predictors, feats, _ = load_predictors([str(tiny_model)], cfg)
    scenes = SceneSet(sumo_store, select_scenarios(sumo_store, "test"), feats, cfg.t0_stride, None, cfg.seed,
                      full_future=True)
    agents, outputs = collect(scenes, predictors, progress=False)
    return cfg, feats, scenes, agents, outputs


def _in_memory(agents: AgentTable, outputs: dict[str, Outputs]) -> tuple[AgentTable, dict[str, Outputs]]:
    copy = AgentTable(**{k: np.array(v) for k, v in vars(agents).items() if not k.startswith("_")})
    return copy, {n: Outputs(*(np.array(getattr(o, f)) for f in ("pred", "prob", "end_world", "overlap")))
                  for n, o in outputs.items()}


def test_trajectories_are_on_disk(collected):
    _, _, _, agents, outputs = collected
    assert isinstance(agents.gt, np.memmap) and isinstance(agents.valid, np.memmap)
    for out in outputs.values():
        assert isinstance(out.pred, np.memmap) and isinstance(out.prob, np.memmap)
        assert not isinstance(out.end_world, np.memmap)  # per-agent scalars stay in memory
    out = next(iter(outputs.values()))
    n = len(agents)
    np.testing.assert_array_equal(read_rows(out.pred, 3, n - 2), np.asarray(out.pred)[3:n - 2])
    assert not isinstance(read_rows(out.pred, 3, n - 2), np.memmap)  # a copy, not pages of the mapping


@pytest.mark.parametrize("chunk_rows", [1, 7, 10**9])
def test_chunked_metrics_equal_one_pass(collected, chunk_rows):
    cfg, feats, scenes, agents, outputs = collected
    mem_agents, mem_outputs = _in_memory(agents, outputs)
    map_ids = sorted({m for m in agents.map_id if m})
    layers = {m: scenes.map_layers(m) for m in map_ids}
    drivable = {m: _drivable(layers[m]) for m in map_ids}
    masks = S.slice_masks(S.tag_agents(agents.origin, agents.speed, agents.agent_class, agents.source, agents.map_id,
                                       layers))
    assert len(set(agents.sample)) > 3  # several samples, so small chunks really cut the rows
    for name, out in outputs.items():
        am = agent_metrics(out, agents, cfg, feats, chunk_rows=chunk_rows)
        offroad = offroad_flags(out.end_world, agents, drivable), offroad_flags(agents.gt_end_world, agents, drivable)
        streamed = model_block(out, agents, cfg, masks, am, offroad)
        reference = _in_memory_block(mem_outputs[name], mem_agents, cfg, feats, drivable, masks)
        assert json.dumps(streamed, sort_keys=True) == json.dumps(reference, sort_keys=True), name
        for k, v in per_agent_metrics(mem_outputs[name].pred, mem_agents.gt, mem_outputs[name].prob, mem_agents.valid,
                                      cfg.miss_threshold).items():
            np.testing.assert_array_equal(am.per[k], v)
        ref_curve = M.calibration_curve(mem_outputs[name].prob, mem_outputs[name].pred, mem_agents.gt, mem_agents.valid,
                                        bins=cfg.calibration_bins)
        for a, b in zip(calibration_of(out, agents, cfg.calibration_bins, chunk_rows), ref_curve, strict=True):
            np.testing.assert_array_equal(a, b)


def test_row_chunks_keep_samples_whole():
    sample = np.array([0, 0, 0, 1, 2, 2, 5, 5, 5, 5, 6])
    chunks = list(row_chunks(sample, 2))
    assert chunks[0][0] == 0 and chunks[-1][1] == len(sample)
    assert all(a[1] == b[0] for a, b in zip(chunks, chunks[1:], strict=False))
    for _, hi in chunks:
        assert hi == len(sample) or sample[hi] != sample[hi - 1]
    assert list(row_chunks(np.array([], np.int64))) == []


def test_spill_refuses_a_changed_row_shape():
    spill = Spill()
    spill.append("x", np.zeros((2, 3), np.float32))
    spill.append("x", np.ones((1, 3), np.float32))
    with pytest.raises(ValueError, match="spill column 'x'"):
        spill.append("x", np.zeros((1, 4), np.float32))
    cols = spill.finish()
    np.testing.assert_array_equal(cols["x"], np.r_[np.zeros((2, 3)), np.ones((1, 3))])


def test_map_pass_equals_all_maps_at_once(collected):
    from forecast.evaluation.map_pass import map_pass

    _, _, scenes, agents, outputs = collected
    map_ids = sorted({m for m in agents.map_id if m})
    assert map_ids  # the tiny store has maps, so the map families and off-road flags are exercised
    layers = {m: scenes.map_layers(m) for m in map_ids}
    drivable = {m: _drivable(layers[m]) for m in map_ids}
    loads: list[str] = []
    tags, offroad, offroad_gt = map_pass(agents, outputs, lambda m: loads.append(m) or scenes.map_layers(m))
    assert sorted(loads) == map_ids  # each map read once
    reference = S.tag_agents(agents.origin, agents.speed, agents.agent_class, agents.source, agents.map_id, layers)
    assert tags.keys() == reference.keys()
    for family, values in reference.items():
        np.testing.assert_array_equal(tags[family], values)
    for name, out in outputs.items():
        np.testing.assert_array_equal(offroad[name], offroad_flags(out.end_world, agents, drivable))
    np.testing.assert_array_equal(offroad_gt, offroad_flags(agents.gt_end_world, agents, drivable))
    assert np.isfinite(offroad_gt).any()
    for family, masks in S.slice_masks(tags).items():  # made on demand, equal to comparing the tags
        assert list(masks) and sum(int(m.sum()) for m in masks.values()) == len(agents)
        for value in masks:
            np.testing.assert_array_equal(masks[value], tags[family] == value)


def test_a_killed_evaluations_spill_is_swept_by_the_next(tmp_path, monkeypatch):
    """A SIGKILL skips the spill's cleanup; the next evaluation removes it once its process is gone and
    it is a day old, and leaves live or recent spills alone."""
    import os
    import tempfile
    import time

    from forecast.evaluation import spill as spill_mod
    from tests.conftest import dead_pid, leftover_dir

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    gone = dead_pid()
    old = time.time() - spill_mod.STALE_AFTER_S - 60
    stale = leftover_dir(tmp_path, f"forecast-eval-{gone}-abc", old)
    recent = leftover_dir(tmp_path, f"forecast-eval-{gone}-def", time.time())  # may be another PID namespace's
    live = leftover_dir(tmp_path, f"forecast-eval-{os.getppid()}-ghi", old)  # the tests' parent process is alive
    foreign = leftover_dir(tmp_path, "forecast-eval-notapid", old)  # not named by a spill of this version

    spill = Spill()
    assert spill.path.parent == tmp_path and spill.path.name.startswith(f"forecast-eval-{os.getpid()}-")
    assert not stale.exists()
    assert recent.exists() and live.exists() and foreign.exists()
    spill.append("x", np.arange(3.0))
    np.testing.assert_array_equal(spill.finish()["x"], np.arange(3.0))
    assert spill.path.exists()  # its own spill is not swept by a later one in the same process
    Spill()
    assert spill.path.exists()


def test_batched_predictions_equal_one_by_one(collected, tiny_model, tmp_path):  # noqa: F811
    """collect() hands a batching predictor several samples per forward pass: the same rows, and the same
    predictions up to float rounding (padding changes the matrix shapes, not what real agents see)."""
    import torch

    from forecast.model.checkpoint import load_model, save_model

    cfg, feats, scenes, agents, _ = collected
    # The fixture's head is zero (an untrained model predicts constant velocity whatever it computes):
    # random head weights make every trajectory depend on the network, so a wrong batch shows.
    loaded = load_model(tiny_model)
    torch.manual_seed(1)
    torch.nn.init.normal_(loaded.model.rollout.head[-1].weight, std=0.05)
    path = tmp_path / "headed" / "model.pt"
    path.parent.mkdir()
    save_model(path, loaded.model, loaded.features, loaded.meta)
    _, predictors, _, _ = load_predictors([str(path)], cfg)
    assert any(hasattr(p, "predict_batch") for p in predictors.values())  # the learned model batches
    runs = {b: collect(scenes, predictors, progress=False, batch_size=b) for b in (1, 16)}
    (one_agents, one_outputs), (agents16, outputs16) = runs[1], runs[16]
    for field in ("sample", "row", "t0", "agent_type"):
        np.testing.assert_array_equal(getattr(agents16, field), getattr(one_agents, field))
    np.testing.assert_array_equal(np.asarray(agents16.gt), np.asarray(one_agents.gt))
    name = "headed"
    assert name in outputs16
    cv = np.asarray(outputs16["constant_velocity"].pred)
    assert np.abs(np.asarray(outputs16[name].pred) - cv[:, :1]).max() > 0.01  # not constant velocity
    for n, out in outputs16.items():
        np.testing.assert_allclose(np.asarray(out.pred), np.asarray(one_outputs[n].pred), atol=1e-4)
        np.testing.assert_allclose(np.asarray(out.prob), np.asarray(one_outputs[n].prob), atol=1e-5)
    with pytest.raises(ValueError, match="batch_size"):
        collect(scenes, predictors, progress=False, batch_size=0)
