"""Ingestion driver shared by every source: discover units, validate, cut scenarios, write atomically.

An adapter (``forecast.data.sources.<name>``) only parses: it turns one input unit into
``ParsedUnit`` (rows in canonical units plus map tables). Validation, quarantine, scenario
cutting, Arrow table building, atomic writes, the manifest and sharding live here, once.
"""

from __future__ import annotations

import json
import zlib
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np
import pyarrow as pa

from forecast.data.atomic import sha256_file, sha256_text, write_json_atomic
from forecast.data.batch import BatchWriter, BuiltUnit, batch_paths, outputs_intact
from forecast.data.schema import AGENT_TYPE_LABELS, SCHEMA_VERSION, SPLITS, TRACKS_SCHEMA
from forecast.data.store import Store, safe_name
from forecast.data.validate import Quarantine, RawRows, sort_order, validate_rows
from forecast.progress import track

# Bump when the canonical output of an unchanged input changes, so reruns rewrite it.
INGEST_VERSION = "3"
BATCH_SCENARIOS = 5000  # scenarios per batch of files (one row group each): ~0.5 GB of AV2 tracks


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
    """Counts of one ingestion of a shard; ``rows_read == rows_written + rows_quarantined`` always holds.

    Row and file counts cover the whole shard (units written by this run and units skipped
    because an earlier, possibly interrupted, run committed them), so a resumed ingest reports
    the same totals as an uninterrupted one.
    """

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
    scenarios_written: int = 0  # by this run
    scenarios_total: int = 0  # in the shard's committed output, this run's and skipped batches'
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
            # whole-shard counts, skipped units' from their manifests: a resumed ingest reports the same totals
            ("files quarantined (whole shard)", self.files_quarantined),
            ("rows read (whole shard)", self.rows_read),
            ("rows stored (whole shard)", self.rows_written),
            ("rows quarantined (whole shard)", self.rows_quarantined),
            ("scenarios written / in shard", f"{self.scenarios_written} / {self.scenarios_total}"),
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


def adapter_settings(adapter: Adapter) -> dict:
    """The adapter's settings that shape its output (e.g. SUMO's scenario length): part of the skip key."""
    if hasattr(adapter, "settings"):
        return dict(adapter.settings())
    return {k: v for k, v in sorted(vars(adapter).items())
            if not k.startswith("_") and isinstance(v, str | int | float | bool | type(None))}


def run_ingest(
    adapter: Adapter,
    root: Path,
    store: Store,
    shard: tuple[int, int] = (0, 1),
    split: str | None = None,
    progress: bool = True,
    batch_scenarios: int = BATCH_SCENARIOS,
) -> IngestSummary:
    """Ingest every unit of ``root`` that falls in ``shard`` into ``store``; returns the counts.

    Units are written in batches of about ``batch_scenarios`` scenarios (``forecast.data.batch``).
    A batch whose inputs, adapter settings and outputs (sha256) are unchanged is skipped; its
    counts still enter the summary, so a resumed run reports the whole ingest.
    """
    root = Path(root)
    if not root.exists():
        raise FileNotFoundError(f"input {root} does not exist")
    units = adapter.discover(root, split)
    if not units:
        raise FileNotFoundError(f"no {adapter.name} input found under {root}")
    summary = IngestSummary(source=adapter.name, shard=f"{shard[0]}/{shard[1]}", units_total=len(units))
    mine = sorted((u for u in units if in_shard(u.key, shard)), key=lambda u: (u.split, u.key))
    for u in mine:
        if u.split not in SPLITS:
            raise ValueError(f"{u.key}: split {u.split!r} is not one of {SPLITS}")
    summary.units_in_shard = len(mine)
    settings = adapter_settings(adapter)
    file_hashes = {u.key: {str(p): sha256_file(p) for p in u.files} for u in mine}
    hashes = {u.key: _unit_hash(u, settings, file_hashes[u.key]) for u in mine}
    reused, todo = _plan(store, adapter.name, mine, hashes)
    reasons: Counter[str] = Counter()
    for m in reused:
        for rec in m["units"]:
            summary.units_skipped += 1
            _add_counts(summary, reasons, rec["counts"])
    batch: _Batch | None = None
    try:
        for unit in track(todo, f"ingest {adapter.name}", "unit", progress):
            if batch and (batch.split != unit.split or batch.writer.num_scenarios >= batch_scenarios):
                batch.commit()
                batch = None
            built = _build_unit(adapter.parse(unit), hashes[unit.key], file_hashes[unit.key])
            if batch is None:
                batch = _Batch(store, adapter.name, built, settings)
            batch.add(built)  # its rows are written now: memory holds one unit, not a batch
            summary.units_written += 1
            summary.scenarios_written += built.num_scenarios
            _add_counts(summary, reasons, built.counts)
        if batch:
            batch.commit()
            batch = None
    finally:
        if batch is not None:  # interrupted: nothing of the open batch is committed
            batch.writer.abort()
    summary.quarantine_reasons = dict(reasons)
    assert summary.rows_read == summary.rows_written + summary.rows_quarantined, "row counts must add up"
    return summary


