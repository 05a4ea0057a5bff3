"""Interaction-favouring training sampling."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import torch

from forecast.features.sample import SampleIndex
from forecast.features.tracks import AgentTracks
from forecast.training.sampling import interaction_counts, interaction_sampler, interaction_weights


def _scenes():
    t = 5
    # agents 0 and 1 drive side by side 4 m apart; agent 2 stands 50 m away; agents 3, 4 stand 2 m apart
    xy = np.zeros((5, t, 2))
    xy[0, :, 0] = np.arange(t) * 1.0
    xy[1, :, 0] = np.arange(t) * 1.0
    xy[1, :, 1] = 4.0
    xy[2] = [50.0, 0.0]
    xy[3] = [0.0, 100.0]
    xy[4] = [2.0, 100.0]
    tr = AgentTracks(xy, np.zeros((5, t)), np.ones((5, t), bool), np.zeros(5, np.int64), 0.1)
    index = [SampleIndex(0, 3, np.array([0, 1, 2]), np.array([True, True, True])),  # 2 close moving pairs
             SampleIndex(0, 3, np.array([3, 4]), np.array([True, True])),  # close but nobody moves
             SampleIndex(0, 3, np.array([0, 1]), np.array([True, False]))]  # only agent 0 is scored
    return SimpleNamespace(index=index, tracks=[tr])


def test_counts_close_moving_pairs_of_scored_agents():
    assert interaction_counts(_scenes()).tolist() == [2, 0, 1]
    w = interaction_weights(_scenes(), boost=2.0)
    np.testing.assert_allclose(w, [2.0, 1.0, 1.5])


def test_sampler_draws_interacting_samples_more_often():
    g = torch.Generator().manual_seed(0)
    sampler = interaction_sampler(_scenes(), boost=8.0, generator=g)
    draws = np.bincount([i for _ in range(300) for i in sampler], minlength=3)
    assert len(list(sampler)) == 3  # an epoch is as long as the data set
    assert draws[0] > draws[2] > draws[1]


def test_plans_prefer_an_agent_with_a_follower():
    """``_has_follower``: a scored vehicle behind, in the lane and going the same way."""
    from forecast.training.module import _has_follower

    # scene frame, metres: 0 leads, 1 follows 10 m behind; 2 is 10 m behind 0 but in the opposite
    # direction; 3 is a pedestrian 5 m behind 1; 4 drives 10 m behind 2 in its direction but 5 m aside
    xy = torch.tensor([[[0.0, 0.0], [-10.0, 0.0], [-30.0, 0.5], [-15.0, 0.0], [-20.0, 5.0]]])
    heading = torch.tensor([[0.0, 0.0, torch.pi, 0.0, torch.pi]])
    pose = torch.cat([xy / 50.0, torch.cos(heading)[..., None], torch.sin(heading)[..., None]], -1)
    batch = SimpleNamespace(pose=pose, agent_type=torch.tensor([[0, 0, 0, 1, 0]]),
                            target_mask=torch.ones(1, 5, dtype=torch.bool))
    assert _has_follower(batch, xy).tolist() == [[True, False, False, False, False]]
