"""Scenes from the store, held in memory, cut into samples: shared by training and evaluation.

The store is read once (one scan per partition); map rasters are drawn once per map; samples
are built on demand by ``build_sample``, so the hot loop never touches Parquet.
"""

from __future__ import annotations

import numpy as np

from forecast.data.scenario import ScenarioInfo
from forecast.data.store import Store
from forecast.features.config import FeatureConfig
from forecast.features.raster import MapRaster, rasterize_map_layers
from forecast.features.sample import Sample, SampleIndex, build_sample, plan_samples
from forecast.features.tracks import AgentTracks


def select_scenarios(store: Store, split: str, source: str | None = None, prefix: str | None = None) -> list[ScenarioInfo]:
    infos = store.scenarios(source=source, split=split)
    if prefix:
        infos = [i for i in infos if i.scenario_id.startswith(prefix)]
    return infos


class SceneSet:
    """Scenarios of one split, their map rasters, and the plan of samples cut from them."""

    def __init__(self, store: Store, infos: list[ScenarioInfo], cfg: FeatureConfig, t0_stride: int,
                 max_samples: int | None = None, seed: int = 0, full_future: bool = False):
        if not infos:
            raise ValueError(f"no scenarios selected in store {store.path}")
        self.cfg = cfg
        self.infos = infos
        self.tracks = [AgentTracks.from_scenario(s).resample(cfg.dt) for s in store.load_scenarios(infos)]
        self.maps: dict[str, MapRaster | None] = {}
        for info in infos:
            if info.map_id and info.map_id not in self.maps:
                self.maps[info.map_id] = rasterize_map_layers(store.load_map(info.map_id), cfg.raster.resolution)
        self.map_layers_cache: dict[str, dict] = {}
        self.store = store
        index: list[SampleIndex] = []
        for i, tr in enumerate(self.tracks):
            index += plan_samples(tr, i, cfg, t0_stride, full_future=full_future)
        if max_samples is not None and len(index) > max_samples:
            keep = np.sort(np.random.default_rng(seed).choice(len(index), max_samples, replace=False))
            index = [index[k] for k in keep]
        self.index = index

    def __len__(self) -> int:
        return len(self.index)

    def sample(self, k: int) -> Sample:
        idx = self.index[k]
        info = self.infos[idx.scenario]
        s = build_sample(self.tracks[idx.scenario], idx.t0, self.cfg, self.maps.get(info.map_id) if info.map_id else None,
                         idx.agents, idx.agents[0], scenario_id=info.scenario_id)
        s.target_mask &= idx.scored
        return s

    def map_layers(self, map_id: str) -> dict:
        """Shapely layers of a map (for off-road checks and pictures), loaded once."""
        if map_id not in self.map_layers_cache:
            self.map_layers_cache[map_id] = self.store.load_map(map_id)
        return self.map_layers_cache[map_id]
