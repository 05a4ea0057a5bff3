"""Agent rasters per second per core: map crop (affine warp of the pre-drawn map) plus motion channels
(the scene's motion drawn once per sample, cropped per agent).

Usage: python bench/raster.py [--size 128] [--resolution 0.5] [--json PATH]
Goal (issue 3): >= 2,000 rasters per second per core at 128 x 128.
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import cv2  # noqa: E402
import numpy as np  # noqa: E402

cv2.setNumThreads(1)

from _common import RESULTS, best_of, report  # noqa: E402

from forecast.data.ingest import run_ingest  # noqa: E402
from forecast.data.sources.sumo import SumoAdapter  # noqa: E402
from forecast.data.store import Store  # noqa: E402
from forecast.features.config import FeatureConfig, RasterConfig  # noqa: E402
from forecast.features.raster import crop_map, rasterize_agents, rasterize_map_layers  # noqa: E402
from forecast.features.sample import build_sample, plan_samples  # noqa: E402
from forecast.features.tracks import AgentTracks  # noqa: E402
from forecast.sim.sumo import DemandConfig, NetworkConfig, SimConfig, simulate  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--json")
    args = ap.parse_args()
    sim = SimConfig(seed=1, duration_s=120, warmup_s=30, demand=DemandConfig(car_period=1.2, bike_period=2.5, ped_period=1.0),
                    networks=[NetworkConfig("bench_grid", "train", "grid", {"grid.number": 4, "grid.length": 120}, 1)])
    run = simulate(sim, RESULTS / "sim_raster", progress=False)[0]
    store = Store(RESULTS / "store_raster")
    run_ingest(SumoAdapter(10.0), run.parent, store, progress=False)
    info = store.scenarios()[len(store.scenarios()) // 2]
    tracks = AgentTracks.from_scenario(store.load_scenario(info.scenario_id))
    layers = store.load_map(info.map_id)
    rows = []
    for size, res in ((128, 0.5), (64, 0.5), (48, 0.75)):
        cfg = FeatureConfig(raster=RasterConfig(size=size, resolution=res, ahead=8.0), max_agents=64)
        t_map = best_of(lambda res=res: rasterize_map_layers(layers, res), 2)
        m = rasterize_map_layers(layers, res)
        plan = plan_samples(tracks, 0, cfg, 20)[:8]
        samples = [(p.t0, p.agents) for p in plan]
        n = sum(len(a) for _, a in samples)

        def crops(samples=samples, cfg=cfg, m=m):
            for t0, agents in samples:
                xy = tracks.xy[agents, t0]
                crop_map(m, xy, np.zeros(len(agents)), cfg.raster)

        def rasters(samples=samples, cfg=cfg, m=m):
            for t0, agents in samples:
                s = slice(t0 - 19, t0 + 1)
                rasterize_agents(m, np.nan_to_num(tracks.xy[agents, s]), tracks.present[agents, s],
                                 tracks.agent_type[agents], tracks.xy[agents, t0], np.zeros(len(agents)), cfg.raster)

        def full_samples(samples=samples, cfg=cfg, m=m):
            for t0, agents in samples:
                build_sample(tracks, t0, cfg, m, agents, agents[0])

        tc, tr, ts = best_of(crops), best_of(rasters), best_of(full_samples)
        rows.append({"size": size, "m_per_px": res, "map_draw_ms": 1e3 * t_map, "agents": n,
                     "map_crops_per_s": n / tc, "rasters_per_s": n / tr, "full_samples_agents_per_s": n / ts})
    print("one core; rasters_per_s = map crop + motion channels per agent; full_samples includes history features")
    report("raster", rows, {"goal_rasters_per_s_at_128": 2000}, args.json)


if __name__ == "__main__":
    main()
