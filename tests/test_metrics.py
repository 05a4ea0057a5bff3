"""Hand-worked checks of forecast.metrics."""

from __future__ import annotations

import numpy as np
import pytest
from shapely.geometry import box

from forecast import metrics as m
from forecast import scene_metrics as sm

# --------------------------------------------------------------------------------------------------
# A 2-mode agent whose best-ADE and best-FDE modes differ.
#   gt      : (0, 0) -> (4, 0)
#   mode A  : (0.6, 0.8) -> (4, 1.5)    errors 1.0, 1.5   ADE 1.25  FDE 1.5
#   mode B  : (0, 3)     -> (4.6, 0.8)  errors 3.0, 1.0   ADE 2.0   FDE 1.0
# --------------------------------------------------------------------------------------------------
GT = np.array([[[0.0, 0.0], [4.0, 0.0]]])  # [1, 2, 2]
PRED = np.array([[[[0.6, 0.8], [4.0, 1.5]], [[0.0, 3.0], [4.6, 0.8]]]])  # [1, 2, 2, 2]


def test_displacement_errors_by_hand():
    err = m.displacement_errors(PRED, GT)
    assert err.shape == (1, 2, 2)
    np.testing.assert_allclose(err[0], [[1.0, 1.5], [3.0, 1.0]])


def test_best_ade_and_best_fde_modes_differ():
    assert m.min_ade(PRED, GT) == pytest.approx([1.25])  # mode A
    assert m.min_fde(PRED, GT) == pytest.approx([1.0])  # mode B
    assert m.ade_of_best_fde_mode(PRED, GT) == pytest.approx([2.0])  # ADE of mode B (AV2 challenge)


def test_k1_selects_most_probable_mode():
    # mode A most probable
    prob_a = np.array([[0.7, 0.3]])
    assert m.min_ade(PRED, GT, prob_a, k=1) == pytest.approx([1.25])
    assert m.min_fde(PRED, GT, prob_a, k=1) == pytest.approx([1.5])
    assert m.ade_of_best_fde_mode(PRED, GT, prob_a, k=1) == pytest.approx([1.25])
    # mode B most probable
    prob_b = np.array([[0.3, 0.7]])
    assert m.min_ade(PRED, GT, prob_b, k=1) == pytest.approx([2.0])
    assert m.min_fde(PRED, GT, prob_b, k=1) == pytest.approx([1.0])
    # k=K is the same as k=None
    assert m.min_ade(PRED, GT, prob_a, k=2) == pytest.approx([1.25])
    assert m.min_fde(PRED, GT, prob_a, k=2) == pytest.approx([1.0])


def test_least_risk_mode_sides_with_the_mass_not_the_top_mode():
    # one agent, three modes ending at x = 0, 0.2 and 10: the lone far mode is the most likely (0.4),
    # the two near ones hold 0.6 between them; expected endpoint errors: 4.08, 3.94 and 5.88 m
    pred = np.zeros((1, 3, 2, 2))
    pred[0, :, 1, 0] = [0.0, 0.2, 10.0]
    prob = np.array([[0.3, 0.3, 0.4]])
    assert m.least_risk_mode(pred, prob).tolist() == [1]
    gt = np.array([[[0.0, 0.0], [0.5, 0.0]]])
    assert m.least_risk_fde(pred, gt, prob) == pytest.approx([0.3])
    assert m.min_fde(pred, gt, prob, k=1) == pytest.approx([9.5])  # the most likely mode
    # the endpoint is each agent's last valid step: with only step 0 valid every mode ends at 0, a tie
    valid = np.array([[True, False]])
    assert m.least_risk_mode(pred, prob, valid).tolist() == [0]
    assert m.least_risk_fde(pred, gt, prob, valid) == pytest.approx([0.0])


