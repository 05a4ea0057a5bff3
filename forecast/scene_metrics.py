"""Scene-level and map metrics: overlap between agents' futures, endpoints off the drivable area (pure numpy;
shapely for the map).

Shapes and conventions as in :mod:`forecast.metrics`, whose NaN-skipping mean this module reuses.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from forecast.features.frames import norm2
from forecast.metrics import aggregate

if TYPE_CHECKING:  # shapely is imported by the off-road metric only, when it runs
    from shapely.geometry.base import BaseGeometry

__all__ = ["offroad", "offroad_rate", "overlap_rate"]


def overlap_rate(trajectories: np.ndarray, radius: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
    """Per-agent overlap indicator ``[N]`` (float 0.0/1.0) for the agents of one scene.

    ``trajectories`` ``[N, T, 2]`` are the agents' (e.g. most likely) futures, ``radius`` ``[N]`` their
    half sizes in metres (discs). Agent ``i`` overlaps if at some step ``t`` where both ``i`` and
    another agent ``j`` are valid, ``||x_i(t) - x_j(t)|| < radius_i + radius_j`` (strict: touching
    discs do not overlap). NaN for agents without valid steps. Memory is ``O(N^2 T)``.
    """
    x = np.asarray(trajectories, dtype=np.float64)
    if x.ndim != 3 or x.shape[-1] != 2:
        raise ValueError(f"trajectories must have shape [N, T, 2], got {x.shape}")
    n, t, _ = x.shape
    r = np.asarray(radius, dtype=np.float64)
    if r.shape != (n,):
        raise ValueError(f"radius must have shape [N] = {(n,)}, got {r.shape}")
    if not np.isfinite(r).all() or (r < 0).any():
        raise ValueError("radius must be finite and non-negative")
    if valid is None:
        valid = np.ones((n, t), dtype=bool)
    else:
        valid = np.asarray(valid)
        if valid.dtype != bool or valid.shape != (n, t):
            raise ValueError(f"valid must be a bool array of shape {(n, t)}, got {valid.dtype} {valid.shape}")
    dist = norm2(x[:, None] - x[None, :])  # [N, N, T]
    both = valid[:, None, :] & valid[None, :, :] & ~np.eye(n, dtype=bool)[:, :, None]
    close = np.where(both, dist, np.inf) < (r[:, None] + r[None, :])[:, :, None]
    out = close.any(axis=(1, 2)).astype(np.float64)
    return np.where(valid.any(axis=1), out, np.nan)


def offroad(endpoints: np.ndarray, drivable: BaseGeometry, tolerance: float = 1e-6) -> np.ndarray:
    """Off-road flags ``[N]`` bool: True where an endpoint ``[N, 2]`` lies outside ``drivable``.

    Uses the vectorised ``shapely.contains_xy`` on ``drivable`` buffered by ``tolerance`` metres, so
    points on (or within ``tolerance`` of) the boundary count as on-road. Non-finite endpoints raise
    ``ValueError`` (mask out agents without a valid endpoint first).
    """
    import shapely

    e = np.asarray(endpoints, dtype=np.float64)
    if e.ndim != 2 or e.shape[1] != 2:
        raise ValueError(f"endpoints must have shape [N, 2], got {e.shape}")
    if not np.isfinite(e).all():
        raise ValueError("endpoints contain non-finite values")
    if tolerance < 0:
        raise ValueError(f"tolerance must be >= 0, got {tolerance}")
    area = drivable.buffer(tolerance) if tolerance > 0 else drivable
    shapely.prepare(area)
    return ~np.asarray(shapely.contains_xy(area, e[:, 0], e[:, 1]), dtype=bool)


def offroad_rate(endpoints: np.ndarray, drivable: BaseGeometry, tolerance: float = 1e-6) -> float:
    """Fraction of endpoints that are off-road (mean of :func:`offroad`); NaN for no endpoints."""
    return aggregate(offroad(endpoints, drivable, tolerance).astype(np.float64))
