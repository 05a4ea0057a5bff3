from __future__ import annotations

import numpy as np
import pytest

from forecast.data.sources.av2_lanes import NUM_CENTERLINE_POINTS, interp_arc, midpoint_line, midpoint_lines


def test_interp_arc_equal_arc_length_steps():
    # An L of length 20: 10 m east, then 10 m north; 5 points at 0, 5, 10, 15, 20 m.
    line = np.array([[0.0, 2.0], [10.0, 2.0], [10.0, 12.0]])
    np.testing.assert_allclose(interp_arc(5, line), [[0, 2], [5, 2], [10, 2], [10, 7], [10, 12]], atol=1e-12)
    # repeated vertices (zero-length segments) change nothing
    dup = np.array([[0.0, 2.0], [0.0, 2.0], [10.0, 2.0], [10.0, 2.0], [10.0, 12.0]])
    np.testing.assert_allclose(interp_arc(5, dup), interp_arc(5, line), atol=1e-12)


def test_midpoint_line_of_boundaries_with_unequal_point_counts():
    # Hand-made lane: left boundary 3 vertices (20 m), right boundary 4 vertices (24 m, its
    # first leg split in two). Point-by-point averaging is impossible; by arc length the
    # k-th of 5 points sits at k/4 of each boundary's length.
    left = np.array([[0.0, 2.0], [10.0, 2.0], [10.0, 12.0]])
    right = np.array([[0.0, 0.0], [3.0, 0.0], [12.0, 0.0], [12.0, 12.0]])
    expected = [[0.0, 1.0], [5.5, 1.0], [11.0, 1.0], [11.0, 6.5], [11.0, 12.0]]
    np.testing.assert_allclose(midpoint_line(left, right, num_points=5), expected, atol=1e-12)
    # the default is av2-api's 10 points; z is used for arc length, then dropped
    straight = midpoint_line(np.array([[0.0, 1.0, 0.0], [9.0, 1.0, 0.0]]),
                             np.array([[0.0, -1.0, 0.0], [2.0, -1.0, 0.0], [9.0, -1.0, 0.0]]))
    assert straight.shape == (NUM_CENTERLINE_POINTS, 2)
    np.testing.assert_allclose(straight, np.c_[np.arange(10.0), np.zeros(10)], atol=1e-12)


def test_midpoint_line_pivots_around_a_single_point():
    # a cul-de-sac: one boundary is a single point; midpoints to each vertex of the other
    left = np.array([[0.0, 2.0], [1.0, 1.0], [2.0, 0.0], [1.0, -1.0], [0.0, -2.0]])
    right = np.array([[0.0, 0.0]])
    np.testing.assert_allclose(midpoint_line(left, right), left / 2.0, atol=1e-12)
    np.testing.assert_allclose(midpoint_line(right, left), left / 2.0, atol=1e-12)


def test_midpoint_line_rejects_bad_shapes():
    with pytest.raises(ValueError, match="boundaries"):
        midpoint_line(np.zeros((0, 2)), np.zeros((3, 2)))
    with pytest.raises(ValueError, match="boundaries"):
        midpoint_line(np.zeros((2, 2)), np.zeros((3, 3)))


def test_matches_av2_api_on_random_boundaries():
    interpolate = pytest.importorskip("av2.geometry.interpolate", reason="av2-api (dev dependency) not installed")
    rng = np.random.default_rng(0)
    for _ in range(50):
        left = np.cumsum(rng.uniform(0.1, 3.0, size=(rng.integers(2, 12), 3)), axis=0)
        right = np.cumsum(rng.uniform(0.1, 3.0, size=(rng.integers(2, 12), 3)), axis=0)
        ours = midpoint_line(left, right)
        theirs, _ = interpolate.compute_midpoint_line(left, right, interpolate.NUM_CENTERLINE_INTERP_PTS)
        np.testing.assert_allclose(ours, theirs[:, :2], atol=1e-9)


@pytest.mark.parametrize("dim", [2, 3])
def test_midpoint_lines_equal_midpoint_line_bit_for_bit(dim):
    # many lanes at once, as a map without centerlines needs: repeated vertices, boundaries of one
    # distinct point, cul-de-sacs (one point), empty boundaries (no centerline), city-frame coordinates
    rng = np.random.default_rng(dim)
    lefts, rights = [], []
    for _ in range(300):
        pair = []
        for n in rng.integers(0, 9, 2):
            p = np.round(rng.normal(0, 40, (n, dim)) + 5000.0, 2)
            if n > 2 and rng.random() < 0.3:
                p[1] = p[0]
            if n > 1 and rng.random() < 0.1:
                p[:] = p[0]
            pair.append(p)
        lefts.append(pair[0])
        rights.append(pair[1])
    lo = np.r_[0, np.cumsum([len(p) for p in lefts])]
    ro = np.r_[0, np.cumsum([len(p) for p in rights])]
    xy, counts = midpoint_lines(np.concatenate(lefts), lo, np.concatenate(rights), ro)
    off = np.r_[0, np.cumsum(counts)]
    for i, (left, right) in enumerate(zip(lefts, rights, strict=True)):
        if not len(left) or not len(right):
            assert counts[i] == 0
        else:
            assert np.array_equal(xy[off[i] : off[i + 1]], midpoint_line(left, right))
