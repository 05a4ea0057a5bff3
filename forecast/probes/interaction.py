"""Interaction and causality probes: paired scenes that differ in one cause.

From real SUMO scenes we build pairs through the shared sample builder:

* ``pedestrian_on_crossing``: a moving vehicle with a pedestrian walking on a crossing ahead of it,
  in its path or entering it within ``LOOKAHEAD_S``, with and without that pedestrian;
* ``lead_vehicle_braking``: a vehicle following another; over the history window the leader either
  cruised at its speed or braked from that same speed at ``BRAKE_MS2`` (same position at t0,
  slower there when it braked);
* ``cyclist_in_lane``: a vehicle with a cyclist ahead in its lane, going its way, with and without
  the cyclist;
* ``queued_leader_removed``: a queued (slow or stopped) vehicle with a slow leader close ahead in
  its lane, with and without that leader: the cause whose removal should make the largest
  difference (the follower can move up). Not a queue held by a closed traffic signal ahead of the
  follower (within ``HELD_BY_SIGNAL_M``): there the light, not the leader, keeps it standing, and
  a model that reads the light right predicts no change.

What the selection leaves out, and why: a pedestrian *waiting* beside a crossing (within a metre of
it, not walking on it), or a cyclist standing crosswise in the lane ahead, is no obstacle but a
sign that the vehicles' light is green (at signals pedestrians and cross traffic wait while the
cars go), so a model that reads it right predicts *more* travel with it present: such pairs test
the light, not the cause. A braking history that starts above the leader's speed (the same t0
speed reached from a faster past) puts the leader at speeds no vehicle in the data drives, and
models read that fast past as a fast future.

The response is the vehicle's expected 3 s travel (probability-weighted endpoint distance). The
right direction is *less* travel with the cause present. A pair whose response differs by less
than ``tie_m`` counts half: a model that ignores other agents scores 0.5 (chance). Beside the
direction rate every probe reports the effect size in metres (mean and median travel removed by
the cause, and the mean absolute change).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np
import shapely

from forecast.batching import Question, predict_stream
from forecast.data.schema import AgentType
from forecast.features.dataset import SceneSet
from forecast.features.frames import ahead_on_its_way, norm2, to_local
from forecast.features.sample import Sample, build_sample
from forecast.features.tracks import AgentTracks

PROBES = ("pedestrian_on_crossing", "lead_vehicle_braking", "cyclist_in_lane", "queued_leader_removed")
QUEUE_SPEED = 2.0  # m/s: a follower and its leader slower than this are queued
ON_CROSSING_M = 0.25  # a pedestrian this close to a crossing polygon walks on it (waiting ones stand ~1 m off)
WALKING_MS = 0.3  # m/s: a pedestrian at least this fast is walking, not waiting
CORRIDOR_M = 2.0  # metres either side of a vehicle's axis: its path (a lane is about 3.2 m wide)
LOOKAHEAD_S = 2.0  # a pedestrian entering the path within this long counts as in it
SAME_WAY_RAD = 0.5  # a cyclist "in the lane" heads within this of the vehicle's heading
BRAKE_MS2 = 3.0  # deceleration of the braking leader (SUMO's passenger cars brake at up to 4.5)
HELD_BY_SIGNAL_M = 30.0  # a closed signal this far ahead of a queued vehicle, on its way, holds the queue


@dataclass(frozen=True)
class ProbePair:
    """What identifies a pair, not its samples: ``pair_samples`` rebuilds them through the sample
    builder when the pair is scored. (Holding both samples, rasters included, for up to
    ``max_pairs`` pairs per probe made the card the part of ``forecast evaluate`` whose memory
    grew with the split.)"""

    probe: str
    subject: int  # index of the responding vehicle among the sample's agents
    cause: int  # index of the cause among the sample's agents: removed, or the leader given another past
    lead_speed: np.float32 = np.float32(0.0)  # lead_vehicle_braking: the leader's t0 speed (m/s), the sample's dtype
    sample: int = -1  # index into the scene set's sample plan (scenario, t0, agents); -1 outside a set

    @property
    def subject_with(self) -> int:
        """Index of the responding vehicle among the with-cause sample's agents."""
        return self.subject

    @property
    def subject_without(self) -> int:
        """And among the without-cause sample's agents (one fewer when the cause was removed before it)."""
        if self.probe == "lead_vehicle_braking" or self.subject < self.cause:
            return self.subject
        return self.subject - 1


