"""Seeded, scenario-local sample order for the streaming data set, split across DDP ranks.

Samples of one scenario share a row group on disk, so the order visits scenarios in shuffled
*blocks*: the scenarios are permuted, cut into blocks of ``block`` scenarios, and the samples of a
block are shuffled together. A worker then reads each scenario once per epoch (its LRU holds a
block) while batches still mix ``block`` scenarios. Every rank gets one contiguous slice of the
epoch's order, padded to equal length as ``DistributedSampler`` does, so ranks read disjoint parts.
"""

from __future__ import annotations

import numpy as np
import torch.distributed as dist
from torch.utils.data import DistributedSampler


def _world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size(), dist.get_rank()
    return 1, 0


class BlockShuffleSampler(DistributedSampler):
    """Indices into a data set whose sample ``k`` belongs to scenario ``scenario_of[k]``.

    A ``DistributedSampler`` subclass, so Lightning calls ``set_epoch`` and does not wrap it again.
    Same seed and epoch -> same order, on any number of workers.
    """

    def __init__(self, scenario_of: np.ndarray, seed: int = 0, shuffle: bool = True, block: int = 32,
                 num_replicas: int | None = None, rank: int | None = None):
        world, me = _world()
        self.num_replicas = world if num_replicas is None else num_replicas
        self.rank = me if rank is None else rank
        self.scenario_of = np.asarray(scenario_of, dtype=np.int64)
        self.seed, self.shuffle, self.block, self.epoch = seed, shuffle, max(1, block), 0
        n = len(self.scenario_of)
        self.num_samples = -(-n // self.num_replicas) if n else 0
        self.total_size = self.num_samples * self.num_replicas
        self.drop_last = False

    def order(self) -> np.ndarray:
        """This epoch's order of every sample (before the split across ranks)."""
        n = len(self.scenario_of)
        if not self.shuffle:
            return np.arange(n)
        rng = np.random.default_rng([self.seed, self.epoch])
        scen = np.unique(self.scenario_of)
        rank_of = np.empty(scen.max() + 1 if len(scen) else 0, np.int64)
        rank_of[rng.permutation(scen)] = np.arange(len(scen))
        block = rank_of[self.scenario_of] // self.block
        # sort by (block, random key): blocks in shuffled scenario order, samples mixed within a block
        return np.lexsort((rng.random(n), block))

    def __iter__(self):
        order = self.order()
        if len(order) and self.total_size > len(order):
            order = np.concatenate([order, order[: self.total_size - len(order)]])
        return iter(order[self.rank * self.num_samples : (self.rank + 1) * self.num_samples].tolist())

    def __len__(self) -> int:
        return self.num_samples
