"""Loader memory in a training-like process (issue 11): set up warm, draw batches, read the worker's memory.

Usage: python bench/loader_memory.py STORE [--batches 1000]

``ForecastDataModule(TrainConfig(...)).setup("fit")`` with one loader worker and batches of 8, the
first batch timed, then ``--batches`` batches; prints JSON with the worker's RSS and USS and the
main process's RSS. Unlike ``bench/scale.py``'s loader figures, nothing else runs in the process
first (there the plans are made cold in the same process before the loader forks).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("store")
    ap.add_argument("--batches", type=int, default=1000)
    args = ap.parse_args()
    import psutil
    import torch

    from forecast.training.config import DataConfig, TrainConfig
    from forecast.training.datamodule import ForecastDataModule

    torch.set_num_threads(1)
    cfg = TrainConfig(data=DataConfig(store=args.store, batch_size=8, num_workers=1, max_val_samples=8))
    t = time.time()
    dm = ForecastDataModule(cfg)
    dm.setup("fit")
    it = iter(dm.train_dataloader())
    next(it)
    res = {"first_batch_s": time.time() - t}
    me = psutil.Process()
    worker = me.children()[0]
    for _ in range(args.batches - 1):
        try:
            next(it)
        except StopIteration:
            it = iter(dm.train_dataloader())
            next(it)
    info = worker.memory_full_info()
    res.update(worker_rss_mb=info.rss / 2**20, worker_uss_mb=info.uss / 2**20, main_rss_mb=me.memory_info().rss / 2**20)
    print(json.dumps(res))


if __name__ == "__main__":
    main()
