"""Ingestion driver shared by every source: discover units, validate, cut scenarios, write atomically.

An adapter (``forecast.data.sources.<name>``) only parses: it turns one input unit into
``ParsedUnit`` (rows in canonical units plus map tables). Validation, quarantine, scenario
cutting, Arrow table building, atomic writes, the manifest and sharding live here, once.
"""

from __future__ import annotations

import json
import sys
import zlib
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np
import pyarrow as pa
from tqdm import tqdm

from forecast.data.atomic import sha256_file, sha256_text, write_json_atomic, write_parquet_atomic
from forecast.data.geoparquet import with_geo_metadata
from forecast.data.schema import AGENT_TYPE_LABELS, SCENARIOS_SCHEMA, SCHEMA_VERSION, SPLITS, TRACKS_SCHEMA
from forecast.data.store import Store, safe_name
from forecast.data.validate import Quarantine, RawRows, validate_rows

# Bump when the canonical output of an unchanged input changes, so reruns rewrite it.
INGEST_VERSION = "2"


@dataclass(frozen=True)
class Unit:
    """One independently ingestible input (a SUMO run, an AV2 scenario, an ETH/UCY file)."""

    key: str  # stable, e.g. "eth_ucy/eth/test/biwi_eth"
    source: str
    split: str
    files: tuple[Path, ...]  # every file whose bytes define the unit (hashed for the manifest)


@dataclass
class ParsedUnit:
    """What an adapter returns for a unit. ``rows`` is None when the file could not be read."""

    unit: Unit
    source_file: str  # the file that rows and quarantine records refer to
    dt: float
    rows: RawRows | None
    rows_read: int
    file_quarantine: Quarantine  # file-level faults (unreadable file, missing columns)
    scenario_prefix: str
    window_steps: int | None = None  # cut into scenarios of this many steps; None = one scenario
    map_id: str | None = None
    maps: dict[str, pa.Table] = field(default_factory=dict)
    focal_track_id: str | None = None
    # File-level faults of the unit's other files (e.g. a broken map beside a broken track
    # file): ``file_quarantine`` names one file only, so it cannot also hold these.
    other_quarantines: list[Quarantine] = field(default_factory=list)


class Adapter(Protocol):
    name: str

    def discover(self, root: Path, split: str | None) -> list[Unit]: ...

    def parse(self, unit: Unit) -> ParsedUnit: ...


@dataclass
class IngestSummary:
    """Counts of one ingestion run; ``rows_read == rows_written + rows_quarantined`` always holds."""

    source: str
    shard: str
    units_total: int = 0
    units_in_shard: int = 0
    units_written: int = 0
    units_skipped: int = 0
    files_quarantined: int = 0
    rows_read: int = 0
    rows_written: int = 0
    rows_quarantined: int = 0
    scenarios_written: int = 0
    quarantine_reasons: dict[str, int] = field(default_factory=dict)
    quarantined_in_shard: int = 0  # this run plus skipped units, for --strict

    def to_dict(self) -> dict:
        return asdict(self)

    def table(self) -> str:
        rows = [
            ("source", self.source),
            ("shard", self.shard),
            ("units (total / in shard)", f"{self.units_total} / {self.units_in_shard}"),
            ("units written / skipped", f"{self.units_written} / {self.units_skipped}"),
            ("files quarantined", self.files_quarantined),
            ("rows read", self.rows_read),
            ("rows written", self.rows_written),
            ("rows quarantined", self.rows_quarantined),
            ("scenarios written", self.scenarios_written),
        ]
        rows += [(f"  quarantine: {k}", v) for k, v in sorted(self.quarantine_reasons.items())]
        width = max(len(str(k)) for k, _ in rows)
        return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


def parse_shard(text: str | None) -> tuple[int, int]:
    """``"i/N"`` -> (i, N) with 0 <= i < N."""
    if not text:
        return 0, 1
    try:
        i, n = (int(p) for p in text.split("/"))
    except ValueError:
        raise ValueError(f"--shard must look like i/N (e.g. 0/4), got {text!r}") from None
    if not (n >= 1 and 0 <= i < n):
        raise ValueError(f"--shard {text!r}: need 0 <= i < N")
    return i, n


