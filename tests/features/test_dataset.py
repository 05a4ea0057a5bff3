"""The streaming SceneSet: same samples as building everything in memory, bounded caches, disk caches, sampler."""

from __future__ import annotations

import pickle
import shutil
import time

import numpy as np
import pytest

from forecast.data.ingest import run_ingest
from forecast.data.sources.sumo import SumoAdapter
from forecast.data.store import Store
from forecast.features.config import FeatureConfig, RasterConfig
from forecast.features.dataset import SceneSet, select_scenarios
from forecast.features.raster import rasterize_map_layers
from forecast.features.sample import build_sample, plan_samples
from forecast.features.tracks import AgentTracks
from forecast.training.sampler import BlockShuffleSampler

CFG = FeatureConfig(history_steps=10, future_steps=10, max_agents=8, raster=RasterConfig(size=16, resolution=2.0))


@pytest.fixture(scope="module")
def store(sumo_runs, tmp_path_factory):
    """The tiny runs with small batches and row groups of two scenarios, so that scenarios span
    several files and row groups, and share row groups."""
    from forecast.data import batch

    s = Store(tmp_path_factory.mktemp("ds") / "store")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(batch, "GROUP_SCENARIOS", 2)
        run_ingest(SumoAdapter(5.0), sumo_runs, s, progress=False, batch_scenarios=3)
    return s


def _reference(store: Store, split: str):
    """The old in-memory path: every scenario loaded and planned up front."""
    infos = select_scenarios(store, split)
    tracks = [AgentTracks.from_scenario(s).resample(CFG.dt) for s in store.load_scenarios(infos)]
    rasters = {i.map_id: rasterize_map_layers(store.load_map(i.map_id), CFG.raster.resolution) for i in infos}
    index = [s for i, tr in enumerate(tracks) for s in plan_samples(tr, i, CFG, 10, full_future=True)]
    return infos, tracks, rasters, index


def _same(a, b) -> None:
    for f in ("hist", "hist_mask", "agent_type", "pose", "raster", "target_mask", "future", "future_mask", "origin"):
        np.testing.assert_array_equal(getattr(a, f), getattr(b, f), err_msg=f)


def test_streaming_equals_in_memory(store):
    infos, tracks, rasters, index = _reference(store, "train")
    scenes = SceneSet(store, infos, CFG, 10, full_future=True, tracks_cache=2)
    assert len(scenes) == len(index) > 0 and len({(i.tracks_file, i.row_group) for i in infos}) > 1
    assert any(i.row_offset > 0 for i in infos)  # row groups of several scenarios
    for k in range(len(scenes)):
        idx = index[k]
        assert (scenes.index[k].scenario, scenes.index[k].t0) == (idx.scenario, idx.t0)
        np.testing.assert_array_equal(scenes.index[k].agents, idx.agents)
        ref = build_sample(tracks[idx.scenario], idx.t0, CFG, rasters[infos[idx.scenario].map_id], idx.agents,
                           idx.agents[0], scenario_id=infos[idx.scenario].scenario_id)
        ref.target_mask &= idx.scored
        _same(scenes.sample(k), ref)
    assert len(scenes._tracks.data) <= 2  # bounded: the scenarios are not all held


def test_disk_caches(store):
    infos = select_scenarios(store, "val")
    first = SceneSet(store, infos, CFG, 10, full_future=True)
    plans = [p for p in (store.path / "_cache" / "plans").iterdir() if not p.name.startswith(".")]
    assert plans and all((p / "agents.npy").is_file() for p in plans)
    again = SceneSet(store, infos, CFG, 10, full_future=True)  # the plan comes from the disk cache
    np.testing.assert_array_equal(first.index.agents, again.index.agents)
    np.testing.assert_array_equal(first.index.t0, again.index.t0)
    assert isinstance(again.index.agents, np.memmap)  # shared pages, not a copy per process
    m = again.maps.get(infos[0].map_id)
    assert isinstance(m.image, np.memmap)  # memory-mapped from STORE/_cache/rasters
    np.testing.assert_array_equal(np.asarray(m.image),
                                  rasterize_map_layers(store.load_map(infos[0].map_id), CFG.raster.resolution).image)
    _same(first.sample(0), again.sample(0))
    # another stride is another plan
    other = SceneSet(store, infos, CFG, 5, full_future=True)
    assert len(other) > len(first)


