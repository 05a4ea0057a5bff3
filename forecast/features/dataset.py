"""Scenes from the store, read on demand and cut into samples: shared by training, evaluation and the probes.

Memory is flat in the size of the data set: a ``SceneSet`` holds the scenario index (one
``ScenarioInfo`` per scenario: file and row group) and the sample plan (flat arrays, cached on
disk), and reads a scenario's row group when a sample needs it, through a bounded LRU cache. The plan is
made once per store and settings (``forecast.features.plans``: the columns it needs, one process per
core) and memory-mapped from ``STORE/_cache/plans``, so loader workers and DDP ranks share its pages.
Map rasters are drawn once per map and kept on disk (``STORE/_cache/rasters``, memory-mapped),
again behind a bounded cache. Each DataLoader worker and DDP rank reads only the samples its
sampler hands it.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import os
from collections import OrderedDict, defaultdict
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np

from forecast.config import to_dict
from forecast.data.atomic import atomic_write
from forecast.data.scenario import MapLocation, ScenarioInfo
from forecast.data.store import Store
from forecast.features import raster as R
from forecast.features.config import FeatureConfig
from forecast.features.plans import SamplePlan, plan_split
from forecast.features.raster import MapRaster
from forecast.features.sample import Sample, build_sample, plan_samples
from forecast.features.tracks import AgentTracks

PLAN_VERSION = "1"  # bump when plan_samples changes what it selects
# A plan's key covers the store's files and scenarios, so new data in a store (or a shared
# $FORECAST_CACHE) makes new plans every day; the least recently used beyond this many are removed.
MAX_CACHED_PLANS = 32
TRACKS_CACHE = 64  # scenarios held in memory per process
RASTER_CACHE = 32  # memory-mapped map rasters held open per process


def select_scenarios(store: Store, split: str, source: str | None = None, prefix: str | None = None) -> list[ScenarioInfo]:
    infos = store.scenarios(source=source, split=split)
    if prefix:
        infos = [i for i in infos if i.scenario_id.startswith(prefix)]
    return infos


class LRU:
    """A bounded cache: ``get(key, make)`` returns the cached value or ``make()``, evicting the oldest."""

    def __init__(self, size: int):
        self.size = size
        self.data: OrderedDict = OrderedDict()

    def get(self, key, make: Callable):
        if key in self.data:
            self.data.move_to_end(key)
            return self.data[key]
        value = make()
        self.data[key] = value
        if len(self.data) > self.size:
            self.data.popitem(last=False)
        return value


class _Tracks(Sequence):
    """``scenes.tracks[i]``: scenario ``i``'s AgentTracks, read on demand."""

    def __init__(self, scenes: SceneSet):
        self.scenes = scenes

    def __len__(self) -> int:
        return len(self.scenes.infos)

    def __getitem__(self, i):  # type: ignore[override]
        return self.scenes.load_tracks(int(i))


class _Maps:
    """``scenes.maps.get(map_id)``: the map's raster at the set's resolution (None without a map)."""

    def __init__(self, scenes: SceneSet):
        self.scenes = scenes

    def get(self, map_id: str | None, default=None) -> MapRaster | None:
        if not map_id or map_id not in self.scenes.map_where:
            return default
        return self.scenes.raster(map_id, self.scenes.cfg.raster.resolution)

    def __getitem__(self, map_id: str) -> MapRaster:
        m = self.get(map_id)
        if m is None:
            raise KeyError(map_id)
        return m

    def __contains__(self, map_id: object) -> bool:
        return map_id in self.scenes.map_where

    def __len__(self) -> int:
        return len(self.scenes.map_where)


def _cache_dir(store: Store, kind: str) -> Path | None:
    """``STORE/_cache/<kind>`` (or ``$FORECAST_CACHE/<kind>``) if writable, else None (no disk cache)."""
    root = Path(os.environ["FORECAST_CACHE"]) if os.environ.get("FORECAST_CACHE") else store.path / "_cache"
    path = root / kind
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError:
        return None
    return path if os.access(path, os.W_OK) else None