def _add_counts(summary: IngestSummary, reasons: Counter[str], counts: dict) -> None:
    summary.files_quarantined += counts["files_quarantined"]
    summary.rows_read += counts["rows_read"]
    summary.rows_written += counts["rows_written"]
    summary.rows_quarantined += counts["rows_quarantined"]
    summary.scenarios_total += counts["scenarios"]
    summary.quarantined_in_shard += counts["rows_quarantined"] + counts["files_quarantined"]
    reasons.update(counts["reasons"])


def _plan(store: Store, source: str, mine: list[Unit], hashes: dict[str, str]) -> tuple[list[dict], list[Unit]]:
    """Split the shard's units into committed batches to keep and units to (re)write.

    A batch is kept when its units are, in order, the next units of the shard with the same
    input hashes and its outputs are intact. Any other manifest that touches the shard's units
    (an old layout, other settings, a changed input, a damaged file) is removed with its outputs
    first, so that no scenario is ever stored twice.
    """
    manifests = store.batch_manifests(source)
    by_first = {m["units"][0]["key"]: m for m in manifests if m.get("units")}
    keys = {u.key for u in mine}
    reused: list[dict] = []
    todo: list[Unit] = []
    i = 0
    while i < len(mine):
        m = by_first.get(mine[i].key)
        recs = m["units"] if m else []
        nxt = mine[i : i + len(recs)]
        if (m and len(nxt) == len(recs) and all(u.key == r["key"] and hashes[u.key] == r["input_hash"]
                                                for u, r in zip(nxt, recs, strict=True))
                and outputs_intact(store.path, m["outputs"])):
            reused.append(m)
            i += len(recs)
        else:
            todo.append(mine[i])
            i += 1
    kept = {id(m) for m in reused}
    for m in manifests:
        if id(m) not in kept and keys & {r["key"] for r in m.get("units", [])}:
            store.remove_batch(m)
    for m in store.unit_manifests(source):  # schema 1: one manifest and three files per unit
        if m.get("unit") in keys:
            store.remove_batch(m)
    # A batch is named after its first unit, so a batch named after one of this shard's units is this
    # shard's. One without a manifest was cut short between its files' rename and its manifest (a kill,
    # a full disk): its scenarios are visible to readers but were never committed, and a rerun whose first
    # unit to write differs (new inputs sorted before it) would not overwrite them: scenarios twice.
    committed = {m["batch"] for m in reused}
    for u in mine:
        name = safe_name(f"{source}/{u.split}/{u.key}")
        if name not in committed:
            store.remove_files(batch_paths(source, u.split, name).values())
    return reused, todo


class _Batch:
    """An open batch: its writer and the records of its units; ``commit`` writes the manifest last."""

    def __init__(self, store: Store, source: str, first: BuiltUnit, settings: dict):
        self.store, self.source, self.split, self.settings = store, source, first.split, settings
        self.name = safe_name(f"{source}/{first.split}/{first.key}")
        self.writer = BatchWriter(store.path, source, first.split, self.name)
        self.units: list[dict] = []

    def add(self, u: BuiltUnit) -> None:
        self.writer.add(u)
        self.units.append({"key": u.key, "files": u.files, "input_hash": u.input_hash, "counts": u.counts})

    def commit(self) -> None:
        outputs = self.writer.close()
        manifest = {
            "batch": self.name,
            "source": self.source,
            "split": self.split,
            "schema_version": SCHEMA_VERSION,
            "ingest_version": INGEST_VERSION,
            "settings": self.settings,
            "units": self.units,
            "outputs": outputs,
        }
        # The manifest is written last: it is the commit marker of the batch.
        write_json_atomic(manifest, self.store.batch_manifest_path(self.source, self.name))


