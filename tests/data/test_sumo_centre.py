from __future__ import annotations

import numpy as np

from forecast.data.sources.sumo_centre import centre_from_front


def test_straight_track_centre_is_half_a_length_behind():
    x = np.arange(10.0)
    cx, cy = centre_from_front(np.zeros(10, int), np.arange(10) * 0.1, x, np.zeros(10), np.zeros(10), np.full(10, 2.5))
    np.testing.assert_allclose(cx, x - 2.5)  # the first rows by extending the path behind row 0
    np.testing.assert_allclose(cy, 0.0)


def test_u_turn_centre_follows_the_path_without_jumping():
    # East along y=0 to (5, 0), one metre north, back west along y=1: a hairpin. SUMO's angle
    # flips by ~180 degrees here; the centre stays on the path, 2.5 m of driving behind.
    x = np.r_[np.arange(6.0), 5.0, 4.0, 3.0, 2.0]
    y = np.r_[np.zeros(6), 1.0, 1.0, 1.0, 1.0]
    heading = np.r_[np.zeros(6), np.pi / 2, np.pi, np.pi, np.pi]
    cx, cy = centre_from_front(np.zeros(10, int), np.arange(10) * 0.1, x, y, heading, np.full(10, 2.5))
    # row 8 at (3, 1): 8 m driven, the centre at 5.5 m of path: (5, 0.5)
    np.testing.assert_allclose([cx[8], cy[8]], [5.0, 0.5])
    np.testing.assert_allclose([cx[6], cy[6]], [3.5, 0.0])
    assert np.hypot(np.diff(cx), np.diff(cy)).max() <= 1.0 + 1e-12  # never faster than the front


def test_order_of_rows_and_bad_rows():
    rng = np.random.default_rng(1)
    track = np.repeat([0, 1], 20)
    t = np.tile(np.arange(20) * 0.1, 2)
    x = np.r_[np.cumsum(rng.uniform(0, 1, 20)), 100 + np.cumsum(rng.uniform(0, 1, 20))]
    y = np.r_[np.zeros(20), np.cumsum(rng.uniform(0, 0.3, 20))]
    h = np.zeros(40)
    back = np.r_[np.full(20, 2.5), np.full(20, 0.8)]
    cx, cy = centre_from_front(track, t, x, y, h, back)
    perm = rng.permutation(40)
    px, py = centre_from_front(track[perm], t[perm], x[perm], y[perm], h[perm], back[perm])
    np.testing.assert_array_equal(px, cx[perm])
    np.testing.assert_array_equal(py, cy[perm])
    # a row with a non-finite y keeps it (so the validator names 'y') and is no part of the path
    y2 = y.copy()
    y2[5] = -np.inf
    nx, ny = centre_from_front(track, t, x, y2, h, back)
    assert ny[5] == -np.inf and nx[5] == x[5] and np.isfinite(np.delete(ny, 5)).all()
    np.testing.assert_array_equal(nx[20:], cx[20:])


def test_glitch_and_teleport_do_not_bend_the_path():
    # 1 m/step east at 10 m/s. Row 5 is a one-step glitch 1 km away: left out of the path.
    # At row 12 the car teleports 50 m north: a new path starts there, extended behind it.
    n = 20
    x = np.arange(n, dtype=float)
    y = np.where(np.arange(n) >= 12, 50.0, 0.0)
    x_glitch = x.copy()
    x_glitch[5] = 1000.0
    speed, limit, back = np.full(n, 10.0), np.full(n, 70.0), np.full(n, 2.5)
    cx, cy = centre_from_front(np.zeros(n, int), np.arange(n) * 0.1, x_glitch, y, np.zeros(n), back, speed, limit, 1.0)
    keep = np.arange(n) != 5
    np.testing.assert_allclose(cx[keep], x[keep] - 2.5)
    np.testing.assert_allclose(cy[keep], y[keep])
    assert cx[5] == 1000.0  # the glitch keeps its reported point; the validator rejects it
