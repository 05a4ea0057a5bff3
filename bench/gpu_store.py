"""A SUMO store large enough for GPU throughput rows (about 17k training samples at the full config),
made here and carried to the GPU machine, which has no SUMO: ``python bench/gpu_store.py``
writes bench/results/store_gpu (ignored by git)."""

from __future__ import annotations

from _common import sumo_store

if __name__ == "__main__":
    # 540 s of simulated traffic: about 17,000 training samples, ~68 batches of 256 per epoch, so that a
    # batch-256 row measures more than the loader's start (the store, ~46 MB, travels with the tree)
    print(sumo_store("gpu", "gpu", seed=3, duration_s=540, train_grid=5))