def prune_cache(cache: Path, keep: int) -> list[Path]:
    """Remove all but the ``keep`` most recently used entries (folders, by mtime) of ``cache``; hidden
    ones (being written) are left alone. A reader that loses a race with it rebuilds its entry."""
    import shutil

    entries = []
    for p in cache.iterdir():
        try:
            if p.is_dir() and not p.name.startswith("."):
                entries.append((p.stat().st_mtime_ns, p))
        except OSError:
            continue
    old = [p for _, p in sorted(entries, reverse=True)[keep:]]
    for p in old:
        shutil.rmtree(p, ignore_errors=True)
    return old


def _raster_version() -> str:
    # The drawing code is part of the key: a change to it redraws every cached raster.
    return hashlib.sha256(inspect.getsource(R).encode()).hexdigest()[:16]


class SceneSet:
    """Scenarios of one split, read on demand, and the plan of samples cut from them."""

    def __init__(self, store: Store, infos: list[ScenarioInfo], cfg: FeatureConfig, t0_stride: int,
                 max_samples: int | None = None, seed: int = 0, full_future: bool = False,
                 tracks_cache: int = TRACKS_CACHE, raster_cache: int = RASTER_CACHE):
        if not infos:
            raise ValueError(f"no scenarios selected in store {store.path}")
        self.cfg = cfg
        self.infos = infos
        self.store = store
        self.t0_stride, self.full_future = t0_stride, full_future
        self.map_where: dict[str, MapLocation | None] = {}
        uses: dict[str, int] = defaultdict(int)
        for info in infos:
            if info.map_id:
                uses[info.map_id] += 1
            if info.map_id and info.map_id not in self.map_where:
                self.map_where[info.map_id] = info.map_where
        # Rasters go to the disk cache only for maps that several scenarios share (SUMO networks,
        # ETH/UCY scenes): a map of one scenario (AV2's local maps) is drawn when its scenario is
        # read and kept in the in-memory LRU, rather than filling the disk with a raster per scenario.
        self.shared_maps = {m for m, n in uses.items() if n > 1}
        # A schema-1 store has no row-group index: reading one scenario scans its partition, so
        # its scenarios are all kept once read (the old behaviour; `forecast store compact` fixes it).
        self.indexed = all(i.tracks_file is not None and i.row_group is not None for i in infos)
        self._tracks = LRU(tracks_cache if self.indexed else len(infos))
        self._rasters = LRU(raster_cache)
        self._layers = LRU(raster_cache)
        self.tracks = _Tracks(self)
        self.maps = _Maps(self)
        plan = self._plan()
        if max_samples is not None and len(plan) > max_samples:
            keep = np.sort(np.random.default_rng(seed).choice(len(plan), max_samples, replace=False))
            plan = plan.take(keep)
        self.index: SamplePlan = plan

    def __len__(self) -> int:
        return len(self.index)

    def __getstate__(self) -> dict:
        # Loader workers start with empty caches: each reads only what its samples need.
        state = self.__dict__.copy()
        for k in ("_tracks", "_rasters", "_layers"):
            state[k] = LRU(self.__dict__[k].size)
        return state

    # -- scenarios ---------------------------------------------------------------------------
    def load_tracks(self, i: int) -> AgentTracks:
        def make() -> AgentTracks:
            scen = self.store.load_scenarios([self.infos[i]])[0]
            return AgentTracks.from_scenario(scen).resample(self.cfg.dt)

        return self._tracks.get(i, make)

    def _iter_tracks(self) -> Iterator[tuple[int, AgentTracks]]:
        """Every scenario of a store without a row-group index (schema 1): one scan per partition, all kept
        (reading one scenario again would scan its partition again)."""
        for i, scen in enumerate(self.store.load_scenarios(self.infos)):
            tr = AgentTracks.from_scenario(scen).resample(self.cfg.dt)
            self._tracks.get(i, lambda tr=tr: tr)
            yield i, tr

    def _plan_key(self) -> str:
        files: dict[str, list[int]] = defaultdict(list)
        for info in self.infos:
            files[info.tracks_file or f"{info.source}/{info.split}"].append(0)
        stamp = {}
        for rel in files:
            p = self.store.path / rel
            stamp[rel] = [p.stat().st_size, p.stat().st_mtime_ns] if p.is_file() else None
        body = {"v": PLAN_VERSION, "cfg": to_dict(self.cfg), "stride": self.t0_stride, "full": self.full_future,
                "files": stamp, "ids": hashlib.sha256("\n".join(
                    f"{i.scenario_id}|{i.tracks_file}|{i.row_group}|{i.row_offset}|{i.num_rows}" for i in self.infos).encode()).hexdigest()}
        return hashlib.sha256(json.dumps(body, sort_keys=True, default=str).encode()).hexdigest()[:32]

    def _plan(self) -> SamplePlan:
        """The samples of every scenario, from the disk cache when the same plan was made before."""
        cache = _cache_dir(self.store, "plans") if self.indexed else None
        path = cache / self._plan_key() if cache else None
        if path is not None and path.is_dir():
            try:
                plan = SamplePlan.load(path)
                os.utime(path)  # used now: pruning goes by last use
                return plan
            except (OSError, ValueError, KeyError):
                pass  # a damaged cache file is rebuilt
        if self.indexed:  # only the columns planning needs, a chunk of row groups at a time, one process per core
            plan = plan_split(self.store, self.infos, self.cfg, self.t0_stride, self.full_future)
        else:
            plan = SamplePlan.concat([SamplePlan.from_indices(plan_samples(tr, i, self.cfg, self.t0_stride,
                                                                           full_future=self.full_future))
                                      for i, tr in self._iter_tracks()])
        if path is not None:
            try:
                plan.save(path)
                prune_cache(path.parent, MAX_CACHED_PLANS)
                return SamplePlan.load(path)
            except OSError:
                pass
        return plan

    # -- maps -------------------------------------------------------------------------------
    def map_layers(self, map_id: str) -> dict:
        """Shapely layers of a map (for off-road checks and pictures), behind a bounded cache."""
        return self._layers.get(map_id, lambda: self.store.load_map(map_id, self.map_where.get(map_id)))

    def raster(self, map_id: str, resolution: float) -> MapRaster:
        """The map drawn at ``resolution`` m/px: memory-mapped from the disk cache, drawn on a miss."""
        return self._rasters.get((map_id, resolution), lambda: self._load_raster(map_id, resolution))

    def _load_raster(self, map_id: str, resolution: float) -> MapRaster:
        where = self.map_where.get(map_id)
        shared = map_id in self.shared_maps
        cache = _cache_dir(self.store, "rasters") if where is not None and shared else None
        if cache is None:  # one scenario's map, a read-only store, or a schema-1 map (no stable address)
            return R.rasterize_map_layers(self.map_layers(map_id), resolution)
        src = self.store.path / where[0]
        stamp = [src.stat().st_size, src.stat().st_mtime_ns] if src.is_file() else None
        key = hashlib.sha256(json.dumps([map_id, where, stamp, resolution, _raster_version()]).encode()).hexdigest()[:32]
        npy, meta = cache / f"{key}.npy", cache / f"{key}.json"
        if npy.is_file() and meta.is_file():
            try:
                m = json.loads(meta.read_text())
                return MapRaster(np.load(npy, mmap_mode="r"), m["x0"], m["y0"], m["resolution"])
            except (OSError, ValueError, KeyError):
                pass  # redrawn below
        r = R.rasterize_map_layers(self.map_layers(map_id), resolution)

        def write(tmp: Path) -> None:
            with open(tmp, "wb") as fh:
                np.save(fh, r.image)

        atomic_write(npy, write)
        atomic_write(meta, lambda tmp: tmp.write_text(json.dumps({"x0": r.x0, "y0": r.y0, "resolution": r.resolution})))
        return MapRaster(np.load(npy, mmap_mode="r"), r.x0, r.y0, r.resolution)

    # -- samples ----------------------------------------------------------------------------
    def sample(self, k: int) -> Sample:
        idx = self.index[k]
        info = self.infos[idx.scenario]
        s = build_sample(self.tracks[idx.scenario], idx.t0, self.cfg, self.maps.get(info.map_id), idx.agents,
                         idx.agents[0], scenario_id=info.scenario_id)
        s.target_mask &= idx.scored
        return s
