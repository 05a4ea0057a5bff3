"""ETH/UCY benchmark: the tiny config end to end on the real data, window selection and constant velocity."""

from __future__ import annotations

import json
import math
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest

from forecast.benchmark.eth_ucy import (
    PUBLISHED,
    SCENES,
    FanConfig,
    choose_fan,
    collect_windows,
    config_from_dict,
    constant_velocity_fan,
    constant_velocity_world,
    evaluate_scene,
    ingest_scene,
    load_config,
    scene_train_config,
    scored_scenes,
    train_config_hash,
    train_scene,
)
from forecast.cli import main
from forecast.data.store import Store
from forecast.metrics import min_ade, min_fde
from forecast.model.baselines import BaselinePredictor

REPO = Path(__file__).parents[2]
ETH_UCY = Path(__file__).parents[2].parent / "shared/data/eth_ucy"
TINY = REPO / "configs/benchmark/eth_ucy_tiny.yaml"
needs_data = pytest.mark.skipif(not ETH_UCY.is_dir(), reason="shared ETH/UCY data not present")


def write_scene(root: Path, scene: str, tracks: dict[int, list[tuple[int, float, float]]], split: str = "test") -> None:
    """``root/<scene>/<split>/hand.txt`` from {pedestrian: [(step, x, y), ...]}; one step = 10 frames."""
    rows = sorted((step * 10, pid, x, y) for pid, obs in tracks.items() for step, x, y in obs)
    folder = root / scene / split
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "hand.txt").write_text("".join(f"{f}\t{p}\t{x!r}\t{y!r}\n" for f, p, x, y in rows))


def protocol_features():
    cfg = config_from_dict({})
    return scene_train_config(cfg, "hand", Path("unused"), Path("unused")).features


def hand_windows(tmp_path: Path, tracks: dict) -> tuple[Store, object, object]:
    write_scene(tmp_path / "data", "hand", tracks)
    store = Store(tmp_path / "store")
    ingest_scene(tmp_path / "data", "hand", store)
    scenes = scored_scenes(store, "hand", protocol_features(), t0_stride=1)
    return store, scenes, collect_windows(scenes)


# -- window selection ------------------------------------------------------------------------------


def test_window_count_on_a_hand_made_file(tmp_path):
    tracks = {
        1: [(s, 0.5 * s, 1.0) for s in range(3, 28)],  # 25 consecutive steps -> 25 - 20 + 1 = 6 windows
        2: [(s, 2.0, 0.25 * s) for s in range(0, 32) if s != 10],  # gap at step 10: steps 11..31 (21) -> 2
        3: [(s, -3.0, -0.5 * s) for s in range(5, 24)],  # 19 steps -> 0
        4: [(s, 4.0 + 0.25 * s, 4.0) for s in range(10, 30)],  # exactly 20 -> 1
    }
    store, scenes, w = hand_windows(tmp_path, tracks)
    per_track = defaultdict(list)
    for tid, t0 in zip(w.track_id, w.t0, strict=True):
        per_track[tid].append(int(t0))
    assert {k: len(v) for k, v in per_track.items()} == {"1": 6, "2": 2, "4": 1}
    assert sorted(per_track["1"]) == list(range(3 + 7, 3 + 7 + 6))  # t0 = first step + 7, stride 1
    assert sorted(per_track["2"]) == [11 + 7, 11 + 8]
    assert len(w) == 9 and len(set(zip(w.track_id, w.t0, strict=True))) == 9  # each window scored once
    # history and future are the raw positions around t0
    k = int(np.flatnonzero((w.track_id == "1") & (w.t0 == 10))[0])
    np.testing.assert_array_equal(w.hist[k, :, 0], 0.5 * np.arange(3, 11))
    np.testing.assert_array_equal(w.future[k, :, 0], 0.5 * np.arange(11, 23))
    ev, _ = evaluate_scene(store, "hand", None, protocol_features())
    assert ev["test_windows"] == 9


# -- constant velocity -----------------------------------------------------------------------------


