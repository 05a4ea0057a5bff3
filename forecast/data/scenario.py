"""Typed in-memory views of the store: a scenario is a frozen dataclass of padded numpy arrays."""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import pyarrow as pa

from forecast.data.schema import AGENT_TYPE_LABELS


class MapLocation(NamedTuple):
    """A stored map's rows: ``file`` (relative to the store), its row group, and within that group the
    first row and row count (None, None: the whole row group, as a schema-2 store writes it)."""

    file: str
    row_group: int
    offset: int | None = None
    num_rows: int | None = None


@dataclass(frozen=True, slots=True)
class ScenarioInfo:
    """One row of the ``scenarios`` table.

    Every data set holds one per scenario of its split in every process (a few hundred thousand for
    Argoverse 2), so no per-instance ``__dict__`` (``slots``), and ``Store.scenarios`` shares the
    strings many rows repeat (source, split, batch files).
    """

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
    # Rows within the row group (schema 3); None in a schema-2 store: the whole row group.
    row_offset: int | None = None
    map_row_offset: int | None = None
    map_num_rows: int | None = None

    @property
    def rows(self) -> tuple[int, int | None]:
        """(first row, row count) of the scenario in its row group; (0, None) = the whole row group."""
        return (0, None) if self.row_offset is None else (int(self.row_offset), int(self.num_rows))

    @property
    def map_where(self) -> MapLocation | None:
        """Where the scenario's map is stored (None: not indexed)."""
        if self.map_file is None or self.map_row_group is None:
            return None
        return MapLocation(self.map_file, int(self.map_row_group),
                           None if self.map_row_offset is None else int(self.map_row_offset),
                           None if self.map_num_rows is None else int(self.map_num_rows))


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
    if any(tracks.column(c).null_count for c in ("scenario_id", "track_id")):
        raise ValueError("tracks table has a null scenario_id or track_id")
    # A track id is unique within its scenario only: key on both. Strings become integer codes in
    # sorted order (what np.unique gives), so agents keep their order (by track id) at integer speed.
    s_keys, s_code = _sorted_codes(tracks.column("scenario_id"))
    t_keys, t_code = _sorted_codes(tracks.column("track_id"))
    _, p_code = np.unique(s_code * max(1, len(t_keys)) + t_code, return_inverse=True)
    order = np.lexsort((tracks.column("timestep").to_numpy(), p_code))
    s_code, p_code = s_code[order], p_code[order]
    col = {name: tracks.column(name).to_numpy(zero_copy_only=False)[order]
           for name in ("timestep", "x", "y", "heading", "vx", "vy", "observed")}
    label_to_code = {label: i for i, label in enumerate(AGENT_TYPE_LABELS)}

    # first row of each track, and of each scenario, in the sorted order
    track_start = np.flatnonzero(np.r_[True, p_code[1:] != p_code[:-1]])
    track_scen = s_code[track_start]
    # per-track values, read at each track's first row only (the table has a row per step)
    take = pa.array(order[track_start])
    track_ids = tracks.column("track_id").take(take).to_numpy(zero_copy_only=False)  # [tracks]
    source_type = tracks.column("source_type").take(take).to_numpy(zero_copy_only=False)
    type_code = np.array([label_to_code[t] for t in tracks.column("agent_type").take(take).to_pylist()], dtype=np.int8)
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
        out[scen_id] = Scenario(
            info=info,
            track_ids=track_ids[t0:t1].astype(str),
            agent_type=type_code[t0:t1],
            source_type=source_type[t0:t1].astype(str),
            xy=xy,
            heading=heading,
            velocity=vel,
            present=present,
            observed=observed,
        )
    return [out.get(k) or _empty(info) for k, info in infos.items()]


def _sorted_codes(column: pa.ChunkedArray | pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """``(keys, code)`` as ``np.unique(strings, return_inverse=True)`` gives them: the distinct values
    sorted, and each row's position among them, from Arrow's dictionary encoding (no per-row str)."""
    arr = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    enc = arr.dictionary_encode()  # a column read as a dictionary stays one
    index = enc.indices.to_numpy(zero_copy_only=False).astype(np.int64)
    dictionary = enc.dictionary
    if len(dictionary) and len(index):
        # a slice of a row group read as a dictionary has the whole group's values: keep those it uses
        used = np.bincount(index, minlength=len(dictionary)) > 0
        if not used.all():
            dictionary = dictionary.filter(pa.array(used))
            index = (np.cumsum(used) - 1)[index]
    values = np.asarray(dictionary.to_pylist(), dtype=str)
    order = np.argsort(values, kind="stable")
    rank = np.empty(len(values), dtype=np.int64)
    rank[order] = np.arange(len(values))
    return values[order], rank[index]


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
