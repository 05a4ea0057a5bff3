"""The canonical store: a directory of Parquet tables that any Arrow tool can read.

Layout (schema 3; ``forecast.data.batch`` writes it)::

    STORE/
      scenarios/source=<s>/split=<p>/<batch>.parquet  one row per scenario: the index (file, row group, rows)
      tracks/source=<s>/split=<p>/<batch>.parquet     one row per agent state, a few scenarios per row group
      maps/source=<s>/<batch>.parquet                 one row per map feature (WKB), a few maps per row group
      quarantine/source=<s>/<batch>.parquet           rejected rows with their reasons
      _manifest/<source>/<batch>.json                 the batch's units, their input hashes and counts,
                                                      its outputs' sha256

A *unit* is one input (a SUMO run, an AV2 scenario, an ETH/UCY file); a *batch* is a run of
units written together (about 5,000 scenarios). Shards of one ingestion write disjoint batches.
A schema-2 store (one row group per scenario and per map, no row offsets) is read as it is; a store
written by schema 1 (three files per unit, maps/<map>.parquet) is still read, by filtered scans, and
``forecast store compact`` rewrites it as batches.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import OrderedDict, defaultdict
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import shapely

from forecast.data.scenario import MapLocation, Scenario, ScenarioInfo, scenarios_from_tracks
from forecast.data.schema import MAP_SCHEMA, SCENARIOS_SCHEMA, TRACKS_SCHEMA

FOOTER_CACHE = 8  # parsed Parquet footers kept per process (a few MB each for a full batch file)
GROUP_CACHE = 4  # decoded row groups kept per process, for readers that go through a file in order (evaluation)
TRACK_STRINGS = ("scenario_id", "track_id", "agent_type", "source_type")
_HIVE = ds.partitioning(pa.schema([("source", pa.string()), ("split", pa.string())]), flavor="hive")


def safe_name(key: str) -> str:
    """A file-name-safe, collision-free name for a unit or map key."""
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", key).strip("_")[:80]
    return f"{stem}-{hashlib.sha256(key.encode()).hexdigest()[:8]}"


class Store:
    """Read access to a store directory.

    >>> store = Store("runs/demo/store")            # doctest: +SKIP
    >>> infos = store.scenarios(split="val")        # doctest: +SKIP
    >>> scen = store.load_scenario(infos[0].scenario_id)  # doctest: +SKIP
    >>> scen.xy.shape                               # [A, T, 2]  # doctest: +SKIP
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._maps: dict[str, MapLocation] | None = None
        self._footers: OrderedDict[Path, tuple[tuple[int, int], pq.FileMetaData]] = OrderedDict()
        self._groups: OrderedDict[tuple, pa.Table] = OrderedDict()

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_footers"] = OrderedDict()  # a loader worker parses the footers it needs itself
        state["_groups"] = OrderedDict()
        return state

    def row_group(self, rel: str, group: int, read_dictionary: tuple[str, ...] = ()) -> pa.Table:
        """Row group ``group`` of ``STORE/rel``, every column, through a small cache of decoded groups
        (a group holds several scenarios; evaluation reads a file's scenarios in order).
        ``read_dictionary``: string columns kept as Parquet's dictionaries (a third of the decoding time)."""
        st = (self.path / rel).stat()
        key = (rel, int(group), st.st_size, st.st_mtime_ns, read_dictionary)  # a rewritten file is read again
        hit = self._groups.get(key)
        if hit is not None:
            self._groups.move_to_end(key)
            return hit
        table = self.parquet_file(rel, read_dictionary=list(read_dictionary) or None).read_row_group(int(group))
        self._groups[key] = table
        while len(self._groups) > GROUP_CACHE:
            self._groups.popitem(last=False)
        return table

    def parquet_file(self, rel: str | Path, read_dictionary: list[str] | None = None,
                     pre_buffer: bool = True) -> pq.ParquetFile:
        """``STORE/rel`` opened with its footer parsed once per process (a batch file's footer indexes
        thousands of row groups: about 1 MB and 7 ms to parse at 800), for as long as it is unchanged.
        ``read_dictionary``: string columns to read as Arrow dictionaries (as Parquet encodes them);
        ``pre_buffer=False``: no coalescing buffer (a tenth less CPU for many small row groups of a local file)."""
        path = self.path / rel
        st = path.stat()
        stamp = (st.st_size, st.st_mtime_ns)
        hit = self._footers.get(path)
        if hit is not None and hit[0] == stamp:
            self._footers.move_to_end(path)
            return pq.ParquetFile(path, metadata=hit[1], read_dictionary=read_dictionary, pre_buffer=pre_buffer)
        pf = pq.ParquetFile(path, read_dictionary=read_dictionary, pre_buffer=pre_buffer)
        self._footers[path] = (stamp, pf.metadata)
        while len(self._footers) > FOOTER_CACHE:
            self._footers.popitem(last=False)
        return pf

    # -- paths -------------------------------------------------------------------------
    @property
    def tracks_dir(self) -> Path:
        return self.path / "tracks"

    @property
    def scenarios_dir(self) -> Path:
        return self.path / "scenarios"

    @property
    def maps_dir(self) -> Path:
        return self.path / "maps"

    @property
    def quarantine_dir(self) -> Path:
        return self.path / "quarantine"

    @property
    def manifest_dir(self) -> Path:
        return self.path / "_manifest"

    def exists(self) -> bool:
        return self.scenarios_dir.is_dir()

    # -- tables ------------------------------------------------------------------------
    def scenarios_table(self) -> pa.Table:
        if not self.scenarios_dir.is_dir():
            return SCENARIOS_SCHEMA.empty_table()
        # The explicit schema reads a schema-1 file too (its index columns come back null).
        table = ds.dataset(self.scenarios_dir, format="parquet", partitioning=_HIVE, schema=SCENARIOS_SCHEMA).to_table()
        return table.sort_by("scenario_id")

    def tracks_dataset(self) -> ds.Dataset:
        return ds.dataset(self.tracks_dir, format="parquet", partitioning=_HIVE)

    def quarantine_table(self) -> pa.Table:
        if not self.quarantine_dir.is_dir():
            return pa.table({})
        return ds.dataset(self.quarantine_dir, format="parquet", partitioning="hive").to_table()

    def map_table(self, map_id: str, where: MapLocation | None = None) -> pa.Table:
        """A map's rows. ``where``: its location from the index (``ScenarioInfo.map_where``), else looked up."""
        where = where or self._map_index().get(map_id)
        if where is not None:
            table = self.row_group(where.file, where.row_group)
            if where.offset is not None:
                table = table.slice(where.offset, where.num_rows)
            table = table.cast(MAP_SCHEMA)
            # identical maps are stored once, under the first map_id that had them
            return table.set_column(0, "map_id", pa.array([map_id] * table.num_rows, pa.string()))
        path = self.maps_dir / f"{safe_name(map_id)}.parquet"  # schema 1
        if path.exists():
            return pq.read_table(path, schema=MAP_SCHEMA)
        # a map no scenario refers to (e.g. beside an unreadable track file): scan for it
        table = ds.dataset(self.maps_dir, format="parquet", schema=MAP_SCHEMA).to_table(
            filter=pc.field("map_id") == map_id) if self.maps_dir.is_dir() else MAP_SCHEMA.empty_table()
        if table.num_rows == 0:
            raise FileNotFoundError(f"map {map_id!r} is not in store {self.path}")
        return table

    def _map_index(self) -> dict[str, MapLocation]:
        if self._maps is None:
            t = self.scenarios_table().select(["map_id", "map_file", "map_row_group", "map_row_offset", "map_num_rows"])
            self._maps = {m: MapLocation(f, int(g), o, n)
                          for m, f, g, o, n in zip(*(t.column(c).to_pylist() for c in t.column_names), strict=True)
                          if m and f}
        return self._maps

    def map_ids(self) -> list[str]:
        ids = {m for m in self.scenarios_table().column("map_id").to_pylist() if m}
        if self.maps_dir.is_dir():  # maps stored without a scenario, and schema-1 maps
            table = ds.dataset(self.maps_dir, format="parquet", schema=MAP_SCHEMA).to_table(columns=["map_id"])
            ids |= set(pc.unique(table["map_id"]).to_pylist())
        return sorted(ids)

    # -- typed access ------------------------------------------------------------------
    def scenarios(self, source: str | None = None, split: str | None = None) -> list[ScenarioInfo]:
        """Every scenario (optionally of one source and/or split), sorted by id."""
        table = self.scenarios_table()
        if source is not None:
            table = table.filter(pc.field("source") == source)
        if split is not None:
            table = table.filter(pc.field("split") == split)
        # Column by column, not table.to_pylist(): no dict per row, and one str object per distinct
        # value of the columns that repeat (1.1 kB of Python objects per scenario before, 0.64 kB now).
        names = list(ScenarioInfo.__dataclass_fields__)
        columns = [table.column(k).to_pylist() for k in names]
        for k in ("source", "split", "tracks_file", "map_file", "dt"):
            col = columns[names.index(k)]
            shared: dict = {}
            columns[names.index(k)] = [shared.setdefault(v, v) for v in col]
        return [ScenarioInfo(*row) for row in zip(*columns, strict=True)]

    def load_scenarios(self, infos: Iterable[ScenarioInfo]) -> list[Scenario]:
        """Load many scenarios; order follows ``infos``.

        Indexed scenarios (schemas 2 and 3) are read by row group (``row_group``, cached) and sliced to
        their rows; others by one filtered scan per (source, split) partition.
        """
        infos = list(infos)
        by_file: dict[str, list[ScenarioInfo]] = defaultdict(list)
        by_part: dict[tuple[str, str], list[ScenarioInfo]] = defaultdict(list)
        for info in infos:
            if info.tracks_file is not None and info.row_group is not None:
                by_file[info.tracks_file].append(info)
            else:
                by_part[(info.source, info.split)].append(info)
        loaded: dict[str, Scenario] = {}
        for rel, part in by_file.items():
            slices = []
            unique = {i.scenario_id: i for i in part}.values()
            for info in sorted(unique, key=lambda i: (int(i.row_group), i.rows[0])):
                table = self.row_group(rel, info.row_group, TRACK_STRINGS)
                first, n = info.rows
                if n is None:  # schema 2: the scenario's own row group (checked: an index without rows)
                    table = table.filter(pc.equal(table.column("scenario_id"), info.scenario_id))
                slices.append(table if n is None else table.slice(first, n))
            table = pa.concat_tables(slices).select(TRACKS_SCHEMA.names)
            for scen in scenarios_from_tracks(table, {i.scenario_id: i for i in part}):
                loaded[scen.info.scenario_id] = scen
        dataset = self.tracks_dataset() if by_part else None
        for (source, split), part in by_part.items():
            ids = pa.array([i.scenario_id for i in part])
            flt = (pc.field("source") == source) & (pc.field("split") == split) & pc.field("scenario_id").isin(ids)
            table = dataset.to_table(filter=flt, columns=TRACKS_SCHEMA.names)
            for scen in scenarios_from_tracks(table, {i.scenario_id: i for i in part}):
                loaded[scen.info.scenario_id] = scen
        return [loaded[i.scenario_id] for i in infos]

    def load_scenario(self, scenario_id: str) -> Scenario:
        match = [i for i in self.scenarios() if i.scenario_id == scenario_id]
        if not match:
            raise KeyError(f"scenario {scenario_id!r} is not in store {self.path}")
        return self.load_scenarios(match)[0]

    def load_map(self, map_id: str, where: MapLocation | None = None) -> dict[str, list[shapely.Geometry]]:
        """The map's features as shapely geometries, grouped by layer."""
        table = self.map_table(map_id, where)
        geoms = shapely.from_wkb(np.asarray(table.column("geometry").to_pylist(), dtype=object))
        layers: dict[str, list[shapely.Geometry]] = defaultdict(list)
        for layer, g in zip(table.column("layer").to_pylist(), geoms, strict=True):
            layers[layer].append(g)
        return dict(layers)

    def _manifest_files(self, source: str | None = None) -> list[tuple[Path, dict]]:
        root = self.manifest_dir if source is None else self.manifest_dir / source
        if not root.is_dir():
            return []
        out = []
        for p in sorted(root.rglob("*.json")):
            try:
                m = json.loads(p.read_text())
            except (OSError, json.JSONDecodeError):
                m = {"broken": True}  # a damaged manifest commits nothing: its batch is redone
            if isinstance(m, dict):
                m["_path"] = str(p)
                out.append((p, m))
        return out

    def batch_manifests(self, source: str | None = None) -> list[dict]:
        """Committed batches (schemas 2 and 3): ``{"batch", "units": [{"key", "input_hash", "counts"}], "outputs"}``."""
        return [m for _, m in self._manifest_files(source) if "units" in m]

    def unit_manifests(self, source: str | None = None) -> list[dict]:
        """Per-unit manifests of a schema-1 store."""
        return [m for _, m in self._manifest_files(source) if "unit" in m and "units" not in m]

    def manifests(self) -> list[dict]:
        """One record per committed input unit: ``{"unit", "source", "split", "input_hash", "counts"}``."""
        out = [m for m in self.unit_manifests()]
        for m in self.batch_manifests():
            out += [{"unit": u["key"], "source": m["source"], "split": m["split"], "input_hash": u["input_hash"],
                     "counts": u["counts"], "batch": m["batch"]} for u in m["units"]]
        return sorted(out, key=lambda m: m["unit"])

    def batch_manifest_path(self, source: str, batch: str) -> Path:
        return self.manifest_dir / source / f"{batch}.json"

    def remove_batch(self, manifest: dict) -> None:
        """Delete a committed batch (or schema-1 unit): its manifest first, then its outputs."""
        path = Path(manifest["_path"])
        if path.exists():
            path.unlink()
        outputs = manifest.get("outputs") or {}
        for rel in outputs:  # a dict (schemas 2, 3) or a list (schema 1) of relative paths
            p = self.path / rel
            if p.exists():
                p.unlink()
        self._maps = None

    def remove_files(self, rels) -> None:
        """Delete these files (paths relative to the store) where present, with the hidden ``.NAME.writing``
        file each leaves while it is written."""
        for rel in rels:
            p = self.path / rel
            p.unlink(missing_ok=True)
            p.with_name(f".{p.name}.writing").unlink(missing_ok=True)
        self._maps = None

    def summary(self) -> dict:
        """Counts for a terminal summary: scenarios, agents and rows per source/split/class."""
        scen = self.scenarios_table()
        out: dict = {"path": str(self.path), "scenarios": {}, "rows": {}, "agents_by_type": {}, "maps": len(self.map_ids())}
        if scen.num_rows == 0:
            return out
        for r in scen.group_by(["source", "split"]).aggregate([("scenario_id", "count")]).to_pylist():
            out["scenarios"][f"{r['source']}/{r['split']}"] = r["scenario_id_count"]
        tracks = self.tracks_dataset().to_table(columns=["source", "split", "scenario_id", "track_id", "agent_type"])
        for r in tracks.group_by(["source", "split"]).aggregate([("track_id", "count")]).to_pylist():
            out["rows"][f"{r['source']}/{r['split']}"] = r["track_id_count"]
        agents = tracks.group_by(["scenario_id", "track_id", "agent_type"]).aggregate([])
        for r in agents.group_by("agent_type").aggregate([("track_id", "count")]).to_pylist():
            out["agents_by_type"][r["agent_type"]] = r["track_id_count"]
        return out
