"""Action-conditioned rollout, measured: give the focal agent's true future as the plan and see
whether the other agents' forecasts get better (they should, if the model uses the action).

Reported for all other scored agents (``others_minFDE_change``) and for those within
``NEAR_RADIUS`` metres of the planned agent at t0 (``near_minFDE_change``), where a response to
the plan should show most; for the near agents also the change of their most likely mode's FDE
(``near_minFDE1_change``), the change per class, and how far the plan moves their predicted
endpoints at all (``near_endpoint_shift_m``, whatever the truth: zero means the plan is ignored).
"""

from __future__ import annotations

import numpy as np

from forecast import metrics
from forecast.batching import Question, predict_stream
from forecast.data.schema import AgentType
from forecast.features.dataset import SceneSet
from forecast.features.frames import norm2

NEAR_RADIUS = 20.0  # metres


def near_others(s) -> tuple[np.ndarray, np.ndarray]:
    """[A] bool each: the other scored agents of sample ``s`` with a full future (not the focal agent 0),
    and those of them within ``NEAR_RADIUS`` of the focal agent at t0."""
    others = s.target_mask & s.future_mask.all(1)
    others[0] = False
    return others, others & (norm2(s.origin - s.origin[0]) < NEAR_RADIUS)


def focal_plan(s) -> tuple[np.ndarray, np.ndarray]:
    """The focal agent's true future as its plan: plan [A, T_f, 2] (zeros elsewhere) and plan_mask [A]."""
    plan = np.zeros_like(s.future)
    plan[0] = s.future[0]
    mask = np.zeros(s.num_agents, bool)
    mask[0] = True
    return plan, mask


def evaluate_action_conditioning(scenes: SceneSet, predict, max_samples: int = 200, seed: int = 0) -> dict:
    """``predict(sample, plan=None, plan_mask=None) -> (traj, prob)``; plan [A, T_f, 2] agent frame. Or a
    predictor object with that ``predict`` (and optionally ``predict_batch``: ``forecast.batching``).

    For samples whose focal agent (index 0) has a full future, compares minFDE of the *other*
    scored agents without and with the focal agent's true future as the plan; samples with a scored
    agent within ``NEAR_RADIUS`` of the focal agent come first (a plan nobody is near of shows nothing).
    """
    rng = np.random.default_rng(seed)
    rows = {"free": ([], []), "planned": ([], [])}
    gts, near, kinds = [], [], []
    candidates, far = [], []
    for k in rng.permutation(len(scenes.index))[: max_samples * 3]:
        s = scenes.sample(int(k))
        if not s.future_mask[0].all():
            continue
        others, close = near_others(s)
        if not others.any():
            continue
        (candidates if close.any() else far).append((int(k), others, close))  # the sample is rebuilt when used

    def questions():
        for k, others, close in (candidates + far)[:max_samples]:
            s = scenes.sample(k)
            plan, mask = focal_plan(s)
            gts.append(s.future[others])
            near.append(close[others])
            kinds.append(s.agent_type[others])
            yield ("free", others), Question(s)
            yield ("planned", others), Question(s, plan, mask)

    for (key, others), (traj, prob) in predict_stream(predict, questions()):
        rows[key][0].append(traj[others])
        rows[key][1].append(prob[others])
    if not gts:
        return {"n": 0, "n_near": 0}
    gt, is_near, kind = np.concatenate(gts), np.concatenate(near), np.concatenate(kinds)
    out: dict = {"n": int(len(gt)), "n_near": int(is_near.sum()), "near_radius_m": NEAR_RADIUS}
    ends = {}
    for key, (preds, probs) in rows.items():
        pred, prob = np.concatenate(preds), np.concatenate(probs)
        prob = prob / prob.sum(-1, keepdims=True)
        fde = metrics.min_fde(pred, gt, prob)
        fde1 = metrics.min_fde(pred, gt, prob, k=1)
        out[key] = {"minADE": metrics.aggregate(metrics.min_ade(pred, gt, prob)), "minFDE": metrics.aggregate(fde),
                    "near_minFDE": metrics.aggregate(fde, is_near) if is_near.any() else float("nan"),
                    "near_minFDE1": metrics.aggregate(fde1, is_near) if is_near.any() else float("nan"),
                    "near_minFDE_by_class": {AgentType(int(c)).label: metrics.aggregate(fde, is_near & (kind == c))
                                             for c in np.unique(kind[is_near])}}
        ends[key] = pred[:, :, -1]  # [N, K, 2]
    out["others_minFDE_change"] = _change(out, "minFDE")
    out["near_minFDE_change"] = _change(out, "near_minFDE") if is_near.any() else float("nan")
    out["near_minFDE1_change"] = _change(out, "near_minFDE1") if is_near.any() else float("nan")
    out["near_minFDE_change_by_class"] = {
        c: _relative(out["planned"]["near_minFDE_by_class"][c], out["free"]["near_minFDE_by_class"][c])
        for c in out["free"]["near_minFDE_by_class"]}
    out["n_near_by_class"] = {AgentType(int(c)).label: int((is_near & (kind == c)).sum()) for c in np.unique(kind[is_near])}
    shift = norm2(ends["planned"] - ends["free"]).mean(-1)  # [N] m, mean over modes
    out["near_endpoint_shift_m"] = float(shift[is_near].mean()) if is_near.any() else float("nan")
    out["far_endpoint_shift_m"] = float(shift[~is_near].mean()) if (~is_near).any() else float("nan")
    return out


def _change(out: dict, key: str) -> float:
    return _relative(out["planned"][key], out["free"][key])


def _relative(planned: float, free: float) -> float:
    """planned / free - 1; NaN where the free error is 0 (a perfect or degenerate forecast: no relative change)."""
    return planned / free - 1.0 if free > 0 else float("nan")