def test_topk_keeps_highest_probability_modes():
    gt = np.zeros((1, 1, 2))
    # endpoint errors 0, 1, 2 ; probabilities rank modes 2 > 1 > 0
    pred = np.array([[[[0.0, 0.0]], [[1.0, 0.0]], [[2.0, 0.0]]]])
    prob = np.array([[0.1, 0.3, 0.6]])
    assert m.min_fde(pred, gt, prob, k=3) == pytest.approx([0.0])
    assert m.min_fde(pred, gt, prob, k=2) == pytest.approx([1.0])
    assert m.min_fde(pred, gt, prob, k=1) == pytest.approx([2.0])


def test_k_requires_prob_and_range():
    with pytest.raises(ValueError, match="requires prob"):
        m.min_ade(PRED, GT, k=1)
    prob = np.array([[0.5, 0.5]])
    for bad_k in (0, 3, 1.0):
        with pytest.raises(ValueError, match="k must be"):
            m.min_fde(PRED, GT, prob, k=bad_k)


def test_brier_min_fde_known_probability():
    prob = np.array([[0.7, 0.3]])
    # best endpoint is mode B (FDE 1.0, p 0.3): 1.0 + 0.7^2
    assert m.brier_min_fde(PRED, GT, prob) == pytest.approx([1.49])
    # k=1 keeps mode A only (FDE 1.5, p 0.7): 1.5 + 0.3^2
    assert m.brier_min_fde(PRED, GT, prob, k=1) == pytest.approx([1.59])
    # a certain, perfect mode scores 0
    assert m.brier_min_fde(GT[:, None], GT, np.array([[1.0]])) == pytest.approx([0.0])


def test_miss_exactly_at_threshold_is_not_a_miss():
    gt = np.zeros((3, 1, 2))
    pred = np.array([[[[2.0, 0.0]]], [[[2.0 + 1e-6, 0.0]]], [[[0.0, 1.0]]]])  # [3, 1, 1, 2]
    np.testing.assert_array_equal(m.miss_rate(pred, gt), [0.0, 1.0, 0.0])
    np.testing.assert_array_equal(m.miss_rate(pred, gt, threshold=0.5), [1.0, 1.0, 1.0])
    assert m.aggregate(m.miss_rate(pred, gt)) == pytest.approx(1 / 3)


def test_miss_rate_uses_best_topk_mode():
    prob = np.array([[0.7, 0.3]])
    # best mode B endpoint error 1.0, mode A 1.5
    assert m.miss_rate(PRED, GT, threshold=1.2).tolist() == [0.0]
    assert m.miss_rate(PRED, GT, prob, k=1, threshold=1.2).tolist() == [1.0]


def test_valid_mask_excludes_steps():
    gt = np.array([[[0.0, 0.0], [1.0, 0.0], [2.0, 0.0]]])
    pred = np.array([[[[0.0, 1.0], [1.0, 10.0], [2.0, 3.0]]]])  # errors 1, 10, 3
    assert m.min_ade(pred, gt) == pytest.approx([14 / 3])
    assert m.min_fde(pred, gt) == pytest.approx([3.0])

    middle_missing = np.array([[True, False, True]])
    assert m.min_ade(pred, gt, valid=middle_missing) == pytest.approx([2.0])
    assert m.min_fde(pred, gt, valid=middle_missing) == pytest.approx([3.0])

    # last step missing (gt NaN there): FDE is taken at the last valid step
    gt_nan = gt.copy()
    gt_nan[0, 2] = np.nan
    last_missing = np.array([[True, True, False]])
    assert m.min_ade(pred, gt_nan, valid=last_missing) == pytest.approx([5.5])
    assert m.min_fde(pred, gt_nan, valid=last_missing) == pytest.approx([10.0])
    assert m.miss_rate(pred, gt_nan, valid=last_missing).tolist() == [1.0]
    err = m.displacement_errors(pred, gt_nan, valid=last_missing)
    assert np.isnan(err[0, 0, 2]) and err[0, 0, 1] == pytest.approx(10.0)

    # NaN at a step claimed valid is an error, not a silent NaN
    with pytest.raises(ValueError, match="non-finite"):
        m.min_ade(pred, gt_nan)


