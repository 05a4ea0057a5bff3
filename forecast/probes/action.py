"""Action-conditioned rollout, measured: give the focal agent's true future as the plan and see
whether the other agents' forecasts get better (they should, if the model uses the action)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from forecast import metrics
from forecast.features.dataset import SceneSet


def evaluate_action_conditioning(scenes: SceneSet, predict: Callable, max_samples: int = 200, seed: int = 0) -> dict:
    """``predict(sample, plan=None, plan_mask=None) -> (traj, prob)``; plan [A, T_f, 2] agent frame.

    For samples whose focal agent (index 0) has a full future, compares minFDE of the *other*
    scored agents without and with the focal agent's true future as the plan.
    """
    rng = np.random.default_rng(seed)
    rows = {"free": ([], []), "planned": ([], [])}
    gts = []
    for k in rng.permutation(len(scenes.index))[: max_samples * 3]:
        s = scenes.sample(int(k))
        if not s.future_mask[0].all():
            continue
        others = s.target_mask & s.future_mask.all(1)
        others[0] = False
        if not others.any():
            continue
        plan = np.zeros_like(s.future)
        plan[0] = s.future[0]
        mask = np.zeros(s.num_agents, bool)
        mask[0] = True
        for key, kwargs in (("free", {}), ("planned", {"plan": plan, "plan_mask": mask})):
            traj, prob = predict(s, **kwargs)
            rows[key][0].append(traj[others])
            rows[key][1].append(prob[others])
        gts.append(s.future[others])
        if len(gts) >= max_samples:
            break
    if not gts:
        return {"n": 0}
    gt = np.concatenate(gts)
    out: dict = {"n": int(len(gt))}
    for key, (preds, probs) in rows.items():
        pred, prob = np.concatenate(preds), np.concatenate(probs)
        prob = prob / prob.sum(-1, keepdims=True)
        out[key] = {"minADE": metrics.aggregate(metrics.min_ade(pred, gt, prob)),
                    "minFDE": metrics.aggregate(metrics.min_fde(pred, gt, prob))}
    out["others_minFDE_change"] = out["planned"]["minFDE"] / out["free"]["minFDE"] - 1.0
    return out
