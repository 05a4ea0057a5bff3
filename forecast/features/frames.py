"""Pure coordinate-frame geometry (metres, radians CCW from +x)."""

from __future__ import annotations

import numpy as np


def wrap_angle(a: np.ndarray) -> np.ndarray:
    """Angles into (-pi, pi]."""
    return np.pi - np.mod(np.pi - a, 2 * np.pi)


def to_local(xy: np.ndarray, origin: np.ndarray, heading: np.ndarray) -> np.ndarray:
    """World points into per-agent frames.

    xy: [A, ..., 2] world; origin: [A, 2]; heading: [A] radians. Returns [A, ..., 2] where the
    agent sits at (0, 0) heading along +x.
    """
    c, s = np.cos(heading), np.sin(heading)
    extra = (1,) * (xy.ndim - 2)
    c = c.reshape(-1, *extra)
    s = s.reshape(-1, *extra)
    d = xy - origin.reshape(-1, *extra, 2)
    return np.stack([c * d[..., 0] + s * d[..., 1], -s * d[..., 0] + c * d[..., 1]], axis=-1)


def rotate_to_local(v: np.ndarray, heading: np.ndarray) -> np.ndarray:
    """World vectors (velocities) into per-agent frames: v [A, ..., 2], heading [A]."""
    return to_local(v, np.zeros((len(heading), 2)), heading)


def to_world(local: np.ndarray, origin: np.ndarray, heading: np.ndarray) -> np.ndarray:
    """Inverse of ``to_local``: local [A, ..., 2] -> world [A, ..., 2]."""
    c, s = np.cos(heading), np.sin(heading)
    extra = (1,) * (local.ndim - 2)
    c = c.reshape(-1, *extra)
    s = s.reshape(-1, *extra)
    x, y = local[..., 0], local[..., 1]
    return np.stack([c * x - s * y, s * x + c * y], axis=-1) + origin.reshape(-1, *extra, 2)