def in_shard(key: str, shard: tuple[int, int]) -> bool:
    """Stable assignment of a unit to a shard from its key alone: no coordination between workers."""
    i, n = shard
    return zlib.crc32(key.encode()) % n == i


def run_ingest(
    adapter: Adapter,
    root: Path,
    store: Store,
    shard: tuple[int, int] = (0, 1),
    split: str | None = None,
    progress: bool = True,
) -> IngestSummary:
    """Ingest every unit of ``root`` that falls in ``shard`` into ``store``; returns the counts."""
    root = Path(root)
    if not root.exists():
        raise FileNotFoundError(f"input {root} does not exist")
    units = adapter.discover(root, split)
    if not units:
        raise FileNotFoundError(f"no {adapter.name} input found under {root}")
    summary = IngestSummary(source=adapter.name, shard=f"{shard[0]}/{shard[1]}", units_total=len(units))
    mine = [u for u in units if in_shard(u.key, shard)]
    summary.units_in_shard = len(mine)
    reasons: Counter[str] = Counter()
    for unit in tqdm(mine, desc=f"ingest {adapter.name}", unit="unit", disable=not progress, file=sys.stderr):
        if unit.split not in SPLITS:
            raise ValueError(f"{unit.key}: split {unit.split!r} is not one of {SPLITS}")
        input_hash = _unit_hash(unit)
        manifest_path = store.manifest_dir / unit.source / f"{safe_name(unit.key)}.json"
        old = json.loads(manifest_path.read_text()) if manifest_path.exists() else None
        if old and old["input_hash"] == input_hash and all((store.path / p).exists() for p in old["outputs"]):
            summary.units_skipped += 1
            summary.quarantined_in_shard += old["counts"]["rows_quarantined"] + old["counts"]["files_quarantined"]
            continue
        parsed = adapter.parse(unit)
        counts, outputs = _write_unit(parsed, store)
        manifest = {
            "unit": unit.key,
            "source": unit.source,
            "split": unit.split,
            "files": {str(p): sha256_file(p) for p in unit.files},
            "input_hash": input_hash,
            "schema_version": SCHEMA_VERSION,
            "ingest_version": INGEST_VERSION,
            "outputs": outputs,
            "counts": counts,
        }
        # The manifest is written last: it is the commit marker of the unit.
        write_json_atomic(manifest, manifest_path)
        summary.units_written += 1
        summary.files_quarantined += counts["files_quarantined"]
        summary.rows_read += counts["rows_read"]
        summary.rows_written += counts["rows_written"]
        summary.rows_quarantined += counts["rows_quarantined"]
        summary.scenarios_written += counts["scenarios"]
        summary.quarantined_in_shard += counts["rows_quarantined"] + counts["files_quarantined"]
        reasons.update(counts["reasons"])
    summary.quarantine_reasons = dict(reasons)
    assert summary.rows_read == summary.rows_written + summary.rows_quarantined, "row counts must add up"
    return summary


def _unit_hash(unit: Unit) -> str:
    parts = [INGEST_VERSION, SCHEMA_VERSION, unit.key, unit.split] + [sha256_file(p) for p in unit.files]
    return sha256_text("|".join(parts))