def test_constant_velocity_is_exact_on_straight_lines_and_agrees_with_metrics(tmp_path):
    tracks = {  # constant velocity, positions exact in binary: every window has zero error
        1: [(s, 0.25 * s, 1.0 - 0.5 * s) for s in range(0, 30)],
        2: [(s, 3.0, 0.125 * s) for s in range(4, 28)],
        3: [(s, -1.5 * s, 0.75 * s) for s in range(2, 40)],
    }
    store, scenes, w = hand_windows(tmp_path, tracks)
    assert len(w) == 11 + 5 + 19
    pred = constant_velocity_world(w.hist, 12)
    assert pred.shape == (len(w), 1, 12, 2)
    assert np.all(min_ade(pred, w.future) == 0.0) and np.all(min_fde(pred, w.future) == 0.0)
    ev, _ = evaluate_scene(store, "hand", None, protocol_features())
    assert ev["cv"] == {"ADE": 0.0, "FDE": 0.0}
    # the repository's baseline (agent frame, float32 features) predicts the same thing
    base = BaselinePredictor("constant_velocity", 12, 0.4)
    for k in range(len(w)):
        s = scenes.sample(int(w.sample[k]))
        traj, _ = base.predict(s)
        a = int(w.slot[k])
        np.testing.assert_allclose(traj[a, 0], s.future[a], atol=1e-4)


def test_constant_velocity_error_on_an_accelerating_pedestrian(tmp_path):
    # x_k = a k^2: extrapolating the last step misses by a (j^2 + j) at j steps ahead, whatever t0.
    a = 1 / 64  # up to 1.9 m/s: a plausible walker
    store, _, w = hand_windows(tmp_path, {1: [(s, a * s * s, 0.0) for s in range(0, 26)]})
    assert len(w) == 7
    ev, _ = evaluate_scene(store, "hand", None, protocol_features())
    j = np.arange(1, 13)
    assert ev["cv"]["ADE"] == pytest.approx(np.mean(a * (j**2 + j)), abs=1e-12)
    assert ev["cv"]["FDE"] == pytest.approx(a * (144 + 12), abs=1e-12)


def test_cv_fan_contains_cv_and_is_chosen_on_the_given_windows(tmp_path):
    # walking straight: the fan member with factor 1 and heading 0 is constant velocity itself
    store, _, w = hand_windows(tmp_path, {1: [(s, 0.25 * s, 0.0) for s in range(0, 30)]})
    fan = constant_velocity_fan(w.hist, 12, [0.5, 1.0], [-90.0, 0.0, 90.0])
    assert fan.shape == (len(w), 6, 12, 2)
    np.testing.assert_allclose(fan[:, 4], constant_velocity_world(w.hist, 12)[:, 0])  # factor 1, heading 0
    np.testing.assert_allclose(fan[:, 5, -1] - w.hist[:, -1], [[0.0, 12 * 0.25]] * len(w), atol=1e-12)  # +90 deg: left
    # a pedestrian at half its last step's speed is matched by the candidate holding 0.5
    slow = constant_velocity_world(w.hist, 12)
    w.future = w.hist[:, -1, None, :] + (slow[:, 0] - w.hist[:, -1, None, :]) * 0.5
    best, scored = choose_fan(w, 12, FanConfig(speed_sets=[[0.9, 1.0, 1.1, 1.2], [0.5, 0.9, 1.0, 1.1]],
                                               heading_sets_deg=[[-10.0, -5.0, 0.0, 5.0, 10.0]]))
    assert len(scored) == 2 and best["speeds"][0] == 0.5 and best["FDE"] == pytest.approx(0.0, abs=1e-12)
    # without validation folders nothing is chosen: the hand store has a test split only
    ev, _ = evaluate_scene(store, "hand", None, protocol_features())
    assert "cv_fan" not in ev and "val" not in ev
    with pytest.raises(ValueError, match="20 modes"):
        FanConfig(speed_sets=[[1.0]], heading_sets_deg=[[0.0]]).candidates()


# -- config and published figures -------------------------------------------------------------------


def test_config_keeps_the_protocol():
    cfg = config_from_dict({})
    t = scene_train_config(cfg, "eth", Path("s"), Path("o"))
    f = t.features
    assert (f.dt, f.history_steps, f.future_steps, f.min_history_steps, t.model.modes) == (0.4, 8, 12, 8, 20)
    assert t.data.scenario_prefix == "eth_ucy:eth:" and t.data.source == "eth_ucy"
    with pytest.raises(ValueError, match="protocol fixes"):
        config_from_dict({"train": {"features": {"history_steps": 10}}})
    with pytest.raises(ValueError, match="set by the benchmark"):
        config_from_dict({"train": {"data": {"store": "x"}}})
    with pytest.raises(ValueError, match="unknown scene"):
        config_from_dict({"scenes": ["eth", "nowhere"]})


