"""The evaluation loop: every predictor on every sample of a SceneSet, keeping the scored agents."""

from __future__ import annotations

import sys

import numpy as np

from forecast import metrics as M
from forecast.data.types import AgentType
from forecast.evaluation.predictors import _SampleSource
from forecast.evaluation.results import OVERLAP_RADIUS, AgentTable, Outputs
from forecast.features.config import FeatureConfig
from forecast.features.dataset import SceneSet
from forecast.features.frames import to_world


def _radius(agent_type: np.ndarray) -> np.ndarray:
    return np.array([OVERLAP_RADIUS.get(AgentType(int(t)), 2.0) for t in agent_type], dtype=np.float64)


def _most_likely(traj: np.ndarray, prob: np.ndarray) -> np.ndarray:
    best = np.argmax(prob, axis=1)
    return traj[np.arange(len(traj)), best]


def collect(scenes: SceneSet, predictors: dict[str, object], progress: bool = True) -> tuple[AgentTable, dict[str, Outputs]]:
    """Run every predictor on every sample of ``scenes``; keep the scored agents."""
    from tqdm.auto import tqdm

    source = _SampleSource(scenes)
    feats: dict[str, FeatureConfig | None] = {}
    for name, p in predictors.items():
        cfg = getattr(p, "features", None)
        if cfg is not None:
            source.check(name, cfg)
        feats[name] = cfg
    cols: dict[str, list] = {k: [] for k in ("gt", "valid", "agent_type", "source", "map_id", "scenario_id", "t0", "speed",
                                             "origin", "heading", "gt_end", "gt_overlap", "sample", "row")}
    outs: dict[str, dict[str, list]] = {n: {"pred": [], "prob": [], "end": [], "overlap": []} for n in predictors}
    tf = scenes.cfg.future_steps
    bar = tqdm(range(len(scenes)), desc="evaluate", unit="sample", disable=not progress, file=sys.stderr)
    for k in bar:
        s = scenes.sample(k)
        sel = np.flatnonzero(s.target_mask)
        if len(sel) == 0:
            continue
        info = scenes.infos[scenes.index[k].scenario]
        radius = _radius(s.agent_type)
        assert s.future is not None and s.future_mask is not None
        gt_world = to_world(s.future.astype(np.float64), s.origin, s.heading)
        cols["gt"].append(s.future[sel].astype(np.float64))
        cols["valid"].append(s.future_mask[sel])
        cols["agent_type"].append(s.agent_type[sel])
        cols["source"] += [info.source] * len(sel)
        cols["map_id"] += [info.map_id or ""] * len(sel)
        cols["scenario_id"] += [info.scenario_id] * len(sel)
        cols["t0"] += [s.t0] * len(sel)
        cols["speed"].append(np.hypot(s.hist[sel, -1, 2], s.hist[sel, -1, 3]).astype(np.float64))
        cols["origin"].append(s.origin[sel])
        cols["heading"].append(s.heading[sel])
        last = s.future_mask.shape[1] - 1 - np.argmax(s.future_mask[:, ::-1], axis=1)
        cols["gt_end"].append(gt_world[sel, last[sel]])
        cols["gt_overlap"].append(M.overlap_rate(gt_world, radius, valid=s.future_mask)[sel])
        cols["sample"] += [k] * len(sel)
        cols["row"].append(sel)
        for name, p in predictors.items():
            traj, prob = p.predict(source.sample_for(k, feats[name], s))
            traj, prob = np.asarray(traj, dtype=np.float32), np.asarray(prob, dtype=np.float32)
            if traj.ndim != 4 or traj.shape[0] != s.num_agents or traj.shape[2] != tf or prob.shape != traj.shape[:2]:
                raise ValueError(f"predictor {name!r} returned traj {traj.shape} / prob {prob.shape}; expected "
                                 f"[{s.num_agents}, K, {tf}, 2] / [{s.num_agents}, K]")
            best_world = to_world(_most_likely(traj, prob).astype(np.float64), s.origin, s.heading)  # [A, T, 2]
            o = outs[name]
            o["pred"].append(traj[sel])
            o["prob"].append(prob[sel])
            o["end"].append(best_world[sel, -1])
            o["overlap"].append(M.overlap_rate(best_world, radius)[sel])
    if not cols["gt"]:
        raise ValueError(f"no scored agent in the {len(scenes)} samples (each needs its whole future of "
                         f"{tf} steps and {scenes.cfg.min_history_steps} history steps)")
    cat = np.concatenate
    atype = cat(cols["agent_type"]).astype(np.int64)
    agents = AgentTable(
        gt=cat(cols["gt"]), valid=cat(cols["valid"]), agent_type=atype,
        agent_class=np.array([AgentType(int(t)).label for t in atype], dtype=object),
        source=np.array(cols["source"], dtype=object), map_id=np.array(cols["map_id"], dtype=object),
        scenario_id=np.array(cols["scenario_id"], dtype=object), t0=np.array(cols["t0"], dtype=np.int64),
        speed=cat(cols["speed"]), origin=cat(cols["origin"]).astype(np.float64), heading=cat(cols["heading"]).astype(np.float64),
        gt_end_world=cat(cols["gt_end"]), gt_overlap=cat(cols["gt_overlap"]),
        sample=np.array(cols["sample"], dtype=np.int64), row=cat(cols["row"]).astype(np.int64),
    )
    outputs = {}
    for name, o in outs.items():
        ks = {p.shape[1] for p in o["pred"]}
        if len(ks) > 1:
            raise ValueError(f"predictor {name!r} returned a varying number of modes: {sorted(ks)}")
        outputs[name] = Outputs(cat(o["pred"]), cat(o["prob"]), cat(o["end"]), cat(o["overlap"]))
    return agents, outputs
