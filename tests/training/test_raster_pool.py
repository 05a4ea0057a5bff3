"""The loader's reused raster memory: batches are what ``collate`` makes, kept ones are never overwritten,
and dropped ones free their slot for the next batch."""

from __future__ import annotations

import gc
from functools import partial

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from forecast.export.onnx_export import synthetic_sample
from forecast.model.batch import collate
from forecast.training.raster_pool import RasterPool, release_when_unused
from forecast.training.speed import collate_for_loader
from tests.conftest import tiny_features_and_model

FEATURES, _ = tiny_features_and_model()
SLOTS = 6


class _Samples(Dataset):
    """Sample k: k % 5 + 2 agents with random rasters (seeded by k), so batches differ in size and bytes."""

    def __len__(self) -> int:
        return 48

    def __getitem__(self, k: int):
        s = synthetic_sample(k % 5 + 2, FEATURES, seed=k)[0]
        s.raster = np.random.default_rng(k).integers(0, 256, s.raster.shape, dtype=np.uint8)
        return s


def _expected(batch_size: int) -> list:
    ds = _Samples()
    return [collate([ds[k] for k in range(i, min(i + batch_size, len(ds)))], FEATURES.future_steps, True)
            for i in range(0, len(ds), batch_size)]


def _loader(pool: RasterPool | None, batch_size: int = 3) -> DataLoader:
    return DataLoader(_Samples(), batch_size=batch_size, num_workers=1,
                      collate_fn=partial(collate_for_loader, future_steps=FEATURES.future_steps, pool=pool))


def test_batches_dropped_as_read_reuse_a_few_slots_and_equal_collate():
    pool = RasterPool(workers=1, slots=SLOTS)
    slots = []
    for b, want in zip(_loader(pool), _expected(3), strict=True):
        np.testing.assert_array_equal(b.raster.numpy(), want.raster.numpy())
        np.testing.assert_array_equal(b.hist.numpy(), want.hist.numpy())
        slots.append(b.raster_slot)
        del b
        gc.collect()
    assert all(s is not None for s in slots), slots  # never more in use than the pool holds
    used = {s[2] for s in slots}
    assert len(used) < len(slots) and used <= set(range(SLOTS))


def test_kept_batches_are_never_overwritten_and_fall_back_to_fresh_memory():
    pool = RasterPool(workers=1, slots=SLOTS)
    kept = list(_loader(pool))  # the caller holds every batch: the worker runs out of slots
    gc.collect()
    for b, want in zip(kept, _expected(3), strict=True):
        np.testing.assert_array_equal(b.raster.numpy(), want.raster.numpy())
    slots = [b.raster_slot for b in kept]
    assert len({s for s in slots if s is not None}) == SLOTS and slots.count(None) == len(kept) - SLOTS


def test_a_view_of_the_rasters_keeps_the_slot_in_use():
    pool = RasterPool(workers=1, slots=SLOTS)
    flags = pool.flags[0].numpy()
    it = iter(_loader(pool, batch_size=48))  # one batch: nothing else takes a slot
    b = next(it)
    k = b.raster_slot[2]
    view = b.raster[1:3]
    del b
    gc.collect()
    assert flags[k] == 1  # the view still reads the slot
    del view
    gc.collect()
    assert flags[k] == 0


def test_outside_a_worker_the_pool_hands_out_fresh_memory():
    pool = RasterPool(workers=1, slots=SLOTS)
    t, slot = pool.take((2, 3))
    assert slot is None and t.shape == (2, 3) and t.dtype == torch.uint8
    release_when_unused(t, None)  # no slot: nothing to free
    assert not pool.flags.any()


def test_a_pool_needs_a_worker_and_a_slot():
    with pytest.raises(ValueError, match="at least one worker and one slot"):
        RasterPool(workers=0, slots=SLOTS)
