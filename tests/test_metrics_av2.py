"""forecast.metrics against the Argoverse 2 devkit (``av2``, a development dependency) on random inputs,
and the Waymo-style speed-scaled miss rate on hand-worked cases."""

from __future__ import annotations

import numpy as np
import pytest
from av2.datasets.motion_forecasting.eval import metrics as av2

from forecast import metrics as M
from forecast import waymo_metrics as W
from forecast.joint_metrics import joint_metrics

SEEDS = range(20)


def _random(seed: int, n: int = 12, k: int = 6, t: int = 30):
    rng = np.random.default_rng(seed)
    gt = np.cumsum(rng.normal(0, 0.5, (n, t, 2)), axis=1)
    pred = gt[:, None] + rng.normal(0, rng.uniform(0.2, 3.0), (n, k, t, 2))
    logits = rng.normal(0, 1.5, (n, k))
    prob = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    return pred, gt, prob


def _av2_per_agent(pred, gt, prob, threshold=2.0):
    """AV2's per-mode functions, reduced per agent as the AV2 challenge does (the best-endpoint mode)."""
    rows = []
    for p, g, pr in zip(pred, gt, prob, strict=True):
        ade, fde = av2.compute_ade(p, g), av2.compute_fde(p, g)
        best = int(np.argmin(fde))
        rows.append({
            "minADE_all": ade.min(), "minFDE": fde[best], "ade_of_best_fde": ade[best],
            "missed": float(av2.compute_is_missed_prediction(p, g, threshold)[best]),
            "brier_fde": av2.compute_brier_fde(p, g, pr)[best],
        })
    return {key: np.array([r[key] for r in rows]) for key in rows[0]}


@pytest.mark.parametrize("seed", SEEDS)
def test_per_agent_metrics_match_av2(seed):
    pred, gt, prob = _random(seed)
    ref = _av2_per_agent(pred, gt, prob)
    np.testing.assert_allclose(M.min_fde(pred, gt, prob), ref["minFDE"], rtol=1e-12)
    np.testing.assert_allclose(M.min_ade(pred, gt, prob), ref["minADE_all"], rtol=1e-12)
    np.testing.assert_allclose(M.ade_of_best_fde_mode(pred, gt, prob), ref["ade_of_best_fde"], rtol=1e-12)
    np.testing.assert_array_equal(M.miss_rate(pred, gt, prob, threshold=2.0), ref["missed"])
    np.testing.assert_allclose(M.brier_min_fde(pred, gt, prob), ref["brier_fde"], rtol=1e-12)
    assert (M.min_ade(pred, gt, prob) <= M.ade_of_best_fde_mode(pred, gt, prob) + 1e-12).all()


@pytest.mark.parametrize("seed", SEEDS)
def test_top_k_and_miss_threshold_match_av2_on_the_kept_modes(seed):
    """``k`` keeps the k most probable modes: AV2's functions on exactly those modes give the same numbers."""
    pred, gt, prob = _random(seed, k=6)
    threshold = float(np.random.default_rng(seed).uniform(0.5, 4.0))
    for k in (1, 3):
        keep = np.argsort(-prob, axis=1, kind="stable")[:, :k]
        sub_pred = np.take_along_axis(pred, keep[:, :, None, None], axis=1)
        sub_prob = np.take_along_axis(prob, keep, axis=1)
        ref = _av2_per_agent(sub_pred, gt, sub_prob, threshold)
        np.testing.assert_allclose(M.min_fde(pred, gt, prob, k=k), ref["minFDE"], rtol=1e-12)
        np.testing.assert_allclose(M.ade_of_best_fde_mode(pred, gt, prob, k=k), ref["ade_of_best_fde"], rtol=1e-12)
        np.testing.assert_array_equal(M.miss_rate(pred, gt, prob, k=k, threshold=threshold), ref["missed"])
        np.testing.assert_allclose(M.brier_min_fde(pred, gt, prob, k=k), ref["brier_fde"], rtol=1e-12)


