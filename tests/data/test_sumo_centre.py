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
    # a NaN row has no centre and is no part of the path of the others
    x2 = x.copy()
    x2[5] = np.nan
    nx, _ = centre_from_front(track, t, x2, y, h, back)
    assert np.isnan(nx[5]) and np.isfinite(np.delete(nx, 5)).all()
    np.testing.assert_array_equal(nx[20:], cx[20:])
