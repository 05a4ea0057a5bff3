import numpy as np

from forecast.data.ragged import ragged_rows


def test_rows_of_each_segment_in_order():
    starts, counts = np.array([5, 0, 9, 3]), np.array([2, 3, 0, 1])
    want = np.concatenate([np.arange(s, s + c) for s, c in zip(starts, counts, strict=True)])
    np.testing.assert_array_equal(ragged_rows(starts, counts), want)
    assert ragged_rows(starts, counts).dtype == np.int64


def test_empty():
    assert ragged_rows(np.zeros(0, np.int64), np.zeros(0, np.int64)).shape == (0,)
    assert ragged_rows(np.array([4]), np.array([0])).shape == (0,)


def test_positions_within_each_segment():
    from forecast.data.ragged import ragged_positions

    counts = np.array([2, 0, 3, 1])
    np.testing.assert_array_equal(ragged_positions(counts), [0, 1, 0, 1, 2, 0])
    assert ragged_positions(np.zeros(0, np.int64)).shape == (0,)
