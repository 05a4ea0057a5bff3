"""What a closed traffic signal ahead tells about a vehicle's endpoint, with no model (issue 10).

Usage: python bench/signal_rule.py --store STORE [--split val] [--t0-stride 20] [--json PATH]

For every vehicle of the split present at t0 and at t0 + 3 s (t0 on a stride), constant velocity's
final displacement against a one-line rule: keep the velocity, but stop 3 m before the nearest closed
signal (``traffic_signal`` object present at t0) that lies 0-50 m ahead, within 6 m of the vehicle's
axis and heading within 30 degrees of it (its own approach, not a crossing). Rows split the vehicles by
whether such a signal is there and whether the vehicle stands (< 0.5 m/s) at t0, with each group's share
of constant velocity's summed error: where the error is that signals can explain, and where it is not.
Validation split by default (figures that guide choices never come from test).
"""

from __future__ import annotations

import argparse

import numpy as np
from _common import report

from forecast.data.store import Store
from forecast.data.types import AgentType
from forecast.features.frames import ahead_on_its_way

HISTORY, FUTURE, DT = 20, 30, 0.1
STOP_BEFORE_M, AHEAD_M, LATERAL_M, ALIGNED_RAD = 3.0, 50.0, 6.0, np.pi / 6


def vehicle_rows(store: Store, split: str, stride: int) -> np.ndarray:
    """``[N, 4]``: constant velocity's and the rule's final displacement (m), signal ahead (0/1), speed (m/s)."""
    out = []
    for info in store.scenarios():
        if info.split != split:
            continue
        s = store.load_scenario(info.scenario_id)
        pres, xy = s.present, s.xy
        sig = np.flatnonzero(s.agent_type == AgentType.TRAFFIC_SIGNAL)
        for t0 in range(HISTORY - 1, pres.shape[1] - FUTURE, stride):
            walls = sig[pres[sig, t0]]
            for a in np.flatnonzero(s.agent_type == AgentType.VEHICLE):
                if not (pres[a, t0] and pres[a, t0 - 1] and pres[a, t0 + FUTURE]):
                    continue
                v = (xy[a, t0] - xy[a, t0 - 1]) / DT
                speed = float(np.hypot(*v))
                h = np.arctan2(v[1], v[0]) if speed > 0.5 else s.heading[a, t0]
                axis = np.array([np.cos(h), np.sin(h)])
                ahead = ahead_on_its_way(xy[a, t0], h, xy[walls, t0], s.heading[walls, t0], AHEAD_M, LATERAL_M,
                                         ALIGNED_RAD)
                wall = ((xy[walls[ahead], t0] - xy[a, t0]) @ axis).min() if ahead.any() else np.inf
                travel = min(speed * FUTURE * DT, max(0.0, wall - STOP_BEFORE_M))
                gt = xy[a, t0 + FUTURE]
                cv = np.hypot(*(xy[a, t0] + v * FUTURE * DT - gt))
                rule = np.hypot(*(xy[a, t0] + axis * travel - gt))
                out.append((cv, rule, float(np.isfinite(wall)), speed))
    return np.array(out).reshape(-1, 4)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--store", required=True)
    ap.add_argument("--split", default="val")
    ap.add_argument("--t0-stride", type=int, default=20)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    r = vehicle_rows(Store(args.store), args.split, args.t0_stride)
    if not len(r):
        raise SystemExit(f"no vehicle of the {args.split} split has 2 s of history and 3 s of future")
    cv, rule, has, speed = r[:, 0], r[:, 1], r[:, 2] > 0, r[:, 3]
    standing = speed < 0.5
    groups = {"all": np.ones(len(r), bool), "signal ahead": has, "signal ahead, moving": has & ~standing,
              "signal ahead, standing": has & standing, "no signal ahead": ~has,
              "no signal ahead, moving": ~has & ~standing, "no signal ahead, standing": ~has & standing}
    rows = [{"vehicles": name, "n": int(m.sum()), "share": float(m.mean()), "cv_fde_m": float(cv[m].mean()),
             "rule_fde_m": float(rule[m].mean()), "rule_x_cv": float(rule[m].mean() / cv[m].mean()),
             "share_of_cv_error": float(cv[m].sum() / cv.sum())} for name, m in groups.items() if m.any()]
    report("signal_rule", rows, {"store": args.store, "split": args.split, "t0_stride": args.t0_stride}, args.json)


if __name__ == "__main__":
    main()
