"""AV2 log-map JSON -> ``MAP_SCHEMA`` rows, vectorised: the map was 80 % of AV2 ingest time.

The JSON is decoded by msgspec straight into typed structs holding only the fields used (the lane
graph's other fields are skipped without making Python objects); the points go into one array in
one pass (in C, via ``map``/``attrgetter``), and the WKB bytes of every feature are written by numpy
into one Arrow buffer, with no Python object per feature. The rows are byte-identical to building
each geometry with shapely (tests/data/test_av2_map.py checks it).
"""

from __future__ import annotations

import gc
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from itertools import chain
from operator import attrgetter
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import pyarrow as pa

from forecast.data.geoparquet import with_geo_column
from forecast.data.ragged import ragged_rows
from forecast.data.schema import MAP_SCHEMA
from forecast.data.sources.av2_lanes import midpoint_line, midpoint_lines

# AV2 lane_type -> the SUMO-style class names our ``allowed`` column uses.
LANE_TYPE_TO_ALLOWED = {"VEHICLE": "passenger", "BIKE": "bicycle", "BUS": "bus"}


# The fields of the published map format that the store keeps. gc=False: these hold no reference
# cycles, and untracked structs cost the cyclic GC nothing (a map has ~2,500 points).
class Point(msgspec.Struct, gc=False):
    x: float
    y: float
    z: float = 0.0  # metres; the centerline of a lane without one is resampled in 3-D, as av2-api does


class LaneSegment(msgspec.Struct, gc=False):
    left_lane_boundary: list[Point]
    right_lane_boundary: list[Point]
    centerline: list[Point] | None = None  # absent: made from the boundaries (``boundary_centerline``)
    lane_type: Any = None
    id: Any = msgspec.UNSET  # absent: the feature's position in its collection


class PedestrianCrossing(msgspec.Struct, gc=False):
    edge1: list[Point]
    edge2: list[Point]
    id: Any = msgspec.UNSET


class DrivableArea(msgspec.Struct, gc=False):
    area_boundary: list[Point]
    id: Any = msgspec.UNSET


class MapArchive(msgspec.Struct, gc=False):
    """A log map archive; each collection is an object keyed by feature id (a list is accepted too)."""

    lane_segments: dict[str, LaneSegment] | list[LaneSegment] | None = None
    pedestrian_crossings: dict[str, PedestrianCrossing] | list[PedestrianCrossing] | None = None
    drivable_areas: dict[str, DrivableArea] | list[DrivableArea] | None = None


_DECODER = msgspec.json.Decoder(MapArchive)
_XYZ = attrgetter("x", "y", "z")


def decode_map(data: bytes) -> MapArchive:
    """Decode a map archive; ValueError naming the place of the first fault (e.g. ``$.lane_segments[...].
    left_lane_boundary[3].x``: a missing field, a value of the wrong type, a point that is not an object)."""
    try:
        return _DECODER.decode(data)
    except msgspec.DecodeError as exc:  # ValidationError too
        raise ValueError(str(exc)) from None


def _features(items: dict | list | None) -> list[tuple[object, Any]]:
    """(id, feature) pairs of one collection; a feature without an id is numbered by its position."""
    values = (items.values() if isinstance(items, dict) else items) or []
    return [(i if f.id is msgspec.UNSET else f.id, f) for i, f in enumerate(values)]


def _points(lists: list[list[Point]]) -> tuple[np.ndarray, np.ndarray]:
    """Point lists -> (coords [P, 3] float64, offsets [F + 1]); the loop over points runs in C (map/attrgetter)."""
    counts = np.fromiter(map(len, lists), dtype=np.int64, count=len(lists))
    # floats straight into the array (no tuple per point kept): 30 % less than np.array(list)
    xyz = np.fromiter(chain.from_iterable(map(_XYZ, chain.from_iterable(lists))), dtype=np.float64,
                      count=3 * int(counts.sum())).reshape(-1, 3)
    return xyz, np.r_[0, np.cumsum(counts)]