def test_agent_without_valid_steps_is_nan_and_skipped_by_aggregate():
    gt = np.zeros((2, 2, 2))
    pred = np.ones((2, 1, 2, 2))  # error sqrt(2) everywhere
    valid = np.array([[True, True], [False, False]])
    ade = m.min_ade(pred, gt, valid=valid)
    assert ade[0] == pytest.approx(np.sqrt(2)) and np.isnan(ade[1])
    assert np.isnan(m.min_fde(pred, gt, valid=valid)[1])
    assert np.isnan(m.miss_rate(pred, gt, valid=valid)[1])
    assert m.aggregate(ade) == pytest.approx(np.sqrt(2))


def test_aggregate():
    assert m.aggregate(np.array([1.0, 2.0, 6.0])) == pytest.approx(3.0)
    assert m.aggregate(np.array([1.0, 2.0, 6.0]), np.array([True, True, False])) == pytest.approx(1.5)
    assert np.isnan(m.aggregate(np.array([])))
    assert np.isnan(m.aggregate(np.array([1.0]), np.array([False])))
    assert np.isnan(m.aggregate(np.array([np.nan])))


def test_truncate_horizon():
    gt = np.array([[[0.0, 0.0], [1.0, 0.0], [2.0, 0.0]]])
    pred = np.array([[[[0.0, 1.0], [1.0, 10.0], [2.0, 3.0]]]])
    p1, g1, v1 = m.truncate_horizon(pred, gt, None, 1)
    assert p1.shape == (1, 1, 1, 2) and g1.shape == (1, 1, 2) and v1 is None
    assert m.min_fde(p1, g1) == pytest.approx([1.0])
    p2, g2, v2 = m.truncate_horizon(pred, gt, np.array([[True, False, True]]), 2)
    assert v2.tolist() == [[True, False]]
    assert m.min_ade(p2, g2, valid=v2) == pytest.approx([1.0])
    assert m.min_fde(p2, g2, valid=v2) == pytest.approx([1.0])  # last valid step within 2 steps is t=0
    with pytest.raises(ValueError, match="steps"):
        m.truncate_horizon(pred, gt, None, 4)


# --------------------------------------------------------------------------------------------------
# probabilities
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "bad_row, why",
    [
        ([0.5, 0.6], "sums to"),
        ([1.2, -0.2], "negative"),
        ([np.nan, 1.0], "non-finite"),
        ([np.inf, 0.0], "non-finite"),
    ],
)
def test_validate_probabilities_rejects(bad_row, why):
    prob = np.array([[0.5, 0.5], bad_row, [0.2, 0.3]])  # row 2 also bad; row 1 is reported
    with pytest.raises(ValueError, match=rf"row 1 .*{why}"):
        m.validate_probabilities(prob)


def test_validate_probabilities_tolerance_and_shape():
    ok = np.array([[0.5, 0.5005], [1.0, 0.0]])
    np.testing.assert_array_equal(m.validate_probabilities(ok), ok)
    with pytest.raises(ValueError, match="row 0"):
        m.validate_probabilities(ok, atol=1e-4)
    with pytest.raises(ValueError, match="shape"):
        m.validate_probabilities(np.array([0.5, 0.5]))


@pytest.mark.parametrize(
    "call",
    [
        lambda p: m.min_ade(PRED, GT, p),
        lambda p: m.min_fde(PRED, GT, p),
        lambda p: m.ade_of_best_fde_mode(PRED, GT, p),
        lambda p: m.miss_rate(PRED, GT, p),
        lambda p: m.brier_min_fde(PRED, GT, p),
        lambda p: m.expected_calibration_error(p, PRED, GT),
        lambda p: m.calibration_curve(p, PRED, GT),
        lambda p: m.least_risk_fde(PRED, GT, p),
    ],
)
@pytest.mark.parametrize("bad", [[0.5, 0.6], [1.5, -0.5], [np.nan, 1.0]])
def test_every_prob_taking_function_validates(call, bad):
    with pytest.raises(ValueError, match="row 0"):
        call(np.array([bad]))


