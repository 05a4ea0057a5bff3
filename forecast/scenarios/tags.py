"""Scenario tags: what happens around each (scenario, t0, agent), mined from the store's tracks and map.

Tags are **labels for evaluation, never model inputs**: they describe the scene, so they may (and do)
look at the future after t0 — "this vehicle brakes hard within the next 3 s" is what a safety engineer
asks about. Nothing here is fed to a model or to ``build_sample``.

Each tag is first an *event* per agent and step (``[A, T]`` bool, one short pure function below),
then a window: the tag of agent ``a`` at ``t0`` is true when the agent is present at ``t0`` and the
event occurs somewhere in ``[t0 - past_s, t0 + future_s]`` (``occluded_or_new`` only looks back:
``[t0 - past_s, t0]``). Kinematics come from the positions: velocity by central differences where both
neighbours are present, heading from the velocity above 0.5 m/s (else the source's heading).

Pairwise events tag both agents of the pair (the pedestrian and the car it walks in front of, the
vehicle cutting in and the one it cuts in on), because both predictions matter in that scene.
Frames: for a pair (i, j), ``lon``/``lat`` are j's position in i's frame at that step (x along i's
heading, y to its left), metres.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
from scipy.spatial import cKDTree

from forecast.data.types import IS_PHYSICAL, AgentType

TAGS = ("pedestrian_crossing", "braking_or_yielding", "cut_in", "junction_turn", "cyclist_in_lane", "stop_and_go",
        "near_miss", "occluded_or_new")
VEH, PED, CYC = int(AgentType.VEHICLE), int(AgentType.PEDESTRIAN), int(AgentType.CYCLIST)
# Disc radii (metres) for time to collision: half widths, so cars passing in adjacent lanes do not touch.
TTC_RADIUS = {VEH: 1.0, PED: 0.3, CYC: 0.5, int(AgentType.OTHER): 1.0}
_RADIUS_BY_TYPE = np.array([TTC_RADIUS.get(int(t), 1.0) for t in AgentType])


@dataclass(frozen=True)
class TagConfig:
    """Thresholds of the tags (metres, seconds, m/s, m/s^2, degrees)."""

    past_s: float = 1.0  # window before t0
    future_s: float = 3.0  # window after t0 (the prediction horizon)
    hard_brake: float = 3.0  # deceleration, m/s^2
    stop_speed: float = 0.5  # below: stopped
    move_speed: float = 2.0  # above: moving
    ttc_s: float = 1.0  # near miss: time to collision below this
    pair_radius: float = 30.0  # pairs further apart at a step are ignored
    corridor_length: float = 15.0  # the stretch ahead of a vehicle
    corridor_half_width: float = 2.0
    turn_deg: float = 30.0  # heading change over 2 s inside a junction


@dataclass(frozen=True)
class Motion:
    """Kinematics of a scene's agents, ``[A, T]``; NaN where unknown."""

    xy: np.ndarray  # [A, T, 2] metres, world frame
    vel: np.ndarray  # [A, T, 2] m/s
    speed: np.ndarray  # [A, T] m/s
    heading: np.ndarray  # [A, T] radians CCW from +x
    accel: np.ndarray  # [A, T] m/s^2 along the track (speed change), smoothed over 0.5 s
    present: np.ndarray  # [A, T] bool
    agent_type: np.ndarray  # [A] int, AgentType
    dt: float


def motion(xy: np.ndarray, present: np.ndarray, agent_type: np.ndarray, dt: float,
           heading: np.ndarray | None = None) -> Motion:
    """Kinematics from positions ``xy [A, T, 2]`` (central differences; one-sided at track ends)."""
    xy = np.where(present[..., None], xy, np.nan)
    prev, nxt = np.roll(xy, 1, axis=1), np.roll(xy, -1, axis=1)
    prev[:, 0], nxt[:, -1] = np.nan, np.nan
    central = (nxt - prev) / (2 * dt)
    fwd, back = (nxt - xy) / dt, (xy - prev) / dt
    vel = np.where(np.isfinite(central), central, np.where(np.isfinite(back), back, fwd))
    speed = np.hypot(vel[..., 0], vel[..., 1])
    own = np.arctan2(vel[..., 1], vel[..., 0])
    src = np.full(present.shape, np.nan) if heading is None else heading
    head = np.where(speed > 0.5, own, src)
    accel = np.gradient(np.nan_to_num(speed), dt, axis=1) if speed.shape[1] > 1 else np.zeros_like(speed)
    k = max(1, int(round(0.5 / dt)))
    accel = np.apply_along_axis(lambda a: np.convolve(a, np.ones(k) / k, mode="same"), 1, accel)
    accel = np.where(np.isfinite(speed), accel, np.nan)
    return Motion(xy, vel, speed, head, accel, present, np.asarray(agent_type, dtype=np.int64), dt)


