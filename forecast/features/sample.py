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
_IS_TARGET = np.isin(np.arange(max(AgentType) + 1), [int(t) for t in TARGET_TYPES])


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
    th, tf = cfg.history_steps, cfg.future_steps
    out: list[SampleIndex] = []
    targets_types = np.array([int(t) for t in TARGET_TYPES])
    is_target_type = np.isin(tracks.agent_type, targets_types)
    for t0 in range(th - 1, tracks.num_steps - tf, t0_stride):
        now = tracks.present[:, t0]
        hist_n = tracks.present[:, max(0, t0 - th + 1) : t0 + 1].sum(1)
        fut = tracks.present[:, t0 + 1 : t0 + 1 + tf]
        has_future = fut.all(1) if full_future else fut.any(1)
        target = now & is_target_type & (hist_n >= cfg.min_history_steps) & has_future
        uncovered = set(np.flatnonzero(target).tolist())
        here = np.flatnonzero(now)
        pos = tracks.xy[here, t0]
        while uncovered:
            focal = min(uncovered)
            d = np.hypot(*(pos - tracks.xy[focal, t0]).T)
            order = np.argsort(d, kind="stable")
            order = order[d[order] <= cfg.neighbour_radius][: cfg.max_agents]
            group = here[order]
            scored = np.array([g in uncovered for g in group])
            uncovered -= set(group[scored].tolist())
            out.append(SampleIndex(scenario, t0, group, scored))
    return out
