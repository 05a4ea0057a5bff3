"""Where the most likely future comes from (issue 10: minFDE@1 against constant velocity).

Usage: python bench/most_likely.py --model runs/.../model.pt --store STORE [--split val] [--samples 300]
                                   [--t0-stride 20] [--source sumo] [--json PATH]

Per class, on one split (val by default: the figures may guide choices, so never the test split),
the final displacement (m) of: the highest-probability mode (what minFDE@1 scores), mode 0 (the
marginal mode, ``optim.marginal_mode_weight``), the mode of least expected displacement under the
model's own probabilities (a minimum-Bayes-risk choice), the probability-weighted mean endpoint,
constant velocity and the best of K; each also as a ratio to constant velocity. Then how constant
velocity's own error is spread: its median, the share of agents it puts within 0.1 m and 0.5 m, and
the share of its summed error that the worst 20 % of agents carry, and brier-minFDE@K minus minFDE@K (also at the extra temperature that minimises it, ``sharpened_gap``),
and how often each mode wins (ends closest): a mode that wins for under 1 % of a class is dead weight
there. Agents scored as the evaluation scores them (``target_mask``), endpoint at their last valid
future step. Vehicles are also split by
whether a closed traffic signal of the sample stands ahead of them at t0 (``bench/signal_rule.py``'s test).
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from _common import report
from signal_rule import AHEAD_M, ALIGNED_RAD, LATERAL_M  # vehicles split by a closed signal ahead, as there

from forecast import metrics as M
from forecast.data.store import Store
from forecast.data.types import AgentType
from forecast.features.dataset import SceneSet, select_scenarios
from forecast.features.frames import ahead_on_its_way
from forecast.model.baselines import BaselinePredictor
from forecast.model.predictor import TorchPredictor

CLASSES = {0: "vehicle", 1: "pedestrian", 2: "cyclist"}


def signal_ahead(s, rows: np.ndarray) -> np.ndarray:
    """[len(rows)] bool: a closed traffic signal of the sample stands ahead of agent ``rows`` at t0."""
    walls = np.flatnonzero(s.agent_type == AgentType.TRAFFIC_SIGNAL)
    return np.array([ahead_on_its_way(s.origin[a], s.heading[a], s.origin[walls], s.heading[walls], AHEAD_M,
                                      LATERAL_M, ALIGNED_RAD).any() for a in rows], bool)
# extra temperatures on the calibrated probabilities, for the brier gap's own optimum (``sharpened_gap``)
TAUS = np.exp(np.linspace(np.log(0.05), np.log(2.0), 75))
CHOICES = ("most_likely", "mode0", "least_expected_fde", "prob_mean", "constant_velocity", "best_of_k")


def endpoint_errors(traj: np.ndarray, prob: np.ndarray, cv: np.ndarray, gt: np.ndarray,
                    valid: np.ndarray) -> dict[str, np.ndarray]:
    """traj [N, K, T, 2], prob [N, K], cv [N, T, 2] (constant velocity), gt [N, T, 2], valid [N, T] of N
    agents with a valid step -> ``{choice: [N]}`` final displacement (m) at each agent's last valid step.

    The most likely mode, the best of K and the brier gap (brier-minFDE minus minFDE, issue 10 goal
    <= 0.4 m) are ``forecast.metrics``' own, as ``metrics.json`` computes them.
    """
    fde = lambda pred: M.min_fde(pred, gt, valid=valid)  # noqa: E731 - one trajectory per agent: its FDE
    last = valid.shape[1] - 1 - valid[:, ::-1].argmax(1)
    rows = np.arange(len(traj))
    ends = traj[rows, :, last]  # [N, K, 2]
    best = M.min_fde(traj, gt, valid=valid)
    winner = np.linalg.norm(ends - gt[rows, last][:, None], axis=-1).argmin(-1)
    return {"winner": winner, "most_likely": M.min_fde(traj, gt, prob, k=1, valid=valid), "mode0": fde(traj[:, :1]),
            "least_expected_fde": M.least_risk_fde(traj, gt, prob, valid=valid),
            "prob_mean": fde((prob[..., None, None] * traj).sum(1)[:, None]),
            "constant_velocity": fde(cv[:, None]), "best_of_k": best,
            "brier_gap": M.brier_min_fde(traj, gt, prob, valid=valid) - best}


def sharpened_gap(prob: np.ndarray, winner: np.ndarray) -> dict[str, float]:
    """prob [N, K] (calibrated), winner [N] -> the brier gap ``mean((1 - p_winner)^2)`` at the extra temperature
    ``tau`` on ``log p`` that minimises it, that ``tau``, and the top mode's miss rate (the gap as ``tau -> 0``).

    The gap alone is not a proper score once K > 2: it ignores how the mass left over is spread on the
    losing modes, so for calibrated probabilities that are neither uniform nor one-hot its minimum lies
    at ``tau < 1``; what it gains there is bought with over-confidence, which the calibration error (ECE)
    of ``metrics.json`` shows.
    """
    logp = np.log(np.clip(prob, 1e-12, None))
    rows = np.arange(len(winner))
    best = (float(((1.0 - prob[rows, winner]) ** 2).mean()), 1.0)
    for tau in TAUS:
        z = logp / tau
        p = np.exp(z - z.max(-1, keepdims=True))
        p /= p.sum(-1, keepdims=True)
        gap = float(((1.0 - p[rows, winner]) ** 2).mean())
        if gap < best[0] - 1e-12:  # a tie keeps the calibrated probabilities (tau = 1)
            best = (gap, float(tau))
    return {"brier_gap_sharpened_m": best[0], "sharpening_tau": best[1],
            "top_mode_miss_rate": float((prob.argmax(-1) != winner).mean())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--store", required=True)
    ap.add_argument("--split", default="val")
    ap.add_argument("--source", default=None)
    ap.add_argument("--samples", type=int, default=300)
    ap.add_argument("--t0-stride", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json")
    args = ap.parse_args()
    torch.set_num_threads(1)
    model = TorchPredictor(args.model)
    f = model.features
    cv = BaselinePredictor("constant_velocity", f.future_steps, f.dt)
    store = Store(args.store)
    scenes = SceneSet(store, select_scenarios(store, args.split, args.source), f, t0_stride=args.t0_stride,
                      max_samples=args.samples, seed=args.seed)
    per_class: dict[int, list[dict]] = {}
    top_is_mode0: dict[int, list[np.ndarray]] = {}
    for k in range(len(scenes)):
        s = scenes.sample(k)
        traj, prob = model.predict(s)
        cv_traj, _ = cv.predict(s)
        scored = s.target_mask & s.future_mask.any(1)
        if not scored.any():
            continue
        errs = endpoint_errors(traj[scored], prob[scored], cv_traj[scored, 0], s.future[scored], s.future_mask[scored])
        groups = [(int(c), s.agent_type[scored] == c) for c in np.unique(s.agent_type[scored])]
        veh = s.agent_type[scored] == AgentType.VEHICLE
        if veh.any():
            ahead = np.zeros(len(veh), bool)
            ahead[veh] = signal_ahead(s, np.flatnonzero(scored)[veh])
            groups += [("vehicle, signal ahead", veh & ahead), ("vehicle, no signal ahead", veh & ~ahead)]
        for c, sel in groups:
            if not sel.any():
                continue
            per_class.setdefault(c, []).append({**{key: v[sel] for key, v in errs.items()}, "prob": prob[scored][sel]})
            top_is_mode0.setdefault(c, []).append(prob[scored][sel].argmax(-1) == 0)
    rows = []
    for c in sorted(per_class, key=str):
        errs = {k: np.concatenate([e[k] for e in per_class[c]]) for k in (*CHOICES, "brier_gap", "winner", "prob")}
        wins = np.bincount(errs["winner"], minlength=model.model.cfg.modes) / len(errs["winner"])
        cv_mean = errs["constant_velocity"].mean()
        row = {"class": CLASSES.get(c, str(c)), "agents": len(errs["best_of_k"])}
        for k in CHOICES:
            row[f"{k}_m"] = float(errs[k].mean())
            row[f"{k}_x_cv"] = float(errs[k].mean() / cv_mean) if cv_mean > 0 else float("nan")
        e = np.sort(errs["constant_velocity"])
        row.update({"brier_gap_m": float(errs["brier_gap"].mean()), **sharpened_gap(errs["prob"], errs["winner"]),
                    "top_mode_is_mode0": float(np.concatenate(top_is_mode0[c]).mean()),
                    "modes_winning_under_1pct": int((wins < 0.01).sum()), "win_share_per_mode": wins.round(3).tolist(),
                    "cv_median_m": float(np.median(e)),
                    "cv_within_0.1m": float((e < 0.1).mean()), "cv_within_0.5m": float((e < 0.5).mean()),
                    "cv_error_share_worst20pct": float(e[int(0.8 * len(e)) :].sum() / max(e.sum(), 1e-9))})
        rows.append(row)
    report("most-likely", rows, {"model": args.model, "store": args.store, "split": args.split,
                                 "samples": len(scenes)}, args.json)


if __name__ == "__main__":
    main()
