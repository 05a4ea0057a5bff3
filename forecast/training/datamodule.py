"""LightningDataModule over the store: scenes streamed from the store, samples built by workers on demand.

Each rank reads its own contiguous slice of a seeded, scenario-blocked order
(``forecast.training.sampler``); each loader worker reads the scenarios of the samples it builds.
"""

from __future__ import annotations

from functools import partial

import cv2
import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from forecast.data.store import Store
from forecast.features import opencv_fork
from forecast.features.dataset import SceneSet, select_scenarios
from forecast.malloc import keep_freed_memory
from forecast.training.config import TrainConfig
from forecast.training.raster_pool import RasterPool
from forecast.training.sampler import BlockShuffleSampler
from forecast.training.sampling import interaction_sampler
from forecast.training.speed import collate_for_loader, pin_batches


def _worker_init(_: int) -> None:
    # One OpenCV thread per loader worker: the workers are the parallelism (OpenCV's default, a
    # thread per core in every worker, oversubscribes the cores and costs CPU on 96 px warps). Safe
    # after the main process warped with OpenCV's pool because forecast.features.opencv_fork brings
    # the pool down across the fork (installed below; without it this call hung in the child).
    cv2.setNumThreads(1)
    # Each sample's arrays reuse the last sample's freed memory instead of fresh pages from the kernel.
    keep_freed_memory()


# The loader's workers are forked from a process that may have warped rasters already (calibration, a
# previous training, a notebook): the hooks are installed where the loaders are made, not by every
# importer of the raster code (the car's runtime forks nothing of ours).
opencv_fork.install()


class SampleDataset(Dataset):
    def __init__(self, scenes: SceneSet):
        self.scenes = scenes

    def __len__(self) -> int:
        return len(self.scenes)

    def __getitem__(self, k: int):
        return self.scenes.sample(k)


class ForecastDataModule(L.LightningDataModule):
    def __init__(self, cfg: TrainConfig):
        super().__init__()
        self.cfg = cfg
        self.train_set: SceneSet | None = None
        self.val_set: SceneSet | None = None

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        d, store = self.cfg.data, Store(self.cfg.data.store)
        if not store.exists():
            raise FileNotFoundError(f"store {store.path} does not exist; run `forecast ingest` first")
        self.train_set = SceneSet(store, select_scenarios(store, d.train_split, d.source, d.scenario_prefix),
                                  self.cfg.features, d.t0_stride, d.max_train_samples, self.cfg.seed)
        self.val_set = SceneSet(store, select_scenarios(store, d.val_split, d.source, d.scenario_prefix),
                                self.cfg.features, d.val_t0_stride, d.max_val_samples, self.cfg.seed, full_future=True)

    def _loader(self, scenes: SceneSet, shuffle: bool) -> DataLoader:
        d = self.cfg.data
        g = torch.Generator()
        g.manual_seed(self.cfg.seed)
        if shuffle and d.interaction_sampling > 0:
            # Opt-in: favour scenes where agents interact (forecast.training.sampling). It reads every
            # scenario once to weight the samples and draws across scenarios (one process, no DDP split).
            sampler = interaction_sampler(scenes, d.interaction_sampling, g)
        else:
            sampler = BlockShuffleSampler(scenes.index.scenario, seed=self.cfg.seed, shuffle=shuffle,
                                          agents=np.diff(scenes.index.offsets), batch_size=d.batch_size,
                                          group_batches=d.group_batches)
        # Workers write the rasters into shared memory they reuse (forecast.training.raster_pool).
        pool = RasterPool(d.shared_slots) if d.num_workers > 0 and d.shared_slots > 0 else None
        return DataLoader(SampleDataset(scenes), batch_size=d.batch_size, sampler=sampler, num_workers=d.num_workers,
                          collate_fn=partial(collate_for_loader, future_steps=self.cfg.features.future_steps,
                                             pack_rasters=d.pack_rasters, pool=pool),
                          generator=g, persistent_workers=d.num_workers > 0, pin_memory=pin_batches(self.cfg.trainer),
                          worker_init_fn=_worker_init if d.num_workers > 0 else None)

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, False)
