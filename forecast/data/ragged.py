"""Index arithmetic of ragged arrays: segments of variable length stored one after another (pure numpy)."""

from __future__ import annotations

import numpy as np


def ragged_positions(counts: np.ndarray) -> np.ndarray:
    """``[sum(counts)]`` int64: ``0, 1, ..., counts[i] - 1`` for each i, in order (each row's place in its segment)."""
    counts = np.asarray(counts, np.int64)
    return np.arange(int(counts.sum()), dtype=np.int64) - np.repeat(np.cumsum(counts) - counts, counts)


def ragged_rows(starts: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """``[sum(counts)]`` int64: ``starts[i], starts[i] + 1, ..., starts[i] + counts[i] - 1`` for each i, in order.

    The rows of segments ``i`` of a ragged array (segment i at ``starts[i]``, ``counts[i]`` long) gathered
    one after another; with ``starts`` the segments' new places, where each lands when they are moved.
    """
    counts = np.asarray(counts, np.int64)
    packed = np.cumsum(counts) - counts  # where each segment begins once gathered
    return np.repeat(np.asarray(starts, np.int64) - packed, counts) + np.arange(int(counts.sum()), dtype=np.int64)
