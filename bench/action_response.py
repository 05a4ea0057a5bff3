"""How much a plan can move the near agents' forecasts (issue 10 item 3), on the validation split.

Usage: python bench/action_response.py --model M [M ...] --store STORE [--source sumo] [--split val]
                                       [--samples 150] [--split-samples 300] [--json PATH]

Per model two measurements, each without and with the focal agent's true future as its plan:

* ``near_minFDE_change``: what ``metrics.json`` reports (``forecast.probes.action``: the other scored
  agents within 20 m of the focal one; goal -5 %), here on the validation split, so that a training
  option can be judged on it;
* the near agents split into the focal agent's **followers** (a vehicle or cyclist that has the focal
  agent 0 to 20 m ahead on its way, within 2 m of its axis and heading within 0.5 rad: the agents whose
  future a plan should move most) and the rest: their counts, each group's share of the near agents'
  summed minFDE@6 without a plan, and each group's change. The followers' share is the most the near
  figure could move if the plan removed the followers' error altogether and nobody else responded.
"""

from __future__ import annotations

import numpy as np
import torch
from _common import models_on_split_parser, report

from forecast import metrics
from forecast.data.store import Store
from forecast.data.types import AgentType
from forecast.features.dataset import SceneSet, select_scenarios
from forecast.features.frames import ahead_on_its_way
from forecast.model.predictor import TorchPredictor
from forecast.probes.action import NEAR_RADIUS, evaluate_action_conditioning, focal_plan, near_others

FOLLOW_LATERAL_M = 2.0
FOLLOW_ANGLE_RAD = 0.5


def followers(origin: np.ndarray, heading: np.ndarray, agent_type: np.ndarray, focal: int = 0) -> np.ndarray:
    """``[A]`` bool: vehicles and cyclists that have agent ``focal`` 0 to ``NEAR_RADIUS`` metres ahead on their
    way (within ``FOLLOW_LATERAL_M`` of their axis, heading within ``FOLLOW_ANGLE_RAD`` of theirs).
    origin [A, 2] m, heading [A] rad (NaN: unknown, never a follower), agent_type [A]."""
    out = np.zeros(len(origin), bool)
    if agent_type[focal] == AgentType.PEDESTRIAN or not np.isfinite(heading[focal]):
        return out
    for j in np.flatnonzero(np.isin(agent_type, [AgentType.VEHICLE, AgentType.CYCLIST]) & np.isfinite(heading)):
        if j != focal:
            out[j] = ahead_on_its_way(origin[j], heading[j], origin[focal:focal + 1], heading[focal:focal + 1],
                                      NEAR_RADIUS, FOLLOW_LATERAL_M, FOLLOW_ANGLE_RAD)[0]
    return out


def follower_split(scenes: SceneSet, predict, max_samples: int) -> dict:
    """Near agents' minFDE@6 without and with the focal agent's true plan, followers apart (see the module)."""
    free, planned, is_follower = [], [], []
    used = 0
    for k in range(len(scenes)):
        s = scenes.sample(k)
        if not s.future_mask[0].all():
            continue
        _, near = near_others(s)
        if not near.any():
            continue
        plan, mask = focal_plan(s)
        free.append(metrics.min_fde(predict(s)[0][near], s.future[near]))
        planned.append(metrics.min_fde(predict(s, plan=plan, plan_mask=mask)[0][near], s.future[near]))
        is_follower.append(followers(s.origin, s.heading, s.agent_type)[near])
        used += 1
        if used >= max_samples:
            break
    if not free:
        return {"samples": 0}
    free, planned, f = np.concatenate(free), np.concatenate(planned), np.concatenate(is_follower)
    out = {"samples": used, "near": int(len(f)), "followers": int(f.sum())}
    for name, sel in (("followers", f), ("rest", ~f)):
        out[f"{name}_share_of_error_pct"] = float(100 * free[sel].sum() / free.sum())
        out[f"{name}_minFDE_free_m"] = float(free[sel].mean()) if sel.any() else float("nan")
        out[f"{name}_change_pct"] = float(100 * (planned[sel].sum() / free[sel].sum() - 1.0)) if sel.any() else float("nan")
    out["near_change_pct"] = float(100 * (planned.sum() / free.sum() - 1.0))
    return out


def main() -> None:
    ap = models_on_split_parser(__doc__)
    ap.add_argument("--samples", type=int, default=150, help="samples of the metrics.json measurement")
    ap.add_argument("--split-samples", type=int, default=300, help="samples with a near agent for the follower split")
    args = ap.parse_args()
    torch.set_num_threads(1)
    store = Store(args.store)
    scenario_ids = select_scenarios(store, args.split, args.source)
    rows = []
    for path in args.model:
        model = TorchPredictor(path)
        scenes = SceneSet(store, scenario_ids, model.features, t0_stride=20, max_samples=3 * args.samples,
                          seed=args.seed)
        card = evaluate_action_conditioning(scenes, model, max_samples=args.samples, seed=args.seed)
        split_scenes = SceneSet(store, scenario_ids, model.features, t0_stride=20,
                                max_samples=5 * args.split_samples, seed=args.seed)
        split = follower_split(split_scenes, model.predict, args.split_samples)
        rows.append({"model": path, "near_agents": card["n_near"],
                     "near_minFDE_change_pct": 100 * card["near_minFDE_change"],
                     "near_minFDE1_change_pct": 100 * card["near_minFDE1_change"],
                     "near_shift_m": card["near_endpoint_shift_m"], "far_shift_m": card["far_endpoint_shift_m"],
                     **{f"split_{k}": v for k, v in split.items()}})
        print(f"{path}: near minFDE@6 {rows[-1]['near_minFDE_change_pct']:+.2f} %, followers' share of the near "
              f"error {split.get('followers_share_of_error_pct', float('nan')):.1f} %", flush=True)
    report("action-response", rows, {"store": args.store, "split": args.split, "source": args.source}, args.json)


if __name__ == "__main__":
    main()
