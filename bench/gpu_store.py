"""A SUMO store large enough for GPU throughput rows (about 9k training samples at the full config),
made here and carried to the GPU machine, which has no SUMO: ``python bench/gpu_store.py``
writes bench/results/store_gpu (ignored by git)."""

from __future__ import annotations

from _common import sumo_store

if __name__ == "__main__":
    print(sumo_store("gpu", "gpu", seed=3, duration_s=270, train_grid=5))
