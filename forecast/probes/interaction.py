"""Interaction and causality probes: paired scenes that differ in one cause.

From real SUMO scenes we build pairs through the shared sample builder:

* ``pedestrian_on_crossing``: a moving vehicle with a pedestrian on a crosswalk ahead of it, with
  and without that pedestrian;
* ``lead_vehicle_braking``: a vehicle following another, the leader's recent history braking or
  cruising (same position at t0);
* ``cyclist_in_lane``: a vehicle with a cyclist ahead in its lane, with and without the cyclist;
* ``queued_leader_removed``: a queued (slow or stopped) vehicle with a slow leader close ahead in
  its lane, with and without that leader: the cause whose removal should make the largest
  difference (the follower can move up).

The response is the vehicle's expected 3 s travel (probability-weighted endpoint distance). The
right direction is *less* travel with the cause present. A pair whose response differs by less
than ``tie_m`` counts half: a model that ignores other agents scores 0.5 (chance). Beside the
direction rate every probe reports the effect size in metres (mean and median travel removed by
the cause, and the mean absolute change).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import shapely

from forecast.data.schema import AgentType
from forecast.features.dataset import SceneSet
from forecast.features.frames import to_local
from forecast.features.sample import Sample, build_sample
from forecast.features.tracks import AgentTracks

PROBES = ("pedestrian_on_crossing", "lead_vehicle_braking", "cyclist_in_lane", "queued_leader_removed")
QUEUE_SPEED = 2.0  # m/s: a follower and its leader slower than this are queued


@dataclass
class ProbePair:
    probe: str
    with_cause: Sample
    without_cause: Sample
    subject_with: int  # index of the responding vehicle among with_cause's agents
    subject_without: int  # and among without_cause's agents


def expected_travel(traj: np.ndarray, prob: np.ndarray) -> np.ndarray:
    """traj [A, K, T, 2] agent frame, prob [A, K] -> [A] expected endpoint distance (m)."""
    return (np.linalg.norm(traj[:, :, -1], axis=-1) * prob).sum(-1)


def find_pairs(scenes: SceneSet, max_pairs: int = 200, seed: int = 0) -> list[ProbePair]:
    """Scan the scene set's samples for the probe situations; at most ``max_pairs`` per probe."""
    rng = np.random.default_rng(seed)
    found: dict[str, list[ProbePair]] = {p: [] for p in PROBES}
    order = rng.permutation(len(scenes.index))
    for k in order:
        if all(len(v) >= max_pairs for v in found.values()):
            break
        idx = scenes.index[k]
        info = scenes.infos[idx.scenario]
        tracks = scenes.tracks[idx.scenario]
        m = scenes.maps.get(info.map_id) if info.map_id else None
        crosswalks = None
        if info.map_id:
            cw = scenes.map_layers(info.map_id).get("crosswalk", [])
            crosswalks = shapely.union_all(cw) if cw else None
        for pair in _pairs_in_sample(tracks, idx.t0, idx.agents, scenes.cfg, m, crosswalks):
            if len(found[pair.probe]) < max_pairs:
                found[pair.probe].append(pair)
    return [p for v in found.values() for p in v]


def _pairs_in_sample(tracks: AgentTracks, t0: int, agents: np.ndarray, cfg, m, crosswalks) -> list[ProbePair]:
    out = []
    xy0 = tracks.xy[agents, t0]
    base = build_sample(tracks, t0, cfg, m, agents, agents[0], with_future=False)
    speed = np.hypot(base.hist[:, -1, 2], base.hist[:, -1, 3])
    atype = tracks.agent_type[agents]
    rel_heading = np.abs(np.angle(np.exp(1j * (base.heading[None, :] - base.heading[:, None]))))  # [A, A]
    vehicle = atype == AgentType.VEHICLE
    for i in np.flatnonzero(vehicle & (speed < QUEUE_SPEED) & base.target_mask):
        local = to_local(xy0[None], base.origin[i : i + 1], base.heading[i : i + 1])[0]
        lead = (local[:, 0] > 2.0) & (local[:, 0] < 15.0) & (np.abs(local[:, 1]) < 1.5) & vehicle
        lead &= (rel_heading[i] < 0.35) & (speed < QUEUE_SPEED)
        if lead.any():
            j = int(np.flatnonzero(lead)[np.argmin(local[lead, 0])])  # the nearest one: the leader
            out.append(_removal_pair("queued_leader_removed", base, tracks, t0, agents, cfg, m, i, j))
            break
    for i in np.flatnonzero(vehicle & (speed > 2.0) & base.target_mask):
        local = to_local(xy0[None], base.origin[i : i + 1], base.heading[i : i + 1])[0]  # others in i's frame
        ahead = (local[:, 0] > 3.0) & (local[:, 0] < 30.0)
        for j in np.flatnonzero(ahead & (np.abs(local[:, 1]) < 6.0) & (atype == AgentType.PEDESTRIAN)):
            if crosswalks is not None and crosswalks.distance(shapely.Point(*xy0[j])) < 1.0:
                out.append(_removal_pair("pedestrian_on_crossing", base, tracks, t0, agents, cfg, m, i, j))
                break
        for j in np.flatnonzero(ahead & (np.abs(local[:, 1]) < 1.5) & (atype == AgentType.CYCLIST)):
            out.append(_removal_pair("cyclist_in_lane", base, tracks, t0, agents, cfg, m, i, j))
            break
        rel = rel_heading[i]
        for j in np.flatnonzero(ahead & (np.abs(local[:, 1]) < 1.5) & (atype == AgentType.VEHICLE) & (rel < 0.35)
                                & (speed > 2.0)):
            out.append(_braking_pair(tracks, t0, agents, cfg, m, i, j, speed[j]))
            break
    return out


