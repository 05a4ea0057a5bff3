"""Samples per second of the data loader alone and of a training step, to see which one limits.

Usage: python bench/train.py [--config configs/train/quickstart.yaml] [--device cpu|cuda] [--batches 20] [--json PATH]
Uses the config's store if it exists, else simulates and ingests a small SUMO store under bench/results.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from _common import RESULTS, report

from forecast.config import apply_overrides, from_dict, load_yaml
from forecast.data.ingest import run_ingest
from forecast.data.sources.sumo import SumoAdapter
from forecast.data.store import Store
from forecast.model.loss import wta_loss
from forecast.sim.sumo import DemandConfig, NetworkConfig, SimConfig, simulate
from forecast.training.config import TrainConfig
from forecast.training.datamodule import ForecastDataModule
from forecast.training.module import ForecastModule


def bench_store() -> Path:
    sim = SimConfig(seed=1, duration_s=150, warmup_s=30, demand=DemandConfig(car_period=1.2, bike_period=2.5, ped_period=1.0),
                    networks=[NetworkConfig("bench_train", "train", "grid", {"grid.number": 4, "grid.length": 120}, 1),
                              NetworkConfig("bench_val", "val", "grid", {"grid.number": 3, "grid.length": 120}, 2)])
    simulate(sim, RESULTS / "sim_train", progress=False)
    store = Store(RESULTS / "store_train")
    run_ingest(SumoAdapter(10.0), RESULTS / "sim_train", store, progress=False)
    return store.path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--config", default="configs/train/quickstart.yaml")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--batches", type=int, default=20)
    ap.add_argument("--json")
    ap.add_argument("overrides", nargs="*")
    args = ap.parse_args()
    cfg = from_dict(TrainConfig, apply_overrides(load_yaml(args.config), args.overrides)).resolved()
    if not Store(cfg.data.store).exists():
        cfg.data.store = str(bench_store())
        cfg.data.source = None
    dm = ForecastDataModule(cfg)
    dm.setup()
    loader = dm.train_dataloader()

    it = iter(loader)
    next(it)  # worker start-up is not throughput
    t = time.perf_counter()
    batches = []
    for _ in range(args.batches):
        try:
            batches.append(next(it))
        except StopIteration:
            break
    t_load = time.perf_counter() - t
    n_load = sum(b.size for b in batches)

    module = ForecastModule(cfg).to(args.device)
    opt = torch.optim.AdamW(module.parameters(), lr=1e-3)
    dev_batches = [b.to(args.device) for b in batches]
    amp = args.device == "cuda" and "bf16" in cfg.trainer.precision

    def step(b):
        with torch.autocast(args.device, dtype=torch.bfloat16, enabled=amp):
            traj, scale, logits = module.model.forward_logits(*b.model_inputs())
            loss, _, _ = wta_loss(traj.float(), scale.float(), logits.float(), b.future, b.future_mask, b.target_mask)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    step(dev_batches[0])
    if args.device == "cuda":
        torch.cuda.synchronize()
    t = time.perf_counter()
    for b in dev_batches:
        step(b)
    if args.device == "cuda":
        torch.cuda.synchronize()
    t_step = time.perf_counter() - t
    agents = float(sum(int(b.agent_mask.sum()) for b in batches)) / max(1, len(batches))
    rows = [
        {"what": f"data loader ({cfg.data.num_workers} workers)", "samples_per_s": n_load / t_load,
         "ms_per_batch": 1e3 * t_load / len(batches)},
        {"what": f"training step ({args.device}, {cfg.trainer.precision})", "samples_per_s": n_load / t_step,
         "ms_per_batch": 1e3 * t_step / len(batches)},
    ]
    print(f"config {args.config}: batch {cfg.data.batch_size}, ~{agents:.0f} agents/batch, raster {cfg.features.raster.size}px, "
          f"hidden {cfg.model.hidden}, torch threads {torch.get_num_threads()}")
    report(f"train-{Path(args.config).stem}-{args.device}", rows,
           {"config": args.config, "batch_size": cfg.data.batch_size, "agents_per_batch": agents}, args.json)
    print("limit:", "data loader" if n_load / t_load < n_load / t_step else "training step")


if __name__ == "__main__":
    main()
