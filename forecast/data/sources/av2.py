"""Argoverse 2 motion-forecasting adapter: scenario Parquet + log map JSON -> canonical rows and map.

Layout (the published one)::

    <root>/[train|val|test/]<scenario_id>/scenario_<scenario_id>.parquet
    <root>/[train|val|test/]<scenario_id>/log_map_archive_<...>.json

One scenario per file: 110 steps at 10 Hz (11 s), the first 50 observed. Positions are
metres in the city frame, shared by the tracks and the map. The adapter only parses;
validation, quarantine, table building and writing live in ``forecast.data.ingest``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from forecast.data.ingest import ParsedUnit, Unit
from forecast.data.schema import SPLITS, AgentType
from forecast.data.sources import av2_map
from forecast.data.validate import Quarantine, RawRows, dictionary_code

AV2_DT = 0.1  # s; AV2 scenarios are sampled at 10 Hz

# Columns the adapter reads, with the kind of Arrow type each must have. The other published
# columns (object_category, city, timestamps, ...) are not needed, so their absence is no fault.
REQUIRED_COLUMNS = {
    "track_id": "string",
    "object_type": "string",
    "timestep": "integer",
    "position_x": "number",
    "position_y": "number",
    "heading": "number",
    "velocity_x": "number",
    "velocity_y": "number",
    "observed": "bool",
    "focal_track_id": "string",
}

# AV2 object_type -> our classes. Anything else is unknown (-1) and quarantined by the validator.
OBJECT_TYPE_TO_TYPE = {
    "vehicle": AgentType.VEHICLE,
    "bus": AgentType.VEHICLE,
    "pedestrian": AgentType.PEDESTRIAN,
    "cyclist": AgentType.CYCLIST,
    "motorcyclist": AgentType.CYCLIST,
    "static": AgentType.OTHER,
    "background": AgentType.OTHER,
    "construction": AgentType.OTHER,
    "riderless_bicycle": AgentType.OTHER,
    "unknown": AgentType.OTHER,
}

# AV2 lane_type -> the SUMO-style class names our ``allowed`` column uses.

_SCENARIO_PREFIX = "scenario_"


class Av2Adapter:
    """Discovers and parses AV2 motion-forecasting scenarios (one unit per scenario)."""

    name = "av2"

    def discover(self, root: Path, split: str | None) -> list[Unit]:
        """Every ``scenario_*.parquet`` under ``root``, with its map JSON, sorted by path.

        The split is ``split`` if given, else the nearest folder named train/val/test between
        the file and ``root`` (``root`` included); a file with neither raises ValueError.
        """
        root = Path(root)
        units: list[Unit] = []
        seen: dict[str, Path] = {}
        for parquet in sorted(root.rglob(f"{_SCENARIO_PREFIX}*.parquet")):
            scenario_id = scenario_id_of(parquet)
            unit_split = split or _split_from_path(parquet, root)
            key = f"av2/{unit_split}/{scenario_id}"
            if key in seen:  # two files would write the same outputs
                raise ValueError(
                    f"scenario {scenario_id!r} is twice in split {unit_split!r}: {seen[key]} and {parquet}"
                )
            seen[key] = parquet
            maps = sorted(parquet.parent.glob("log_map_archive_*.json"))
            units.append(Unit(key=key, source="av2", split=unit_split, files=(parquet, *maps[:1])))
        return units

    def parse(self, unit: Unit) -> ParsedUnit:
        """Read one scenario: rows in canonical units, its map table, and file-level faults."""
        parquet = unit.files[0]
        source_file = str(parquet)
        scenario_id = scenario_id_of(parquet)
        map_id = f"av2:{scenario_id}"
        base = ParsedUnit(
            unit=unit,
            source_file=source_file,
            dt=AV2_DT,
            rows=None,
            rows_read=0,
            file_quarantine=Quarantine.empty("av2", source_file),
            scenario_prefix=f"av2:{scenario_id}",
            window_steps=None,
            map_id=None,
        )
        map_files = [p for p in unit.files if p.suffix == ".json"]
        if map_files:
            try:
                base.maps = {map_id: av2_map.map_json_to_table(map_files[0], map_id)}
                base.map_id = map_id
            except Exception as exc:  # a broken map must not lose the tracks
                base.other_quarantines.append(
                    Quarantine.whole_file("av2", str(map_files[0]), "map", f"unreadable map JSON: {exc}")
                )
        try:
            # ParquetFile.read of the needed columns: pq.read_table's dataset machinery cost
            # more than the read itself on these small files (14 ms against 0.8 ms)
            pf = pq.ParquetFile(parquet)
            names = set(pf.schema_arrow.names)
            table = pf.read(columns=[c for c in REQUIRED_COLUMNS if c in names], use_threads=False)
        except Exception as exc:
            why = f"unreadable Parquet: {exc}"
            base.file_quarantine = Quarantine.whole_file("av2", source_file, "file", why)
            return base
        base.rows_read = table.num_rows
        problem = _check_columns(table)
        if problem:
            column, why = problem
            base.file_quarantine = Quarantine.whole_file("av2", source_file, column, why, rows=table.num_rows)
            return base
        base.rows = scenario_to_rows(table)
        base.focal_track_id = _focal_track_id(table)
        return base


def scenario_id_of(parquet: Path) -> str:
    """``.../scenario_<id>.parquet`` -> ``<id>``."""
    return parquet.stem[len(_SCENARIO_PREFIX) :]


def _split_from_path(parquet: Path, root: Path) -> str:
    root = root.resolve()
    for folder in parquet.resolve().parents:
        if folder.name in SPLITS:
            return folder.name
        if folder == root:
            break
    raise ValueError(f"{parquet}: no train/val/test folder between it and {root}; pass --split")


def scenario_to_rows(table: pa.Table) -> RawRows:
    """Scenario table ``[N rows]`` -> RawRows; vectorised (Arrow dictionary encoding, numpy).

    time = timestep * 0.1 s; heading (radians) and velocity (m/s) are kept as the source gives
    them, and the reported speed ``|v|`` is checked by the validator too.
    """

    def floats(column: str) -> np.ndarray:
        # Nulls become NaN: positions are then quarantined, heading/velocity read as unknown.
        col = table.column(column)
        if col.type != pa.float64():  # each compute call costs more than the 3,500 values it touches
            col = col.cast(pa.float64())
        if col.null_count:
            col = pc.fill_null(col, np.nan)
        return col.to_numpy()

    track_code, track_names = dictionary_code(table.column("track_id"))
    # A null class becomes "" and so an unknown type, which the validator quarantines per row.
    type_code, type_names = dictionary_code(table.column("object_type"))
    type_map = np.array([OBJECT_TYPE_TO_TYPE.get(t, -1) for t in type_names], dtype=np.int8)
    vx, vy = floats("velocity_x"), floats("velocity_y")
    return RawRows(
        track_code=track_code,
        track_names=track_names,
        type_code=type_code,
        type_names=type_names,
        type_map=type_map,
        time=floats("timestep") * AV2_DT,
        x=floats("position_x"),
        y=floats("position_y"),
        heading=floats("heading"),
        vx=vx,
        vy=vy,
        observed=table.column("observed").to_numpy(zero_copy_only=False).astype(bool),
        speed=np.hypot(vx, vy),
    )


def _focal_track_id(table: pa.Table) -> str | None:
    """The file's focal track (AV2 repeats it on every row); None if the column is all null."""
    col = table.column("focal_track_id").drop_null()
    return str(col[0].as_py()) if len(col) else None


