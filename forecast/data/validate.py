"""Row validation shared by every adapter: each input row is either kept or quarantined with a reason.

All checks are vectorised over the rows of one input file (no Python loop per row).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from forecast.data.schema import MAX_SPEED, QUARANTINE_SCHEMA, AgentType


def dictionary_code(column: pa.Array | pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray]:
    """Strings -> (codes [N] int64, names [U] object), vectorised in Arrow; a null becomes "".

    The column is combined into one chunk first, so that codes are global and not per row group.
    """
    enc = pc.dictionary_encode(pc.fill_null(column.cast(pa.string()), "").combine_chunks())
    return enc.indices.to_numpy().astype(np.int64), np.asarray(enc.dictionary.to_pylist(), dtype=object)


@dataclass
class RawRows:
    """Rows of one input file, already mapped to canonical units, before validation.

    Per-row arrays have one entry per data row of the file, in file order ``[N]``. Strings
    are dictionary-coded (``*_code`` index into ``*_names``) so that nothing loops per row.
    ``time`` is in seconds from the file's start and must sit on the ``dt`` grid.
    """

    track_code: np.ndarray  # [N] int64 -> track_names
    track_names: np.ndarray  # [U] str
    type_code: np.ndarray  # [N] int64 -> type_names
    type_names: np.ndarray  # [V] str, the source's own class names
    type_map: np.ndarray  # [V] int8, AgentType per source class, -1 = unknown
    time: np.ndarray  # [N] float64, seconds
    x: np.ndarray  # [N] float64, metres
    y: np.ndarray  # [N] float64, metres
    heading: np.ndarray  # [N] float64, radians CCW from +x (NaN = unknown)
    vx: np.ndarray  # [N] float64, m/s (NaN = unknown)
    vy: np.ndarray  # [N] float64
    observed: np.ndarray  # [N] bool
    speed: np.ndarray | None = None  # [N] float64, a speed the source reports, checked too
    # [N] int64, each row's 0-based data row in the file, for adapters that drop unparsable
    # rows before validation; None = rows are the file's rows in order (index = data row).
    file_row: np.ndarray | None = None

    _PER_ROW = ("track_code", "type_code", "time", "x", "y", "heading", "vx", "vy", "observed", "speed", "file_row")

    def __len__(self) -> int:
        return len(self.x)

    @property
    def agent_type(self) -> np.ndarray:
        """[N] int8 AgentType per row, -1 where the source class is unknown."""
        return self.type_map[self.type_code]

    def take(self, idx: np.ndarray) -> RawRows:
        kw = {k: v for k, v in self.__dict__.items()}
        for k in self._PER_ROW:
            if kw[k] is not None:
                kw[k] = kw[k][idx]
        return RawRows(**kw)


@dataclass
class Quarantine:
    """Rejected rows of one file: parallel arrays ``[Q]``."""

    source: str
    source_file: str
    row: np.ndarray
    field: np.ndarray
    reason: np.ndarray
    file_fault: bool = False  # the whole file was rejected (unreadable, missing columns)

    @classmethod
    def empty(cls, source: str, source_file: str) -> Quarantine:
        e = np.array([], dtype=object)
        return cls(source, source_file, np.array([], dtype=np.int64), e, e)

    @classmethod
    def whole_file(cls, source: str, source_file: str, field: str, reason: str, rows: int = 0) -> Quarantine:
        """A file that cannot be read at all (row -1), or all ``rows`` of a file with a file-level fault."""
        idx = np.arange(rows, dtype=np.int64) if rows else np.array([-1], dtype=np.int64)
        n = len(idx)
        return cls(source, source_file, idx, np.full(n, field, dtype=object), np.full(n, reason, dtype=object), True)

    def __len__(self) -> int:
        return len(self.row)

    @property
    def num_rows(self) -> int:
        """Data rows rejected (a whole-file record with row -1 counts none)."""
        return int(np.count_nonzero(self.row >= 0))

    def to_table(self) -> pa.Table:
        n = len(self.row)
        return pa.table(
            {
                "source": pa.array([self.source] * n, pa.string()),
                "source_file": pa.array([self.source_file] * n, pa.string()),
                "row": pa.array(self.row, pa.int64()),
                "field": pa.array(self.field.astype(str) if n else [], pa.string()),
                "reason": pa.array(self.reason.astype(str) if n else [], pa.string()),
            },
            schema=QUARANTINE_SCHEMA,
        )

    def reason_counts(self) -> dict[str, int]:
        if not len(self.reason):
            return {}
        keys, counts = np.unique(self.reason.astype(str), return_counts=True)
        return {str(k): int(c) for k, c in zip(keys, counts, strict=True)}


def validate_rows(rows: RawRows, dt: float, source: str, source_file: str) -> tuple[np.ndarray, np.ndarray, Quarantine]:
    """Check every row; return ``(keep_idx [K], timestep [K], quarantine)``.

    Checks, first failure wins: finite position, known agent type, time finite and on the
    ``dt`` grid, no duplicate (track, timestep), time not going backwards within a track in
    file order, speed (reported, or implied by consecutive positions) plausible for the class.
    Duplicates keep their first row.
    """
    n = len(rows)
    reason = np.full(n, None, dtype=object)
    field = np.full(n, None, dtype=object)

    def reject(mask: np.ndarray, f: str, why: str | np.ndarray) -> None:
        new = mask & (reason == None)  # noqa: E711 - elementwise on an object array
        field[new] = f
        reason[new] = why[new] if isinstance(why, np.ndarray) else why

    reject(~np.isfinite(rows.x), "x", "non-finite position")
    reject(~np.isfinite(rows.y), "y", "non-finite position")
    agent_type = rows.agent_type
    unknown = agent_type < 0
    if unknown.any():
        names = np.array([f"unknown agent type {t!r}" for t in rows.type_names], dtype=object)
        reject(unknown, "agent_type", names[rows.type_code])
    steps_f = rows.time / dt
    timestep = np.rint(np.where(np.isfinite(steps_f), steps_f, 0)).astype(np.int64)
    reject(~np.isfinite(rows.time), "time", "non-finite time")
    reject(np.abs(steps_f - timestep) > 1e-3, "time", f"time off the {dt:g} s grid")
    reject(timestep < 0, "time", "time before the file's start")

    _reject_order(rows.track_code, timestep, reason, reject)
    _reject_speed(rows, agent_type, timestep, dt, reason, reject)

    ok = reason == None  # noqa: E711
    bad = np.flatnonzero(~ok)
    bad_row = bad if rows.file_row is None else rows.file_row[bad]
    q = Quarantine(source, source_file, bad_row.astype(np.int64), field[bad], reason[bad])
    keep = np.flatnonzero(ok)
    return keep, timestep[keep], q


def _reject_order(track_code, timestep, reason, reject) -> None:
    alive = np.flatnonzero(reason == None)  # noqa: E711
    if not len(alive):
        return
    # Stable sort by track keeps file order inside a track.
    order = alive[np.argsort(track_code[alive], kind="stable")]
    tc, ts = track_code[order], timestep[order]
    start = np.r_[True, tc[1:] != tc[:-1]]
    group = np.cumsum(start) - 1
    # Groups are contiguous with increasing ids, so one running max over (group, timestep)
    # keys is a running max per track; timesteps are >= 0 here (negatives were rejected).
    big = np.int64(1) << 32
    running = np.maximum.accumulate(group * big + ts)
    prev_max = np.r_[-1, running[:-1]] - group * big
    prev_max[start] = -1
    seen_equal = _equal_to_earlier(tc, ts)
    dup = np.zeros(len(reason), bool)
    back = np.zeros(len(reason), bool)
    dup[order[seen_equal]] = True
    back[order[(ts < prev_max) & ~seen_equal]] = True
    reject(dup, "timestep", "duplicate (track, timestep)")
    reject(back, "time", "time going backwards within the track")


def _equal_to_earlier(tc: np.ndarray, ts: np.ndarray) -> np.ndarray:
    """[M] bool: the (track, timestep) pair already appeared earlier (rows in file order per track)."""
    order = np.lexsort((np.arange(len(tc)), ts, tc))  # by track, then timestep, then file order
    same = (tc[order][1:] == tc[order][:-1]) & (ts[order][1:] == ts[order][:-1])
    out = np.zeros(len(tc), bool)
    out[order[1:][same]] = True
    return out


def _reject_speed(rows: RawRows, agent_type, timestep, dt, reason, reject) -> None:
    track_code = rows.track_code
    limit = np.full(len(rows), MAX_SPEED[AgentType.OTHER])
    for t, v in MAX_SPEED.items():
        limit[agent_type == t] = v
    if rows.speed is not None:
        reject(np.abs(np.nan_to_num(rows.speed, nan=0.0)) > limit, "speed", "impossible reported speed")
    alive = np.flatnonzero(reason == None)  # noqa: E711
    if len(alive) < 2:
        return
    order = alive[np.lexsort((timestep[alive], track_code[alive]))]
    same = track_code[order][1:] == track_code[order][:-1]
    gap = (timestep[order][1:] - timestep[order][:-1]) * dt
    dist = np.hypot(np.diff(rows.x[order]), np.diff(rows.y[order]))
    implied = np.where(same & (gap > 0), dist / np.where(gap > 0, gap, 1.0), 0.0)
    bad = np.zeros(len(rows), bool)
    bad[order[1:][implied > limit[order[1:]]]] = True
    reject(bad, "x", "impossible speed implied by consecutive positions")
