"""Argoverse 2 look-alike data from SUMO: 11 s windows of a simulation written in AV2's published format.

``write_av2_like(n, out)`` writes ``out/<split>/<id>/scenario_<id>.parquet`` plus
``log_map_archive_<id>.json`` for ``n`` scenarios, so that ``forecast ingest --source av2`` runs end
to end on them. Every scenario is a window of one SUMO run (110 steps at 10 Hz, the first 50
observed), rotated and moved to its own place in a city-sized frame; its map (the network's
lanes with left/right boundaries and centerlines, crossings, drivable areas) is moved with it, so
no two scenarios share a map file, as in AV2.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import shapely

T, OBSERVED = 110, 50
AV2_TYPES = np.array(["vehicle", "pedestrian", "cyclist", "static"])  # by AgentType value


@dataclass
class Source:
    """One SUMO run cut into windows: per-row arrays and the map as numpy polylines."""

    track: np.ndarray  # [N] int track code
    names: np.ndarray  # [U] str
    agent_type: np.ndarray  # [N] int8
    step: np.ndarray  # [N] int, 10 Hz steps from the run start
    xy: np.ndarray  # [N, 2]
    heading: np.ndarray  # [N]
    v: np.ndarray  # [N, 2]
    lanes: list[tuple[str, str, np.ndarray]]  # (id, lane_type, centerline [P, 2])
    crossings: list[np.ndarray]  # [4, 2] corners
    areas: list[np.ndarray]  # [P, 2] outer rings

    @property
    def windows(self) -> int:
        return int(self.step.max() + 1) // T


def load_source(run: Path) -> Source:
    from forecast.data.sources.sumo import fcd_to_rows
    from forecast.data.sources.sumo_map import net_to_map_table

    meta = json.loads((run / "run.json").read_text())
    rows = fcd_to_rows(pq.read_table(run / "fcd.parquet"), meta.get("vtypes", {}))
    step = np.rint((rows.time - rows.time.min()) / 0.1).astype(np.int64)
    table = net_to_map_table(next(run.glob("*.net.xml")), "m")
    layer = np.array(table.column("layer").to_pylist())
    geoms = shapely.from_wkb(np.array(table.column("geometry").to_pylist(), dtype=object))
    allowed = table.column("allowed").to_pylist()
    ids = table.column("feature_id").to_pylist()
    lanes, crossings, areas = [], [], []
    for fid, lay, g, al in zip(ids, layer, geoms, allowed, strict=True):
        if lay == "lane_centerline" and al and al != "pedestrian":
            kind = "BIKE" if al.strip() == "bicycle" else "VEHICLE"
            lanes.append((fid, kind, np.asarray(g.coords)[:, :2]))
        elif lay == "crosswalk":
            crossings.append(np.asarray(g.exterior.coords)[:4, :2])
        elif lay == "drivable_area":
            for part in getattr(g, "geoms", [g]):
                areas.append(np.asarray(part.exterior.coords)[:, :2])
    return Source(rows.track_code, rows.track_names, rows.agent_type, step, np.c_[rows.x, rows.y], rows.heading,
                  np.c_[rows.vx, rows.vy], lanes, crossings, areas)


def _pts(a: np.ndarray) -> list[dict]:
    return [{"x": round(float(x), 3), "y": round(float(y), 3), "z": 0.0} for x, y in a]


def _boundaries(c: np.ndarray, half: float = 1.6) -> tuple[np.ndarray, np.ndarray]:
    d = np.gradient(c, axis=0)
    n = np.c_[-d[:, 1], d[:, 0]] / np.maximum(np.hypot(d[:, 0], d[:, 1]), 1e-9)[:, None]
    return c + half * n, c - half * n


def map_json(src: Source, move) -> str:
    """The AV2 log-map JSON of the network, every point passed through ``move`` ([P, 2] -> [P, 2])."""
    lanes = {}
    for i, (fid, kind, c) in enumerate(src.lanes):
        c = move(c)
        left, right = _boundaries(c)
        lanes[str(i)] = {"id": i, "is_intersection": fid.startswith(":"), "lane_type": kind,
                         "left_lane_boundary": _pts(left), "right_lane_boundary": _pts(right),
                         "centerline": _pts(c), "left_lane_mark_type": "NONE", "right_lane_mark_type": "NONE",
                         "predecessors": [], "successors": [], "left_neighbor_id": None, "right_neighbor_id": None}
    cross = {str(10_000 + i): {"id": 10_000 + i, "edge1": _pts(move(q[[0, 1]])), "edge2": _pts(move(q[[3, 2]]))}
             for i, q in enumerate(src.crossings)}
    areas = {str(20_000 + i): {"id": 20_000 + i, "area_boundary": _pts(move(a))} for i, a in enumerate(src.areas)}
    return json.dumps({"lane_segments": lanes, "pedestrian_crossings": cross, "drivable_areas": areas})


def split_of(s: int) -> str:
    return "test" if s % 10 == 0 else "val" if s % 10 == 1 else "train"


def write_av2_like(src: Source, n: int, out: Path) -> dict:
    """Write ``n`` scenarios; returns counts (agent-states, tracks, bytes written)."""
    out = Path(out)
    order = np.argsort(src.step, kind="stable")
    step_sorted = src.step[order]
    states = tracks = 0
    for s in range(n):
        w = s % src.windows
        lo, hi = np.searchsorted(step_sorted, [w * T, w * T + T])
        rows = order[lo:hi]
        rows = rows[np.lexsort((src.step[rows], src.track[rows]))]
        theta = (s * 2.399963) % (2 * np.pi)  # golden angle: every scenario faces its own way
        rot = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
        shift = np.array([1000.0 + (s * 733) % 9000, -2000.0 + (s * 389) % 7000])

        def move(p: np.ndarray, rot=rot, shift=shift) -> np.ndarray:
            return p @ rot.T + shift

        sid = f"{s:08x}-5ca1-4e00-8000-{w:012d}"
        folder = out / split_of(s) / sid
        folder.mkdir(parents=True, exist_ok=True)
        tr, names = np.unique(src.track[rows], return_inverse=True)
        atype = src.agent_type[rows]
        ts = src.step[rows] - w * T
        counts = np.bincount(names, weights=(atype == 0), minlength=len(tr))
        focal = int(np.argmax(counts))
        track_names = src.names[tr].astype(str)
        m = len(rows)
        heading = src.heading[rows] + theta
        table = pa.table({
            "observed": pa.array(ts < OBSERVED),
            "track_id": pa.array(track_names[names]),
            "object_type": pa.array(AV2_TYPES[np.clip(atype, 0, 3)]),
            "object_category": pa.array(np.where(names == focal, 3, 1).astype(np.int64)),
            "timestep": pa.array(ts.astype(np.int64)),
            "position_x": pa.array(move(src.xy[rows])[:, 0]),
            "position_y": pa.array(move(src.xy[rows])[:, 1]),
            "heading": pa.array(np.arctan2(np.sin(heading), np.cos(heading))),
            "velocity_x": pa.array((src.v[rows] @ rot.T)[:, 0]),
            "velocity_y": pa.array((src.v[rows] @ rot.T)[:, 1]),
            "scenario_id": pa.array([sid] * m),
            "start_timestamp": pa.array(np.full(m, 1_600_000_000_000_000_000 + s, np.int64)),
            "end_timestamp": pa.array(np.full(m, 1_600_000_011_000_000_000 + s, np.int64)),
            "num_timestamps": pa.array(np.full(m, T, np.int64)),
            "focal_track_id": pa.array([track_names[focal]] * m),
            "city": pa.array(["sumo"] * m),
        })
        pq.write_table(table, folder / f"scenario_{sid}.parquet")
        (folder / f"log_map_archive_{sid}____SUMO_city_0.json").write_text(map_json(src, move))
        states += m
        tracks += len(tr)
    return {"agent_states": states, "tracks": tracks}
