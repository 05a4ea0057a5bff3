"""Batched store files: many scenarios per Parquet file, a few per row group, maps stored once.

A *batch* is a run of input units of one (source, split) written together::

    tracks/source=<s>/split=<p>/<batch>.parquet      row groups of up to GROUP_SCENARIOS scenarios
    scenarios/source=<s>/split=<p>/<batch>.parquet   one row per scenario: its file, row group and rows
    maps/source=<s>/<batch>.parquet                  row groups of up to GROUP_SCENARIOS distinct maps
    quarantine/source=<s>/<batch>.parquet            rejected rows, only when there are some

The scenarios table is the index: ``tracks_file``/``row_group``/``row_offset``/``num_rows`` locate a
scenario's rows, and ``map_file``/``map_row_group``/``map_row_offset``/``map_num_rows`` its map, so a
reader decodes one row group instead of scanning.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from forecast.data.atomic import atomic_write, sha256_file
from forecast.data.geoparquet import column_geo_metadata, geo_metadata, local_engineering_crs, map_frame
from forecast.data.schema import MAP_SCHEMA, QUARANTINE_SCHEMA, SCENARIOS_SCHEMA, TRACKS_SCHEMA

_PARTITION = ("source", "split")
SCENARIO_FILE_SCHEMA = pa.schema([f for f in SCENARIOS_SCHEMA if f.name not in _PARTITION],
                                 metadata=SCENARIOS_SCHEMA.metadata)
QUARANTINE_FILE_SCHEMA = pa.schema([f for f in QUARANTINE_SCHEMA if f.name != "source"],
                                   metadata=QUARANTINE_SCHEMA.metadata)


@dataclass
class BuiltUnit:
    """One validated unit, ready to be written: its rows sorted by (scenario, track, timestep)."""

    key: str
    split: str
    files: dict[str, str]  # input file -> sha256
    input_hash: str
    tracks: pa.Table  # TRACKS_SCHEMA
    scenarios: list[dict]  # SCENARIOS_SCHEMA rows without source/split/index columns, in row order
    scenario_rows: list[int]  # rows of each scenario in ``tracks``, same order
    maps: dict[str, pa.Table] = field(default_factory=dict)  # map_id -> MAP_SCHEMA rows
    quarantine: pa.Table | None = None  # QUARANTINE_FILE_SCHEMA rows
    counts: dict = field(default_factory=dict)

    @property
    def num_scenarios(self) -> int:
        return len(self.scenarios)


def map_content_key(table: pa.Table) -> str:
    """sha256 of a map's features (ids, layers, geometry, attributes), independent of its map_id."""
    body = table.drop_columns(["map_id"]).replace_schema_metadata(None)
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, body.schema) as w:
        w.write_table(body.combine_chunks())
    return hashlib.sha256(sink.getvalue()).hexdigest()


def batch_paths(source: str, split: str, name: str) -> dict[str, str]:
    return {
        "tracks": f"tracks/source={source}/split={split}/{name}.parquet",
        "scenarios": f"scenarios/source={source}/split={split}/{name}.parquet",
        "maps": f"maps/source={source}/{name}.parquet",
        "quarantine": f"quarantine/source={source}/{name}.parquet",
    }


# LZ4 (Parquet's LZ4_RAW) for the per-scenario row groups: zstd cost 35 to 40 % of writing a scenario's
# tracks and map for 8 % fewer bytes (0.110 against 0.120 MB per AV2 scenario), and LZ4 decompresses
# faster when the data loader reads a scenario back.
COMPRESSION = "lz4"


def writer_options(schema: pa.Schema, compression: str = COMPRESSION) -> dict:
    """``pq.ParquetWriter`` options of the store's batch files: compression, dictionaries, statistics.

    No statistics for the WKB geometry: min/max of binary blobs tell a reader nothing (GeoParquet
    readers use the ``geo`` bbox) and were 7 % of a map file.
    """
    return {"compression": compression, "use_dictionary": dictionary_columns(schema),
            "write_statistics": [f.name for f in schema if not pa.types.is_binary(f.type)]}


def dictionary_columns(schema: pa.Schema) -> list[str]:
    """The columns worth a Parquet dictionary: strings with few distinct values per row group.

    Arrow's default dictionary-encodes every column; for the float columns (positions, speeds)
    and the WKB geometry, nearly every value is distinct, so the dictionary only cost time (40 %
    of writing a scenario's tracks) and bytes (17 % larger tracks). Readers see the same table.
    """
    return [f.name for f in schema if pa.types.is_string(f.type) and f.name not in _DISTINCT]