@pytest.mark.parametrize("seed", SEEDS)
def test_joint_metrics_match_av2_worlds(seed):
    """Scene-level (multi-world) metrics against av2's compute_world_* on each scene."""
    pred, gt, _ = _random(seed, n=15)
    scene = np.random.default_rng(seed).integers(0, 4, 15)
    ours = joint_metrics(pred, gt, scene, miss_threshold=2.0)
    for i, s in enumerate(ours["scene"]):
        sel = scene == s
        world_fde = av2.compute_world_fde(pred[sel], gt[sel])
        best = int(np.argmin(world_fde))
        assert ours["avgMinFDE"][i] == pytest.approx(world_fde[best], rel=1e-12)
        assert ours["avgMinADE"][i] == pytest.approx(av2.compute_world_ade(pred[sel], gt[sel])[best], rel=1e-12)
        assert ours["actorMR"][i] == pytest.approx(av2.compute_world_misses(pred[sel], gt[sel], 2.0)[:, best].mean())


# --- Waymo-style speed-scaled miss rate ------------------------------------------------------------


def test_speed_scale_is_waymos_piecewise_linear_ramp():
    np.testing.assert_allclose(W.speed_scale(np.array([0.0, 1.4, 6.2, 11.0, 30.0])), [0.5, 0.5, 0.75, 1.0, 1.0])


def _one_step(err_xy, speed, heading=0.0):
    """One agent, two modes: mode 0 off by ``err_xy`` at the evaluated step, mode 1 far away."""
    t = 30
    gt = np.zeros((1, t, 2))
    gt[0, :, 0] = np.linspace(0.1, 3.0, t) * np.cos(heading)
    gt[0, :, 1] = np.linspace(0.1, 3.0, t) * np.sin(heading)
    pred = np.repeat(gt[:, None], 2, axis=1)
    pred[0, 0, -1] += err_xy
    pred[0, 1, -1] += (50.0, 50.0)
    return pred, gt, np.array([float(speed)])


@pytest.mark.parametrize("err, speed, heading, missed", [
    ((0.0, 0.9), 20.0, 0.0, 0.0),   # 0.9 m lateral < 1.0 m
    ((0.0, 1.1), 20.0, 0.0, 1.0),   # 1.1 m lateral > 1.0 m
    ((1.9, 0.0), 20.0, 0.0, 0.0),   # 1.9 m longitudinal < 2.0 m
    ((0.0, 0.6), 0.5, 0.0, 1.0),    # slow: thresholds halved, 0.6 m lateral > 0.5 m
    ((0.9, 0.0), 0.5, 0.0, 0.0),    # slow: 0.9 m longitudinal < 1.0 m
    ((0.0, 1.9), 20.0, np.pi / 2, 0.0),  # heading +y: an error along y is longitudinal
    ((1.1, 0.0), 20.0, np.pi / 2, 1.0),  # ... and one along x lateral
])
def test_speed_scaled_miss_hand_worked(err, speed, heading, missed):
    pred, gt, v = _one_step(np.array(err), speed, heading)
    assert W.speed_scaled_miss(pred, gt, v, step=29)[0] == missed
    # the far mode alone always misses; the near one alone decides
    prob = np.array([[0.2, 0.8]])
    assert W.speed_scaled_miss(pred, gt, v, step=29, prob=prob, k=1)[0] == 1.0


def test_speed_scaled_miss_nan_where_the_step_is_not_observed():
    pred, gt, v = _one_step(np.array([0.0, 0.0]), 5.0)
    valid = np.ones((1, 30), bool)
    valid[0, 29] = False
    assert np.isnan(W.speed_scaled_miss(pred, gt, v, step=29, valid=valid)[0])
    with pytest.raises(ValueError, match="step"):
        W.speed_scaled_miss(pred, gt, v, step=30)


def test_speed_scaled_miss_never_below_the_plain_miss_rate_at_the_same_scale():
    """With a 2 m longitudinal and 2 m lateral bar at full scale, a Waymo hit lies inside the 2*sqrt(2) m
    box around the truth: every agent missed at 2*sqrt(2) m (plain FDE) is also a Waymo miss."""
    for seed in SEEDS:
        pred, gt, prob = _random(seed)
        speed = np.full(len(gt), 20.0)
        waymo = W.speed_scaled_miss(pred, gt, speed, step=29, lateral=2.0, longitudinal=2.0)
        plain = M.miss_rate(pred, gt, threshold=2.0 * np.sqrt(2.0))
        assert (waymo >= plain).all()