def _steps(seconds: float, dt: float) -> int:
    return max(1, int(round(seconds / dt)))


def _shift(a: np.ndarray, k: int, fill=np.nan) -> np.ndarray:
    """``out[:, t] = a[:, t - k]`` (``k`` may be negative), ``fill`` outside."""
    out = np.full_like(a, fill, dtype=np.result_type(a, type(fill)))
    if k >= 0:
        out[:, k:] = a[:, : a.shape[1] - k]
    else:
        out[:, :k] = a[:, -k:]
    return out


def _rolling(a: np.ndarray, back: int, fn) -> np.ndarray:
    """``fn`` (nanmax / nanmin) over ``a[:, t - back : t + 1]`` for every t."""
    stack = np.stack([_shift(a, k) for k in range(back + 1)])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN windows give NaN, which compares False
        return fn(stack, axis=0)


def _wrap(a: np.ndarray) -> np.ndarray:
    return (a + np.pi) % (2 * np.pi) - np.pi


# --------------------------------------------------------------------------------------------------
# per-agent events [A, T]
# --------------------------------------------------------------------------------------------------


def braking_or_yielding(m: Motion, cfg: TagConfig) -> np.ndarray:
    """A vehicle decelerates harder than ``hard_brake``, or comes to a stop (below ``stop_speed``) having
    driven faster than 3 m/s within the previous 2 s (yielding at a crossing or junction)."""
    veh = (m.agent_type == VEH)[:, None] & m.present
    hard = np.nan_to_num(m.accel, nan=0.0) < -cfg.hard_brake
    was_fast = _rolling(m.speed, _steps(2.0, m.dt), np.nanmax) > 3.0
    stops = (m.speed < cfg.stop_speed) & np.nan_to_num(was_fast, nan=0).astype(bool)
    return veh & (hard | stops)


def stop_and_go(m: Motion, cfg: TagConfig) -> np.ndarray:
    """A vehicle or cyclist moves off: faster than ``move_speed`` after being stopped within the previous 3 s."""
    kind = np.isin(m.agent_type, (VEH, CYC))[:, None] & m.present
    stopped_before = _rolling(m.speed, _steps(3.0, m.dt), np.nanmin) < cfg.stop_speed
    return kind & (m.speed > cfg.move_speed) & stopped_before


def junction_turn(m: Motion, cfg: TagConfig, in_junction: np.ndarray) -> np.ndarray:
    """A vehicle or cyclist inside a junction (``in_junction [A, T]``) whose heading changes by more than
    ``turn_deg`` between 1 s before and 1 s after the step."""
    kind = np.isin(m.agent_type, (VEH, CYC))[:, None] & m.present
    k = _steps(1.0, m.dt)
    turn = np.abs(_wrap(_shift(m.heading, -k) - _shift(m.heading, k)))
    return kind & in_junction & (np.nan_to_num(turn, nan=0.0) > np.radians(cfg.turn_deg))


def occluded_or_new(m: Motion) -> np.ndarray:
    """An agent appears, or reappears after missing frames (occluded), at this step; never at step 0,
    where every agent of a cut scenario starts."""
    out = m.present & ~_shift(m.present, 1, fill=True).astype(bool) & IS_PHYSICAL[m.agent_type][:, None]
    out[:, 0] = False  # a traffic signal's wall appears with each red light: not an occlusion (IS_PHYSICAL)
    return out


# --------------------------------------------------------------------------------------------------
# pairwise events: arrays over the pairs (i, j) present at one step
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Pairs:
    """Ordered pairs (i, j) of agents present at one step within ``pair_radius``; j seen from i, ``[P]``."""

    i: np.ndarray
    j: np.ndarray
    lon: np.ndarray  # j ahead of i along i's heading, metres
    lat: np.ndarray  # j to i's left, metres
    dv: np.ndarray  # [P, 2] velocity of j minus velocity of i, m/s
    dp: np.ndarray  # [P, 2] position of j minus position of i, metres
    dhead: np.ndarray  # |heading j - heading i|, radians in [0, pi] (NaN unknown)


