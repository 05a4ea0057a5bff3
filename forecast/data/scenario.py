"""Typed in-memory views of the store: a scenario is a frozen dataclass of padded numpy arrays."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from forecast.data.schema import AGENT_TYPE_LABELS


@dataclass(frozen=True)
class ScenarioInfo:
    """One row of the ``scenarios`` table."""

    scenario_id: str
    source: str
    split: str
    map_id: str | None
    dt: float
    num_timesteps: int
    focal_track_id: str | None
    source_file: str
    # Where the rows are (schema 2); None in a store written by schema 1 (read by a filtered scan).
    tracks_file: str | None = None
    row_group: int | None = None
    num_rows: int | None = None
    map_file: str | None = None
    map_row_group: int | None = None


@dataclass(frozen=True)
class Scenario:
    """All tracks of one scenario, padded to ``[A, T]`` (A agents, T timesteps).

    Positions are metres in the source's world frame; where an agent has no row at a
    timestep, ``present`` is False and its position, heading and velocity are NaN.
    """

    info: ScenarioInfo
    track_ids: np.ndarray  # [A] str
    agent_type: np.ndarray  # [A] int8, forecast.data.schema.AgentType
    source_type: np.ndarray  # [A] str, the source's own class
    xy: np.ndarray  # [A, T, 2] float64, metres
    heading: np.ndarray  # [A, T] float64, radians CCW from +x (NaN = unknown)
    velocity: np.ndarray  # [A, T, 2] float64, m/s (NaN = unknown)
    present: np.ndarray  # [A, T] bool, a row exists
    observed: np.ndarray  # [A, T] bool, the source marks the row as observed (AV2: history part)

    @property
    def num_agents(self) -> int:
        return len(self.track_ids)

    @property
    def num_timesteps(self) -> int:
        return self.xy.shape[1]


def scenarios_from_tracks(tracks: pa.Table, infos: dict[str, ScenarioInfo]) -> list[Scenario]:
    """Group a tracks table (any row order) into padded scenarios, vectorised.

    ``infos`` maps scenario_id to its row of the scenarios table; scenarios without track
    rows come back with zero agents.
    """
    if tracks.num_rows == 0:
        return [_empty(info) for info in infos.values()]
    sid = tracks.column("scenario_id").to_numpy(zero_copy_only=False).astype(str)
    tid = tracks.column("track_id").to_numpy(zero_copy_only=False).astype(str)
    # A track id is unique within its scenario only: key on both.
    s_keys, s_code = np.unique(sid, return_inverse=True)
    pair = np.char.add(np.char.add(sid, "\x1f"), tid)
    p_keys, p_code = np.unique(pair, return_inverse=True)
    order = np.lexsort((tracks.column("timestep").to_numpy(), p_code))
    s_code, p_code = s_code[order], p_code[order]
    col = {name: tracks.column(name).to_numpy(zero_copy_only=False)[order] for name in tracks.column_names}
    label_to_code = {label: i for i, label in enumerate(AGENT_TYPE_LABELS)}
    type_code = np.array([label_to_code[t] for t in col["agent_type"]], dtype=np.int8)

    # first row of each track, and of each scenario, in the sorted order
    track_start = np.flatnonzero(np.r_[True, p_code[1:] != p_code[:-1]])
    track_scen = s_code[track_start]
    out: dict[str, Scenario] = {}
    bounds = np.searchsorted(track_scen, np.arange(len(s_keys) + 1))
    row_bounds = np.r_[track_start, len(p_code)]
    for si, scen_id in enumerate(s_keys):
        info = infos[scen_id]
        t0, t1 = bounds[si], bounds[si + 1]
        a = t1 - t0
        r0, r1 = row_bounds[t0], row_bounds[t1]
        rows = slice(r0, r1)
        agent = (p_code[rows] - p_code[r0]).astype(np.int64)
        ts = col["timestep"][rows].astype(np.int64)
        big_t = max(info.num_timesteps, int(ts.max()) + 1)
        xy = np.full((a, big_t, 2), np.nan)
        xy[agent, ts, 0] = col["x"][rows]
        xy[agent, ts, 1] = col["y"][rows]
        heading = np.full((a, big_t), np.nan)
        heading[agent, ts] = col["heading"][rows]
        vel = np.full((a, big_t, 2), np.nan)
        vel[agent, ts, 0] = col["vx"][rows]
        vel[agent, ts, 1] = col["vy"][rows]
        present = np.zeros((a, big_t), bool)
        present[agent, ts] = True
        observed = np.zeros((a, big_t), bool)
        observed[agent, ts] = col["observed"][rows]
        starts = track_start[t0:t1]
        out[scen_id] = Scenario(
            info=info,
            track_ids=col["track_id"][starts].astype(str),
            agent_type=type_code[starts],
            source_type=col["source_type"][starts].astype(str),
            xy=xy,
            heading=heading,
            velocity=vel,
            present=present,
            observed=observed,
        )
    return [out.get(k) or _empty(info) for k, info in infos.items()]


def _empty(info: ScenarioInfo) -> Scenario:
    t = info.num_timesteps
    return Scenario(
        info=info,
        track_ids=np.array([], dtype=str),
        agent_type=np.array([], dtype=np.int8),
        source_type=np.array([], dtype=str),
        xy=np.zeros((0, t, 2)),
        heading=np.zeros((0, t)),
        velocity=np.zeros((0, t, 2)),
        present=np.zeros((0, t), bool),
        observed=np.zeros((0, t), bool),
    )
