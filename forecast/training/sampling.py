"""Training sampling that favours scenes where agents interact.

Most samples of a traffic scene are agents going their own way; the ones that teach a world model
to respond (following, yielding, queueing) are rarer. ``interaction_weights`` scores each sample
by how many of its scored agents have a moving agent close by at t0, and the training loader draws
samples with probability proportional to ``1 + boost * min(close pairs, cap) / cap``.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import WeightedRandomSampler

from forecast.features.dataset import SceneSet
from forecast.features.frames import norm2

CLOSE_M = 10.0  # metres: two agents this close at t0 can affect each other within the horizon
MOVING_MS = 0.5  # m/s: at least one of the two moves
CAP = 4  # close pairs counted per sample


def interaction_counts(scenes: SceneSet) -> np.ndarray:
    """[S] int: pairs (scored agent, other agent) within ``CLOSE_M`` at t0 with at least one of them moving."""
    out = np.zeros(len(scenes.index), np.int64)
    for k, idx in enumerate(scenes.index):
        tr = scenes.tracks[idx.scenario]
        xy = tr.xy[idx.agents, idx.t0]  # [A, 2]
        prev = tr.xy[idx.agents, max(0, idx.t0 - 1)]
        ok = tr.present[idx.agents, idx.t0] & tr.present[idx.agents, max(0, idx.t0 - 1)]
        speed = np.where(ok, norm2(xy - prev) / tr.dt, 0.0)
        d = norm2(xy[:, None] - xy[None])
        close = (d < CLOSE_M) & ~np.eye(len(xy), dtype=bool) & ((speed[:, None] > MOVING_MS) | (speed[None] > MOVING_MS))
        out[k] = int(close[idx.scored].sum())
    return out


def interaction_weights(scenes: SceneSet, boost: float) -> np.ndarray:
    """[S] float sampling weights ``1 + boost * min(count, CAP) / CAP``."""
    return 1.0 + boost * np.minimum(interaction_counts(scenes), CAP) / CAP


def interaction_sampler(scenes: SceneSet, boost: float, generator: torch.Generator) -> WeightedRandomSampler:
    """An epoch of ``len(scenes)`` draws with replacement, weighted by ``interaction_weights``."""
    w = torch.as_tensor(interaction_weights(scenes, boost), dtype=torch.double)
    return WeightedRandomSampler(w, num_samples=len(w), replacement=True, generator=generator)