def neighbour_pairs(p: np.ndarray, radius: float) -> tuple[np.ndarray, np.ndarray]:
    """Ordered pairs (i, j), i != j, of points ``p [N, 2]`` at most ``radius`` apart, sorted by i then j.

    A k-d tree, not the [N, N] distance matrix: a city scene has up to ~800 agents at a step, where the
    matrix took ~20 ms per step and the tree takes ~0.2 ms."""
    if len(p) < 2:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    half = cKDTree(p).query_pairs(radius, output_type="ndarray").astype(np.int64)  # [P, 2], i < j
    i, j = np.concatenate([half[:, 0], half[:, 1]]), np.concatenate([half[:, 1], half[:, 0]])
    order = np.lexsort((j, i))
    return i[order], j[order]


def pairs_at(m: Motion, t: int, radius: float) -> Pairs:
    here = np.flatnonzero(m.present[:, t] & np.isfinite(m.xy[:, t]).all(-1))
    ii, jj = neighbour_pairs(m.xy[here, t], radius)
    i, j = here[ii], here[jj]
    dp = m.xy[j, t] - m.xy[i, t]
    h = np.nan_to_num(m.heading[i, t])
    c, s = np.cos(h), np.sin(h)
    return Pairs(i, j, dp[:, 0] * c + dp[:, 1] * s, -dp[:, 0] * s + dp[:, 1] * c,
                 np.nan_to_num(m.vel[j, t] - m.vel[i, t]), dp, np.abs(_wrap(m.heading[j, t] - m.heading[i, t])))


def time_to_collision(dp: np.ndarray, dv: np.ndarray, radius: np.ndarray) -> np.ndarray:
    """Seconds until discs of summed ``radius [P]`` touch moving at constant velocity (``dp``, ``dv`` ``[P, 2]``:
    relative position and velocity); 0 if they already overlap, inf if they never touch or move apart."""
    a = (dv**2).sum(1)
    b = 2 * (dp * dv).sum(1)
    c = (dp**2).sum(1) - radius**2
    disc = b**2 - 4 * a * c
    with np.errstate(divide="ignore", invalid="ignore"):
        tau = (-b - np.sqrt(np.maximum(disc, 0))) / (2 * a)
    out = np.where((disc >= 0) & (a > 1e-9) & (tau >= 0), tau, np.inf)
    return np.where(c <= 0, np.where(b < 0, 0.0, np.inf), out)


def near_miss_pairs(m: Motion, pr: Pairs, t: int, cfg: TagConfig) -> np.ndarray:
    """Time to collision under ``ttc_s`` (discs of ``TTC_RADIUS``) between a vehicle and anyone.

    Pairs without a vehicle are left out: SUMO lets pedestrians and bicycles pass through each other on
    shared crossings (it does not model their interaction), so their time to collision is an artefact.
    """
    ti, tj = m.agent_type[pr.i], m.agent_type[pr.j]
    radius = _RADIUS_BY_TYPE[ti] + _RADIUS_BY_TYPE[tj]
    physical = IS_PHYSICAL[ti] & IS_PHYSICAL[tj]  # a closed signal's stop wall is not something to hit
    return physical & ((ti == VEH) | (tj == VEH)) & (time_to_collision(pr.dp, pr.dv, radius) < cfg.ttc_s)


def pedestrian_crossing_pairs(m: Motion, pr: Pairs, t: int, cfg: TagConfig, on_crosswalk: np.ndarray) -> np.ndarray:
    """A pedestrian j in the corridor ahead of vehicle i (``corridor_length`` by ``2 corridor_half_width``)
    walking across it (lateral speed over 0.3 m/s in i's frame) or standing on a crosswalk
    (``on_crosswalk [A, T]``)."""
    veh, ped = m.agent_type[pr.i] == VEH, m.agent_type[pr.j] == PED
    ahead = (pr.lon > 0) & (pr.lon < cfg.corridor_length) & (np.abs(pr.lat) < cfg.corridor_half_width)
    h = np.nan_to_num(m.heading[pr.i, t])
    v = np.nan_to_num(m.vel[pr.j, t])
    lateral = np.abs(-v[:, 0] * np.sin(h) + v[:, 1] * np.cos(h))
    return veh & ped & ahead & ((lateral > 0.3) | on_crosswalk[pr.j, t])


def cyclist_in_lane_pairs(m: Motion, pr: Pairs, t: int, cfg: TagConfig) -> np.ndarray:
    """A vehicle j within 1.5 m laterally and 15 m along a cyclist i, same direction (within 30 degrees),
    both moving faster than 1 m/s: they share the lane."""
    kind = (m.agent_type[pr.i] == CYC) & (m.agent_type[pr.j] == VEH)
    moving = (m.speed[pr.i, t] > 1.0) & (m.speed[pr.j, t] > 1.0)
    return kind & moving & (np.abs(pr.lat) < 1.5) & (np.abs(pr.lon) < 15.0) & (pr.dhead < np.radians(30))