def boundary_centerline(left: np.ndarray, right: np.ndarray) -> np.ndarray | None:
    """[N, 2] av2-api's centerline of a lane from its ``[P, 3]`` and ``[Q, 3]`` boundaries, or None.

    Argoverse 2 map archives often omit centerlines; av2-api then resamples both boundaries
    by arc length and averages them, whatever their point counts (``av2_lanes.midpoint_line``).
    """
    return midpoint_line(left, right) if len(left) and len(right) else None


@contextmanager
def _gc_paused() -> Iterator[None]:
    """No cyclic garbage collection inside. A decoded map holds ~1,000 lists (its point lists) alive
    until the points are copied out; each collection walked them and promoted them towards the oldest
    generation, whose full collections walk the whole heap (with dicts per point, as orjson gave, this
    was ~1 ms per map). The decoded map has no reference cycles: reference counting frees it all, so
    nothing is lost by pausing, as long as it is freed before the pause ends."""
    was_on = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_on:
            gc.enable()


def map_json_to_table(path: Path, map_id: str,
                      centerline_of: Callable[[np.ndarray, np.ndarray], np.ndarray | None] = boundary_centerline,
                      ) -> pa.Table:
    """Read an AV2 log map JSON and return ``MAP_SCHEMA`` rows.

    Layers: ``lane`` (polygon: left boundary + reversed right boundary), ``lane_centerline``
    (the given centerline, else ``centerline_of(left [P, 3], right [Q, 3])``), ``crosswalk``
    (edge1 + reversed edge2), ``drivable_area`` (area_boundary). Coordinates are metres in the
    city frame; z is dropped. Raises on a malformed file. Rows: lane 0, its centerline, lane 1, ...,
    then the crosswalks, then the drivable areas (features with too few points are left out).
    The table's schema carries its GeoParquet ``geo`` metadata (types and bounds, from the points).
    """
    with _gc_paused():
        data = decode_map(Path(path).read_bytes())
        lanes = _features(data.lane_segments)
        crossings = _features(data.pedestrian_crossings)
        areas = _features(data.drivable_areas)
        # every point list of the map in one pass, grouped so that each part below is one slice:
        # first edges (lane left boundaries, crossing edge1), second edges (right, edge2), centerlines, areas
        xyz, off = _points([f.left_lane_boundary for _, f in lanes] + [f.edge1 for _, f in crossings]
                           + [f.right_lane_boundary for _, f in lanes] + [f.edge2 for _, f in crossings]
                           + [f.centerline or [] for _, f in lanes] + [f.area_boundary for _, f in areas])
        ids = [str(fid) for fid, _ in lanes] + [str(fid) for fid, _ in crossings] + [str(fid) for fid, _ in areas]
        allowed = ([_allowed_of(f.lane_type) for _, f in lanes] + ["pedestrian"] * len(crossings)
                   + [None] * len(areas))
        n_lane, n_cross, n_area = len(lanes), len(crossings), len(areas)
        # freed while the GC is still paused: alive at ``gc.enable``, the containers would be walked
        # by the next collection anyway (0.25 ms a map)
        del data, lanes, crossings, areas
    bounds = np.cumsum([0, n_lane + n_cross, n_lane + n_cross, n_lane, n_area])

    def part(k: int) -> tuple[np.ndarray, np.ndarray]:
        lo, hi = bounds[k], bounds[k + 1]
        return xyz[off[lo] : off[hi]], off[lo : hi + 1] - off[lo]

    (first, fo), (second, so), (centre, co), (area, ao) = part(0), part(1), part(2), part(3)
    ring_xy, ring_off = _join(first, fo, second, so)  # first edge + reversed second edge, lanes then crossings
    line_xy, line_n = _centerlines(centre, co, first, fo, second, so, centerline_of)
    # polygons: lanes, crossings, areas (P = L + C + A); lines: one per lane
    poly_n = np.concatenate([np.diff(ring_off), np.diff(ao)])
    poly_xy = np.concatenate([ring_xy, area[:, :2]])
    poly_ok, line_ok = poly_n >= 3, line_n >= 2  # a ring needs 3 points, a line 2
    poly_xy, line_xy = poly_xy[np.repeat(poly_ok, poly_n)], line_xy[np.repeat(line_ok, line_n)]
    geometry = pa.concat_arrays([wkb_geometries(poly_xy, poly_n[poly_ok], polygon=True),
                                 wkb_geometries(line_xy, line_n[line_ok], polygon=False)])
    # candidate rows in table order: (lane i polygon, lane i centerline) for each lane, then the other polygons
    n_poly = len(poly_n)
    poly_rank = np.cumsum(poly_ok) - 1  # index among the kept geometries: polygons first, then lines
    line_rank = int(poly_ok.sum()) + np.cumsum(line_ok) - 1
    ok = np.r_[np.c_[poly_ok[:n_lane], line_ok].ravel(), poly_ok[n_lane:]]
    geom_of = np.r_[np.c_[poly_rank[:n_lane], line_rank].ravel(), poly_rank[n_lane:]]
    feature = np.r_[np.repeat(np.arange(n_lane), 2), np.arange(n_lane, n_poly)]  # index into ids / allowed
    layer = np.r_[np.tile([0, 1], n_lane), np.full(n_cross, 2), np.full(n_area, 3)]
    rows = pa.array(feature[ok])
    n = len(rows)
    table = pa.table({
        "map_id": pa.array([map_id] * n, pa.string()),
        "feature_id": pa.array(ids, pa.string()).take(rows),
        "layer": _LAYER_NAMES.take(pa.array(layer[ok])),
        "geometry": geometry.take(pa.array(geom_of[ok])),
        "speed_limit": pa.nulls(n, pa.float64()),  # AV2 maps carry no speed limits
        "allowed": pa.array(allowed, pa.string()).take(rows),
    }, schema=MAP_SCHEMA)
    types = [t for t, k in (("LineString", len(line_xy)), ("Polygon", len(poly_xy))) if k]
    both = np.concatenate([poly_xy, line_xy])
    # per column: a reduction along axis 0 of [P, 2] was 30 x slower
    bbox = [float(both[:, 0].min()), float(both[:, 1].min()), float(both[:, 0].max()), float(both[:, 1].max())
            ] if len(both) else None
    return with_geo_column(table, types, bbox, map_id)


