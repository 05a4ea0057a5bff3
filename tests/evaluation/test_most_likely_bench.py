"""bench/most_likely.py's sharpened brier gap: the brier gap alone rewards over-confident probabilities."""

from __future__ import annotations

import numpy as np
import pytest

from tests.conftest import bench_module


@pytest.fixture
def sharpened_gap(monkeypatch):
    return bench_module(monkeypatch, "most_likely").sharpened_gap


def test_calibrated_probabilities_are_not_the_gaps_optimum(sharpened_gap):
    # ten agents whose probabilities are exactly calibrated: mode 0 wins 5 times, mode 1 three, mode 2 twice
    prob = np.tile([0.5, 0.3, 0.2], (10, 1))
    winner = np.array([0] * 5 + [1] * 3 + [2] * 2)
    out = sharpened_gap(prob, winner)
    calibrated = 0.5 * 0.5**2 + 0.3 * 0.7**2 + 0.2 * 0.8**2  # 0.4
    assert out["sharpening_tau"] < 1.0 and out["brier_gap_sharpened_m"] < calibrated - 1e-3
    # no probabilities do better than the gap's optimum over the simplex: 1 - p_k = c / q_k
    c = 2.0 / (1 / 0.5 + 1 / 0.3 + 1 / 0.2)
    floor = sum(q * (c / q) ** 2 for q in (0.5, 0.3, 0.2))
    assert out["brier_gap_sharpened_m"] >= floor - 1e-9
    assert out["top_mode_miss_rate"] == pytest.approx(0.5)


def test_no_gain_keeps_the_calibrated_probabilities(sharpened_gap):
    prob = np.tile([0.5, 0.5], (4, 1))  # a temperature cannot move an even split
    out = sharpened_gap(prob, np.array([0, 1, 0, 1]))
    assert out["sharpening_tau"] == 1.0 and out["brier_gap_sharpened_m"] == pytest.approx(0.25)
    right = sharpened_gap(np.eye(3)[[0, 2, 1]], np.array([0, 2, 1]))  # one-hot and right: nothing to gain
    assert right["brier_gap_sharpened_m"] == pytest.approx(0.0) and right["top_mode_miss_rate"] == 0.0
