"""The evaluation loop: every predictor on every sample of a SceneSet, keeping the scored agents.

The trajectories (ground truth and every predictor's modes, ~7 kB per scored agent) are written to
disk as the samples come and come back as read-only memmaps (:mod:`~forecast.evaluation.spill`), so
the loop's memory does not grow with the split; the metrics read them in chunks.
"""

from __future__ import annotations

import numpy as np

from forecast import scene_metrics as SM
from forecast.batching import BATCH, Question, batch_call
from forecast.data.types import IS_PHYSICAL, AgentType
from forecast.evaluation.predictors import _SampleSource
from forecast.evaluation.results import OVERLAP_RADIUS, AgentTable, Outputs
from forecast.evaluation.spill import Spill
from forecast.features.config import FeatureConfig
from forecast.features.dataset import SceneSet
from forecast.features.frames import to_world
from forecast.features.sample import Sample
from forecast.progress import track


def _radius(agent_type: np.ndarray) -> np.ndarray:
    return np.array([OVERLAP_RADIUS.get(AgentType(int(t)), 2.0) for t in agent_type], dtype=np.float64)


def _most_likely(traj: np.ndarray, prob: np.ndarray) -> np.ndarray:
    best = np.argmax(prob, axis=1)
    return traj[np.arange(len(traj)), best]


def collect(scenes: SceneSet, predictors: dict[str, object], progress: bool = True,
            batch_size: int = BATCH) -> tuple[AgentTable, dict[str, Outputs]]:
    """Run every predictor on every sample of ``scenes``; keep the scored agents (trajectories on disk).

    A predictor with ``predict_batch(samples)`` gets ``batch_size`` samples at a time, the others one by one
    (``forecast.batching``)."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    source = _SampleSource(scenes)
    feats: dict[str, FeatureConfig | None] = {}
    for name, p in predictors.items():
        cfg = getattr(p, "features", None)
        if cfg is not None:
            source.check(name, cfg)
        feats[name] = cfg
    # trajectories go to disk as they come (Spill); strings stay as lists of shared references
    spill = Spill()
    text: dict[str, list] = {"source": [], "map_id": [], "scenario_id": []}
    modes: dict[str, int] = {}
    tf = scenes.cfg.future_steps

    def flush(pending: list[tuple[int, Sample]]) -> None:
        """Run every predictor on the pending samples (in one batch where it can) and keep their scored agents."""
        preds = {}
        for name, p in predictors.items():
            preds[name] = batch_call(p)([Question(source.sample_for(k, feats[name], s)) for k, s in pending])
        for i, (k, s) in enumerate(pending):
            keep(k, s, {name: out[i] for name, out in preds.items()})

    def keep(k: int, s: Sample, preds: dict[str, tuple]) -> None:
        sel = np.flatnonzero(s.target_mask)
        info = scenes.infos[scenes.index[k].scenario]
        radius = _radius(s.agent_type)
        physical = IS_PHYSICAL[s.agent_type][:, None]  # [A, 1]: no overlap with a stop wall
        assert s.future is not None and s.future_mask is not None
        gt_world = to_world(s.future.astype(np.float64), s.origin, s.heading)
        n = len(sel)
        spill.append("gt", s.future[sel], np.float64)
        spill.append("valid", s.future_mask[sel], bool)
        spill.append("agent_type", s.agent_type[sel], np.int64)
        text["source"] += [info.source] * n
        text["map_id"] += [info.map_id or ""] * n
        text["scenario_id"] += [info.scenario_id] * n
        spill.append("t0", np.full(n, s.t0), np.int64)
        spill.append("speed", np.hypot(s.hist[sel, -1, 2], s.hist[sel, -1, 3]), np.float64)
        spill.append("origin", s.origin[sel], np.float64)
        spill.append("heading", s.heading[sel], np.float64)
        last = s.future_mask.shape[1] - 1 - np.argmax(s.future_mask[:, ::-1], axis=1)
        spill.append("gt_end_world", gt_world[sel, last[sel]], np.float64)
        spill.append("gt_overlap", SM.overlap_rate(gt_world, radius, valid=s.future_mask & physical)[sel], np.float64)
        spill.append("sample", np.full(n, k), np.int64)
        spill.append("row", sel, np.int64)
        for name, (traj, prob) in preds.items():
            traj, prob = np.asarray(traj, dtype=np.float32), np.asarray(prob, dtype=np.float32)
            if traj.ndim != 4 or traj.shape[0] != s.num_agents or traj.shape[2] != tf or prob.shape != traj.shape[:2]:
                raise ValueError(f"predictor {name!r} returned traj {traj.shape} / prob {prob.shape}; expected "
                                 f"[{s.num_agents}, K, {tf}, 2] / [{s.num_agents}, K]")
            if modes.setdefault(name, traj.shape[1]) != traj.shape[1]:
                raise ValueError(f"predictor {name!r} returned a varying number of modes: "
                                 f"{sorted({modes[name], traj.shape[1]})}")
            best_world = to_world(_most_likely(traj, prob).astype(np.float64), s.origin, s.heading)  # [A, T, 2]
            spill.append(f"{name}.pred", traj[sel])
            spill.append(f"{name}.prob", prob[sel])
            spill.append(f"{name}.end_world", best_world[sel, -1], np.float64)
            spill.append(f"{name}.overlap", SM.overlap_rate(best_world, radius, valid=np.broadcast_to(physical, best_world.shape[:2]))[sel], np.float64)

    pending: list[tuple[int, Sample]] = []
    for k in track(range(len(scenes)), "evaluate", "sample", progress):
        s = scenes.sample(k)
        if s.target_mask.any():
            pending.append((k, s))
        if len(pending) == batch_size:
            flush(pending)
            pending = []
    if pending:
        flush(pending)
    if not text["source"]:
        raise ValueError(f"no scored agent in the {len(scenes)} samples (each needs its whole future of "
                         f"{tf} steps and {scenes.cfg.min_history_steps} history steps)")
    big = ("gt", "valid", *(f"{name}.{f}" for name in predictors for f in ("pred", "prob")))
    cols = spill.finish(in_memory=tuple(c for c in spill.columns if c not in big))
    atype = cols["agent_type"]
    agents = AgentTable(
        gt=cols["gt"], valid=cols["valid"], agent_type=atype,
        agent_class=np.array([AgentType(int(t)).label for t in atype], dtype=object),
        source=np.array(text["source"], dtype=object), map_id=np.array(text["map_id"], dtype=object),
        scenario_id=np.array(text["scenario_id"], dtype=object), t0=cols["t0"], speed=cols["speed"],
        origin=cols["origin"], heading=cols["heading"], gt_end_world=cols["gt_end_world"],
        gt_overlap=cols["gt_overlap"], sample=cols["sample"], row=cols["row"],
    )
    outputs = {name: Outputs(cols[f"{name}.pred"], cols[f"{name}.prob"], cols[f"{name}.end_world"],
                             cols[f"{name}.overlap"]) for name in predictors}
    return agents, outputs