_DISTINCT = {"feature_id"}  # one value per row: a dictionary would only repeat the column


# A row group holds up to GROUP_SCENARIOS scenarios (or distinct maps), fewer once it has GROUP_ROWS rows.
# Every process that reads a batch file keeps its parsed footer, about 1 kB per column chunk: with one
# row group per scenario that was 50 MB per 5,000-scenario tracks file in every loader worker, and most
# of a worker's memory growth from 1,000 to 10,000 scenarios (issue 11). Decoding 8 AV2 scenarios
# (28 k rows, strings as dictionaries) costs about 0.6 ms; a training worker reads each scenario about
# once per epoch, and in-order readers (evaluation) reuse the groups the Store keeps decoded.
GROUP_SCENARIOS = 8
GROUP_ROWS = 32_768


class _GroupedWriter:
    """Tables appended as contiguous row ranges of shared row groups: ``add`` returns (row group, first row)."""

    def __init__(self, writer: pq.ParquetWriter):
        self.writer = writer
        self.groups = 0
        self.pending: list[pa.Table] = []
        self.rows = 0

    def add(self, table: pa.Table) -> tuple[int, int]:
        where = (self.groups, self.rows)
        self.pending.append(table)
        self.rows += table.num_rows
        if len(self.pending) >= GROUP_SCENARIOS or self.rows >= GROUP_ROWS:
            self.flush()
        return where

    def flush(self) -> None:
        if self.pending:
            self.writer.write_table(pa.concat_tables(self.pending), row_group_size=max(1, self.rows))
            self.groups += 1
            self.pending, self.rows = [], 0

    def close(self) -> None:
        self.flush()
        self.writer.close()


def _write_groups(path: Path, schema: pa.Schema, tables: list[pa.Table]) -> None:
    """One row group per table (an empty file with the schema when there is none)."""

    def write(tmp: Path) -> None:
        # written once per batch, so the smaller zstd
        with pq.ParquetWriter(tmp, schema, **writer_options(schema, "zstd")) as w:
            for t in tables:
                w.write_table(t.cast(schema), row_group_size=max(1, t.num_rows))

    atomic_write(path, write)


