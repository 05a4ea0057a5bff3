"""Shared memory for the loader's rasters, reused from batch to batch instead of made anew for each.

A loader worker hands its batches to the main process in shared memory. A fresh segment per batch
made the kernel fault in and zero every page of it: at the full config (about 39 MB of rasters per
batch of 32) that was 0.6 ms of a worker's 3 ms per scene on a 2-core VM (docs/measurements.md,
seventeenth pass), and the rasters are 97 % of a batch's bytes.

Each worker process keeps a few segments (*slots*) and a shared flag per slot, both its own (made on
its first batch, gone with it). It writes a batch's rasters into a slot whose flag is clear, sets the
flag, and sends the flags along with the batch. The process that unpickles the batch (the main process,
or its pin-memory thread) clears the flag from a finalizer on the rasters' storage, which runs when the
last tensor viewing them is gone, so a batch the caller keeps is never overwritten. When every slot is
in use (a caller holding many batches), a batch gets a fresh segment, as before.

Only the worker's own send hands a slot over: a copy of a batch (``copy.deepcopy``, Lightning's
precision conversions) carries none, and a batch pickled again by the process reading it (to another
process, ``torch.save``) keeps its slot in use for good, since whoever unpickles it may map the same memory.
"""

from __future__ import annotations

import math
import os
import weakref
from typing import NamedTuple

import numpy as np
import torch
import torch.utils.data

from forecast.model.batch import batch_empty

# A slot that must grow is made this much larger than the batch that needed it: batches of one loader
# vary in agent count, and each growth is a fresh segment.
HEADROOM = 1.25

FREE, IN_USE = 0, 1


class Slot(NamedTuple):
    """Where a batch's rasters live: its worker's flags ([K] uint8, shared) and the slot's index."""

    flags: torch.Tensor
    index: int


class RasterPool:
    """Up to ``slots`` shared-memory segments per loader worker for packed rasters ``[N, C, S, S]`` uint8.

    Made in the main process and handed to the workers with the collate function; ``take`` runs in a
    worker (in any other process, it returns a fresh tensor and no slot).
    Slots are made on first need, so a worker holds only as many segments as were in use at once.
    """

    def __init__(self, slots: int):
        if slots < 1:
            raise ValueError(f"a raster pool needs at least one slot, got {slots}")
        self.slots = slots
        self._reset()

    def _reset(self) -> None:
        self._owner: int | None = None  # the worker process whose slots these are
        self._flags: torch.Tensor | None = None
        self._storages: list[torch.UntypedStorage | None] = [None] * self.slots

    def __getstate__(self) -> dict:
        return {"slots": self.slots}  # a spawned worker starts with no slots

    def __setstate__(self, state: dict) -> None:
        self.slots = state["slots"]
        self._reset()

    def take(self, shape: tuple[int, ...]) -> tuple[torch.Tensor, Slot | None]:
        """An uninitialised uint8 tensor of ``shape`` and the ``Slot`` it lives in (None: a fresh segment,
        outside a worker or with every slot in use)."""
        if torch.utils.data.get_worker_info() is None:
            return batch_empty(shape, torch.uint8), None
        if self._owner != os.getpid():  # a forked worker inherits the pool as its parent had it
            self._reset()
            self._owner = os.getpid()
            self._flags = torch.zeros(self.slots, dtype=torch.uint8).share_memory_()
        flags = self._flags.numpy()
        idle = np.flatnonzero(flags == FREE)
        if not len(idle):
            return batch_empty(shape, torch.uint8), None
        k = int(idle[0])  # the lowest free slot: the pool stays as small as the batches in use at once
        nbytes = math.prod(shape)
        storage = self._storages[k]
        if storage is None or storage.nbytes() < nbytes:
            storage = batch_empty((max(1, math.ceil(nbytes * HEADROOM)),), torch.uint8).untyped_storage()
            self._storages[k] = storage
        flags[k] = IN_USE
        return torch.empty(0, dtype=torch.uint8).set_(storage, 0, shape), Slot(self._flags, k)


def free(slot: Slot | None) -> None:
    """Mark ``slot`` free now (its worker's batch failed before it was sent)."""
    if slot is not None:
        slot.flags[slot.index] = FREE


def release_when_unused(raster: torch.Tensor, slot: Slot | None) -> weakref.finalize | None:
    """Free ``slot`` once no tensor views ``raster``'s storage any more; the finalizer (None without a slot).

    The storage's Python object lives as long as any tensor viewing it (torch keeps it for the C++
    storage: slices, ``detach``, ``numpy()``), so the finalizer runs after the last view, not after ``raster``.
    """
    if slot is None:
        return None
    return weakref.finalize(raster.untyped_storage(), free, slot)
