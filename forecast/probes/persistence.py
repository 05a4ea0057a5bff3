"""Persistence: how much worse the forecasts get when the history has holes.

Conditions (the same scored agents and t0 each time; t0 itself always stays observed):
``drop_20`` / ``drop_50``: that share of history frames removed at random, per agent;
``hidden_1s``: every agent unseen for the 1 s before the last 0.2 s of history.
"""

from __future__ import annotations

import numpy as np

from forecast import metrics
from forecast.batching import Question, predict_stream
from forecast.features.dataset import SceneSet
from forecast.features.sample import build_sample
from forecast.features.tracks import AgentTracks

CONDITIONS = ("full", "drop_20", "drop_50", "hidden_1s")


def degrade(tracks: AgentTracks, t0: int, history_steps: int, condition: str, rng: np.random.Generator) -> AgentTracks:
    """A copy of ``tracks`` with history frames (before t0) hidden according to ``condition``."""
    if condition == "full":
        return tracks
    present = tracks.present.copy()
    lo = max(0, t0 - history_steps + 1)
    if condition.startswith("drop_"):
        share = int(condition.split("_")[1]) / 100.0
        window = present[:, lo:t0]
        window &= rng.random(window.shape) >= share
    elif condition == "hidden_1s":
        gap = int(round(1.0 / tracks.dt))
        end = t0 - max(1, int(round(0.2 / tracks.dt)))
        present[:, max(lo, end - gap) : end] = False
    else:
        raise ValueError(f"unknown persistence condition {condition!r}; known: {CONDITIONS}")
    return AgentTracks(tracks.xy, tracks.heading, present, tracks.agent_type, tracks.dt, tracks.track_ids)


def evaluate_persistence(scenes: SceneSet, predict, max_samples: int = 200, seed: int = 0) -> dict:
    """minADE/minFDE (all modes) per condition on the same agents, and the relative degradation.

    ``predict``: a ``predict(sample)`` callable or a predictor object (``forecast.batching``)."""
    cfg = scenes.cfg
    rng = np.random.default_rng(seed)
    chosen = rng.permutation(len(scenes.index))[:max_samples]
    per: dict[str, dict[str, list]] = {c: {"pred": [], "prob": []} for c in CONDITIONS}
    gts = []

    def questions():
        for k in chosen:
            idx = scenes.index[k]
            info = scenes.infos[idx.scenario]
            m = scenes.maps.get(info.map_id) if info.map_id else None
            base = scenes.sample(k)
            scored = base.target_mask & base.future_mask.all(1)
            if not scored.any():
                continue
            gts.append(base.future[scored])
            for c in CONDITIONS:
                if c == "full":
                    s = base  # the unaltered history: the sample already built
                else:
                    tr = degrade(scenes.tracks[idx.scenario], idx.t0, cfg.history_steps, c,
                                 np.random.default_rng([seed, int(k)]))
                    s = build_sample(tr, idx.t0, cfg, m, idx.agents, idx.agents[0], with_future=False)
                yield (c, scored), Question(s)

    for (c, scored), (traj, prob) in predict_stream(predict, questions()):
        per[c]["pred"].append(traj[scored])
        per[c]["prob"].append(prob[scored])
    if not gts:
        return {"n": 0}
    gt = np.concatenate(gts)
    out: dict = {"n": int(len(gt))}
    for c in CONDITIONS:
        pred, prob = np.concatenate(per[c]["pred"]), np.concatenate(per[c]["prob"])
        prob = prob / prob.sum(-1, keepdims=True)
        out[c] = {"minADE": metrics.aggregate(metrics.min_ade(pred, gt, prob)),
                  "minFDE": metrics.aggregate(metrics.min_fde(pred, gt, prob))}
    for c in CONDITIONS[1:]:
        out[c]["minFDE_degradation"] = out[c]["minFDE"] / out["full"]["minFDE"] - 1.0
    return out
