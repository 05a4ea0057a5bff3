"""Canonical schemas of the store: agent types, Arrow schemas and their version.

Every adapter (SUMO, Argoverse 2, ETH/UCY) writes these tables and nothing else, so that
training, evaluation and the vehicle runtime read one format.
"""

from __future__ import annotations

import pyarrow as pa

from forecast.data.types import AGENT_TYPE_LABELS, MAX_SPEED, TARGET_TYPES, AgentType  # noqa: F401 - re-exported

# 2: batched files with one row group per scenario; the scenarios table is the index into them.
# 3: a row group holds a few scenarios (or maps), each a contiguous row range the index locates
#    (row_offset, map_row_offset / map_num_rows): a parsed footer costs about 1 kB per column chunk,
#    which one row group per scenario made 50 MB per 5,000-scenario file in every loader worker.
SCHEMA_VERSION = "3"
SOURCES = ("sumo", "av2", "eth_ucy")
SPLITS = ("train", "val", "test")
MAP_LAYERS = ("lane", "lane_centerline", "crosswalk", "sidewalk", "drivable_area", "walking_area")


SCENARIOS_SCHEMA = pa.schema(
    [
        pa.field("scenario_id", pa.string(), nullable=False),
        pa.field("source", pa.string(), nullable=False),
        pa.field("split", pa.string(), nullable=False),
        pa.field("map_id", pa.string()),
        pa.field("dt", pa.float64(), nullable=False),
        pa.field("num_timesteps", pa.int32(), nullable=False),
        pa.field("focal_track_id", pa.string()),
        pa.field("source_file", pa.string(), nullable=False),
        # The index (schema 2): where the scenario's rows live. Null in a store written by schema 1.
        pa.field("tracks_file", pa.string()),  # relative to the store
        pa.field("row_group", pa.int32()),  # the row group of tracks_file that holds the scenario
        pa.field("num_rows", pa.int64()),
        pa.field("map_file", pa.string()),  # relative to the store; identical maps are stored once
        pa.field("map_row_group", pa.int32()),
        # Schema 3: the first row of the scenario (of its map) within that row group, and the map's rows.
        # Null in a schema-2 store, whose row groups hold one scenario or map each.
        pa.field("row_offset", pa.int64()),
        pa.field("map_row_offset", pa.int64()),
        pa.field("map_num_rows", pa.int64()),
    ],
    metadata={"forecast.schema_version": SCHEMA_VERSION, "table": "scenarios"},
)

TRACKS_SCHEMA = pa.schema(
    [
        pa.field("scenario_id", pa.string(), nullable=False),
        pa.field("track_id", pa.string(), nullable=False),
        pa.field("agent_type", pa.string(), nullable=False),
        pa.field("source_type", pa.string(), nullable=False),
        pa.field("timestep", pa.int32(), nullable=False),
        pa.field("x", pa.float64(), nullable=False),
        pa.field("y", pa.float64(), nullable=False),
        pa.field("heading", pa.float64()),  # radians, counter-clockwise from +x; NaN = unknown
        pa.field("vx", pa.float64()),  # m/s; NaN = unknown
        pa.field("vy", pa.float64()),
        pa.field("observed", pa.bool_(), nullable=False),
    ],
    metadata={"forecast.schema_version": SCHEMA_VERSION, "table": "tracks"},
)

MAP_SCHEMA = pa.schema(
    [
        pa.field("map_id", pa.string(), nullable=False),
        pa.field("feature_id", pa.string(), nullable=False),
        pa.field("layer", pa.string(), nullable=False),
        pa.field("geometry", pa.binary(), nullable=False),  # WKB (shapely)
        pa.field("speed_limit", pa.float64()),  # m/s, where the source has one
        pa.field("allowed", pa.string()),  # space-separated classes allowed, where the source has them
    ],
    metadata={"forecast.schema_version": SCHEMA_VERSION, "table": "maps"},
)

QUARANTINE_SCHEMA = pa.schema(
    [
        pa.field("source", pa.string(), nullable=False),
        pa.field("source_file", pa.string(), nullable=False),
        pa.field("row", pa.int64(), nullable=False),  # 0-based data row in the file; -1 = whole file
        pa.field("field", pa.string(), nullable=False),
        pa.field("reason", pa.string(), nullable=False),
    ],
    metadata={"forecast.schema_version": SCHEMA_VERSION, "table": "quarantine"},
)