def expected_travel(traj: np.ndarray, prob: np.ndarray) -> np.ndarray:
    """traj [A, K, T, 2] agent frame, prob [A, K] -> [A] expected endpoint distance (m)."""
    return (norm2(traj[:, :, -1]) * prob).sum(-1)


SCAN_BLOCK = 1024  # samples scanned per block, in scenario order


def find_pairs(scenes: SceneSet, max_pairs: int = 200, seed: int = 0) -> list[ProbePair]:
    """Scan the scene set's samples for the probe situations; at most ``max_pairs`` per probe.

    The samples are taken in a seeded random order, the first ``max_pairs`` of each probe kept. They
    are read ``SCAN_BLOCK`` at a time in scenario order, each block's pairs then kept in the random
    order: the same pairs as one sample at a time, but a scenario is read once per block instead of
    whenever the scan comes back to it (a split has more scenarios than the tracks cache holds).
    Only the pairs' identities are kept (``ProbePair``, a few numbers each): memory does not grow
    with the pairs found."""
    rng = np.random.default_rng(seed)
    found: dict[str, list[ProbePair]] = {p: [] for p in PROBES}
    order = rng.permutation(len(scenes.index))
    crossings: dict[str | None, object | None] = {}  # per map: the union is the scan's costliest step otherwise
    for start in range(0, len(order), SCAN_BLOCK):
        if all(len(v) >= max_pairs for v in found.values()):
            break
        block = [int(k) for k in order[start : start + SCAN_BLOCK]]
        in_sample: dict[int, list[ProbePair]] = {}
        for k in sorted(block, key=lambda k: scenes.index[k].scenario):
            idx = scenes.index[k]
            map_id = scenes.infos[idx.scenario].map_id
            if map_id not in crossings:
                crossings[map_id] = crosswalks_of(scenes, idx)
            in_sample[k] = _pairs_in_sample(scenes.tracks[idx.scenario], idx.t0, idx.agents, scenes.cfg,
                                            crossings[map_id])
        for k in block:
            for pair in in_sample[k]:
                if len(found[pair.probe]) < max_pairs:
                    found[pair.probe].append(replace(pair, sample=k))
    return [p for v in found.values() for p in v]


def sample_place(scenes: SceneSet, k: int):
    """Sample ``k`` of ``scenes``' plan: ``(SampleIndex, its scenario's AgentTracks, its map raster or None)``."""
    idx = scenes.index[k]
    info = scenes.infos[idx.scenario]
    return idx, scenes.tracks[idx.scenario], scenes.maps.get(info.map_id) if info.map_id else None


def crosswalks_of(scenes: SceneSet, idx) -> object | None:
    """The union of the crosswalks of sample ``idx``'s map (shapely), or None without any."""
    map_id = scenes.infos[idx.scenario].map_id
    cw = scenes.map_layers(map_id).get("crosswalk", []) if map_id else []
    return shapely.union_all(cw) if cw else None


def pair_samples(scenes: SceneSet, pair: ProbePair) -> tuple[Sample, Sample]:
    """The pair's (with cause, without cause) samples, rebuilt from its place in ``scenes``' plan."""
    idx, tracks, m = sample_place(scenes, pair.sample)
    return build_pair(pair, tracks, idx.t0, idx.agents, scenes.cfg, m)


def build_pair(pair: ProbePair, tracks: AgentTracks, t0: int, agents: np.ndarray, cfg, m) -> tuple[Sample, Sample]:
    """(with cause, without cause) of ``pair`` found among ``agents`` of ``tracks`` at ``t0``.

    Removal probes: the factual sample of ``agents`` and the same without the cause. Braking: the
    leader arrives at its t0 position having braked (with) or cruised (without) over the history
    window (``_braking_tracks``)."""
    if pair.probe == "lead_vehicle_braking":
        brake, cruise = _braking_tracks(tracks, agents[pair.cause], t0, cfg.history_steps, pair.lead_speed)
        return (build_sample(brake, t0, cfg, m, agents, agents[0], with_future=False),
                build_sample(cruise, t0, cfg, m, agents, agents[0], with_future=False))
    j = pair.cause
    keep = np.delete(agents, j)
    return (build_sample(tracks, t0, cfg, m, agents, agents[0], with_future=False),
            build_sample(tracks, t0, cfg, m, keep, agents[0] if j != 0 else keep[0], with_future=False))