def test_published_rows_are_consistent():
    rows = {p.method: p for p in PUBLISHED}
    tpp = rows["Trajectron++ (corrected)"]
    assert set(tpp.per_scene) == set(SCENES)
    mean = np.mean(list(tpp.per_scene.values()), axis=0)
    assert mean == pytest.approx(tpp.avg, abs=0.01)  # "average about 0.32/0.55"
    assert not rows["Trajectron++ (paper)"].comparable and "leakage" in rows["Trajectron++ (paper)"].note
    assert all(p.comparable for p in PUBLISHED if p.method != "Trajectron++ (paper)")


# -- the tiny config end to end on the real data -----------------------------------------------------


def raw_windows(path: Path, th: int = 8, tf: int = 12) -> tuple[int, float, float]:
    """Independent of the pipeline: windows and CV ADE/FDE straight from a raw ``frame id x y`` file."""
    data = np.loadtxt(path)
    step = np.bincount(np.diff(np.unique(data[:, 0])).astype(int)).argmax()
    pos = {(int(f), p): (x, y) for f, p, x, y in data}
    n, ade, fde = 0, 0.0, 0.0
    for f, p in sorted(pos):
        frames = [f + (k - th + 1) * step for k in range(th + tf)]  # t0 = f
        if not all((g, p) in pos for g in frames):
            continue
        xy = np.array([pos[(g, p)] for g in frames])
        v = xy[th - 1] - xy[th - 2]
        pred = xy[th - 1] + v * np.arange(1, tf + 1)[:, None]
        err = np.hypot(*(pred - xy[th:]).T)
        n, ade, fde = n + 1, ade + err.mean(), fde + err[-1]
    return n, ade / n, fde / n


@needs_data
def test_tiny_benchmark_end_to_end(tmp_path):
    out = tmp_path / "bench"
    rc = main(["--quiet", "benchmark", "eth-ucy", "--config", str(TINY), "--out", str(out), "--data-root", str(ETH_UCY),
               "--mlflow", f"train.mlflow.tracking_uri=sqlite:///{tmp_path}/mlflow.db"])
    assert rc == 0
    result = json.loads((out / "eth_ucy.json").read_text())
    assert list(result["scenes"]) == ["eth"]
    eth = result["scenes"]["eth"]
    for method in ("ours", "ours_most_likely", "cv", "cv_fan"):
        ade, fde = eth[method]["ADE"], eth[method]["FDE"]
        assert math.isfinite(ade) and math.isfinite(fde) and 0 < ade <= fde, method
    assert eth["ours"]["ADE"] <= eth["ours_most_likely"]["ADE"] + 1e-9  # best of 20 beats one of them
    assert eth["modes"] == 20 and eth["train"]["train_time_s"] > 0
    assert eth["fan_choice"]["chosen_on"] == "val" and set(eth["val"]) >= {"ours", "ours_most_likely", "cv", "cv_fan"}
    assert eth["cv_fan"]["ADE"] < eth["cv"]["ADE"]  # 20 rollouts cover more than one
    assert result["average"]["ours"] == eth["ours"] and not result["average"]["complete"]
    # windows and CV agree with a computation straight from the raw file
    n, ade, fde = raw_windows(ETH_UCY / "eth/test/biwi_eth.txt")
    assert eth["test_windows"] == n
    assert eth["cv"]["ADE"] == pytest.approx(ade, abs=1e-9) and eth["cv"]["FDE"] == pytest.approx(fde, abs=1e-9)
    # published figures sit apart from the measured ones, with their source
    assert {p["method"] for p in result["published"]} >= {"Social-GAN", "Trajectron++ (corrected)"}
    assert all(p["source"].endswith("README.md") for p in result["published"])
    assert result["config"]["train"]["model"]["modes"] == 20
    assert "NOT COMPARABLE" in (out / "eth_ucy.txt").read_text()
    assert result["mlflow_run_id"]
    # a rerun reuses the store and the finished training (checked piecewise: a second run costs seconds)
    cfg = load_config(TINY, [f"train.mlflow.tracking_uri=sqlite:///{tmp_path}/mlflow.db"], out_dir=str(out),
                      data_root=str(ETH_UCY))
    store = Store(out / "store")
    assert ingest_scene(ETH_UCY, "eth", store)["units_written"] == 0
    tcfg = scene_train_config(cfg, "eth", store.path, Path(eth["train_dir"]))
    assert Path(eth["train_dir"]).name == f"train-{train_config_hash(tcfg)}"
    again = train_scene(tcfg)
    assert again["reused"] and again["model"] == eth["train"]["model"]