def _unit_hash(unit: Unit, settings: dict, file_hashes: dict[str, str]) -> str:
    parts = [INGEST_VERSION, SCHEMA_VERSION, unit.key, unit.split, json.dumps(settings, sort_keys=True)]
    parts += [file_hashes[str(p)] for p in unit.files]
    return sha256_text("|".join(parts))


def _build_unit(parsed: ParsedUnit, input_hash: str, file_hashes: dict[str, str]) -> BuiltUnit:
    """Validate a parsed unit and build its tables (nothing is written here)."""
    unit = parsed.unit
    quarantines = [parsed.file_quarantine, *parsed.other_quarantines]
    tracks = TRACKS_SCHEMA.empty_table()
    scen_rows: list[dict] = []
    scen_counts: list[int] = []
    if parsed.rows is not None and len(parsed.rows):
        keep, timestep, q = validate_rows(parsed.rows, parsed.dt, unit.source, parsed.source_file)
        quarantines.append(q)
        kept = parsed.rows if len(keep) == len(parsed.rows) else parsed.rows.take(keep)  # keep: all rows, in order
        tracks, scen_rows, scen_counts = _build_tables(parsed, kept, timestep)
    rejected = [q for q in quarantines if len(q)]  # most units have none: no table to build then
    qtable = pa.concat_tables([q.to_table() for q in rejected]).drop_columns(["source"]) if rejected else None
    reasons: Counter[str] = Counter()
    for q in rejected:
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
    return BuiltUnit(key=unit.key, split=unit.split, files=file_hashes,
                     input_hash=input_hash, tracks=tracks, scenarios=scen_rows, scenario_rows=scen_counts,
                     maps=parsed.maps, quarantine=qtable, counts=counts)


def _build_tables(parsed: ParsedUnit, rows: RawRows, timestep: np.ndarray) -> tuple[pa.Table, list[dict], list[int]]:
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
    order = sort_order(scen_code, rows.track_code, local)
    if not (order[1:] > order[:-1]).all():  # rows mostly come sorted already: then no copy of every array
        rows, local, scen_code = rows.take(order), local[order], scen_code[order]

    def dict_str(codes: np.ndarray, names: np.ndarray) -> pa.Array:
        # Names go to Arrow as Python strings: a numpy str array would cut them at a NUL
        # (merging tracks) and take 4 bytes x the longest name for every name.
        dictionary = pa.array([str(v) for v in names.tolist()], pa.string())
        return pa.DictionaryArray.from_arrays(pa.array(codes, pa.int32()), dictionary).cast(pa.string())

    agent_type = rows.agent_type
    # built with the store's schema (types, nullability, metadata) at once: a cast afterwards cost a
    # compute call per column
    tracks = pa.Table.from_arrays(
        [
            dict_str(scen_code, scen_names),
            dict_str(rows.track_code, rows.track_names),
            dict_str(agent_type, np.array(AGENT_TYPE_LABELS)),
            dict_str(rows.type_code, rows.type_names),
            pa.array(local, pa.int32()),
            pa.array(rows.x, pa.float64()),
            pa.array(rows.y, pa.float64()),
            pa.array(rows.heading, pa.float64()),
            pa.array(rows.vx, pa.float64()),
            pa.array(rows.vy, pa.float64()),
            pa.array(rows.observed, pa.bool_()),
        ],
        schema=TRACKS_SCHEMA,
    )
    counts = np.bincount(scen_code, minlength=len(windows))
    max_local = np.zeros(len(windows), np.int64)
    np.maximum.at(max_local, scen_code, local)
    scen_rows, scen_counts = [], []
    for i, sid in enumerate(scen_names):
        if counts[i] == 0:
            continue
        scen_counts.append(int(counts[i]))
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
    return tracks, scen_rows, scen_counts