def _pairs_in_sample(tracks: AgentTracks, t0: int, agents: np.ndarray, cfg, crosswalks) -> list[ProbePair]:
    """The probe situations among ``agents`` at ``t0`` (pairs with ``sample`` = -1: ``find_pairs`` sets it).
    Only the agents' kinematics are read: their sample is built without rasters, so no map is needed."""
    out = []
    xy0 = tracks.xy[agents, t0]
    base = build_sample(tracks, t0, cfg, None, agents, agents[0], with_future=False, rasterize=False)
    speed = np.hypot(base.hist[:, -1, 2], base.hist[:, -1, 3])
    atype = tracks.agent_type[agents]
    rel_heading = np.abs(np.angle(np.exp(1j * (base.heading[None, :] - base.heading[:, None]))))  # [A, A]
    vehicle = atype == AgentType.VEHICLE
    signal = atype == AgentType.TRAFFIC_SIGNAL
    for i in np.flatnonzero(vehicle & (speed < QUEUE_SPEED) & base.target_mask):
        local = to_local(xy0[None], base.origin[i : i + 1], base.heading[i : i + 1])[0]
        if (signal & ahead_on_its_way(xy0[i], base.heading[i], xy0, base.heading, HELD_BY_SIGNAL_M, 6.0,
                                      np.pi / 6)).any():
            continue
        lead = (local[:, 0] > 2.0) & (local[:, 0] < 15.0) & (np.abs(local[:, 1]) < 1.5) & vehicle
        lead &= (rel_heading[i] < 0.35) & (speed < QUEUE_SPEED)
        if lead.any():
            j = int(np.flatnonzero(lead)[np.argmin(local[lead, 0])])  # the nearest one: the leader
            out.append(ProbePair("queued_leader_removed", int(i), j))
            break
    for i in np.flatnonzero(vehicle & (speed > 2.0) & base.target_mask):
        local = to_local(xy0[None], base.origin[i : i + 1], base.heading[i : i + 1])[0]  # others in i's frame
        ahead = (local[:, 0] > 3.0) & (local[:, 0] < 30.0)
        walking = (atype == AgentType.PEDESTRIAN) & (speed >= WALKING_MS) & ahead
        v_i = _velocity_in_frame_of(base, i)  # [A, 2] everyone's velocity in i's frame
        for j in np.flatnonzero(walking & _in_path(local[:, 1], v_i[:, 1])):
            if crosswalks is not None and crosswalks.distance(shapely.Point(*xy0[j])) < ON_CROSSING_M:
                out.append(ProbePair("pedestrian_on_crossing", int(i), int(j)))
                break
        in_lane = ahead & (np.abs(local[:, 1]) < 1.5) & (atype == AgentType.CYCLIST) & (rel_heading[i] < SAME_WAY_RAD)
        for j in np.flatnonzero(in_lane):
            out.append(ProbePair("cyclist_in_lane", int(i), int(j)))
            break
        rel = rel_heading[i]
        for j in np.flatnonzero(ahead & (np.abs(local[:, 1]) < 1.5) & (atype == AgentType.VEHICLE) & (rel < 0.35)
                                & (speed > 2.0)):
            out.append(ProbePair("lead_vehicle_braking", int(i), int(j), speed[j]))
            break
    return out


def _in_path(y: np.ndarray, vy: np.ndarray) -> np.ndarray:
    """[A] bool: lateral offsets ``y`` (m) from a vehicle's axis, moving at ``vy`` (m/s), are within
    ``CORRIDOR_M`` now or cross into it within ``LOOKAHEAD_S`` (y + vy t for t in [0, LOOKAHEAD_S])."""
    y_end = y + vy * LOOKAHEAD_S
    return (np.minimum(np.abs(y), np.abs(y_end)) < CORRIDOR_M) | (np.sign(y) != np.sign(y_end))


def _velocity_in_frame_of(sample: Sample, i: int) -> np.ndarray:
    """[A, 2] every agent's velocity at t0 (m/s) in agent ``i``'s frame (the sample holds each in its own)."""
    v = sample.hist[:, -1, 2:4].astype(np.float64)
    rel = sample.heading - sample.heading[i]  # [A]: rotate from each agent's frame into i's
    c, s = np.cos(rel), np.sin(rel)
    return np.stack([c * v[:, 0] - s * v[:, 1], s * v[:, 0] + c * v[:, 1]], axis=-1)


def braking_distance_before(steps: np.ndarray, speed: float, decel: float) -> np.ndarray:
    """Distance (m) still to drive to the t0 position at times ``steps`` (s, <= 0, increasing; the
    first is the window's start) for an agent at ``speed`` (m/s) at the start that brakes at
    ``decel`` (m/s^2) until it stops. [T_h] -> [T_h], 0 at ``steps[-1] = 0``."""
    tau = steps - steps[0]  # time since the window's start
    stop = speed / decel if decel > 0 else np.inf
    run = np.minimum(tau, stop)
    driven = speed * run - 0.5 * decel * run**2  # from the start, constant after the stop
    return driven[-1] - driven