class BatchWriter:
    """Writes one batch as its units arrive, so that ingest holds one unit's rows, not a batch's.

    Each scenario's rows go straight into the tracks file and each distinct map into the maps file
    (hidden temporary files until ``close``, which Arrow tools skip); the scenario rows (the index),
    the quarantine and the maps' GeoParquet metadata (their merged bounds) are written at ``close``. ``close`` returns
    ``{relative path: {"sha256", "bytes"}}`` of every file; ``abort`` leaves nothing behind.
    """

    def __init__(self, store_path: Path, source: str, split: str, name: str):
        self.root = Path(store_path)
        self.paths = batch_paths(source, split, name)
        self.final = self.root / self.paths["tracks"]
        self.final.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = self.final.with_name(f".{self.final.name}.writing")
        self.writer = _GroupedWriter(pq.ParquetWriter(self.tmp, TRACKS_SCHEMA, **writer_options(TRACKS_SCHEMA)))
        self.scen_rows: list[dict] = []
        self.map_final = self.root / self.paths["maps"]
        self.map_tmp = self.map_final.with_name(f".{self.map_final.name}.writing")
        self.map_writer: _GroupedWriter | None = None  # opened with the first map
        self.map_ids: set[str] = set()  # of the stored maps (the file's CRS names its frame)
        self.map_group: dict[str, tuple[int, int, int]] = {}  # content key -> (row group, first row, rows)
        self.geo: list[dict] = []  # GeoParquet column metadata per stored map, made when it arrives
        self.quarantines: list[pa.Table] = []
        self.units = 0

    @property
    def num_scenarios(self) -> int:
        return len(self.scen_rows)

    def add(self, u: BuiltUnit) -> None:
        map_of: dict[str, int] = {}
        for map_id, table in u.maps.items():
            ck = map_content_key(table)
            if ck not in self.map_group:  # identical maps are stored once per batch
                self.map_group[ck] = (*self._write_map(table), table.num_rows)
                # one map at a time: decoding a whole batch's geometries at the end cost a GB
                self.geo.append(column_geo_metadata(table))
            map_of[map_id] = self.map_group[ck]
        offset = 0
        tracks = u.tracks if u.tracks.schema.equals(TRACKS_SCHEMA, check_metadata=True) else u.tracks.cast(TRACKS_SCHEMA)
        for row, n in zip(u.scenarios, u.scenario_rows, strict=True):
            group, first = self.writer.add(tracks.slice(offset, n))
            offset += n
            mg, mo, mn = map_of.get(row["map_id"], (None, None, None)) if row["map_id"] else (None, None, None)
            self.scen_rows.append({**row, "tracks_file": self.paths["tracks"], "row_group": group, "row_offset": first,
                                   "num_rows": n, "map_file": self.paths["maps"] if mg is not None else None,
                                   "map_row_group": mg, "map_row_offset": mo, "map_num_rows": mn})
        if u.quarantine is not None and u.quarantine.num_rows:
            self.quarantines.append(u.quarantine)
        self.units += 1

    def close(self) -> dict[str, dict]:
        self.writer.close()
        with open(self.tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(self.tmp, self.final)
        written = ["tracks", "scenarios"]
        _write_groups(self.root / self.paths["scenarios"], SCENARIO_FILE_SCHEMA,
                      [pa.Table.from_pylist(self.scen_rows, schema=SCENARIO_FILE_SCHEMA)])
        if self.map_writer is not None:
            # GeoParquet metadata: GIS tools (geopandas, QGIS, DuckDB) read the WKB column as geometry
            self.map_writer.writer.add_key_value_metadata(self._map_metadata())  # goes into the footer at close
            self.map_writer.close()
            with open(self.map_tmp, "rb") as fh:
                os.fsync(fh.fileno())
            os.replace(self.map_tmp, self.map_final)
            written.append("maps")
        if self.quarantines:
            _write_groups(self.root / self.paths["quarantine"], QUARANTINE_FILE_SCHEMA,
                          [pa.concat_tables(self.quarantines)])
            written.append("quarantine")
        return {self.paths[k]: file_record(self.root / self.paths[k]) for k in written}

    def _write_map(self, table: pa.Table) -> tuple[int, int]:
        """A distinct map's rows, written as it arrives (ingest holds no batch of maps): (row group, first row)."""
        if self.map_writer is None:
            self.map_final.parent.mkdir(parents=True, exist_ok=True)
            # the schema's metadata is written at close (with the bounds of every map), so not stored now
            self.map_writer = _GroupedWriter(pq.ParquetWriter(self.map_tmp, MAP_SCHEMA, store_schema=False,
                                                              **writer_options(MAP_SCHEMA)))
        self.map_ids.update(pc.unique(table.column("map_id")).to_pylist())  # one id, not one per feature
        return self.map_writer.add(table.cast(MAP_SCHEMA))

    def _map_metadata(self) -> dict[str, str]:
        """MAP_SCHEMA's metadata plus the GeoParquet ``geo`` of every stored map, merged (types, bounds)."""
        frame = next(iter(self.map_ids)) if len(self.map_ids) == 1 else map_frame([])
        col = {"encoding": "WKB", "geometry_types": sorted({t for g in self.geo for t in g["geometry_types"]}),
               "crs": local_engineering_crs(frame), "edges": "planar"}
        boxes = np.array([g["bbox"] for g in self.geo if "bbox" in g])
        if len(boxes):
            col["bbox"] = [float(boxes[:, 0].min()), float(boxes[:, 1].min()), float(boxes[:, 2].max()),
                           float(boxes[:, 3].max())]
        meta = geo_metadata(MAP_SCHEMA.empty_table(), "")  # the version and column layout
        meta["columns"] = {"geometry": col}
        base = {k.decode(): v.decode() for k, v in (MAP_SCHEMA.metadata or {}).items()}
        return {**base, "geo": json.dumps(meta)}

    def abort(self) -> None:
        try:
            self.writer.writer.close()
            if self.map_writer is not None:
                self.map_writer.writer.close()
        finally:
            self.tmp.unlink(missing_ok=True)
            self.map_tmp.unlink(missing_ok=True)


def write_batch(store_path: Path, source: str, split: str, name: str, units: list[BuiltUnit]) -> dict[str, dict]:
    """Write one batch's files atomically; returns ``{relative path: {"sha256", "bytes"}}`` of each."""
    writer = BatchWriter(store_path, source, split, name)
    try:
        for u in units:
            writer.add(u)
        return writer.close()
    except BaseException:
        writer.abort()
        raise


def file_record(path: Path) -> dict:
    return {"sha256": sha256_file(path), "bytes": path.stat().st_size}


def outputs_intact(store_path: Path, outputs: dict[str, dict]) -> bool:
    """Every output exists with its recorded size and sha256 (a truncated or altered file is not)."""
    for rel, rec in outputs.items():
        p = Path(store_path) / rel
        if not p.is_file() or p.stat().st_size != rec["bytes"] or sha256_file(p) != rec["sha256"]:
            return False
    return True
