"""Aggregation: per-agent metrics and the blocks of ``metrics.json`` (pure functions of the loop's arrays).

A *block* is ``{"n", "minADE@1", "minFDE@1", "minADE@6", "minFDE@6", "MR@6", "brier-minFDE@6"}`` (means
over the agents of a mask, ``null`` where none counts); :func:`model_block` is one predictor's part
of ``metrics.json``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from forecast import joint_metrics as J
from forecast import metrics as M
from forecast import waymo_metrics as W
from forecast.evaluation.config import EvalConfig
from forecast.evaluation.results import CLASSES, METRIC_NAMES, AgentTable, Outputs
from forecast.evaluation.spill import CHUNK_ROWS, read_rows, row_chunks
from forecast.features.config import FeatureConfig


def _num(x: float) -> float | None:
    x = float(x)
    return None if math.isnan(x) or math.isinf(x) else x


def per_agent_metrics(pred: np.ndarray, gt: np.ndarray, prob: np.ndarray, valid: np.ndarray | None = None,
                      miss_threshold: float = 2.0) -> dict[str, np.ndarray]:
    """The six metrics per agent ``[N]`` (``@6`` uses all modes when K < 6)."""
    k6 = min(6, pred.shape[1])
    return {
        "minADE@1": M.min_ade(pred, gt, prob, k=1, valid=valid),
        "minFDE@1": M.min_fde(pred, gt, prob, k=1, valid=valid),
        "minADE@6": M.min_ade(pred, gt, prob, k=k6, valid=valid),
        "minFDE@6": M.min_fde(pred, gt, prob, k=k6, valid=valid),
        "MR@6": M.miss_rate(pred, gt, prob, k=k6, threshold=miss_threshold, valid=valid),
        "brier-minFDE@6": M.brier_min_fde(pred, gt, prob, k=k6, valid=valid),
    }


def convention_metrics(out: Outputs, agents: AgentTable, features: FeatureConfig) -> dict[str, np.ndarray]:
    """Per agent ``[N]``, beside the six: other benchmarks' conventions on the same predictions.

    ``minADE@6-av2``: the Argoverse 2 leaderboard's minADE, the ADE of the best-*endpoint* mode (our
    ``minADE@6`` is the minimum over modes). ``MR@6-waymo3s``: Waymo's speed-scaled miss at 3 s
    (lateral 1 m, longitudinal 2 m in the ground truth's heading, times 0.5..1 by the speed at t0);
    NaN when the future is shorter than 3 s. ``FDE-least-risk``: the FDE of the mode of least expected
    endpoint error under the predicted probabilities (:func:`forecast.metrics.least_risk_mode`), the
    single future a planner reading one should take; ``minFDE@1`` scores the most likely mode.
    """
    k6 = min(6, out.pred.shape[1])
    step = int(round(3.0 / features.dt)) - 1
    res = {"minADE@6-av2": M.ade_of_best_fde_mode(out.pred, agents.gt, out.prob, k=k6, valid=agents.valid),
           "FDE-least-risk": M.least_risk_fde(out.pred, agents.gt, out.prob, valid=agents.valid)}
    if 0 <= step < out.pred.shape[2]:
        lateral, longitudinal = W.WAYMO_MISS_THRESHOLDS[3.0]
        res["MR@6-waymo3s"] = W.speed_scaled_miss(out.pred, agents.gt, agents.speed, step, out.prob, k=k6,
                                                  lateral=lateral, longitudinal=longitudinal, valid=agents.valid)
    else:
        res["MR@6-waymo3s"] = np.full(len(agents), np.nan)
    return res


def summarise(per_agent: dict[str, np.ndarray], mask: np.ndarray | None = None) -> dict:
    """A block: ``n`` and the mean of each metric over ``mask`` (``None`` where empty)."""
    n = len(next(iter(per_agent.values())))
    m = np.ones(n, dtype=bool) if mask is None else mask
    out: dict = {"n": int(m.sum())}
    for key in METRIC_NAMES:
        out[key] = _num(M.aggregate(per_agent[key], m))
    return out


def horizons(cfg: EvalConfig, features: FeatureConfig) -> dict[str, int]:
    """``{"1s": 10, ...}``: horizon labels and their step counts that fit in the future."""
    out = {}
    for h in cfg.horizons_s:
        steps = int(round(h / features.dt))
        if 1 <= steps <= features.future_steps:
            out[f"{h:g}s"] = steps
    return out


def _drivable(layers: dict | None):
    if not layers or not layers.get("drivable_area"):
        return None
    import shapely

    return shapely.union_all(layers["drivable_area"])


@dataclass
class AgentMetrics:
    """Every per-agent value of one predictor that ``metrics.json`` aggregates (``N`` scored agents)."""

    per: dict[str, np.ndarray]  # the six metrics, [N] each
    conv: dict[str, np.ndarray]  # convention_metrics, [N] each
    by_horizon: dict[str, dict[str, np.ndarray]]  # horizon label -> the six metrics [N] truncated there
    calib_p: np.ndarray  # [M, K] mode probabilities of the M agents with a valid step
    calib_best: np.ndarray  # [M] their best mode (smallest FDE)
    calib_valid: np.ndarray  # [N] bool, which agents those are
    joint: dict[str, np.ndarray]  # joint_metrics per sample (scene), in sample order


def agent_metrics(out: Outputs, agents: AgentTable, cfg: EvalConfig, features: FeatureConfig,
                  chunk_rows: int = CHUNK_ROWS) -> AgentMetrics:
    """The per-agent values of ``out``, read ``chunk_rows`` agents at a time (whole samples per chunk).

    Each value depends on its agent's row only (the joint metrics on its sample's rows), so the
    chunks give exactly what one pass over the whole arrays gives; only these scalars stay in memory.
    """
    hz = horizons(cfg, features)
    parts: list[tuple] = []
    for lo, hi in row_chunks(agents.sample, chunk_rows):
        pred, prob = read_rows(out.pred, lo, hi), read_rows(out.prob, lo, hi)
        gt, valid = read_rows(agents.gt, lo, hi), read_rows(agents.valid, lo, hi)
        chunk_out = Outputs(pred, prob, out.end_world[lo:hi], out.overlap[lo:hi])
        chunk_agents = _AgentRows(gt, valid, agents.speed[lo:hi])
        per = per_agent_metrics(pred, gt, prob, valid, cfg.miss_threshold)
        conv = convention_metrics(chunk_out, chunk_agents, features)
        by_h = {}
        for label, steps in hz.items():
            hp, hg, hv = M.truncate_horizon(pred, gt, valid, steps)
            by_h[label] = per_agent_metrics(hp, hg, prob, hv, cfg.miss_threshold)
        cp, cbest, cvalid = M.calibration_pairs(prob, pred, gt, valid)
        joint = J.joint_metrics(pred, gt, agents.sample[lo:hi], valid, cfg.miss_threshold)
        parts.append((per, conv, by_h, cp[cvalid], cbest[cvalid], cvalid, joint))
        del pred, prob, gt, valid, chunk_out, chunk_agents
    if not parts:
        raise ValueError("no scored agent to aggregate")

    def cat(i: int) -> dict[str, np.ndarray]:
        return {k: np.concatenate([p[i][k] for p in parts]) for k in parts[0][i]}

    return AgentMetrics(
        per=cat(0), conv=cat(1),
        by_horizon={label: {k: np.concatenate([p[2][label][k] for p in parts]) for k in METRIC_NAMES} for label in hz},
        calib_p=np.concatenate([p[3] for p in parts]), calib_best=np.concatenate([p[4] for p in parts]),
        calib_valid=np.concatenate([p[5] for p in parts]), joint=cat(6),
    )


def calibration_of(out: Outputs, agents: AgentTable, bins: int, chunk_rows: int = CHUNK_ROWS):
    """:func:`forecast.metrics.calibration_curve` of ``out`` over every agent, read in chunks."""
    ps, bests = [], []
    for lo, hi in row_chunks(agents.sample, chunk_rows):
        p, best, ok = M.calibration_pairs(read_rows(out.prob, lo, hi), read_rows(out.pred, lo, hi),
                                          read_rows(agents.gt, lo, hi), read_rows(agents.valid, lo, hi))
        ps.append(p[ok])
        bests.append(best[ok])
    return M.binned_calibration(np.concatenate(ps), np.concatenate(bests), bins)


@dataclass
class _AgentRows:
    """The AgentTable fields convention_metrics reads, for one chunk of rows."""

    gt: np.ndarray
    valid: np.ndarray
    speed: np.ndarray

    def __len__(self) -> int:
        return len(self.gt)


def model_block(out: Outputs, agents: AgentTable, cfg: EvalConfig, masks: dict[str, dict[str, np.ndarray]],
                am: AgentMetrics, offroad: tuple[np.ndarray, np.ndarray]) -> dict:
    """Every metric of one predictor (the per-model part of metrics.json) from its per-agent values
    ``am`` (:func:`agent_metrics`) and the off-road flags ``[N]`` of its most likely endpoints and of
    the true ones (:func:`forecast.evaluation.map_pass.map_pass`)."""
    per, conv = am.per, am.conv
    by_class = {c: {**summarise(per, agents.agent_class == c), **_means(conv, agents.agent_class == c)}
                for c in CLASSES}
    by_horizon, by_class_horizon = {}, {c: {} for c in CLASSES}
    for label, per_h in am.by_horizon.items():
        by_horizon[label] = summarise(per_h)
        for c in CLASSES:
            by_class_horizon[c][label] = summarise(per_h, agents.agent_class == c)
    bins = cfg.calibration_bins
    ece = M.calibration_error(*M.binned_calibration(am.calib_p, am.calib_best, bins)[1:])
    ece_by_class = {}
    for c in CLASSES:
        sel = agents.agent_class == c
        keep = sel[am.calib_valid]
        ece_by_class[c] = (_num(M.calibration_error(*M.binned_calibration(am.calib_p[keep], am.calib_best[keep],
                                                                             bins)[1:]))
                           if sel.any() else None)
    scene = {
        "offroad_rate": _num(M.aggregate(offroad[0])),
        "overlap_rate": _num(M.aggregate(out.overlap)),
        "calibration_ece": _num(ece),
        "calibration_ece_by_class": ece_by_class,
        "offroad_rate_gt": _num(M.aggregate(offroad[1])),
        "overlap_rate_gt": _num(M.aggregate(agents.gt_overlap)),
    }
    return {
        "num_agents": {c: int((agents.agent_class == c).sum()) for c in CLASSES},
        "num_modes": int(out.pred.shape[1]),
        "overall": {**summarise(per), **_means(conv)},
        "by_class": by_class,
        "by_horizon": by_horizon,
        "by_class_horizon": by_class_horizon,
        "scene": scene,
        # the modes of all agents of a sample as joint futures (AV2 multi-agent: avgMinADE/FDE, actorMR)
        "joint": J.summarise_joint(am.joint),
        "slices": {fam: {v: summarise(per, m) for v, m in vals.items()} for fam, vals in masks.items()},
    }


def _means(per_agent: dict[str, np.ndarray], mask: np.ndarray | None = None) -> dict[str, float | None]:
    return {k: _num(M.aggregate(v, mask)) for k, v in per_agent.items()}