def test_prob_shape_must_match_modes():
    with pytest.raises(ValueError, match="prob must have shape"):
        m.min_fde(PRED, GT, np.array([[1.0]]))


def test_input_shape_checks():
    with pytest.raises(ValueError, match="pred"):
        m.min_ade(PRED[0], GT)
    with pytest.raises(ValueError, match="gt"):
        m.min_ade(PRED, GT[:, :1])
    with pytest.raises(ValueError, match="bool"):
        m.min_ade(PRED, GT, valid=np.ones((1, 2)))


# --------------------------------------------------------------------------------------------------
# calibration
# --------------------------------------------------------------------------------------------------


def _two_mode_set(p0: float, n_mode0_best: int, n: int = 10):
    """n agents, gt at origin; mode 0 endpoint error 0 for the first n_mode0_best agents, else 1."""
    gt = np.zeros((n, 1, 2))
    pred = np.zeros((n, 2, 1, 2))
    pred[:n_mode0_best, 1, 0, 0] = 1.0  # mode 1 off, mode 0 exact
    pred[n_mode0_best:, 0, 0, 0] = 1.0  # mode 0 off, mode 1 exact
    prob = np.tile([p0, 1.0 - p0], (n, 1))
    return prob, pred, gt


def test_ece_perfectly_calibrated_is_zero():
    prob, pred, gt = _two_mode_set(0.8, 8)  # p=0.8 right 8/10 times, p=0.2 right 2/10 times
    assert m.expected_calibration_error(prob, pred, gt) == pytest.approx(0.0, abs=1e-12)
    centres, mean_prob, freq, counts = m.calibration_curve(prob, pred, gt)
    np.testing.assert_allclose(centres, np.arange(10) / 10 + 0.05)
    assert counts.tolist() == [0, 0, 10, 0, 0, 0, 0, 0, 10, 0]
    np.testing.assert_allclose(mean_prob[[2, 8]], [0.2, 0.8])
    np.testing.assert_allclose(freq[[2, 8]], [0.2, 0.8])
    assert np.isnan(mean_prob[0]) and np.isnan(freq[0])


def test_ece_overconfident_is_positive():
    prob, pred, gt = _two_mode_set(0.9, 5)  # p=0.9 right only half the time
    # bins 0.9 and 0.1 hold half the pairs each: 0.5*|0.9-0.5| + 0.5*|0.1-0.5|
    assert m.expected_calibration_error(prob, pred, gt) == pytest.approx(0.4)


def test_ece_sampled_calibrated_is_small():
    rng = np.random.default_rng(0)
    n, k = 20000, 3
    prob = rng.dirichlet(np.ones(k), size=n)
    best = np.array([rng.choice(k, p=row) for row in prob])
    gt = np.zeros((n, 1, 2))
    pred = np.ones((n, k, 1, 2))
    pred[np.arange(n), best] = 0.0
    assert m.expected_calibration_error(prob, pred, gt) < 0.02
    # the same probabilities sharpened towards the argmax are overconfident
    sharp = prob**4 / (prob**4).sum(axis=1, keepdims=True)
    assert m.expected_calibration_error(sharp, pred, gt) > 0.05


def test_ece_skips_agents_without_valid_steps():
    prob, pred, gt = _two_mode_set(0.8, 8)
    # append an agent with no valid step whose (absent) outcome would break calibration
    prob = np.vstack([prob, [[0.8, 0.2]]])
    pred = np.concatenate([pred, np.full((1, 2, 1, 2), np.nan)])
    gt = np.concatenate([gt, np.full((1, 1, 2), np.nan)])
    valid = np.ones((11, 1), dtype=bool)
    valid[10] = False
    assert m.expected_calibration_error(prob, pred, gt, valid=valid) == pytest.approx(0.0, abs=1e-12)
    assert m.calibration_curve(prob, pred, gt, valid=valid)[3].sum() == 20


