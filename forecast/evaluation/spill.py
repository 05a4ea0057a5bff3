"""Per-agent arrays of an evaluation kept on disk, read back in row chunks.

The evaluation loop produces, per scored agent, the ground truth ``[T, 2]`` and every predictor's
modes ``[K, T, 2]``: about 7 kB per agent with the two baselines, so holding them in memory makes
``forecast evaluate`` grow with the split. :class:`Spill` appends each array to a raw file as the
samples come and hands back read-only ``np.memmap`` views; the metrics then read the rows in chunks
(:func:`row_chunks`, :func:`read_rows`) and keep only per-agent scalars. The chunks are plain
copies (``np.fromfile``), not pages of the mapping, so what they read leaves the process's memory
with the chunk.

Every metric is a function of one agent's row (or, for the joint metrics, of one sample's rows,
hence chunks that end at a sample boundary), so a chunked computation gives the very same
per-agent values as one over the whole array, and the aggregation over them is unchanged.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

CHUNK_ROWS = 2048  # agents per chunk: ~15 MB of trajectories with two predictors, plus the metrics' temporaries
# A spill its process left behind is removed once untouched this long: a day is far above any evaluation's
# pause between writes, so a live spill in another PID namespace sharing $TMPDIR is never taken.
STALE_AFTER_S = 24 * 3600


def _owner_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def _newest_mtime(folder: Path) -> float:
    times = [folder.stat().st_mtime]
    times += [f.stat().st_mtime for f in folder.iterdir()]
    return max(times)


def sweep_stale(prefix: str) -> None:
    """Remove the folders in ``$TMPDIR`` that a killed evaluation left: named ``<prefix><pid>-*``, their
    process gone and nothing in them written for :data:`STALE_AFTER_S`.

    A SIGKILL (an out-of-memory kill, a scheduler's hard timeout) skips every ``finally``, and a nightly
    evaluation would otherwise leave a spill of hundreds of MB, or a champion's download, per night.
    """
    now = time.time()
    for folder in Path(tempfile.gettempdir()).glob(f"{prefix}*-*"):
        pid = folder.name[len(prefix):].split("-", 1)[0]
        if not pid.isdigit() or _owner_alive(int(pid)):  # this process's own spills are alive too
            continue
        try:
            if not folder.is_dir() or now - _newest_mtime(folder) < STALE_AFTER_S:
                continue
        except OSError:  # removed meanwhile, or not ours to read
            continue
        shutil.rmtree(folder, ignore_errors=True)


def process_tempdir(prefix: str) -> tempfile.TemporaryDirectory:
    """A temporary directory named ``<prefix><pid>-*``, made after sweeping the ones that killed processes
    left under the same prefix (:func:`sweep_stale`)."""
    sweep_stale(prefix)
    return tempfile.TemporaryDirectory(prefix=f"{prefix}{os.getpid()}-")


class Spill:
    """Append-only columns on disk: ``append(name, rows)`` per sample, ``finish()`` once.

    The files live in a temporary directory (``$TMPDIR``, named ``<prefix><pid>-*``) that is removed
    when the arrays are garbage-collected (the memmaps keep an unlinked file readable until then); the
    ones killed processes left are swept when a new spill starts (:func:`sweep_stale`).
    """

    def __init__(self, prefix: str = "forecast-eval-") -> None:
        self._dir = process_tempdir(prefix)
        self.path = Path(self._dir.name)
        self._files: dict[str, object] = {}
        self._paths: dict[str, Path] = {}
        self._meta: dict[str, tuple[np.dtype, tuple[int, ...], int]] = {}  # dtype, row shape, rows

    def append(self, name: str, rows: np.ndarray, dtype=None) -> None:
        rows = np.ascontiguousarray(rows, dtype=dtype)
        if name not in self._files:
            # files by number: a column's name holds a predictor's name, which may hold any character
            self._paths[name] = self.path / f"c{len(self._files)}.bin"
            self._files[name] = open(self._paths[name], "wb")  # noqa: SIM115 - closed in finish()
            self._meta[name] = (rows.dtype, rows.shape[1:], 0)
        dt, shape, n = self._meta[name]
        if rows.dtype != dt or rows.shape[1:] != shape:
            raise ValueError(f"spill column {name!r}: rows {rows.dtype} {rows.shape[1:]}, expected {dt} {shape}")
        rows.tofile(self._files[name])
        self._meta[name] = (dt, shape, n + len(rows))

    @property
    def columns(self) -> list[str]:
        return list(self._files)

    def finish(self, in_memory: tuple[str, ...] = ()) -> dict[str, np.ndarray]:
        """``{name: array}``: read-only memmaps, except the columns named in ``in_memory`` (read whole)."""
        out: dict[str, np.ndarray] = {}
        for name, fh in self._files.items():
            fh.close()
            dt, shape, n = self._meta[name]
            path = self._paths[name]
            if name in in_memory or n == 0:
                out[name] = np.fromfile(path, dtype=dt).reshape((n, *shape))
            else:
                arr = np.memmap(path, dtype=dt, mode="r", shape=(n, *shape))
                arr._spill = self._dir  # the directory lives as long as any of its arrays
                out[name] = arr
        return out


def read_rows(arr: np.ndarray, lo: int, hi: int) -> np.ndarray:
    """Rows ``lo:hi`` of ``arr`` as an ordinary in-memory array (a copy read from the file for a memmap)."""
    if getattr(arr, "_spill", None) is not None:  # set on the arrays finish() makes, not on their slices
        row = int(np.prod(arr.shape[1:], dtype=np.int64))
        data = np.fromfile(arr.filename, dtype=arr.dtype, count=(hi - lo) * row,
                           offset=int(arr.offset) + lo * row * arr.dtype.itemsize)
        return data.reshape((hi - lo, *arr.shape[1:]))
    return np.array(arr[lo:hi])


def row_chunks(sample: np.ndarray, size: int = CHUNK_ROWS) -> Iterator[tuple[int, int]]:
    """``(lo, hi)`` row ranges of about ``size`` rows that never cut a sample's rows apart.

    ``sample`` ``[N]``: the sample of each row, grouped (rows of one sample are contiguous).
    """
    n = len(sample)
    lo = 0
    while lo < n:
        hi = min(n, lo + max(1, size))
        while hi < n and sample[hi] == sample[hi - 1]:
            hi += 1
        yield lo, hi
        lo = hi
