"""A SUMO store large enough for GPU throughput rows (about 9k training samples at the full config),
made here and carried to the GPU machine, which has no SUMO: ``python bench/gpu_store.py``
writes bench/results/store_gpu (ignored by git)."""

from __future__ import annotations

from _common import RESULTS

from forecast.data.ingest import run_ingest
from forecast.data.sources.sumo import SumoAdapter
from forecast.data.store import Store
from forecast.sim.sumo import DemandConfig, NetworkConfig, SimConfig, simulate


def main() -> None:
    sim = SimConfig(seed=3, duration_s=270, warmup_s=30,
                    demand=DemandConfig(car_period=1.2, bike_period=2.5, ped_period=1.0),
                    networks=[NetworkConfig("gpu_train", "train", "grid", {"grid.number": 5, "grid.length": 120}, 1),
                              NetworkConfig("gpu_val", "val", "grid", {"grid.number": 3, "grid.length": 120}, 2)])
    store = Store(RESULTS / "store_gpu")
    if not store.exists():
        simulate(sim, RESULTS / "sim_gpu", progress=False)
        run_ingest(SumoAdapter(10.0), RESULTS / "sim_gpu", store, progress=False)
    print(store.path)


if __name__ == "__main__":
    main()