# --------------------------------------------------------------------------------------------------
# scene-level / map
# --------------------------------------------------------------------------------------------------


def test_overlap_two_agents_crossing():
    # agent 0 drives +x, agent 1 drives +y; both at the origin at t=1; agent 2 far away
    traj = np.array(
        [
            [[-2.0, 0.0], [0.0, 0.0], [2.0, 0.0]],
            [[0.0, -2.0], [0.0, 0.0], [0.0, 2.0]],
            [[50.0, 50.0], [50.0, 51.0], [50.0, 52.0]],
        ]
    )
    radius = np.array([1.0, 1.0, 1.0])
    np.testing.assert_array_equal(sm.overlap_rate(traj, radius), [1.0, 1.0, 0.0])

    # same paths, agent 1 one step late: paths cross but never at the same time
    late = traj.copy()
    late[1] = [[0.0, -4.0], [0.0, -2.0], [0.0, 0.0]]
    # closest same-time distance: t=2 -> |(2,0)-(0,0)| = 2 = r0 + r1 -> touching, not overlapping
    np.testing.assert_array_equal(sm.overlap_rate(late, radius), [0.0, 0.0, 0.0])
    np.testing.assert_array_equal(sm.overlap_rate(late, np.array([1.0, 1.01, 1.0])), [1.0, 1.0, 0.0])

    # the meeting step is invalid for agent 1 -> no overlap; agent without valid steps -> NaN
    valid = np.ones((3, 3), dtype=bool)
    valid[1, 1] = False
    valid[2] = False
    out = sm.overlap_rate(traj, radius, valid)
    assert out[:2].tolist() == [0.0, 0.0] and np.isnan(out[2])


def test_offroad_on_square():
    square = box(0.0, 0.0, 10.0, 10.0)
    pts = np.array(
        [
            [5.0, 5.0],  # inside
            [11.0, 5.0],  # outside
            [10.0, 5.0],  # on an edge -> on-road
            [0.0, 0.0],  # on a corner -> on-road
            [10.01, 5.0],  # just outside
            [-3.0, -3.0],  # outside
        ]
    )
    assert sm.offroad(pts, square).tolist() == [False, True, False, False, True, True]
    assert sm.offroad_rate(pts, square) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="non-finite"):
        sm.offroad(np.array([[np.nan, 0.0]]), square)


def test_matches_per_agent_loop_reference():
    """Random inputs vs. a plain per-agent loop of the AV2 per-mode formulas."""
    rng = np.random.default_rng(1)
    n, k, t = 7, 4, 5
    pred = rng.normal(size=(n, k, t, 2)) * 3
    gt = rng.normal(size=(n, t, 2)) * 3
    prob = rng.dirichlet(np.ones(k), size=n)
    valid = rng.random((n, t)) > 0.3
    valid[:, 0] = True
    for i in range(n):
        v = valid[i]
        last = np.flatnonzero(v)[-1]
        kept = np.argsort(-prob[i], kind="stable")[:2]
        ade = np.array([np.linalg.norm(pred[i, j, v] - gt[i, v], axis=-1).mean() for j in kept])
        fde = np.array([np.linalg.norm(pred[i, j, last] - gt[i, last]) for j in kept])
        b = int(np.argmin(fde))
        assert m.min_ade(pred, gt, prob, 2, valid)[i] == pytest.approx(ade.min())
        assert m.min_fde(pred, gt, prob, 2, valid)[i] == pytest.approx(fde.min())
        assert m.ade_of_best_fde_mode(pred, gt, prob, 2, valid)[i] == pytest.approx(ade[b])
        assert m.brier_min_fde(pred, gt, prob, 2, valid)[i] == pytest.approx(
            fde[b] + (1 - prob[i, kept[b]]) ** 2
        )
        assert m.miss_rate(pred, gt, prob, 2, 2.0, valid)[i] == float(fde.min() > 2.0)
    assert np.all(m.min_ade(pred, gt, valid=valid) <= m.ade_of_best_fde_mode(pred, gt, valid=valid))