def _allowed_of(lane_type: Any) -> str | None:
    return LANE_TYPE_TO_ALLOWED.get(lane_type) if isinstance(lane_type, str) else None


_LAYER_NAMES = pa.array(["lane", "lane_centerline", "crosswalk", "drivable_area"], pa.string())


def _centerlines(centre: np.ndarray, co: np.ndarray, left: np.ndarray, lo: np.ndarray, right: np.ndarray,
                 ro: np.ndarray, centerline_of: Callable[[np.ndarray, np.ndarray], np.ndarray | None],
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Each lane's given centerline, else ``centerline_of`` its boundaries -> (coords [P, 2], counts [L]).

    ``centre``/``left``/``right`` hold the points ``[., 3]`` of the L lanes (then, for left/right,
    of the crossings) at offsets ``co``/``lo``/``ro``. av2-api's centerlines (the default) are made for
    all such lanes at once (``midpoint_lines``: a call per lane cost 60 us, 15 ms for a map without
    centerlines); another ``centerline_of`` is called per lane.
    """
    n = np.diff(co)
    missing = np.flatnonzero(n == 0)
    if not len(missing):
        return centre[:, :2], n
    if centerline_of is boundary_centerline:
        nl, nr = np.diff(lo)[missing], np.diff(ro)[missing]
        made_xy, made_n = midpoint_lines(left[ragged_rows(lo[missing], nl)], np.r_[0, np.cumsum(nl)],
                                         right[ragged_rows(ro[missing], nr)], np.r_[0, np.cumsum(nr)])
    else:
        made = [centerline_of(left[lo[i] : lo[i + 1]], right[ro[i] : ro[i + 1]]) for i in missing.tolist()]
        made_n = np.array([0 if c is None else len(c) for c in made], np.int64)
        made_xy = np.concatenate([c[:, :2] for c, k in zip(made, made_n, strict=True) if k] or [np.zeros((0, 2))])
    n = n.copy()
    n[missing] = made_n
    xy = np.concatenate([centre[:, :2], made_xy])
    lane_of = np.r_[np.repeat(np.arange(len(co) - 1), np.diff(co)), np.repeat(missing, made_n)]
    return xy[np.argsort(lane_of, kind="stable")], n


def _join(a: np.ndarray, ao: np.ndarray, b: np.ndarray, bo: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per feature i: ``a``'s points then ``b``'s in reverse -> (coords [P, 2], offsets [F + 1]), no loop.

    ``a`` ``[A, >=2]`` and ``b`` ``[B, >=2]`` hold the features' points at offsets ``ao``/``bo`` ``[F + 1]``.
    """
    na, nb = np.diff(ao), np.diff(bo)
    off = np.r_[0, np.cumsum(na + nb)]
    coords = np.empty((len(a) + len(b), 2))
    coords[ragged_rows(off[:-1], na)] = a[:, :2]  # ao starts at 0: a's points are feature after feature
    # b's point k of feature f goes to off[f] + na[f] + (bo[f + 1] - 1 - k): its feature's part, reversed
    coords[np.repeat(off[:-1] + na + bo[1:] - 1, nb) - np.arange(len(b))] = b[:, :2]
    return coords, off


_POLY_HEAD = np.dtype([("order", "u1"), ("type", "<u4"), ("rings", "<u4"), ("n", "<u4")])
_LINE_HEAD = np.dtype([("order", "u1"), ("type", "<u4"), ("n", "<u4")])


def wkb_geometries(coords: np.ndarray, counts: np.ndarray, polygon: bool) -> pa.BinaryArray:
    """2-D WKB (little endian) of ``len(counts)`` linestrings or one-ring polygons, built in numpy.

    coords: [P, 2] float64, feature i's points next; counts: [F] points per feature. A polygon's
    ring is closed (its first point repeated) unless it already is: the bytes shapely's
    ``to_wkb(polygons(linearrings(...)))`` gives, without a Python object per feature.
    """
    counts = np.asarray(counts, np.int64)
    start = np.r_[0, np.cumsum(counts)[:-1]].astype(np.int64)
    if polygon and len(counts):
        closed = (coords[start] == coords[start + counts - 1]).all(1)
        if (closed & (counts < 4)).any():
            raise ValueError("a ring of fewer than 4 points that is already closed encloses no area")
        # every point, moved along by the rings closed before it, then each open ring's first point at its end
        grown = counts + ~closed
        new_start = np.r_[0, np.cumsum(grown)[:-1]]
        ring = np.empty((int(grown.sum()), 2))
        ring[ragged_rows(new_start, counts)] = coords
        open_ = np.flatnonzero(~closed)
        ring[new_start[open_] + counts[open_]] = coords[start[open_]]
        coords, counts = ring, grown
    head_dt = _POLY_HEAD if polygon else _LINE_HEAD
    head = np.zeros(len(counts), head_dt)
    head["order"], head["type"], head["n"] = 1, 3 if polygon else 2, counts
    if polygon:
        head["rings"] = 1
    offsets = np.r_[0, np.cumsum(head_dt.itemsize + 16 * counts)].astype(np.int64)
    # each feature is its header then its points: the header bytes by position, the point bytes
    # (all features' points in order) fill the rest of the buffer by one boolean mask
    out = np.empty(int(offsets[-1]), np.uint8)
    is_head = np.zeros(len(out), bool)
    is_head[(offsets[:-1, None] + np.arange(head_dt.itemsize)).ravel()] = True
    out[is_head] = head.view(np.uint8)
    out[~is_head] = np.ascontiguousarray(coords, dtype="<f8").view(np.uint8).ravel()
    return pa.Array.from_buffers(pa.binary(), len(counts), [None, pa.py_buffer(offsets.astype(np.int32)),
                                                            pa.py_buffer(out)])
