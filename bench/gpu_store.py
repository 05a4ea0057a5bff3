"""A SUMO store large enough for GPU throughput rows (about 14k training samples at the full config),
made here and carried to the GPU machine, which has no SUMO: ``python bench/gpu_store.py``
writes bench/results/store_gpu (ignored by git)."""

from __future__ import annotations

from _common import sumo_store

if __name__ == "__main__":
    # 400 s of simulated traffic: 14,170 training samples, ~55 batches of 256 per epoch, so that a
    # batch-256 row measures more than the loader's start (the store, 38 MB, travels with the tree,
    # whose limit is 64 MiB; 540 s made 59 MB)
    print(sumo_store("gpu", "gpu", seed=3, duration_s=400, train_grid=5))
