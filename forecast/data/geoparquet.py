"""GeoParquet metadata for the map tables, so that GIS tools see their WKB column as geometry.

GeoParquet (https://geoparquet.org, version 1.1.0) is Parquet plus a ``geo`` key in the
file metadata naming the geometry column, its encoding and geometry types, and its CRS.
Our maps are in a local metric frame (a SUMO network's own x/y, an Argoverse 2 city frame),
not longitude/latitude: the spec reads a missing ``crs`` as OGC:CRS84, so every column
states its frame explicitly as a PROJJSON engineering CRS (metres, x east, y north).
"""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import shapely

GEOPARQUET_VERSION = "1.1.0"
# shapely type ids -> GeoParquet geometry type names
_TYPE_NAMES = {
    0: "Point",
    1: "LineString",
    3: "Polygon",
    4: "MultiPoint",
    5: "MultiLineString",
    6: "MultiPolygon",
    7: "GeometryCollection",
}


def local_engineering_crs(frame: str) -> dict:
    """PROJJSON of a local Cartesian frame in metres (x east, y north) named after ``frame``."""
    return {
        "$schema": "https://proj.org/schemas/v0.7/projjson.schema.json",
        "type": "EngineeringCRS",
        "name": f"forecast local frame {frame}",
        "datum": {"type": "EngineeringDatum", "name": f"origin of {frame}"},
        "coordinate_system": {
            "subtype": "Cartesian",
            "axis": [
                {"name": "Easting", "abbreviation": "E", "direction": "east", "unit": "metre"},
                {"name": "Northing", "abbreviation": "N", "direction": "north", "unit": "metre"},
            ],
        },
    }


def geo_metadata(tables: pa.Table | list[pa.Table], frame: str, column: str = "geometry") -> dict:
    """The ``geo`` metadata of ``tables`` (written to one file) whose ``column`` holds WKB in ``frame``.

    ``geometry_types`` lists the types present (sorted), ``bbox`` is [xmin, ymin, xmax, ymax]
    in metres (omitted when there are no geometries).
    """
    tables = [tables] if isinstance(tables, pa.Table) else tables
    wkb = np.asarray([g for t in tables for g in t.column(column).to_pylist()], dtype=object)
    geoms = shapely.from_wkb(wkb) if len(wkb) else np.array([], dtype=object)
    types = sorted({_TYPE_NAMES[int(t)] for t in np.unique(shapely.get_type_id(geoms))}) if len(geoms) else []
    bbox = [float(v) for v in shapely.total_bounds(geoms)] if len(geoms) else None
    return _geo(types, bbox, frame, column)


def _geo(types: list[str], bbox: list[float] | None, frame: str, column: str) -> dict:
    meta: dict = {"encoding": "WKB", "geometry_types": types, "crs": local_engineering_crs(frame), "edges": "planar"}
    if bbox is not None:
        meta["bbox"] = bbox
    return {"version": GEOPARQUET_VERSION, "primary_column": column, "columns": {column: meta}}


def with_geo_column(table: pa.Table, types: list[str], bbox: list[float] | None, frame: str,
                    column: str = "geometry") -> pa.Table:
    """``table`` with its ``geo`` metadata set from what its builder knows: the geometry types present
    (GeoParquet names, e.g. ``["LineString", "Polygon"]``) and ``[xmin, ymin, xmax, ymax]`` (None when
    empty), so that a writer need not decode every WKB again to learn them (``column_geo_metadata``)."""
    meta = dict(table.schema.metadata or {})
    meta[b"geo"] = json.dumps(_geo(sorted(types), bbox, frame, column)).encode()
    return table.replace_schema_metadata(meta)


def column_geo_metadata(table: pa.Table, column: str = "geometry") -> dict:
    """The GeoParquet metadata of ``table``'s ``column`` (types, bbox): the table's own ``geo`` when its
    builder set it (``with_geo_column``), else read from the geometries (``geo_metadata``)."""
    raw = (table.schema.metadata or {}).get(b"geo")
    if raw is not None:
        cols = json.loads(raw).get("columns", {})
        if column in cols:
            return cols[column]
    return geo_metadata(table, "", column)["columns"][column]


def map_frame(tables: list[pa.Table]) -> str:
    """The frame name of a map file: its map id, or a note that each map_id has its own origin."""
    ids = sorted({m for t in tables for m in t.column("map_id").to_pylist()})
    return ids[0] if len(ids) == 1 else "of each map_id (one origin per map)"


def with_geo_schema(schema: pa.Schema, tables: list[pa.Table], column: str = "geometry") -> pa.Schema:
    """``schema`` with the GeoParquet ``geo`` metadata of ``tables`` added (other metadata kept).

    Give the result to ``pyarrow.parquet.ParquetWriter`` or ``write_table``: Arrow schema
    metadata becomes the Parquet file's key-value metadata, where GeoParquet readers look.
    The CRS is a local engineering frame named after the file's map (or noting that the
    file holds several maps, each in its own frame).
    """
    meta = dict(schema.metadata or {})
    meta[b"geo"] = json.dumps(geo_metadata(tables, map_frame(tables), column)).encode()
    return schema.with_metadata(meta)
