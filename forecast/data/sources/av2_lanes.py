"""Lane centerlines from lane boundaries, as Argoverse 2's devkit (av2-api) computes them.

Argoverse 2 map archives may omit a lane's ``centerline``; av2-api's map API then builds it
from the two boundaries (``compute_midpoint_line``): each boundary is resampled to the same
number of points equally spaced by arc length, and the pairs are averaged. Boundaries of a
lane usually have different point counts, so averaging them point by point is not possible.
Pure numpy functions; a test checks them against av2-api where the package is installed.
"""

from __future__ import annotations

import numpy as np

NUM_CENTERLINE_POINTS = 10  # av2-api's NUM_CENTERLINE_INTERP_PTS


def interp_arc(num_points: int, points: np.ndarray) -> np.ndarray:
    """Resample a polyline to ``num_points`` points equally spaced by arc length.

    ``points`` ``[P, D]`` (D = 2 or 3, metres), P >= 1. Returns ``[num_points, D]``: the first
    and last points are the polyline's ends, the others lie on it at equal arc-length steps
    (linear between vertices). Repeated consecutive vertices (zero-length segments) are
    dropped first; a polyline of one distinct point returns that point repeated.
    """
    pts = np.asarray(points, dtype=np.float64)
    if pts.ndim != 2 or len(pts) == 0:
        raise ValueError(f"expected a polyline of shape [P, D] with P >= 1, got shape {pts.shape}")
    if num_points < 2:
        raise ValueError(f"num_points must be at least 2, got {num_points}")
    distinct = np.r_[True, np.any(np.diff(pts, axis=0) != 0.0, axis=1)]
    pts = pts[distinct]
    if len(pts) == 1:
        return np.repeat(pts, num_points, axis=0)
    arc = np.r_[0.0, np.cumsum(np.linalg.norm(np.diff(pts, axis=0), axis=1))]  # [P] metres from the start
    s = np.linspace(0.0, arc[-1], num_points)
    return np.stack([np.interp(s, arc, pts[:, d]) for d in range(pts.shape[1])], axis=1)


def midpoint_line(left: np.ndarray, right: np.ndarray, num_points: int = NUM_CENTERLINE_POINTS) -> np.ndarray:
    """Centerline ``[N, 2]`` between a lane's left ``[L, D]`` and right ``[R, D]`` boundaries.

    As av2-api's ``compute_midpoint_line``: both boundaries are resampled by arc length to
    ``num_points`` points and averaged pairwise (3-D boundaries are resampled in 3-D, as
    av2-api does, then z is dropped). A boundary of a single point (a cul-de-sac) is the pivot:
    the centerline is the midpoints between it and each point of the other boundary (N = the
    other boundary's point count).
    """
    left = np.asarray(left, dtype=np.float64)
    right = np.asarray(right, dtype=np.float64)
    if left.ndim != 2 or right.ndim != 2 or left.shape[1] != right.shape[1] or not len(left) or not len(right):
        raise ValueError(f"boundaries must be [P, D] polylines of one dimension, got {left.shape} and {right.shape}")
    if len(left) == 1:
        return ((left + right) / 2.0)[:, :2]
    if len(right) == 1:
        return ((left + right) / 2.0)[:, :2]
    return ((interp_arc(num_points, left) + interp_arc(num_points, right)) / 2.0)[:, :2]
