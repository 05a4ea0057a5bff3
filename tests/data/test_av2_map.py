"""The vectorised AV2 map reader gives the very rows shapely builds one feature at a time."""

from __future__ import annotations

import json
import re

import numpy as np
import pyarrow as pa
import pytest
import shapely
from shapely.geometry import LineString, Polygon

from forecast.data.geoparquet import geo_metadata
from forecast.data.sources.av2_lanes import midpoint_line
from forecast.data.sources.av2_map import map_json_to_table, wkb_geometries
from tests.data.test_av2 import map_json


def _reference(data: dict, map_id: str) -> pa.Table:
    """The per-feature reader this module replaced (shapely objects, one at a time)."""
    def xy(pts):
        return np.array([[p["x"], p["y"]] for p in pts], dtype=float).reshape(-1, 2)

    def xyz(pts):
        return np.array([[p["x"], p["y"], p.get("z", 0.0)] for p in pts], dtype=float).reshape(-1, 3)

    rows = []

    def add(fid, layer, geom, allowed=None):
        if geom is not None:
            rows.append({"map_id": map_id, "feature_id": str(fid), "layer": layer, "geometry": shapely.to_wkb(geom),
                         "speed_limit": None, "allowed": allowed})

    kinds = {"VEHICLE": "passenger", "BIKE": "bicycle", "BUS": "bus"}
    for fid, lane in data["lane_segments"].items():
        left, right = xy(lane["left_lane_boundary"]), xy(lane["right_lane_boundary"])
        ring = np.vstack([left, right[::-1]])
        allowed = kinds.get(lane.get("lane_type"))
        add(fid, "lane", Polygon(ring) if len(ring) >= 3 else None, allowed)
        c = xy(lane["centerline"]) if lane.get("centerline") else midpoint_line(xyz(lane["left_lane_boundary"]),
                                                                                xyz(lane["right_lane_boundary"]))
        add(fid, "lane_centerline", LineString(c) if c is not None and len(c) >= 2 else None, allowed)
    for fid, c in data.get("pedestrian_crossings", {}).items():
        add(fid, "crosswalk", Polygon(np.vstack([xy(c["edge1"]), xy(c["edge2"])[::-1]])), "pedestrian")
    for fid, a in data.get("drivable_areas", {}).items():
        add(fid, "drivable_area", Polygon(xy(a["area_boundary"])))
    return pa.Table.from_pylist(rows, schema=map_json_to_table.__globals__["MAP_SCHEMA"])


def _random_map(rng) -> dict:
    def pts(n):
        return [{"x": float(x), "y": float(y), "z": 1.0} for x, y in rng.normal(0, 50, (n, 2))]

    lanes = {}
    for i in range(40):
        n = int(rng.integers(1, 8))
        lane = {"id": i, "lane_type": ["VEHICLE", "BIKE", "BUS", "NONE"][i % 4], "left_lane_boundary": pts(n),
                "right_lane_boundary": pts(n if i % 3 else n + 1)}
        if i % 2:
            lane["centerline"] = pts(int(rng.integers(0, 5)))
        lanes[str(i)] = lane
    closed = pts(5)
    closed.append(dict(closed[0]))  # an already-closed ring is not closed twice
    return {"lane_segments": lanes,
            "pedestrian_crossings": {"90": {"id": 90, "edge1": pts(2), "edge2": pts(2)}},
            "drivable_areas": {"91": {"id": 91, "area_boundary": pts(7)}, "92": {"id": 92, "area_boundary": closed}}}


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_same_rows_as_per_feature_shapely(tmp_path, seed):
    data = map_json() if seed == 0 else _random_map(np.random.default_rng(seed))
    path = tmp_path / "map.json"
    path.write_text(json.dumps(data))
    got, want = map_json_to_table(path, "m"), _reference(data, "m")
    assert got.num_rows == want.num_rows > 0
    assert got.equals(want)


def test_wkb_lines_and_polygons_round_trip():
    coords = np.array([[0, 0], [1, 0], [1, 1], [5, 5], [6, 5]], dtype=float)
    polys = shapely.from_wkb(wkb_geometries(coords[:3], np.array([3]), polygon=True).to_numpy(zero_copy_only=False))
    assert polys[0].equals(Polygon(coords[:3])) and polys[0].area == pytest.approx(0.5)
    lines = shapely.from_wkb(wkb_geometries(coords, np.array([3, 2]), polygon=False).to_numpy(zero_copy_only=False))
    assert [len(g.coords) for g in lines] == [3, 2]
    with pytest.raises(ValueError, match="encloses no area"):
        wkb_geometries(np.array([[0, 0], [1, 1], [0, 0]], float), np.array([3]), polygon=True)


@pytest.mark.parametrize("point, where", [({"x": 1.0}, "left_lane_boundary[1]"),
                                          ({"x": "1.0", "y": 2.0}, "left_lane_boundary[1].x"),
                                          ({"x": None, "y": 2.0}, "left_lane_boundary[1].x")])
def test_malformed_point_names_its_place(tmp_path, point, where):
    data = map_json()
    data["lane_segments"]["11"]["left_lane_boundary"][1] = point
    path = tmp_path / "map.json"
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match=re.escape(where)):
        map_json_to_table(path, "m")


def test_geo_metadata_of_the_table_is_what_its_geometries_give(tmp_path):
    data = _random_map(np.random.default_rng(3))
    path = tmp_path / "map.json"
    path.write_text(json.dumps(data))
    table = map_json_to_table(path, "m")
    own = json.loads(table.schema.metadata[b"geo"])["columns"]["geometry"]
    assert own == geo_metadata(table.replace_schema_metadata(None), "m")["columns"]["geometry"]
    assert own["geometry_types"] == ["LineString", "Polygon"] and len(own["bbox"]) == 4
