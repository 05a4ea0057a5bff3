"""The shared row validator on hand-made rows: ids, order, duplicates, spikes and jumps."""

from __future__ import annotations

import numpy as np
import pytest

from forecast.data.schema import AgentType
from forecast.data.validate import MAX_TRACK_ID_CHARS, RawRows, sort_order, validate_rows


def make_rows(ids: list, t: list[float], x: list[float], y: list[float] | None = None,
              speed: list[float] | None = None, jump_tolerance_m: float | None = None) -> RawRows:
    names, code = np.unique(np.array(ids, dtype=object), return_inverse=True)
    n = len(ids)
    nan = np.full(n, np.nan)
    return RawRows(
        track_code=code.astype(np.int64), track_names=names, type_code=np.zeros(n, np.int64),
        type_names=np.array(["car"], dtype=object), type_map=np.array([AgentType.VEHICLE], np.int8),
        time=np.asarray(t, float), x=np.asarray(x, float), y=np.zeros(n) if y is None else np.asarray(y, float),
        heading=nan, vx=nan, vy=nan, observed=np.ones(n, bool),
        speed=None if speed is None else np.asarray(speed, float), jump_tolerance_m=jump_tolerance_m,
    )


def check(rows: RawRows):
    keep, timestep, q = validate_rows(rows, 0.1, "test", "f.parquet")
    assert len(keep) + len(q) == len(rows)  # every row is kept or quarantined
    return keep, timestep, {int(r): (f, why) for r, f, why in zip(q.row, q.field, q.reason, strict=True)}


def test_reverse_time_order_is_valid():
    # A file written newest first: order is not validity, every row is kept.
    t = np.arange(50)[::-1] * 0.1
    keep, timestep, bad = check(make_rows(["a"] * 50, t, 1.0 * np.arange(50)[::-1]))
    assert bad == {} and sorted(timestep) == list(range(50))
    # shuffled, two interleaved tracks: the same verdict
    rng = np.random.default_rng(0)
    perm = rng.permutation(100)
    ids = np.array(["a"] * 50 + ["b"] * 50)[perm]
    t = np.r_[np.arange(50), np.arange(50)][perm] * 0.1
    x = np.r_[np.arange(50), 100 + 0.5 * np.arange(50)][perm]
    keep, _, bad = check(make_rows(list(ids), t, x))
    assert bad == {} and len(keep) == 100


def test_duplicates_keep_the_first_row_of_the_file():
    keep, _, bad = check(make_rows(["a", "a", "a", "a"], [0.2, 0.1, 0.2, 0.0], [2.0, 1.0, 2.1, 0.0]))
    assert bad == {2: ("timestep", "duplicate (track, timestep)")} and list(keep) == [0, 1, 3]


@pytest.mark.parametrize(
    ("bad_id", "reason"),
    [("", "missing track id"),
     ("x" * (MAX_TRACK_ID_CHARS + 1), f"track id longer than {MAX_TRACK_ID_CHARS} characters"),
     ("ped\x00A", "track id contains a control character"),
     ("ped\x1f", "track id contains a control character")],
)
def test_unusable_track_ids_are_quarantined(bad_id, reason):
    keep, _, bad = check(make_rows(["ok", bad_id, "ok", bad_id], [0.0, 0.0, 0.1, 0.1], [0.0, 5.0, 0.1, 5.1]))
    assert bad == {1: ("track_id", reason), 3: ("track_id", reason)} and list(keep) == [0, 2]


def test_single_bad_row_alone_is_rejected():
    x = np.arange(10) * 1.0
    x[4] = 500.0  # one glitch; the track comes back at once
    keep, _, bad = check(make_rows(["a"] * 10, np.arange(10) * 0.1, x))
    assert bad == {4: ("x", JUMP)}
    assert len(keep) == 9


CUT = "cut off by an impossible jump in the track (its longest jump-free part is kept)"
JUMP = "impossible speed implied by consecutive positions"


def test_a_jump_keeps_the_longest_part_of_the_track():
    # A teleport: 100 m in one step, then normal motion from there. Rejecting only the row
    # after it would leave a 100 m step between the rows kept; the longer side is kept.
    x = np.r_[np.arange(3) * 1.0, 100 + np.arange(7) * 1.0]
    rows = make_rows(["a"] * 10 + ["b"] * 3, np.r_[np.arange(10), np.arange(3)] * 0.1, np.r_[x, 0.0, 1.0, 2.0])
    keep, _, bad = check(rows)
    assert bad == {0: ("x", CUT), 1: ("x", CUT), 2: ("x", CUT)}
    assert list(keep) == [3, 4, 5, 6, 7, 8, 9, 10, 11, 12]  # the other track is untouched
    # longer before the jump: the landing row and what follows go
    x = np.r_[np.arange(6) * 1.0, 100 + np.arange(4) * 1.0]
    keep, _, bad = check(make_rows(["a"] * 10, np.arange(10) * 0.1, x))
    assert bad == {6: ("x", JUMP), 7: ("x", CUT), 8: ("x", CUT), 9: ("x", CUT)}


def test_jump_beyond_reported_speed_where_the_source_opts_in():
    # 3 m sideways in 0.1 s at 10 m/s: under the class's 70 m/s, but not what the reported
    # speed allows (1 m + 1 m tolerance). Only a source with exact speeds opts in.
    x = np.arange(8) * 1.0
    y = np.r_[np.zeros(4), np.full(4, 3.0)]
    speed = np.full(8, 10.0)
    _, _, bad = check(make_rows(["a"] * 8, np.arange(8) * 0.1, x, y, speed))
    assert bad == {}
    _, _, bad = check(make_rows(["a"] * 8, np.arange(8) * 0.1, x, y, speed, jump_tolerance_m=1.0))
    assert bad == {4: ("x", JUMP), 5: ("x", CUT), 6: ("x", CUT), 7: ("x", CUT)}  # equal parts: the first is kept


def test_sort_order_is_lexsort():
    rng = np.random.default_rng(0)
    a, b, c = rng.integers(-3, 4, 500), rng.integers(0, 50, 500), rng.integers(-10**6, 10**6, 500)
    np.testing.assert_array_equal(sort_order(a, b, c), np.lexsort((c, b, a)))
    np.testing.assert_array_equal(sort_order(b, a), np.lexsort((a, b)))  # ties keep the given order
    huge = rng.integers(-2**62, 2**62, 500)  # keys that cannot be packed into one int64
    np.testing.assert_array_equal(sort_order(a, huge), np.lexsort((huge, a)))
    assert len(sort_order(np.zeros(0, np.int64), np.zeros(0, np.int64))) == 0
