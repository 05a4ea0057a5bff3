"""``forecast store compact``: rewrite a schema-1 store (three files per unit) as batches (schema 3).

Each old unit keeps its manifest record (input files, hashes, counts); its rows, maps and
quarantine move into batch files of about ``batch_scenarios`` scenarios, then the old files go.
The conversion is restartable: the old files are removed only after every batch is committed,
and a unit already in a batch is not converted twice.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from forecast.data.atomic import write_json_atomic
from forecast.data.batch import QUARANTINE_FILE_SCHEMA, BuiltUnit, write_batch
from forecast.data.ingest import BATCH_SCENARIOS
from forecast.data.schema import MAP_SCHEMA, SCHEMA_VERSION, TRACKS_SCHEMA
from forecast.data.store import Store, safe_name


@dataclass
class CompactSummary:
    units: int = 0
    batches: int = 0
    files_before: int = 0
    files_after: int = 0
    scenarios: int = 0


def _parquet_files(store: Store) -> int:
    return sum(1 for _ in store.path.rglob("*.parquet"))


def _load_unit(store: Store, m: dict) -> BuiltUnit:
    outs = [str(o) for o in m["outputs"]]
    tracks = TRACKS_SCHEMA.empty_table()
    scen_rows: list[dict] = []
    maps: dict[str, pa.Table] = {}
    quarantine = None
    for rel in outs:
        path = store.path / rel
        if rel.startswith("tracks/"):
            tracks = pq.read_table(path).cast(TRACKS_SCHEMA)
        elif rel.startswith("scenarios/"):
            scen_rows = pq.read_table(path).sort_by("scenario_id").to_pylist()
        elif rel.startswith("maps/"):
            table = pq.read_table(path, schema=MAP_SCHEMA)
            maps[table.column("map_id")[0].as_py()] = table
        elif rel.startswith("quarantine/"):
            quarantine = pq.read_table(path).cast(QUARANTINE_FILE_SCHEMA)
    # one contiguous range per scenario, in the order of the scenario rows
    sid = tracks.column("scenario_id").to_numpy(zero_copy_only=False).astype(str)
    order = np.argsort(sid, kind="stable")
    tracks = tracks.take(pa.array(order))
    counts = dict(zip(*np.unique(sid, return_counts=True), strict=True))
    scen_rows = [r for r in scen_rows if counts.get(r["scenario_id"], 0) > 0]
    keep = ("scenario_id", "map_id", "dt", "num_timesteps", "focal_track_id", "source_file")
    return BuiltUnit(key=m["unit"], split=m["split"], files=m.get("files", {}), input_hash=m["input_hash"],
                     tracks=tracks, scenarios=[{k: r[k] for k in keep} for r in scen_rows],
                     scenario_rows=[int(counts[r["scenario_id"]]) for r in scen_rows], maps=maps,
                     quarantine=quarantine, counts=m["counts"])


def compact_store(store: Store, batch_scenarios: int = BATCH_SCENARIOS) -> CompactSummary:
    """Convert every schema-1 unit of ``store`` into batches, in place; returns what changed."""
    out = CompactSummary(files_before=_parquet_files(store))
    done = {u["key"] for m in store.batch_manifests() for u in m["units"]}
    old = [m for m in store.unit_manifests() if m["unit"] not in done]
    groups: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for m in sorted(old, key=lambda m: m["unit"]):
        groups[(m["source"], m["split"])].append(m)
    for (source, split), ms in sorted(groups.items()):
        pending: list[BuiltUnit] = []
        for i, m in enumerate(ms):
            pending.append(_load_unit(store, m))
            full = sum(u.num_scenarios for u in pending) >= batch_scenarios
            if full or i == len(ms) - 1:
                name = safe_name(f"{source}/{split}/{pending[0].key}/{len(pending)}")
                outputs = write_batch(store.path, source, split, name, pending)
                manifest = {"batch": name, "source": source, "split": split, "schema_version": SCHEMA_VERSION,
                            "ingest_version": "compacted", "settings": None,
                            "units": [{"key": u.key, "files": u.files, "input_hash": u.input_hash,
                                       "counts": u.counts} for u in pending],
                            "outputs": outputs}
                write_json_atomic(manifest, store.batch_manifest_path(source, name))
                out.batches += 1
                out.units += len(pending)
                out.scenarios += sum(u.num_scenarios for u in pending)
                pending = []
    new_outputs = {rel for m in store.batch_manifests() for rel in m["outputs"]}
    for m in store.unit_manifests():  # every old unit is now in a batch
        Path(m["_path"]).unlink()
        for rel in m["outputs"]:
            p = store.path / rel
            if rel not in new_outputs and p.exists():
                p.unlink()
    out.files_after = _parquet_files(store)
    return out
