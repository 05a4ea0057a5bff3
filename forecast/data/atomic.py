"""Atomic file writes: a reader sees the old file or the whole new one, never half of one."""

from __future__ import annotations

import hashlib
import json
import os
import stat
import tempfile
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq


def _umask() -> int:
    """The process's umask, read without changing it where the OS tells it (Linux); else set and restored,
    which another thread creating a file at that instant would see (no OS in use here needs it)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def default_mode(directory: bool = False) -> int:
    """The mode a new file (0o666) or directory (0o777) of this process gets under its umask: for what
    mkstemp / mkdtemp made private (0o600 / 0o700) and is then renamed into place for other users to read."""
    return (0o777 if directory else 0o666) & ~_umask()


def open_directory(path: Path) -> None:
    """Give a directory made by mkdtemp (0o700) the mode of a new directory before it is renamed into place,
    keeping the setgid bit it inherited in a team share (which gives files added later the team's group)."""
    os.chmod(path, default_mode(directory=True) | (os.stat(path).st_mode & stat.S_ISGID))


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Call ``write(tmp)`` on a temporary path beside ``path``, fsync it, then rename over ``path``.

    The file gets the mode any new file would (0o666 less the umask), not mkstemp's private 0o600:
    stores, models and reports are read by other users, as the data files beside them are.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        write(tmp)
        os.chmod(tmp, default_mode())
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_parquet_atomic(table: pa.Table, path: Path) -> None:
    atomic_write(path, lambda tmp: pq.write_table(table, tmp, compression="zstd"))


def write_json_atomic(obj: object, path: Path) -> None:
    def _write(tmp: Path) -> None:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")

    atomic_write(path, _write)


def write_text_atomic(text: str, path: Path) -> None:
    atomic_write(path, lambda tmp: tmp.write_text(text))


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()
