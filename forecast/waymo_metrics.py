"""Speed-scaled miss rate, as the Waymo Open Motion Dataset defines it (pure numpy).

Shapes and conventions as in :mod:`forecast.metrics`, whose input checks this module reuses.
"""

from __future__ import annotations

import numpy as np

from forecast.features.frames import norm2
from forecast.metrics import _check_inputs, _check_prob, _topk_mask

__all__ = ["WAYMO_MISS_THRESHOLDS", "gt_heading_at", "speed_scale", "speed_scaled_miss"]

# Waymo's miss thresholds by horizon (seconds): (lateral, longitudinal) metres, in the frame of the
# ground truth's heading at that step. They are scaled by the agent's speed at t0 (see speed_scale).
WAYMO_MISS_THRESHOLDS = {3.0: (1.0, 2.0), 5.0: (1.8, 3.6), 8.0: (3.0, 6.0)}
WAYMO_SPEED_BOUNDS = (1.4, 11.0)  # m/s: at or below the lower one the scale is 0.5, at or above the upper one 1.0
WAYMO_SCALE_BOUNDS = (0.5, 1.0)


def speed_scale(speed: np.ndarray) -> np.ndarray:
    """Waymo's threshold scale ``[N]`` from the speed at t0 ``[N]`` (m/s): 0.5 up to 1.4 m/s, 1.0 from
    11 m/s, linear in between (slow agents must be predicted more tightly)."""
    (v0, v1), (s0, s1) = WAYMO_SPEED_BOUNDS, WAYMO_SCALE_BOUNDS
    frac = np.clip((np.asarray(speed, dtype=np.float64) - v0) / (v1 - v0), 0.0, 1.0)
    return s0 + (s1 - s0) * frac


def gt_heading_at(gt: np.ndarray, valid: np.ndarray, step: int, window: int = 5, min_move: float = 0.25,
                  fallback: np.ndarray | None = None) -> np.ndarray:
    """Heading ``[N]`` (radians, frame of ``gt``) of the ground truth at ``step``, from its own motion.

    The direction from the latest valid step at most ``window`` steps before ``step`` to ``step``;
    where that is shorter than ``min_move`` metres (a standing agent) or there is none, ``fallback``
    ``[N]`` (default 0: the +x axis, the agent's heading at t0 in the agent frame).
    """
    n = gt.shape[0]
    out = np.zeros(n) if fallback is None else np.asarray(fallback, dtype=np.float64).copy()
    found = np.zeros(n, bool)
    for back in range(window, 0, -1):  # the earliest usable step of the window wins: a longer baseline
        s = step - back
        if s < 0:
            continue
        d = gt[:, step] - gt[:, s]
        ok = ~found & valid[:, s] & valid[:, step] & (norm2(d) >= min_move)
        out = np.where(ok, np.arctan2(d[:, 1], d[:, 0]), out)
        found |= ok
    return out


def speed_scaled_miss(
    pred: np.ndarray,
    gt: np.ndarray,
    speed: np.ndarray,
    step: int,
    prob: np.ndarray | None = None,
    k: int | None = None,
    lateral: float = 1.0,
    longitudinal: float = 2.0,
    valid: np.ndarray | None = None,
    heading: np.ndarray | None = None,
) -> np.ndarray:
    """Waymo-style miss indicator ``[N]`` (float 0.0/1.0) at future step index ``step`` (0-based).

    Per top-k mode the error at ``step`` is rotated into the ground truth's heading there
    (``heading [N]``; default :func:`gt_heading_at`) and compared with ``lateral`` and ``longitudinal``
    metres times :func:`speed_scale` of ``speed [N]`` (m/s at t0). A mode *hits* when both errors are
    within their thresholds (``<=``); the agent is missed when no kept mode hits. Waymo's values at
    3 s are the defaults (:data:`WAYMO_MISS_THRESHOLDS`). NaN for agents whose ground truth is not
    valid at ``step``.
    """
    pred, gt, valid = _check_inputs(pred, gt, valid)
    n, k_modes, t, _ = pred.shape
    if not 0 <= step < t:
        raise ValueError(f"step must be in [0, {t}), got {step}")
    speed = np.asarray(speed, dtype=np.float64)
    if speed.shape != (n,):
        raise ValueError(f"speed must have shape [N] = {(n,)}, got {speed.shape}")
    p = None if prob is None else _check_prob(prob, n, k_modes)
    mask = _topk_mask(p, n, k_modes, k)
    theta = gt_heading_at(gt, valid, step) if heading is None else np.asarray(heading, dtype=np.float64)
    err = pred[:, :, step] - gt[:, None, step]  # [N, K, 2]
    c, s = np.cos(theta)[:, None], np.sin(theta)[:, None]
    lon = err[..., 0] * c + err[..., 1] * s
    lat = -err[..., 0] * s + err[..., 1] * c
    scale = speed_scale(speed)[:, None]
    hit = (np.abs(lat) <= lateral * scale) & (np.abs(lon) <= longitudinal * scale) & mask
    return np.where(valid[:, step], (~hit.any(axis=1)).astype(np.float64), np.nan)