def test_joint_metrics_pick_one_world_per_scene():
    from forecast.joint_metrics import joint_metrics, summarise_joint

    t = 3
    gt = np.zeros((3, t, 2))
    pred = np.zeros((3, 2, t, 2))
    # scene 0: agents 0, 1. Mode 0 is perfect for agent 0 and 4 m off for agent 1 (avg FDE 2);
    # mode 1 is 1 m off for both (avg FDE 1): the best world is mode 1, though each agent alone
    # would pick differently.
    pred[0, 0, :, 0] = 0.0
    pred[1, 0, :, 0] = 4.0
    pred[0, 1, :, 0] = 1.0
    pred[1, 1, :, 0] = 1.0
    # scene 1: one agent, mode 0 misses by 3 m, mode 1 by 2.5 m
    pred[2, 0, :, 1] = 3.0
    pred[2, 1, :, 1] = 2.5
    j = joint_metrics(pred, gt, np.array([0, 0, 1]), miss_threshold=2.0)
    np.testing.assert_allclose(j["avgMinFDE"], [1.0, 2.5])
    np.testing.assert_allclose(j["avgMinADE"], [1.0, 2.5])
    np.testing.assert_allclose(j["actorMR"], [0.0, 1.0])
    s = summarise_joint(j)
    assert s["n_scenes"] == 2
    assert s["avgMinFDE"] == pytest.approx(1.75)
    assert s["actorMR"] == pytest.approx(1 / 3)  # one of three actors missed
    # marginal minFDE is never worse than the joint one
    marginal = np.linalg.norm(pred[:, :, -1] - gt[:, None, -1], axis=-1).min(1)
    assert marginal[:2].mean() <= j["avgMinFDE"][0]


def test_joint_metrics_skip_agents_without_valid_steps_and_check_shapes():
    from forecast.joint_metrics import joint_metrics

    gt = np.zeros((2, 2, 2))
    pred = np.ones((2, 1, 2, 2))
    valid = np.array([[True, True], [False, False]])
    j = joint_metrics(pred, gt, np.array(["a", "b"]), valid)
    assert list(j["scene"]) == ["a"] and j["n_agents"].tolist() == [1]
    with pytest.raises(ValueError, match="scene must have shape"):
        joint_metrics(pred, gt, np.array([0]))


@pytest.mark.parametrize("k", [None, 1, 3])
def test_horizons_at_once_equal_each_truncated_horizon(k):
    rng = np.random.default_rng(7)
    n, modes, t = 9, 4, 12
    pred, gt = rng.normal(size=(n, modes, t, 2)) * 3, rng.normal(size=(n, t, 2)) * 3
    prob = rng.dirichlet(np.ones(modes), size=n)
    valid = rng.random((n, t)) > 0.3
    valid[0] = False  # no valid step at all: NaN at every horizon
    valid[1, :5] = False  # none in the first steps: NaN at the short horizons only
    gt[2, ~valid[2]] = np.nan  # NaN where not valid is allowed
    steps = np.array([1, 3, 5, 12])
    ade, fde = m.min_ade_fde_at_horizons(pred, gt, prob, steps, k=k, valid=valid)
    for i, s in enumerate(steps):
        args = m.truncate_horizon(pred, gt, valid, int(s))
        np.testing.assert_array_equal(ade[i], m.min_ade(*args[:2], prob, k=k, valid=args[2]))
        np.testing.assert_array_equal(fde[i], m.min_fde(*args[:2], prob, k=k, valid=args[2]))
    assert np.isnan(ade[:, 0]).all() and np.isnan(fde[:2, 1]).all() and not np.isnan(fde[3, 1])
    with pytest.raises(ValueError, match="steps"):
        m.min_ade_fde_at_horizons(pred, gt, prob, np.array([0]), valid=valid)
