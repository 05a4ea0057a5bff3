"""LightningDataModule over the store: in-memory scenes, samples built by workers on demand."""

from __future__ import annotations

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset

from forecast.data.store import Store
from forecast.features.dataset import SceneSet, select_scenarios
from forecast.model.batch import collate
from forecast.training.config import TrainConfig
from forecast.training.sampling import interaction_sampler


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
        # Training may favour scenes where agents interact (forecast.training.sampling).
        sampler = interaction_sampler(scenes, d.interaction_sampling, g) if shuffle and d.interaction_sampling > 0 else None
        return DataLoader(SampleDataset(scenes), batch_size=d.batch_size, shuffle=shuffle and sampler is None,
                          sampler=sampler, num_workers=d.num_workers,
                          collate_fn=lambda s: collate(s, self.cfg.features.future_steps), generator=g,
                          persistent_workers=d.num_workers > 0)

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, False)