def _type_ok(have: pa.DataType, kind: str) -> bool:
    if pa.types.is_dictionary(have):
        have = have.value_type
    if kind == "string":
        return pa.types.is_string(have) or pa.types.is_large_string(have)
    if kind == "integer":
        return pa.types.is_integer(have)
    if kind == "number":
        return pa.types.is_floating(have) or pa.types.is_integer(have)
    return pa.types.is_boolean(have)


def _check_columns(table: pa.Table) -> tuple[str, str] | None:
    """(column, reason) of the first missing, mistyped or null-keyed column, else None."""
    for column, kind in REQUIRED_COLUMNS.items():
        if column not in table.column_names:
            return column, f"missing column {column!r}"
        have = table.schema.field(column).type
        if not _type_ok(have, kind):
            return column, f"column {column!r} has type {have}, expected {kind}"
    # Rows cannot be split into history/future without ``observed``; the published schema has
    # no nulls there, so nulls mean a broken writer. (A null track id is one row's fault: the
    # validator quarantines that row as "missing track id" and keeps the others.)
    for column in ("observed",):
        nulls = table.column(column).null_count
        if nulls:
            return column, f"column {column!r} has {nulls} null values"
    return None


# -- map ------------------------------------------------------------------------------------------


def map_json_to_table(path: Path, map_id: str) -> pa.Table:
    """Read an AV2 log map JSON and return ``MAP_SCHEMA`` rows (``forecast.data.sources.av2_map``)."""
    return av2_map.map_json_to_table(path, map_id)


