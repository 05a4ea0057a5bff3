"""Vehicle centres from SUMO's front-bumper positions: half a length back along the path driven.

SUMO reports a vehicle's position at the centre of its front bumper and moves the vehicle along
its lanes, so the rest of the body lies on the path the front has just driven: the centre is
the point of that path half a vehicle length back. Taking it from the path, not from the
reported angle, keeps the centre as continuous as the front: SUMO's angle (back bumper to
front bumper) turns by up to 100 degrees in one step where a U-turn leaves the junction, which
would move a centre computed from it by 3 m in 0.1 s.
"""

from __future__ import annotations

import numpy as np

from forecast.data.validate import step_faults


def centre_from_front(track: np.ndarray, time: np.ndarray, x: np.ndarray, y: np.ndarray, heading: np.ndarray,
                      back: np.ndarray, speed: np.ndarray | None = None, limit: np.ndarray | None = None,
                      tolerance_m: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Rows ``[N]`` (any order) -> centre ``(cx [N], cy [N])`` in metres.

    ``track`` int codes, ``time`` s, front position ``x``, ``y`` (m), ``heading`` (radians CCW
    from +x), ``back`` the distance from the front to the centre (m; half the length, 0 for
    agents reported at their centre). Per track in time order, the centre is the point of the
    front's own polyline at arc length ``s - back``; where the track has not yet driven
    ``back`` metres since its first row, the path is extended behind that row along its heading.
    A glitch must not spread into its neighbours' centres: with ``speed`` (reported, m/s),
    ``limit`` (class speed limit per row, m/s) and ``tolerance_m``, rows the validator will see
    as a single bad row (``validate.step_faults``) are left out of the path, and a jump (a
    teleport) starts a new path, extended behind its first row like a track's start.
    Rows with ``back == 0`` keep their position and are no part of any path. Rows with a
    non-finite position or time or heading, and repeats of a (track, time), are not part of
    the path either and keep their reported position (the validator rejects them).
    Tracks are processed in the order of their codes: give codes that follow the track names
    to make the result independent of the order of the file, to the last bit.
    """
    # Rows off the path keep their reported point: the validator then names what is wrong
    # with them (a non-finite y as 'y', a non-finite time as 'time', a repeat as a duplicate).
    cx, cy = x.astype(np.float64, copy=True), y.astype(np.float64, copy=True)
    moved = back > 0
    ok = moved & np.isfinite(x) & np.isfinite(y) & np.isfinite(time)
    idx = np.flatnonzero(ok)
    idx = idx[np.lexsort((time[idx], track[idx]))]  # by track, then time; lexsort is stable: file order
    if not len(idx):
        return cx, cy
    tr, t = track[idx], time[idx]
    first_of_pair = np.r_[True, (tr[1:] != tr[:-1]) | (t[1:] != t[:-1])]
    idx, tr = idx[first_of_pair], tr[first_of_pair]
    new_path = np.zeros(len(idx), bool)
    if speed is not None or limit is not None:
        lim = np.full(len(idx), np.inf) if limit is None else limit[idx]
        spike, new_path = step_faults(tr, time[idx], x[idx], y[idx], lim, None if speed is None else speed[idx],
                                      tolerance_m)
        idx, tr, new_path = idx[~spike], tr[~spike], new_path[~spike]
    if not len(idx):
        return cx, cy
    px, py, b = x[idx], y[idx], back[idx]  # [m] in track, time order
    h = _first_known_heading_filled(heading[idx], tr)
    start = np.r_[True, tr[1:] != tr[:-1]] | new_path
    step = np.r_[0.0, np.hypot(np.diff(px), np.diff(py))]
    step[start] = 0.0
    group = np.cumsum(start) - 1
    s = np.cumsum(step)
    s -= np.repeat(s[start], np.diff(np.r_[np.flatnonzero(start), len(s)]))  # arc length within the track
    # One increasing key over all tracks (tracks kept apart by a gap no path reaches) lets a
    # single searchsorted find, for every row, the path segment holding s - back.
    gap = 2.0 * (s.max() + b.max() + 1.0)
    key = group * gap + s
    j = np.clip(np.searchsorted(key, key - b, side="right"), 1, len(key) - 1)  # key[j-1] <= key - b < key[j]
    seg = s[j] - s[j - 1]  # within one track wherever it is used (s >= b)
    f = np.clip(np.where(seg > 0, (s - b - s[j - 1]) / np.where(seg > 0, seg, 1.0), 0.0), 0.0, 1.0)
    ox = px[j - 1] + f * (px[j] - px[j - 1])
    oy = py[j - 1] + f * (py[j] - py[j - 1])
    # Not yet `back` metres from the track's first row: extend behind it along its heading.
    before = np.flatnonzero(s < b)
    first = np.flatnonzero(start)[group[before]]
    short = b[before] - s[before]
    ox[before] = px[first] - short * np.cos(h[first])
    oy[before] = py[first] - short * np.sin(h[first])
    cx[idx], cy[idx] = ox, oy
    return cx, cy


def _first_known_heading_filled(heading: np.ndarray, track: np.ndarray) -> np.ndarray:
    """[m] headings where a NaN is replaced by the track's next known heading (rows in time order).

    Only the first rows of a path use the heading (to extend it behind them); a row without
    an angle there takes the nearest later one of its track.
    """
    if np.isfinite(heading).all():
        return heading
    m = len(heading)
    known = np.where(np.isfinite(heading), np.arange(m), m)
    nxt = np.minimum.accumulate(known[::-1])[::-1]  # index of the next known heading (m = none)
    end = np.r_[np.flatnonzero(track[1:] != track[:-1]), m - 1]  # last row of each track
    last = np.repeat(end, np.diff(np.r_[-1, end]))
    use = np.where(nxt <= last, nxt, np.arange(m))  # none left in the track: stays NaN
    return heading[use]
