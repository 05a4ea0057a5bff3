"""metrics.json's other-benchmark conventions (aggregate.convention_metrics): AV2 leaderboard minADE, Waymo's
speed-scaled miss at 3 s."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np

from forecast import metrics as M
from forecast import waymo_metrics as W
from forecast.evaluation.aggregate import convention_metrics
from forecast.features.config import FeatureConfig


class _Agents(SimpleNamespace):
    def __len__(self) -> int:
        return len(self.gt)


def test_av2_minade_and_waymo_miss_at_3s():
    rng = np.random.default_rng(0)
    n, k, t = 40, 6, 50  # 5 s at 0.1 s
    gt = np.cumsum(rng.normal(0.8, 0.3, (n, t, 2)), axis=1)
    pred = gt[:, None] + rng.normal(0, 1.5, (n, k, t, 2))
    prob = rng.dirichlet(np.ones(k), n)
    valid = rng.random((n, t)) > 0.1
    agents = _Agents(gt=gt, valid=valid, speed=rng.uniform(0, 15, n))
    res = convention_metrics(SimpleNamespace(pred=pred, prob=prob), agents, FeatureConfig(dt=0.1, future_steps=t))
    np.testing.assert_array_equal(res["minADE@6-av2"], M.ade_of_best_fde_mode(pred, gt, prob, k=6, valid=valid))
    assert (res["minADE@6-av2"] >= M.min_ade(pred, gt, prob, k=6, valid=valid) - 1e-12).all()
    np.testing.assert_array_equal(res["FDE-least-risk"], M.least_risk_fde(pred, gt, prob, valid=valid))
    assert (res["FDE-least-risk"] >= M.min_fde(pred, gt, prob, k=6, valid=valid) - 1e-12).all()
    waymo = res["MR@6-waymo3s"]
    np.testing.assert_array_equal(np.isnan(waymo), ~valid[:, 29])  # scored at step 29 (3 s) where observed
    np.testing.assert_array_equal(waymo, W.speed_scaled_miss(pred, gt, agents.speed, 29, prob, k=6, valid=valid))
    assert set(np.unique(waymo[~np.isnan(waymo)])) <= {0.0, 1.0}


def test_waymo_miss_is_nan_when_the_future_is_shorter_than_3s():
    rng = np.random.default_rng(1)
    gt = rng.normal(size=(5, 20, 2))
    agents = _Agents(gt=gt, valid=np.ones((5, 20), bool), speed=np.ones(5))
    res = convention_metrics(SimpleNamespace(pred=gt[:, None], prob=np.ones((5, 1))), agents,
                             FeatureConfig(dt=0.1, future_steps=20))
    assert np.isnan(res["MR@6-waymo3s"]).all() and np.allclose(res["minADE@6-av2"], 0.0)