def _braking_tracks(tracks: AgentTracks, lead: int, t0: int, h: int, speed_now) -> tuple[AgentTracks, AgentTracks]:
    """(braking, cruising) copies of ``tracks``: the leader (track ``lead``) arrives at its t0
    position having braked at ``BRAKE_MS2`` from ``speed_now`` at the window's start, or having
    cruised at ``speed_now`` over the ``h``-step history window: the same past speed, within the
    speeds the data holds; the braking leader is slower at t0 (and braking)."""
    steps = np.arange(-h + 1, 1) * tracks.dt  # seconds relative to t0, <= 0
    direction = np.array([np.cos(_heading_at(tracks, lead, t0)), np.sin(_heading_at(tracks, lead, t0))])

    def with_history(distance_before_t0: np.ndarray) -> AgentTracks:
        xy = tracks.xy.copy()
        present = tracks.present.copy()
        lo = t0 - h + 1
        idx = np.arange(lo, t0 + 1)
        ok = idx >= 0
        xy[lead, idx[ok]] = tracks.xy[lead, t0] - distance_before_t0[ok, None] * direction
        present[lead, idx[ok]] = True
        return AgentTracks(xy, tracks.heading, present, tracks.agent_type, tracks.dt, tracks.track_ids)

    return with_history(braking_distance_before(steps, speed_now, BRAKE_MS2)), with_history(-steps * speed_now)


def _heading_at(tracks: AgentTracks, agent: int, t0: int) -> float:
    h = tracks.heading[agent, t0]
    if np.isfinite(h):
        return float(h)
    d = tracks.xy[agent, t0] - tracks.xy[agent, max(0, t0 - 1)]
    return float(np.arctan2(d[1], d[0]))


def score_pairs(pairs: list[ProbePair], predict, samples: Callable[[ProbePair], tuple[Sample, Sample]],
                tie_m: float = 0.01) -> dict:
    """Run the predictor on both sides of every pair.

    ``predict``: ``predict(sample) -> (traj [A, K, T, 2], prob [A, K])``, or an object with such a
    ``predict`` (one with ``predict_batch`` gets the pairs' samples ``forecast.batching.BATCH``
    at a time). ``samples(pair) -> (with cause, without cause)`` builds a pair's samples
    (``pair_samples`` for a scene set): they are made as they are asked, in plan order (a scenario
    is read once), and dropped once scored. Returns per probe: n, share in the right direction (ties
    count half), effect sizes (metres of travel removed by the cause, positive is the right way:
    mean, median, and the mean absolute change whatever its sign), and share of ties.
    """
    def questions():
        for n in sorted(range(len(pairs)), key=lambda n: pairs[n].sample):
            with_cause, without_cause = samples(pairs[n])
            yield (n, True), Question(with_cause)
            yield (n, False), Question(without_cause)

    effects: list = [None] * len(pairs)  # scalars of predict's dtype, as before: the means are unchanged
    travel_with: dict[int, np.floating] = {}
    for (n, with_cause), (traj, prob) in predict_stream(predict, questions()):
        p = pairs[n]
        i = p.subject_with if with_cause else p.subject_without
        travel = expected_travel(traj[i : i + 1], prob[i : i + 1])[0]
        if with_cause:
            travel_with[n] = travel
        else:
            effects[n] = travel - travel_with.pop(n)
    out = {}
    for probe in PROBES:
        e = np.asarray([effects[n] for n, p in enumerate(pairs) if p.probe == probe])  # in the order found
        if not len(e):
            out[probe] = {"n": 0, "right_direction": float("nan"), "mean_effect_m": float("nan"),
                          "median_effect_m": float("nan"), "mean_abs_effect_m": float("nan"), "ties": float("nan")}
            continue
        right = (e > tie_m).mean() + 0.5 * (np.abs(e) <= tie_m).mean()
        out[probe] = {"n": len(e), "right_direction": float(right), "mean_effect_m": float(e.mean()),
                      "median_effect_m": float(np.median(e)), "mean_abs_effect_m": float(np.abs(e).mean()),
                      "ties": float((np.abs(e) <= tie_m).mean())}
    valid = [v["right_direction"] for v in out.values() if v["n"]]
    out["mean_right_direction"] = float(np.mean(valid)) if valid else float("nan")
    return out
