"""Lane centerlines from lane boundaries, as Argoverse 2's devkit (av2-api) computes them.

Argoverse 2 map archives may omit a lane's ``centerline``; av2-api's map API then builds it
from the two boundaries (``compute_midpoint_line``): each boundary is resampled to the same
number of points equally spaced by arc length, and the pairs are averaged. Boundaries of a
lane usually have different point counts, so averaging them point by point is not possible.
Pure numpy functions; a test checks them against av2-api where the package is installed.
"""

from __future__ import annotations

import numpy as np

from forecast.data.ragged import ragged_positions, ragged_rows

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


def interp_arcs(points: np.ndarray, offsets: np.ndarray, num_points: int) -> np.ndarray:
    """``interp_arc`` of K polylines at once -> ``[K, num_points, D]``, equal to it bit for bit.

    ``points`` ``[P, D]`` holds polyline k at ``offsets[k]:offsets[k + 1]`` (each at least one
    point). The same arithmetic as ``interp_arc`` (``np.linalg.norm``, ``np.cumsum`` along each
    polyline, ``np.linspace``, ``np.interp``'s formula), on arrays padded to the longest polyline.
    """
    pts = np.asarray(points, dtype=np.float64)
    n = np.diff(offsets)
    k = len(n)
    if k == 0:
        return np.zeros((0, num_points, pts.shape[1]))
    if (n < 1).any():
        raise ValueError("every polyline needs at least one point")
    start = np.zeros(len(pts), bool)
    start[offsets[:-1]] = True
    distinct = start | np.r_[True, np.any(np.diff(pts, axis=0) != 0.0, axis=1)]  # per polyline, as interp_arc
    poly = np.repeat(np.arange(k), n)[distinct]
    m = np.bincount(poly, minlength=k)  # distinct points per polyline
    pos = ragged_positions(m)  # poly is sorted: each point's place among its polyline's distinct points
    width = int(m.max())
    pad = np.empty((k, width, pts.shape[1]))
    pad[poly, pos] = pts[distinct]
    last = pad[np.arange(k), m - 1]
    pad[np.arange(width)[None, :] >= m[:, None]] = np.repeat(last, width - m, axis=0)  # zero-length tail
    arc = np.zeros((k, width))
    arc[:, 1:] = np.cumsum(np.linalg.norm(np.diff(pad, axis=1), axis=2), axis=1)
    total = arc[np.arange(k), m - 1]
    # np.linspace(0, total_k, num_points) of each row as the scalar call computes it (the array call
    # takes another formula for every row as soon as one total is 0)
    s = np.arange(num_points, dtype=np.float64)[None, :] * (total / (num_points - 1))[:, None] + 0.0
    s[:, -1] = total
    # np.interp(s, arc, y): j with arc[j] <= s < arc[j + 1] over the polyline's own points
    valid_arc = np.where(np.arange(width)[None, :] < m[:, None], arc, np.inf)
    j = (valid_arc[:, :, None] <= s[:, None, :]).sum(axis=1) - 1  # [K, num_points]
    jn = np.minimum(j + 1, m[:, None] - 1)
    jc = np.maximum(j, 0)
    rows = np.arange(k)[:, None]
    x0, x1 = arc[rows, jc], arc[rows, jn]
    y0, y1 = pad[rows, jc], pad[rows, jn]  # [K, num_points, D]
    with np.errstate(divide="ignore", invalid="ignore"):
        slope = (y1 - y0) / (x1 - x0)[..., None]
        out = slope * (s - x0)[..., None] + y0
        again = slope * (s - x1)[..., None] + y1
    out = np.where(np.isnan(out), np.where(np.isnan(again) & (y0 == y1), y0, again), out)
    exact = ((j == m[:, None] - 1) | (x0 == s))[..., None]  # at the last point, or on a vertex
    out = np.where(exact, y0, out)
    return np.where(np.isnan(s)[..., None], s[..., None], out)


def midpoint_lines(left: np.ndarray, lo: np.ndarray, right: np.ndarray, ro: np.ndarray,
                   num_points: int = NUM_CENTERLINE_POINTS) -> tuple[np.ndarray, np.ndarray]:
    """``midpoint_line`` of F lanes at once -> (centerlines ``[N, 2]`` one after another, counts ``[F]``).

    ``left``/``right`` ``[., D]`` hold lane i's boundaries at ``lo[i]:lo[i + 1]`` and
    ``ro[i]:ro[i + 1]``. A lane with an empty boundary gets no centerline (count 0), as
    ``boundary_centerline`` gives None; the others equal ``midpoint_line`` bit for bit.
    """
    nl, nr = np.diff(lo), np.diff(ro)
    both = (nl > 0) & (nr > 0)
    pivot_l = both & (nl == 1)  # a cul-de-sac: midpoints between its one point and the other boundary
    pivot_r = both & (nl > 1) & (nr == 1)
    full = both & (nl > 1) & (nr > 1)
    counts = np.where(full, num_points, np.where(pivot_l, nr, np.where(pivot_r, nl, 0))).astype(np.int64)
    out = np.empty((int(counts.sum()), left.shape[1] if left.ndim == 2 else 2))
    first = np.cumsum(counts) - counts
    if full.any():
        f = np.flatnonzero(full)
        mid = (interp_arcs(left[ragged_rows(lo[f], nl[f])], np.r_[0, np.cumsum(nl[f])], num_points)
               + interp_arcs(right[ragged_rows(ro[f], nr[f])], np.r_[0, np.cumsum(nr[f])], num_points)) / 2.0
        out[ragged_rows(first[f], counts[f])] = mid.reshape(-1, mid.shape[2])
    for mask, pivot, pivot_off, other, other_off, other_n in ((pivot_l, left, lo, right, ro, nr),
                                                             (pivot_r, right, ro, left, lo, nl)):
        if mask.any():
            f = np.flatnonzero(mask)
            rows = ragged_rows(other_off[f], other_n[f])
            one = np.repeat(pivot[pivot_off[f]], other_n[f], axis=0)
            pair = (one + other[rows]) / 2.0 if pivot is left else (other[rows] + one) / 2.0
            out[ragged_rows(first[f], other_n[f])] = pair
    return out[:, :2], counts