def _write_unit(parsed: ParsedUnit, store: Store) -> tuple[dict, list[str]]:
    unit = parsed.unit
    name = safe_name(unit.key)
    part = f"source={unit.source}/split={unit.split}/{name}.parquet"
    outputs: list[str] = []
    quarantines = [parsed.file_quarantine, *parsed.other_quarantines]
    tracks = TRACKS_SCHEMA.empty_table()
    scen_rows: list[dict] = []
    if parsed.rows is not None and len(parsed.rows):
        keep, timestep, q = validate_rows(parsed.rows, parsed.dt, unit.source, parsed.source_file)
        quarantines.append(q)
        tracks, scen_rows = _build_tables(parsed, parsed.rows.take(keep), timestep)
    scen_cols = [n for n in SCENARIOS_SCHEMA.names if n not in ("source", "split")]
    scen_schema = pa.schema([SCENARIOS_SCHEMA.field(n) for n in scen_cols], metadata=SCENARIOS_SCHEMA.metadata)
    scenarios = pa.Table.from_pylist(scen_rows, schema=scen_schema)
    write_parquet_atomic(tracks, store.tracks_dir / part)
    write_parquet_atomic(scenarios, store.scenarios_dir / part)
    outputs += [f"tracks/{part}", f"scenarios/{part}"]
    for map_id, table in parsed.maps.items():
        path = store.maps_dir / f"{safe_name(map_id)}.parquet"
        write_parquet_atomic(with_geo_metadata(table, map_id), path)  # GeoParquet: GIS tools read it
        outputs.append(str(path.relative_to(store.path)))
    qtable = pa.concat_tables([q.to_table() for q in quarantines])
    qpath = store.quarantine_dir / f"source={unit.source}" / f"{name}.parquet"
    if qtable.num_rows:
        write_parquet_atomic(qtable.drop_columns(["source"]), qpath)
        outputs.append(str(qpath.relative_to(store.path)))
    elif qpath.exists():
        qpath.unlink()  # a rerun on fixed input must not keep the old rejects
    reasons: Counter[str] = Counter()
    for q in quarantines:
        reasons.update(q.reason_counts())
    counts = {
        "rows_read": parsed.rows_read,
        "rows_written": tracks.num_rows,
        "rows_quarantined": sum(q.num_rows for q in quarantines),
        "files_quarantined": sum(int(q.file_fault) for q in quarantines),
        "scenarios": len(scen_rows),
        "reasons": dict(reasons),
    }
    if counts["rows_read"] != counts["rows_written"] + counts["rows_quarantined"]:
        raise AssertionError(f"{unit.key}: rows read {counts['rows_read']} != written + quarantined ({counts})")
    return counts, outputs


def _build_tables(parsed: ParsedUnit, rows: RawRows, timestep: np.ndarray) -> tuple[pa.Table, list[dict]]:
    """Cut validated rows into scenarios and build the tracks table; no per-row Python loop."""
    if parsed.window_steps:
        window = timestep // parsed.window_steps
        local = timestep - window * parsed.window_steps
    else:
        window = np.zeros_like(timestep)
        local = timestep
    windows, scen_code = np.unique(window, return_inverse=True)
    scen_names = np.array(
        [f"{parsed.scenario_prefix}:{w:04d}" if parsed.window_steps else parsed.scenario_prefix for w in windows]
    )
    order = np.lexsort((local, rows.track_code, scen_code))
    rows, local, scen_code = rows.take(order), local[order], scen_code[order]

    def dict_str(codes: np.ndarray, names: np.ndarray) -> pa.Array:
        # Names go to Arrow as Python strings: a numpy str array would cut them at a NUL
        # (merging tracks) and take 4 bytes x the longest name for every name.
        dictionary = pa.array([str(v) for v in names.tolist()], pa.string())
        return pa.DictionaryArray.from_arrays(pa.array(codes, pa.int32()), dictionary).cast(pa.string())

    agent_type = rows.agent_type
    tracks = pa.table(
        {
            "scenario_id": dict_str(scen_code, scen_names),
            "track_id": dict_str(rows.track_code, rows.track_names),
            "agent_type": dict_str(agent_type, np.array(AGENT_TYPE_LABELS)),
            "source_type": dict_str(rows.type_code, rows.type_names),
            "timestep": pa.array(local, pa.int32()),
            "x": pa.array(rows.x, pa.float64()),
            "y": pa.array(rows.y, pa.float64()),
            "heading": pa.array(rows.heading, pa.float64()),
            "vx": pa.array(rows.vx, pa.float64()),
            "vy": pa.array(rows.vy, pa.float64()),
            "observed": pa.array(rows.observed, pa.bool_()),
        }
    )
    tracks = tracks.cast(pa.schema([TRACKS_SCHEMA.field(n) for n in tracks.column_names], metadata=TRACKS_SCHEMA.metadata))
    counts = np.bincount(scen_code, minlength=len(windows))
    max_local = np.zeros(len(windows), np.int64)
    np.maximum.at(max_local, scen_code, local)
    scen_rows = []
    for i, sid in enumerate(scen_names):
        if counts[i] == 0:
            continue
        n_t = int(max_local[i]) + 1
        scen_rows.append(
            {
                "scenario_id": str(sid),
                "map_id": parsed.map_id,
                "dt": float(parsed.dt),
                "num_timesteps": int(n_t),
                "focal_track_id": parsed.focal_track_id,
                "source_file": parsed.source_file,
            }
        )
    return tracks, scen_rows
