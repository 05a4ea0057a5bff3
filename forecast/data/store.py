"""The canonical store: a directory of Parquet tables that any Arrow tool can read.

Layout::

    STORE/
      scenarios/source=<s>/split=<p>/<unit>.parquet   one row per scenario
      tracks/source=<s>/split=<p>/<unit>.parquet      one row per agent state
      maps/<map>.parquet                              one row per map feature (WKB geometry)
      quarantine/source=<s>/<unit>.parquet            rejected rows with their reasons
      _manifest/<source>/<unit>.json                  what each input unit produced, and its hash

A *unit* is one input (a SUMO run, an AV2 scenario, an ETH/UCY file). Units are written
independently, so shards of one ingestion never touch the same file.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import shapely

from forecast.data.scenario import Scenario, ScenarioInfo, scenarios_from_tracks
from forecast.data.schema import MAP_SCHEMA, SCENARIOS_SCHEMA, TRACKS_SCHEMA

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
        table = ds.dataset(self.scenarios_dir, format="parquet", partitioning=_HIVE).to_table()
        return table.sort_by("scenario_id")

    def tracks_dataset(self) -> ds.Dataset:
        return ds.dataset(self.tracks_dir, format="parquet", partitioning=_HIVE)

    def quarantine_table(self) -> pa.Table:
        if not self.quarantine_dir.is_dir():
            return pa.table({})
        return ds.dataset(self.quarantine_dir, format="parquet", partitioning="hive").to_table()

    def map_table(self, map_id: str) -> pa.Table:
        path = self.maps_dir / f"{safe_name(map_id)}.parquet"
        if not path.exists():
            raise FileNotFoundError(f"map {map_id!r} is not in store {self.path} (looked for {path})")
        import pyarrow.parquet as pq

        return pq.read_table(path, schema=MAP_SCHEMA)

    def map_ids(self) -> list[str]:
        if not self.maps_dir.is_dir():
            return []
        return sorted(set(ds.dataset(self.maps_dir, format="parquet").to_table(columns=["map_id"])["map_id"].to_pylist()))

    # -- typed access ------------------------------------------------------------------
    def scenarios(self, source: str | None = None, split: str | None = None) -> list[ScenarioInfo]:
        """Every scenario (optionally of one source and/or split), sorted by id."""
        table = self.scenarios_table()
        rows = table.to_pylist()
        infos = [ScenarioInfo(**{k: r[k] for k in ScenarioInfo.__dataclass_fields__}) for r in rows]
        return [i for i in infos if (source is None or i.source == source) and (split is None or i.split == split)]

    def load_scenarios(self, infos: Iterable[ScenarioInfo]) -> list[Scenario]:
        """Load many scenarios with one scan per (source, split) partition; order follows ``infos``."""
        infos = list(infos)
        by_part: dict[tuple[str, str], list[ScenarioInfo]] = defaultdict(list)
        for info in infos:
            by_part[(info.source, info.split)].append(info)
        loaded: dict[str, Scenario] = {}
        dataset = self.tracks_dataset()
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

    def load_map(self, map_id: str) -> dict[str, list[shapely.Geometry]]:
        """The map's features as shapely geometries, grouped by layer."""
        table = self.map_table(map_id)
        geoms = shapely.from_wkb(np.asarray(table.column("geometry").to_pylist(), dtype=object))
        layers: dict[str, list[shapely.Geometry]] = defaultdict(list)
        for layer, g in zip(table.column("layer").to_pylist(), geoms, strict=True):
            layers[layer].append(g)
        return dict(layers)

    def manifests(self) -> list[dict]:
        if not self.manifest_dir.is_dir():
            return []
        return [json.loads(p.read_text()) for p in sorted(self.manifest_dir.rglob("*.json"))]

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
