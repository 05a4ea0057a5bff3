"""One model input: a scene at time t0, every included agent in its own frame, with rasters.

``build_sample`` is the single preprocessing path: the training data module, the evaluator
and the vehicle runtime (``forecast.runtime``) all call it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from forecast.data.ragged import ragged_positions, ragged_rows
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
    rasterize: bool = True,
) -> Sample:
    """Build the sample of ``tracks`` at step ``t0``.

    agents: indices of the agents to include (default: all present at t0); each must be present
    at t0. focal: the agent whose pose defines the scene frame (default: the first included).
    Nothing after t0 is read unless ``with_future``, and then only into ``future``.
    rasterize: False leaves the rasters out (``raster`` is [A, C, 0, 0]): for a caller that reads
    only the kinematics (the probe scan), which the rasters would cost most of the time of.
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
    if rasterize:
        raster = rasterize_agents(map_raster, xy, present, atype, origin, heading0, cfg.raster)
    else:
        raster = np.zeros((len(agents), len(cfg.raster.channels), 0, 0), np.uint8)
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
    group holds the ``max_agents`` agents nearest to its focal target within ``neighbour_radius``
    (equal distances in agent order), the focal being the lowest-index target not yet scored.
    """
    _, t0, sizes, agents, scored = plan_many(tracks.present, tracks.xy, tracks.agent_type,
                                             np.array([0, tracks.num_agents]), cfg, t0_stride, full_future)
    if not len(t0):
        return []
    cut = np.cumsum(sizes)[:-1]
    return [SampleIndex(scenario, int(t), a, s)
            for t, a, s in zip(t0.tolist(), np.split(agents, cut), np.split(scored, cut), strict=True)]


GROUP_BATCH = 1 << 18  # agent slots (problems x most agents) covered at once: a few MB of padded arrays


def plan_many(present: np.ndarray, xy: np.ndarray, agent_type: np.ndarray, bounds: np.ndarray, cfg: FeatureConfig,
              t0_stride: int, full_future: bool = False) -> tuple[np.ndarray, ...]:
    """``plan_samples`` of many scenes of one length at once, as flat arrays.

    Their agents stacked: present [N, T] bool, xy [N, T, 2] (read where present), agent_type [N];
    scene j's agents are rows ``bounds[j]:bounds[j + 1]`` (bounds [S + 1]). Returns scene [G] int64
    (j), t0 [G] int64, sizes [G] int64 (agents per sample), agents [sum(sizes)] int64 (each sample's
    group, indices within its scene, nearest to its focal first) and scored [sum(sizes)] bool, in
    the order ``plan_samples`` gives them scene after scene.

    A t0's groups depend on each other (greedy cover), but the t0s of all scenes do not: every
    (scene, t0) with targets is a *problem*, and the problems make their k-th group together, so
    the Python loop runs once per group rank rather than once per group.
    """
    th, tf = cfg.history_steps, cfg.future_steps
    n_agents, t = present.shape
    t0s = np.arange(th - 1, t - tf, t0_stride)
    bounds = np.asarray(bounds, np.int64)
    n_prob = 0
    if n_agents and len(t0s):
        scene_of = np.repeat(np.arange(len(bounds) - 1), np.diff(bounds))  # [N]
        cum = np.zeros((n_agents, t + 1), np.int32)
        np.cumsum(present, axis=1, out=cum[:, 1:])
        hist_n = cum[:, t0s + 1] - cum[:, np.maximum(0, t0s - th + 1)]  # [N, K] observed steps up to t0
        fut_n = cum[:, t0s + 1 + tf] - cum[:, t0s + 1]  # t0 < T - tf: the whole window is inside
        has_future = fut_n == tf if full_future else fut_n > 0
        now = present[:, t0s]
        target = now & _IS_TARGET[agent_type][:, None] & (hist_n >= cfg.min_history_steps) & has_future
        # problems: the (scene, t0) with a target, in scene then t0 order
        has = np.zeros((len(bounds) - 1, len(t0s)), bool)
        ta, tk = np.nonzero(target)
        has[scene_of[ta], tk] = True
        prob_scene, prob_k = np.nonzero(has)
        n_prob = len(prob_scene)
        prob_id = np.full(has.shape, -1)
        prob_id[prob_scene, prob_k] = np.arange(n_prob)
        # pairs: the agents present at each problem's t0, problem by problem, in agent order
        pid = prob_id[scene_of]  # [N, K]
        agent, kk = np.nonzero(now & (pid >= 0))
        p_of = pid[agent, kk]
        by_prob = np.argsort(p_of, kind="stable")
        agent, kk, p_of = agent[by_prob], kk[by_prob], p_of[by_prob]
        target = target[agent, kk]
        pos = xy[agent, t0s[kk]]
        agent = agent - bounds[scene_of[agent]]  # index within its scene
        prob_t0 = t0s[prob_k]
    if not n_prob:
        z = np.zeros(0, np.int64)
        return z, z, z, z, np.zeros(0, bool)
    cat = np.concatenate
    n = np.bincount(p_of, minlength=n_prob)  # agents present per problem
    col = ragged_positions(n)  # p_of is sorted: each pair's place among its problem's agents
    # problems of similar size together (less padding), at most GROUP_BATCH agent slots at once
    by_size = np.argsort(n, kind="stable")
    groups: list[tuple] = []
    lo = 0
    while lo < n_prob:
        hi = lo + 1
        while hi < n_prob and (hi - lo + 1) * int(n[by_size[hi]]) <= GROUP_BATCH:
            hi += 1
        probs = by_size[lo:hi]
        width = int(n[probs[-1]])
        slot = np.full(n_prob, -1)
        slot[probs] = np.arange(len(probs))
        take = slot[p_of] >= 0
        here = np.full((len(probs), width), -1)
        here[slot[p_of[take]], col[take]] = agent[take]
        tgt = np.zeros((len(probs), width), bool)
        tgt[slot[p_of[take]], col[take]] = target[take]
        at = np.zeros((len(probs), width, 2))
        at[slot[p_of[take]], col[take]] = pos[take]
        groups += _cover(probs, here, at, tgt, cfg.neighbour_radius, cfg.max_agents)
        lo = hi
    # back in problem order (scene, t0), each problem's groups in the order they were made
    g_prob = cat([g[0] for g in groups])
    g_rank = cat([np.full(len(g[0]), r) for r, g in enumerate(groups)])  # lists are made rank-major per batch
    sizes = cat([g[1] for g in groups])
    flat_agents, flat_scored = cat([g[2] for g in groups]), cat([g[3] for g in groups])
    order = np.lexsort((g_rank, g_prob))
    rows = ragged_rows((np.cumsum(sizes) - sizes)[order], sizes[order])
    return (prob_scene[g_prob[order]].astype(np.int64), prob_t0[g_prob[order]].astype(np.int64),
            sizes[order].astype(np.int64), flat_agents[rows].astype(np.int64), flat_scored[rows])


def _cover(probs: np.ndarray, here: np.ndarray, pos: np.ndarray, target: np.ndarray, radius: float,
           max_agents: int) -> list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
    """The greedy cover of B problems padded to N agents: here [B, N] agent index (-1: padding), pos
    [B, N, 2], target [B, N]. Step k makes every unfinished problem's k-th group. Returns one tuple per
    step: (problem [G], size [G], agents [sum size], scored [sum size])."""
    valid = here >= 0
    cols = np.arange(here.shape[1])
    uncovered = target.copy()
    active = np.flatnonzero(uncovered.any(1))
    out = []
    while len(active):
        focal = uncovered[active].argmax(1)  # the lowest-index target left
        at = pos[active]  # [k, N, 2]
        f = at[np.arange(len(active)), focal]  # [k, 2]
        # distances from the focal agents only (a row per group made, not per agent)
        d = np.hypot(at[..., 0] - f[:, None, 0], at[..., 1] - f[:, None, 1])  # [k, N]
        ok = valid[active]
        d[~ok] = np.inf  # padding sorts after every agent
        rows = np.argsort(d, axis=1, kind="stable")
        # agents within the radius are a prefix of each sorted row (padding is not counted)
        within = np.minimum(((d <= radius) & ok).sum(1), max_agents)
        member = cols[None, :] < within[:, None]
        left = uncovered[active[:, None], rows]
        uncovered[active[:, None], rows] = left & ~member
        out.append((probs[active], within, here[active[:, None], rows][member], left[member]))
        active = active[uncovered[active].any(1)]
    return out
