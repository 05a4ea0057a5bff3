"""Physical plausibility of simulated tracks: one-step jumps that no reported speed explains."""

from __future__ import annotations

import numpy as np


def one_step_jumps(track: np.ndarray, time: np.ndarray, x: np.ndarray, y: np.ndarray, speed: np.ndarray,
                   dt: float = 0.1, tolerance_m: float = 1.0) -> np.ndarray:
    """[N] bool: the row ends a ``dt`` step longer than the reported speed allows plus ``tolerance_m``.

    Rows ``[N]`` in any order: ``track`` ids, ``time`` (s), position ``x``, ``y`` (m) and the
    reported ``speed`` (m/s). A step is checked between consecutive rows of a track exactly
    ``dt`` apart; the allowance is ``max(v_before, v_after) * dt + tolerance_m``. A lane change
    done in one step (about 3 m sideways) or a teleport is a jump; a continuous lane change,
    whose sideways motion is well under a metre per step, is not.
    """
    order = np.lexsort((time, track))
    tr, t = track[order], time[order]
    same = (tr[1:] == tr[:-1]) & np.isclose(np.diff(t), dt)
    step = np.hypot(np.diff(x[order]), np.diff(y[order]))
    v = np.abs(speed[order])
    jump_sorted = np.r_[False, same & (step > np.maximum(v[1:], v[:-1]) * dt + tolerance_m)]
    out = np.zeros(len(track), bool)
    out[order] = jump_sorted
    return out