def _removal_pair(probe, with_cause: Sample, tracks, t0, agents, cfg, m, i, j) -> ProbePair:
    """``with_cause`` is the factual sample of ``agents``; the counterfactual drops agent ``j``."""
    keep = np.delete(agents, j)
    without = build_sample(tracks, t0, cfg, m, keep, agents[0] if j != 0 else keep[0], with_future=False)
    return ProbePair(probe, with_cause, without, int(i), int(i if i < j else i - 1))


def _braking_pair(tracks, t0, agents, cfg, m, i, j, speed_now) -> ProbePair:
    """The leader arrives at its t0 position either decelerating at 4 m/s^2 or at constant speed."""
    lead = agents[j]
    h = cfg.history_steps
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

    cruise = with_history(-steps * speed_now)
    a = 4.0  # braking: faster in the past, speed_now at t0
    brake = with_history(-steps * speed_now + 0.5 * a * steps**2)
    s_brake = build_sample(brake, t0, cfg, m, agents, agents[0], with_future=False)
    s_cruise = build_sample(cruise, t0, cfg, m, agents, agents[0], with_future=False)
    return ProbePair("lead_vehicle_braking", s_brake, s_cruise, int(i), int(i))


def _heading_at(tracks: AgentTracks, agent: int, t0: int) -> float:
    h = tracks.heading[agent, t0]
    if np.isfinite(h):
        return float(h)
    d = tracks.xy[agent, t0] - tracks.xy[agent, max(0, t0 - 1)]
    return float(np.arctan2(d[1], d[0]))


def score_pairs(pairs: list[ProbePair], predict: Callable, tie_m: float = 0.01) -> dict:
    """Run ``predict(sample) -> (traj [A, K, T, 2], prob [A, K])`` on both sides of every pair.

    Returns per probe: n, share in the right direction (ties count half), effect sizes (metres of
    travel removed by the cause, positive is the right way: mean, median, and the mean absolute
    change whatever its sign), and share of ties.
    """
    out = {}
    for probe in PROBES:
        ps = [p for p in pairs if p.probe == probe]
        if not ps:
            out[probe] = {"n": 0, "right_direction": float("nan"), "mean_effect_m": float("nan"),
                          "median_effect_m": float("nan"), "mean_abs_effect_m": float("nan"), "ties": float("nan")}
            continue
        effects = []
        for p in ps:
            t_with, pr_with = predict(p.with_cause)
            t_without, pr_without = predict(p.without_cause)
            i, j = p.subject_with, p.subject_without
            travel_with = expected_travel(t_with[i : i + 1], pr_with[i : i + 1])[0]
            travel_without = expected_travel(t_without[j : j + 1], pr_without[j : j + 1])[0]
            effects.append(travel_without - travel_with)
        e = np.asarray(effects)
        right = (e > tie_m).mean() + 0.5 * (np.abs(e) <= tie_m).mean()
        out[probe] = {"n": len(ps), "right_direction": float(right), "mean_effect_m": float(e.mean()),
                      "median_effect_m": float(np.median(e)), "mean_abs_effect_m": float(np.abs(e).mean()),
                      "ties": float((np.abs(e) <= tie_m).mean())}
    valid = [v["right_direction"] for v in out.values() if v["n"]]
    out["mean_right_direction"] = float(np.mean(valid)) if valid else float("nan")
    return out
