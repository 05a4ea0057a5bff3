"""Shared memory for the loader's rasters, reused from batch to batch instead of made anew for each.

A loader worker hands its batches to the main process in shared memory. A fresh segment per batch
made the kernel fault in and zero every page of it: at the full config (about 39 MB of rasters per
batch of 32) that was 0.6 ms of a worker's 3 ms per scene on a 2-core VM (docs/measurements.md,
seventeenth pass), and the rasters are 97 % of a batch's bytes.

Each worker keeps a few segments (*slots*) and writes a batch's rasters into one that the main process
no longer uses. The two share a flag per slot: the worker sets it when it fills the slot; the main
process clears it when the last tensor viewing that batch's rasters is gone (a finalizer on their
storage, registered as the batch is unpickled), so a batch the caller keeps is never overwritten.
When every slot is in use (a caller holding many batches), a batch gets a fresh segment, as before.
"""

from __future__ import annotations

import itertools
import math
import os
import weakref

import numpy as np
import torch
import torch.utils.data

from forecast.model.batch import batch_empty

# A slot that must grow is made this much larger than the batch that needed it: batches of one loader
# vary in agent count, and each growth is a fresh segment.
HEADROOM = 1.25

_POOLS: weakref.WeakValueDictionary[str, RasterPool] = weakref.WeakValueDictionary()
_COUNTER = itertools.count()

FREE, IN_USE = 0, 1


class RasterPool:
    """Per-worker shared-memory slots for packed rasters ``[N, C, S, S]`` uint8.

    Made in the main process before its loader's workers start (``workers`` of them, ``slots`` each,
    ``data.shared_slots``); ``take`` runs in a worker (in the main process, or once every slot is in use,
    it returns a fresh tensor and no slot). Slots are made on first need, so a pool holds only as many
    segments as were in use at once.
    """

    def __init__(self, workers: int, slots: int):
        if workers < 1 or slots < 1:
            raise ValueError(f"a raster pool needs at least one worker and one slot, got {workers} and {slots}")
        self.token = f"{os.getpid()}-{next(_COUNTER)}"
        self.flags = torch.zeros(workers, slots, dtype=torch.uint8).share_memory_()  # [W, K]
        self._storages: list[torch.UntypedStorage | None] = [None] * slots  # this worker's segments
        _POOLS[self.token] = self

    def __getstate__(self) -> dict:
        # A spawned worker starts with no segments of its own; the flags travel as shared memory.
        return {"token": self.token, "flags": self.flags, "_storages": [None] * self.flags.shape[1]}

    def take(self, shape: tuple[int, ...]) -> tuple[torch.Tensor, tuple[str, int, int] | None]:
        """An uninitialised uint8 tensor of ``shape`` and the slot it lives in, ``(token, worker, slot)``
        (None: a fresh segment, outside a worker or with every slot in use)."""
        info = torch.utils.data.get_worker_info()
        if info is None or info.id >= self.flags.shape[0]:
            return batch_empty(shape, torch.uint8), None
        flags = self.flags[info.id].numpy()
        free = np.flatnonzero(flags == FREE)
        if not len(free):
            return batch_empty(shape, torch.uint8), None
        k = int(free[0])  # the lowest free slot: the pool stays as small as the batches in use at once
        nbytes = math.prod(shape)
        storage = self._storages[k]
        if storage is None or storage.nbytes() < nbytes:
            storage = batch_empty((max(1, math.ceil(nbytes * HEADROOM)),), torch.uint8).untyped_storage()
            self._storages[k] = storage
        flags[k] = IN_USE
        out = torch.empty(0, dtype=torch.uint8).set_(storage, 0, shape)
        return out, (self.token, info.id, k)


def release_when_unused(raster: torch.Tensor, slot: tuple[str, int, int] | None) -> None:
    """In the main process: free ``slot`` once no tensor views ``raster``'s storage any more.

    A slot of a pool this process did not make (unknown token) stays in use; its worker then makes
    fresh segments, as without a pool.
    """
    if slot is None:
        return
    token, worker, k = slot
    pool = _POOLS.get(token)
    if pool is None:
        return
    # The storage's Python object lives as long as any tensor viewing it (torch keeps it for the C++
    # storage), so the finalizer runs after the last view, not after this tensor.
    weakref.finalize(raster.untyped_storage(), _free, pool.flags, worker, k)


def _free(flags: torch.Tensor, worker: int, k: int) -> None:
    flags[worker, k] = FREE
