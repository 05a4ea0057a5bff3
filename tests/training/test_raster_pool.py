"""The loader's reused raster memory: batches are what ``collate`` makes, kept ones are never overwritten,
dropped ones free their slot for the next batch, and copies never free a slot another batch still reads."""

from __future__ import annotations

import copy
import gc
import pickle
from functools import partial

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from forecast.export.onnx_export import synthetic_sample
from forecast.model.batch import collate
from forecast.training.raster_pool import IN_USE, RasterPool, Slot, release_when_unused
from forecast.training.speed import collate_for_loader
from tests.conftest import tiny_features_and_model

FEATURES, _ = tiny_features_and_model()
SLOTS = 6


class _Samples(Dataset):
    """Sample k: k % 5 + 2 agents with random rasters (seeded by k), so batches differ in size and bytes;
    ``bad``: sample indices whose history has the wrong shape (collate fails after taking a slot)."""

    def __init__(self, n: int = 48, bad: frozenset = frozenset()):
        self.n, self.bad = n, bad

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, k: int):
        s = synthetic_sample(k % 5 + 2, FEATURES, seed=k)[0]
        s.raster = np.random.default_rng(k).integers(0, 256, s.raster.shape, dtype=np.uint8)
        if k in self.bad:
            s.hist = s.hist[:, :-1]
        return s


def _expected(batch_size: int, n: int = 48) -> list:
    ds = _Samples(n)
    return [collate([ds[k] for k in range(i, min(i + batch_size, n))], FEATURES.future_steps, True)
            for i in range(0, n, batch_size)]


def _loader(pool: RasterPool | None, batch_size: int = 3, data: Dataset | None = None, **kw) -> DataLoader:
    return DataLoader(data or _Samples(), batch_size=batch_size, num_workers=1,
                      collate_fn=partial(collate_for_loader, future_steps=FEATURES.future_steps, pool=pool), **kw)


def _gc_flags(slot: Slot) -> list[int]:
    gc.collect()
    return slot.flags.tolist()


def test_batches_dropped_as_read_reuse_a_few_slots_and_equal_collate():
    slots = []
    for b, want in zip(_loader(RasterPool(SLOTS)), _expected(3), strict=True):
        np.testing.assert_array_equal(b.raster.numpy(), want.raster.numpy())
        np.testing.assert_array_equal(b.hist.numpy(), want.hist.numpy())
        slots.append(b.raster_slot.index if b.raster_slot else None)
        del b
        gc.collect()
    assert None not in slots, slots  # never more in use than the pool holds
    assert len(set(slots)) < len(slots) and set(slots) <= set(range(SLOTS))


def test_kept_batches_are_never_overwritten_and_fall_back_to_fresh_memory():
    kept = list(_loader(RasterPool(SLOTS)))  # the caller holds every batch: the worker runs out of slots
    gc.collect()
    for b, want in zip(kept, _expected(3), strict=True):
        np.testing.assert_array_equal(b.raster.numpy(), want.raster.numpy())
    slots = [b.raster_slot for b in kept]
    assert len({s.index for s in slots if s is not None}) == SLOTS and slots.count(None) == len(kept) - SLOTS


@pytest.mark.parametrize("alias", ["slice", "detach", "numpy"])
def test_any_view_of_the_rasters_keeps_the_slot_in_use(alias):
    b = next(iter(_loader(RasterPool(SLOTS), batch_size=48)))  # one batch: nothing else takes a slot
    slot = b.raster_slot
    view = {"slice": lambda r: r[1:3], "detach": lambda r: r.detach(), "numpy": lambda r: r.numpy()}[alias](b.raster)
    del b
    assert _gc_flags(slot)[slot.index] == IN_USE  # the view still reads the slot
    del view
    assert _gc_flags(slot)[slot.index] == 0


def _copies():
    from lightning.pytorch.plugins.precision import HalfPrecision

    return {"deepcopy": copy.deepcopy, "pickle": lambda b: pickle.loads(pickle.dumps(b)),
            "bf16-true": HalfPrecision("bf16-true").convert_input}


@pytest.mark.parametrize("how", ["deepcopy", "pickle", "bf16-true"])
def test_a_copy_never_frees_the_slot_of_the_batch_it_came_from(how):
    it = iter(_loader(RasterPool(SLOTS), batch_size=48))
    b = next(it)
    slot = b.raster_slot
    c = _copies()[how](b)
    assert c.raster_slot is None
    del c
    assert _gc_flags(slot)[slot.index] == IN_USE  # the original still reads it
    del b
    # a copy that may share the memory elsewhere (pickled by the reading process) keeps the slot for good
    assert _gc_flags(slot)[slot.index] == (IN_USE if how == "pickle" else 0)


def test_a_batch_that_fails_to_collate_frees_its_slot():
    it = iter(_loader(RasterPool(1), batch_size=4, data=_Samples(n=8, bad=frozenset({1}))))
    with pytest.raises(ValueError):
        next(it)  # the first batch's history cannot be padded after its rasters took the only slot
    assert next(it).raster_slot is not None  # the worker built the second after it: the slot was free again


def test_each_worker_set_has_its_own_slots():
    # Without persistent workers every epoch forks new workers: they make new slots and flags, so what an
    # abandoned epoch left in flight is not waited for.
    loader = _loader(RasterPool(2), batch_size=4, persistent_workers=False)
    first = next(iter(loader))
    again = next(iter(loader))
    assert first.raster_slot.flags.data_ptr() != again.raster_slot.flags.data_ptr()
    assert again.raster_slot.index == 0


def test_outside_a_worker_the_pool_hands_out_fresh_memory():
    t, slot = RasterPool(SLOTS).take((2, 3))
    assert slot is None and t.shape == (2, 3) and t.dtype == torch.uint8
    assert release_when_unused(t, None) is None


def test_a_pool_needs_a_slot():
    with pytest.raises(ValueError, match="at least one slot"):
        RasterPool(0)