def test_subset_is_seeded_and_workers_start_empty(store):
    infos = select_scenarios(store, "train")
    a = SceneSet(store, infos, CFG, 10, max_samples=5, seed=1)
    b = SceneSet(store, infos, CFG, 10, max_samples=5, seed=1)
    assert len(a) == 5 and [(i.scenario, i.t0) for i in a.index] == [(i.scenario, i.t0) for i in b.index]
    a.sample(0)
    clone = pickle.loads(pickle.dumps(a))  # what a loader worker receives
    assert not clone._tracks.data and len(a._tracks.data) == 1
    _same(clone.sample(3), a.sample(3))


def test_legacy_store_is_read(sumo_store):
    """The session store is read whatever its layout; the SceneSet works on it."""
    infos = select_scenarios(sumo_store, "test")
    scenes = SceneSet(sumo_store, infos, CFG, 10, full_future=True)
    assert len(scenes) > 0 and scenes.sample(0).raster.shape[1:] == (len(CFG.raster.channels), 16, 16) == (9, 16, 16)


def test_block_sampler_is_seeded_local_and_split_across_ranks():
    scenario_of = np.repeat(np.arange(40), 5)
    s = BlockShuffleSampler(scenario_of, seed=3, block=4)
    order = list(s)
    assert sorted(order) == list(range(200)) and order == list(BlockShuffleSampler(scenario_of, seed=3, block=4))
    # each run of 20 samples holds the samples of exactly 4 scenarios
    for c in range(0, 200, 20):
        assert len(set(scenario_of[order[c : c + 20]])) == 4
    s.set_epoch(1)
    assert list(s) != order
    ranks = [list(BlockShuffleSampler(scenario_of[:199], seed=3, block=4, num_replicas=3, rank=r)) for r in range(3)]
    assert len({len(r) for r in ranks}) == 1 and set().union(*map(set, ranks)) == set(range(199))
    assert list(BlockShuffleSampler(scenario_of, shuffle=False)) == list(range(200))


def test_one_scenario_maps_are_not_cached_on_disk(tmp_path):
    """AV2-style local maps (one per scenario) are drawn in memory; shared maps go to the disk cache."""
    from forecast.data.sources.av2 import Av2Adapter
    from tests.data.test_store_batches import _av2_inputs

    s = Store(tmp_path / "store")
    run_ingest(Av2Adapter(), _av2_inputs(tmp_path / "in"), s, progress=False)
    cfg = FeatureConfig(history_steps=10, future_steps=10, raster=RasterConfig(size=16, resolution=1.0))
    scenes = SceneSet(s, select_scenarios(s, "train"), cfg, 10)
    assert not scenes.shared_maps and len(scenes) > 0
    m = scenes.maps.get(scenes.infos[0].map_id)
    assert not isinstance(m.image, np.memmap) and m.image.any()
    assert not list((s.path / "_cache").glob("rasters/*.npy"))


def test_plan_cache_keeps_the_most_recently_used(store, monkeypatch):
    """Every change to a store's data makes new plans: the cache keeps the last used ones, not all."""
    import forecast.features.dataset as D

    monkeypatch.setattr(D, "MAX_CACHED_PLANS", 2)
    infos = select_scenarios(store, "val")
    cache = store.path / "_cache" / "plans"

    def plans() -> set[str]:
        return {p.name for p in cache.iterdir() if not p.name.startswith(".")}

    shutil.rmtree(cache, ignore_errors=True)
    SceneSet(store, infos, CFG, 10, full_future=True)
    first = plans()
    time.sleep(0.01)
    SceneSet(store, infos, CFG, 5, full_future=True)
    time.sleep(0.01)
    SceneSet(store, infos, CFG, 10, full_future=True)  # the first plan, used again: the most recent now
    time.sleep(0.01)
    SceneSet(store, infos, CFG, 20, full_future=True)
    kept = plans()
    assert len(kept) == 2 and first <= kept  # the stride-5 plan, least recently used, went
