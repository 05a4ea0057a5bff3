"""Champion vs challenger: the cluster bootstrap against a known distribution, and the regression ranking."""

from __future__ import annotations

import numpy as np
import pytest

from forecast.evaluation.compare import bootstrap_delta, compare_groups, rank_regressions


def test_bootstrap_interval_matches_the_normal_theory():
    # 400 scenarios, one agent each, deltas ~ N(0.3, 1): the 95 % interval is 0.3 +- 1.96 / sqrt(400) ~ +-0.098
    rng = np.random.default_rng(1)
    d = rng.normal(0.3, 1.0, 400)
    r = bootstrap_delta(d, np.zeros(400), np.arange(400), n_boot=4000, seed=0)
    se = d.std(ddof=1) / np.sqrt(400)
    assert r["delta"] == pytest.approx(d.mean())
    assert r["ci_low"] == pytest.approx(d.mean() - 1.96 * se, abs=0.25 * se)
    assert r["ci_high"] == pytest.approx(d.mean() + 1.96 * se, abs=0.25 * se)
    assert r["n"] == 400 and r["n_groups"] == 400


def test_bootstrap_coverage_over_repeated_draws():
    # the interval should hold the true mean about 95 % of the time
    hits = 0
    for s in range(200):
        rng = np.random.default_rng(100 + s)
        d = rng.exponential(1.0, 60) - 1.0  # skewed, true mean 0
        r = bootstrap_delta(d, np.zeros(60), np.arange(60), n_boot=500, seed=s)
        hits += r["ci_low"] <= 0.0 <= r["ci_high"]
    assert 0.88 <= hits / 200 <= 0.99


def test_bootstrap_resamples_scenarios_not_agents():
    # 20 scenarios of 50 identical agents each: the agents of a scenario are one draw, so the interval is as wide
    # as with 20 independent values, much wider than 1000 independent agents would give
    rng = np.random.default_rng(3)
    per_scene = rng.normal(0.0, 1.0, 20)
    d = np.repeat(per_scene, 50)
    groups = np.repeat(np.arange(20), 50)
    clustered = bootstrap_delta(d, np.zeros_like(d), groups, n_boot=2000)
    naive = bootstrap_delta(d, np.zeros_like(d), np.arange(len(d)), n_boot=2000)
    width = clustered["ci_high"] - clustered["ci_low"]
    assert width == pytest.approx(2 * 1.96 * per_scene.std(ddof=1) / np.sqrt(20), rel=0.3)
    assert width > 4 * (naive["ci_high"] - naive["ci_low"])


def test_bootstrap_masks_and_nans():
    ch = np.array([1.0, 2.0, np.nan, 4.0])
    cp = np.array([0.0, 0.0, 0.0, 0.0])
    r = bootstrap_delta(ch, cp, np.array(["a", "a", "b", "b"]), mask=np.array([True, True, True, False]))
    assert r["delta"] == pytest.approx(1.5) and r["n"] == 2 and r["n_groups"] == 1
    empty = bootstrap_delta(ch, cp, np.arange(4), mask=np.zeros(4, bool))
    assert empty["delta"] is None and empty["n"] == 0


def test_compare_groups_layout():
    n = 30
    ch = {k: np.full(n, 2.0) for k in ("minFDE@6", "MR@6")}
    cp = {k: np.full(n, 1.5) for k in ("minFDE@6", "MR@6")}
    out = compare_groups(ch, cp, np.arange(n) // 3, {"x": np.arange(n) < 12}, n_boot=50, metrics=("minFDE@6", "MR@6"))
    assert out["x"]["n"] == 12 and out["x"]["n_scenarios"] == 4
    assert out["x"]["minFDE@6"]["delta"] == pytest.approx(0.5)
    assert out["x"]["minFDE@6"]["ci_low"] == pytest.approx(0.5) == out["x"]["minFDE@6"]["ci_high"]


def test_rank_regressions_one_row_per_scene_largest_first():
    delta = np.array([0.5, 2.0, -1.0, 1.5, 3.0, np.nan, 0.2])
    scene = np.array(["s1@10", "s1@10", "s2@10", "s3@20", "s1@10", "s4@0", "s5@0"], dtype=object)
    assert rank_regressions(delta, scene, top=10) == [4, 3, 6]  # s1 once (its worst row), improvements left out
    assert rank_regressions(delta, scene, top=2) == [4, 3]
    assert rank_regressions(-np.abs(delta), scene, top=3) == []


def test_comparison_section_counts_scenes_by_their_mean():
    from forecast.evaluation.compare import comparison_section

    ch = {k: np.array([3.0, 0.0, 1.0, 1.0]) for k in ("minADE@6", "minFDE@6", "MR@6", "minFDE@1", "brier-minFDE@6")}
    cp = {k: np.array([1.0, 1.5, 2.0, 2.0]) for k in ch}
    sid = np.array(["a", "a", "b", "b"], dtype=object)
    sec, rows = comparison_section("new", "old", {"new": ch, "old": cp}, sid, np.array([5, 5, 7, 7]),
                                   {"by_tag": {"x": np.array([True, False, False, False])}}, 100, 0.9, 5)
    assert rows == [0]  # only the scene with a worse agent, its worst agent
    assert sec["num_worse_scenes"] == 1 and sec["num_scenes"] == 2  # scene a: mean +0.25; scene b: -1
    assert sec["regressions"][0]["tags"] == ["x"] and sec["regressions"][0]["delta_minFDE@6"] == 2.0
    assert sec["by_tag"]["x"]["n"] == 1 and sec["overall"]["n"] == 4
