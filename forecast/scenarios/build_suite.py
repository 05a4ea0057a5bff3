"""Build a suite from a store: cases whose expectation the ground truth itself meets.

Two kinds, as issue 16 names them:

* ``slows_down``: a vehicle faster than 4 m/s at t0 whose leader (a vehicle 3-30 m ahead within 1.5 m
  of its path, same direction) brakes harder than 3 m/s^2 within the next 2 s, and which truly covers
  less than 0.9 x its constant-velocity travel over the horizon;
* ``keeps_crossing``: a pedestrian on a crosswalk at t0 walking faster than 0.8 m/s in front of a
  vehicle (tag ``pedestrian_crossing``), who truly keeps walking (at least 0.5 x its constant-velocity
  travel, within 45 degrees of its heading).

Cases are chosen deterministically (scenario order, at most one per scenario and kind), t0 on the
given stride with ``history_steps`` of history and ``future_steps`` of future inside the scenario.
"""

from __future__ import annotations

import numpy as np

from forecast.data.store import Store
from forecast.scenarios.suites import Case, Suite, keeps_crossing, slows_down
from forecast.scenarios.table import map_masks
from forecast.scenarios.tags import PED, VEH, TagConfig, motion, scene_tags


def _true_future(m, a: int, t0: int, steps: int) -> np.ndarray:
    """``[1, steps, 2]``: agent ``a``'s true future in its frame at t0 (x along its heading), as a one-mode prediction."""
    h = m.heading[a, t0]
    d = m.xy[a, t0 + 1 : t0 + 1 + steps] - m.xy[a, t0]
    c, s = np.cos(h), np.sin(h)
    return np.stack([d[:, 0] * c + d[:, 1] * s, -d[:, 0] * s + d[:, 1] * c], axis=1)[None]


def _leader_brakes(m, f: int, t0: int, within: int, hard: float) -> int | None:
    here = np.flatnonzero(m.present[:, t0] & (m.agent_type == VEH))
    here = here[here != f]
    if len(here) == 0:
        return None
    h = m.heading[f, t0]
    d = m.xy[here, t0] - m.xy[f, t0]
    lon = d[:, 0] * np.cos(h) + d[:, 1] * np.sin(h)
    lat = -d[:, 0] * np.sin(h) + d[:, 1] * np.cos(h)
    dhead = np.abs((m.heading[here, t0] - h + np.pi) % (2 * np.pi) - np.pi)
    cand = here[(lon > 3) & (lon < 30) & (np.abs(lat) < 1.5) & (dhead < np.radians(30))]
    if len(cand) == 0:
        return None
    leader = cand[np.argmin(np.hypot(*(m.xy[cand, t0] - m.xy[f, t0]).T))]
    acc = m.accel[leader, t0 : t0 + within + 1]
    return int(leader) if np.nanmin(np.where(np.isfinite(acc), acc, 0.0)) < -hard else None


def build_suite(store: Store, name: str, version: int, split: str = "test", per_kind: int = 6,
                history_steps: int = 20, future_steps: int = 30, t0_stride: int = 10,
                cfg: TagConfig | None = None) -> Suite:
    """Mine ``per_kind`` cases of each kind from ``split`` of ``store`` (steps at the store's dt)."""
    cfg = cfg or TagConfig()
    found: dict[str, list[Case]] = {"slows_down": [], "keeps_crossing": []}
    maps: dict[str, dict] = {}
    for info in store.scenarios(split=split):
        if all(len(v) >= per_kind for v in found.values()):
            break
        sc = store.load_scenario(info.scenario_id)
        if info.map_id and info.map_id not in maps:
            maps[info.map_id] = store.load_map(info.map_id)
        layers = maps.get(info.map_id) if info.map_id else None
        m = motion(sc.xy, sc.present, sc.agent_type, info.dt, sc.heading)
        junction, crosswalk = map_masks(np.nan_to_num(sc.xy), sc.present, layers, info.source)
        tags = scene_tags(m, cfg, junction, crosswalk)
        within = int(round(2.0 / info.dt))
        got = {k: False for k in found}
        for t0 in range(history_steps - 1, sc.num_timesteps - future_steps, t0_stride):
            full = m.present[:, t0 - history_steps + 1 : t0 + future_steps + 1].all(1)
            for a in np.flatnonzero(full):
                speed = float(m.speed[a, t0])
                gt = _true_future(m, a, t0, future_steps)
                one = np.ones(1)
                tid = str(sc.track_ids[a])
                if (not got["slows_down"] and len(found["slows_down"]) < per_kind and m.agent_type[a] == VEH
                        and speed > 4.0 and slows_down(gt, one, speed, info.dt)[0]):
                    leader = _leader_brakes(m, a, t0, within, cfg.hard_brake)
                    if leader is not None:
                        found["slows_down"].append(Case(
                            f"slows-down-{len(found['slows_down']) + 1:02d}", info.scenario_id, t0, tid, "slows_down",
                            why=f"its leader {sc.track_ids[leader]} brakes harder than {cfg.hard_brake:g} m/s^2 "
                                f"within 2 s; the follower truly slows down"))
                        got["slows_down"] = True
                if (not got["keeps_crossing"] and len(found["keeps_crossing"]) < per_kind and m.agent_type[a] == PED
                        and speed > 0.8 and crosswalk[a, t0] and tags["pedestrian_crossing"][a, t0]
                        and keeps_crossing(gt, one, speed, info.dt)[0]):
                    found["keeps_crossing"].append(Case(
                        f"keeps-crossing-{len(found['keeps_crossing']) + 1:02d}", info.scenario_id, t0, tid,
                        "keeps_crossing", why="pedestrian on the crosswalk in front of a vehicle; truly keeps crossing"))
                    got["keeps_crossing"] = True
    cases = found["slows_down"] + found["keeps_crossing"]
    desc = (f"Built by `forecast suite build` from split {split} of {store.path.name}: braking leader's follower "
            f"slows down; pedestrian on the crossing keeps crossing")
    return Suite(name, version, cases, desc)