def cut_in_pairs(m: Motion, pr: Pairs, t: int, cfg: TagConfig) -> np.ndarray:
    """Vehicle j enters the lane ahead of moving vehicle i: now within 1.5 m laterally and 0-20 m ahead,
    heading within 30 degrees of i's; 1 s earlier more than 2 m to the side (at most 8 m: an adjacent
    lane or a side road) in i's frame then, while i itself kept its heading (within 15 degrees)."""
    k = _steps(1.0, m.dt)
    if t < k:
        return np.zeros(len(pr.i), dtype=bool)
    kind = (m.agent_type[pr.i] == VEH) & (m.agent_type[pr.j] == VEH) & (m.speed[pr.i, t] > cfg.move_speed)
    now = (pr.lon > 0) & (pr.lon < 20.0) & (np.abs(pr.lat) < 1.5) & (pr.dhead < np.radians(30))
    before_ok = m.present[pr.i, t - k] & m.present[pr.j, t - k]
    h0 = np.nan_to_num(m.heading[pr.i, t - k])
    dp0 = m.xy[pr.j, t - k] - m.xy[pr.i, t - k]
    lat0 = np.abs(-dp0[:, 0] * np.sin(h0) + dp0[:, 1] * np.cos(h0))
    steady = np.abs(_wrap(m.heading[pr.i, t] - m.heading[pr.i, t - k])) < np.radians(15)
    return kind & now & before_ok & (np.nan_to_num(lat0) > 2.0) & (np.nan_to_num(lat0, nan=99) <= 8.0) & steady


# --------------------------------------------------------------------------------------------------
# a scene
# --------------------------------------------------------------------------------------------------


def scene_events(m: Motion, cfg: TagConfig, in_junction: np.ndarray | None = None,
                 on_crosswalk: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Every tag's event ``[A, T]`` bool. ``in_junction`` / ``on_crosswalk`` ``[A, T]``: the agents' positions
    against the map (all False without a map)."""
    shape = m.present.shape
    in_junction = np.zeros(shape, bool) if in_junction is None else in_junction
    on_crosswalk = np.zeros(shape, bool) if on_crosswalk is None else on_crosswalk
    ev = {
        "braking_or_yielding": braking_or_yielding(m, cfg),
        "stop_and_go": stop_and_go(m, cfg),
        "junction_turn": junction_turn(m, cfg, in_junction),
        "occluded_or_new": occluded_or_new(m),
        **{k: np.zeros(shape, bool) for k in ("pedestrian_crossing", "cut_in", "cyclist_in_lane", "near_miss")},
    }
    pair_fns = {
        "pedestrian_crossing": lambda pr, t: pedestrian_crossing_pairs(m, pr, t, cfg, on_crosswalk),
        "cut_in": lambda pr, t: cut_in_pairs(m, pr, t, cfg),
        "cyclist_in_lane": lambda pr, t: cyclist_in_lane_pairs(m, pr, t, cfg),
        "near_miss": lambda pr, t: near_miss_pairs(m, pr, t, cfg),
    }
    for t in range(shape[1]):
        pr = pairs_at(m, t, cfg.pair_radius)
        if len(pr.i) == 0:
            continue
        for name, fn in pair_fns.items():
            hit = fn(pr, t)
            ev[name][pr.i[hit], t] = True
            ev[name][pr.j[hit], t] = True
    return ev


def windowed(event: np.ndarray, present: np.ndarray, back: int, ahead: int) -> np.ndarray:
    """``[A, T]``: present at t0 and ``event`` somewhere in ``[t0 - back, t0 + ahead]`` (clipped to the scene)."""
    a, t = event.shape
    c = np.concatenate([np.zeros((a, 1), np.int64), np.cumsum(event, axis=1)], axis=1)
    idx = np.arange(t)
    hi = np.minimum(idx + ahead + 1, t)
    lo = np.maximum(idx - back, 0)
    return present & ((c[:, hi] - c[:, lo]) > 0)


def scene_tags(m: Motion, cfg: TagConfig, in_junction: np.ndarray | None = None,
               on_crosswalk: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Every tag ``[A, T]`` bool: the tag of each agent at each t0 (see the module docstring's windows)."""
    back, ahead = _steps(cfg.past_s, m.dt), _steps(cfg.future_s, m.dt)
    ev = scene_events(m, cfg, in_junction, on_crosswalk)
    return {name: windowed(ev[name], m.present, back, 0 if name == "occluded_or_new" else ahead) for name in TAGS}
