"""One model input: a scene at time t0, every included agent in its own frame, with rasters.

``build_sample`` is the single preprocessing path: the training data module, the evaluator
and the vehicle runtime (``forecast.runtime``) all call it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from forecast.data.types import TARGET_TYPES, AgentType
from forecast.features.config import FeatureConfig
from forecast.features.frames import rotate_to_local, to_local, wrap_angle
from forecast.features.raster import MapRaster, rasterize_agents
from forecast.features.tracks import AgentTracks, causal_heading, causal_velocity

# is_target[agent_type]: a table lookup (np.isin cost a tenth of a millisecond per sample in the loader)
_TARGET_CODES = np.array([int(t) for t in TARGET_TYPES])
_IS_TARGET = np.isin(np.arange(max(AgentType) + 1), _TARGET_CODES)


@dataclass
class Sample:
    """Model inputs (and, for training, targets) of one scene at t0. A agents, T_h/T_f steps.

    Every input field is computed from positions at or before t0.
    """

    hist: np.ndarray  # [A, T_h, F] float32: x, y (m), vx, vy (m/s), cos/sin of heading change, valid; agent frame
    hist_mask: np.ndarray  # [A, T_h] bool, observed steps
    agent_type: np.ndarray  # [A] int64, AgentType
    pose: np.ndarray  # [A, 4] float32: x/scale, y/scale, cos, sin of each agent in the scene frame
    raster: np.ndarray  # [A, C, S, S] uint8: map channels then motion channels
    agent_mask: np.ndarray  # [A] bool, real agent (False only for padding after collation)
    origin: np.ndarray  # [A, 2] float64, world position at t0 (agent frame origin)
    heading: np.ndarray  # [A] float64, world heading at t0 (agent frame x axis)
    target_mask: np.ndarray  # [A] bool, scored agent (target class, enough history, some future)
    future: np.ndarray | None = None  # [A, T_f, 2] float32, agent frame; None at inference
    future_mask: np.ndarray | None = None  # [A, T_f] bool
    track_ids: np.ndarray | None = None  # [A] str
    scenario_id: str = ""
    t0: int = 0

    @property
    def num_agents(self) -> int:
        return len(self.agent_type)


def build_sample(
    tracks: AgentTracks,
    t0: int,
    cfg: FeatureConfig,
    map_raster: MapRaster | None,
    agents: np.ndarray | None = None,
    focal: int | None = None,
    with_future: bool = True,
    scenario_id: str = "",
) -> Sample:
    """Build the sample of ``tracks`` at step ``t0``.

    agents: indices of the agents to include (default: all present at t0); each must be present
    at t0. focal: the agent whose pose defines the scene frame (default: the first included).
    Nothing after t0 is read unless ``with_future``, and then only into ``future``.
    """
    if agents is None:
        agents = np.flatnonzero(tracks.present[:, t0])
    agents = np.asarray(agents, dtype=np.int64)
    if len(agents) == 0:
        raise ValueError(f"empty scene at t0={t0}: no agent present")
    if not tracks.present[agents, t0].all():
        raise ValueError("every included agent must be observed at t0")
    th, tf = cfg.history_steps, cfg.future_steps
    lo = t0 - th + 1
    # History window, padded as missing before the start of the tracks.
    idx = np.arange(lo, t0 + 1)
    inside = idx >= 0
    xy = np.zeros((len(agents), th, 2))
    present = np.zeros((len(agents), th), bool)
    head_src = np.full((len(agents), th), np.nan)
    xy[:, inside] = tracks.xy[agents][:, idx[inside]]
    present[:, inside] = tracks.present[agents][:, idx[inside]]
    head_src[:, inside] = tracks.heading[agents][:, idx[inside]]
    xy = np.where(present[..., None], xy, 0.0)

    vel, known_v = causal_velocity(xy, present, tracks.dt)
    heading_t = causal_heading(head_src, vel, known_v, present)
    origin = xy[:, -1].copy()
    heading0 = heading_t[:, -1]

    local = to_local(xy, origin, heading0)
    local_v = rotate_to_local(vel, heading0)
    dh = wrap_angle(heading_t - heading0[:, None])
    hist = np.concatenate(
        [local, local_v, np.cos(dh)[..., None], np.sin(dh)[..., None], present[..., None].astype(np.float64)], axis=-1
    )
    hist = np.where(present[..., None], hist, 0.0).astype(np.float32)

    f = 0 if focal is None else int(np.flatnonzero(agents == focal)[0])
    scene_xy = to_local(origin[None], origin[f : f + 1], heading0[f : f + 1])[0] / cfg.scene_scale
    rel = wrap_angle(heading0 - heading0[f])
    pose = np.concatenate([scene_xy, np.cos(rel)[:, None], np.sin(rel)[:, None]], axis=1).astype(np.float32)

    atype = tracks.agent_type[agents].astype(np.int64)
    raster = rasterize_agents(map_raster, xy, present, atype, origin, heading0, cfg.raster)
    enough = present.sum(1) >= cfg.min_history_steps
    target = _IS_TARGET[atype] & enough

    future = future_mask = None
    if with_future:
        fidx = np.arange(t0 + 1, t0 + 1 + tf)
        fin = fidx < tracks.num_steps
        fxy = np.zeros((len(agents), tf, 2))
        future_mask = np.zeros((len(agents), tf), bool)
        fxy[:, fin] = tracks.xy[agents][:, fidx[fin]]
        future_mask[:, fin] = tracks.present[agents][:, fidx[fin]]
        future = np.where(future_mask[..., None], to_local(np.nan_to_num(fxy), origin, heading0), 0.0).astype(np.float32)
        target &= future_mask.any(1)
    return Sample(
        hist=hist,
        hist_mask=present,
        agent_type=atype,
        pose=pose,
        raster=raster,
        agent_mask=np.ones(len(agents), bool),
        origin=origin,
        heading=heading0,
        target_mask=target,
        future=future,
        future_mask=future_mask,
        track_ids=None if tracks.track_ids is None else tracks.track_ids[agents],
        scenario_id=scenario_id,
        t0=t0,
    )


@dataclass(frozen=True)
class SampleIndex:
    """Where a sample comes from: a scenario, a time and the agents included (focal first)."""

    scenario: int  # index into the data set's scenario list
    t0: int
    agents: np.ndarray  # [A] int64 indices into the scenario's agents
    scored: np.ndarray  # [A] bool: scored in this sample (each target is scored in exactly one sample)


def plan_samples(tracks: AgentTracks, scenario: int, cfg: FeatureConfig, t0_stride: int,
                 full_future: bool = False) -> list[SampleIndex]:
    """Cut a scenario into samples: for each t0 on a stride, cover its targets with groups of nearby agents.

    A target (target class, present at t0, >= ``min_history_steps`` observed history, a future
    in the scenario; the whole future if ``full_future``) is scored in exactly one group; a
    group holds the ``max_agents`` agents nearest to its focal target within ``neighbour_radius``.
    """
    t0, sizes, agents, scored = plan_arrays(tracks.present, tracks.xy, tracks.agent_type, cfg, t0_stride, full_future)
    if not len(t0):
        return []
    cut = np.cumsum(sizes)[:-1]
    return [SampleIndex(scenario, int(t), a, s)
            for t, a, s in zip(t0.tolist(), np.split(agents, cut), np.split(scored, cut), strict=True)]


def plan_arrays(present: np.ndarray, xy: np.ndarray, agent_type: np.ndarray, cfg: FeatureConfig, t0_stride: int,
                full_future: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``plan_samples`` as flat arrays: present [A, T] bool, xy [A, T, 2] (read where present), agent_type [A].

    Returns t0 [S] int64, sizes [S] int64 (agents per sample), agents [sum(sizes)] int64 (each sample's
    group, nearest to its focal first) and scored [sum(sizes)] bool. Groups are made greedily, focal =
    the lowest-index target not yet scored, so a t0's groups depend on each other; what is shared
    (the target masks, the distances between the agents present at t0) is computed once.
    """
    th, tf = cfg.history_steps, cfg.future_steps
    a, t = present.shape
    t0s = np.arange(th - 1, t - tf, t0_stride)
    out_t0: list[int] = []
    out_n: list[int] = []
    out_a: list[np.ndarray] = []
    out_s: list[np.ndarray] = []
    if a and len(t0s):
        cum = np.zeros((a, t + 1), np.int64)
        np.cumsum(present, axis=1, out=cum[:, 1:])
        hist_n = cum[:, t0s + 1] - cum[:, np.maximum(0, t0s - th + 1)]  # [A, K] observed steps up to t0
        fut_n = cum[:, t0s + 1 + tf] - cum[:, t0s + 1]  # t0 < T - tf: the whole window is inside
        has_future = fut_n == tf if full_future else fut_n > 0
        now = present[:, t0s]
        is_target_type = np.isin(agent_type, _TARGET_CODES)
        target = now & is_target_type[:, None] & (hist_n >= cfg.min_history_steps) & has_future
        for k in np.flatnonzero(target.any(0)).tolist():
            t0 = int(t0s[k])
            here = np.flatnonzero(now[:, k])
            pos = xy[here, t0]
            uncovered = target[here, k]
            focal_rows = np.flatnonzero(uncovered)  # only targets become focal: their rows are enough
            f = pos[focal_rows]
            d = np.hypot(pos[None, :, 0] - f[:, None, 0], pos[None, :, 1] - f[:, None, 1])  # [F, n]
            order = np.argsort(d, axis=1, kind="stable")
            # sorted ascending (NaN last), so the agents within the radius are a prefix of each row
            within = np.minimum((np.take_along_axis(d, order, 1) <= cfg.neighbour_radius).sum(1), cfg.max_agents)
            row_of = np.full(len(here), -1)
            row_of[focal_rows] = np.arange(len(focal_rows))
            while True:
                left = np.flatnonzero(uncovered)
                if not len(left):
                    break
                r = row_of[left[0]]
                group = order[r, : within[r]]
                scored = uncovered[group]
                uncovered[group] = False
                out_t0.append(t0)
                out_n.append(len(group))
                out_a.append(here[group])
                out_s.append(scored)
    cat = np.concatenate
    return (np.array(out_t0, np.int64), np.array(out_n, np.int64),
            cat(out_a).astype(np.int64) if out_a else np.zeros(0, np.int64),
            cat(out_s) if out_s else np.zeros(0, bool))
