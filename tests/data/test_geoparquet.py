from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import shapely

from forecast.data.geoparquet import GEOPARQUET_VERSION, geo_metadata, with_geo_schema
from forecast.data.schema import MAP_SCHEMA


def _map_file(store, map_id):
    """The store's map file that holds ``map_id``."""
    [path] = [p for p in sorted(store.maps_dir.rglob("*.parquet"))
              if map_id in pq.read_table(p, columns=["map_id"])["map_id"].to_pylist()]
    return path


def test_store_map_is_geoparquet(sumo_store):
    path = _map_file(sumo_store, "sumo:g_train")
    meta = json.loads(pq.read_metadata(path).metadata[b"geo"])
    # the fields the GeoParquet 1.1 spec requires, with the values it allows
    assert meta["version"] == GEOPARQUET_VERSION and meta["primary_column"] == "geometry"
    col = meta["columns"]["geometry"]
    assert col["encoding"] == "WKB"
    assert col["geometry_types"] == ["LineString", "Polygon"]  # lanes, centerlines, areas of a grid
    assert col["crs"]["type"] == "EngineeringCRS"  # a local metric frame, never read as lon/lat
    table = sumo_store.map_table("sumo:g_train")
    bounds = shapely.total_bounds(shapely.from_wkb(np.asarray(table["geometry"].to_pylist(), dtype=object)))
    np.testing.assert_allclose(col["bbox"], bounds)


def test_geopandas_reads_a_store_map_as_geometry(sumo_store):
    geopandas = pytest.importorskip("geopandas")
    frame = geopandas.read_parquet(_map_file(sumo_store, "sumo:g_train"))
    assert isinstance(frame, geopandas.GeoDataFrame) and frame.geometry.name == "geometry"
    assert frame.crs is not None and not frame.crs.is_geographic
    assert [a.unit_name for a in frame.crs.axis_info] == ["metre", "metre"]
    layers = sumo_store.load_map("sumo:g_train")
    drivable = frame[frame["layer"] == "drivable_area"].geometry
    assert drivable.area.sum() == pytest.approx(sum(g.area for g in layers["drivable_area"]))
    assert set(frame["layer"]) == set(layers)


def test_geo_metadata_of_an_empty_and_a_mixed_table():
    empty = MAP_SCHEMA.empty_table()
    meta = geo_metadata(empty, "x")["columns"]["geometry"]
    assert meta["geometry_types"] == [] and "bbox" not in meta
    rows = [{"map_id": "m", "feature_id": str(i), "layer": "lane", "geometry": shapely.to_wkb(g),
             "speed_limit": None, "allowed": None}
            for i, g in enumerate([shapely.Point(1, 2), shapely.MultiPolygon([shapely.box(0, 0, 3, 1)])])]
    table = pa.Table.from_pylist(rows, schema=MAP_SCHEMA)
    other = table.set_column(0, "map_id", pa.array(["n", "n"]))
    schema = with_geo_schema(MAP_SCHEMA, [table])
    assert schema.metadata[b"forecast.schema_version"]  # the store's own metadata is kept
    meta = json.loads(schema.metadata[b"geo"])["columns"]["geometry"]
    assert meta["geometry_types"] == ["MultiPolygon", "Point"] and meta["bbox"] == [0.0, 0.0, 3.0, 2.0]
    assert meta["crs"]["name"] == "forecast local frame m"
    # two maps in one file: each has its own origin, and the CRS says so
    two = json.loads(with_geo_schema(MAP_SCHEMA, [table, other]).metadata[b"geo"])["columns"]["geometry"]
    assert "each map_id" in two["crs"]["name"]
