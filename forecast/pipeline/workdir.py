"""The ``work_dir`` as shared state: one writer at a time (flock), atomic commits, leftovers of dead runs.

These are the only places where the pipeline's outputs change on disk: a working directory is
renamed to its final ``<step>/<hash>/`` name (:func:`commit`) while ``work_dir/.lock`` is held
(:func:`work_dir_lock`).
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from forecast.data.atomic import sha256_file, write_json_atomic

SUCCESS = "_SUCCESS.json"


class PipelineLocked(RuntimeError):
    """Another run holds ``work_dir/.lock``."""

    def __init__(self, path: Path, holder: dict):
        self.path, self.holder = path, holder
        who = f"pid {holder.get('pid', '?')} on {holder.get('host', '?')}, started {holder.get('started', '?')}"
        super().__init__(f"{path} is locked by another pipeline run ({who})")


class WorkDirError(ValueError):
    """``work_dir`` cannot hold a run: it is a file, or it cannot be created or written (exit 2)."""


def check_work_dir(work_dir: Path) -> None:
    """Create ``work_dir`` if needed and prove it writable, or raise WorkDirError saying why."""
    work_dir = Path(work_dir)
    if work_dir.exists() and not work_dir.is_dir():
        raise WorkDirError(f"work_dir {work_dir} is a file, not a directory (set work_dir=... to a folder)")
    try:
        work_dir.mkdir(parents=True, exist_ok=True)
        probe = work_dir / f".write-probe-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        where = exc.filename or work_dir
        raise WorkDirError(f"work_dir {work_dir} cannot be written ({where}: {exc.strerror}); "
                           "pick a writable folder with work_dir=...") from None


def read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text() or "{}")
    except (OSError, ValueError):
        return {}


def _alive(holder: dict) -> bool:
    if holder.get("host") != socket.gethostname() or not holder.get("pid"):
        return True  # cannot tell from here
    try:
        os.kill(int(holder["pid"]), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextmanager
def work_dir_lock(work_dir: Path, dead_holder_wait_s: float = 30.0) -> Iterator[None]:
    """Hold ``flock`` on ``work_dir/.lock`` (non-blocking); raise PipelineLocked if another run has it.

    A forked child of a killed run (a DataLoader worker) can keep the lock for a few seconds after
    its parent died; when the recorded holder is gone we wait up to ``dead_holder_wait_s`` for it.
    """
    work_dir.mkdir(parents=True, exist_ok=True)
    path = work_dir / ".lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    deadline = time.monotonic() + dead_holder_wait_s
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            holder = read_json(path)
            if _alive(holder) or time.monotonic() > deadline:
                os.close(fd)
                raise PipelineLocked(path, holder) from None
            time.sleep(0.5)
    try:
        os.ftruncate(fd, 0)
        info = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%dT%H:%M:%S")}
        os.pwrite(fd, json.dumps(info).encode(), 0)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def clean_stale(work_dir: Path) -> list[Path]:
    """Remove working directories of runs that died (call with the lock held); ``.partial`` ones are kept."""
    removed = []
    for step_dir in sorted(p for p in Path(work_dir).iterdir() if p.is_dir() and not p.name.startswith(".")):
        for p in step_dir.iterdir():
            if p.name.startswith((".tmp-", ".trash-")):
                shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
                removed.append(p)
    return removed


def hash_outputs(root: Path) -> dict[str, str]:
    """sha256 of every file under ``root`` (but ``_SUCCESS.json``), by path relative to it, sorted."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for f in sorted(filenames):
            path = Path(dirpath) / f
            rel = path.relative_to(root).as_posix()
            if rel != SUCCESS:
                out[rel] = sha256_file(path)
    return out


def verify_outputs(root: Path, record: dict | None = None) -> list[str]:
    """What differs between ``root``'s files and the sha256s its ``_SUCCESS.json`` recorded ([] when intact).

    A missing or unreadable record, or one written before outputs were hashed, is a difference too:
    nothing can vouch for the files. Files added later (e.g. ``registration.json`` beside a bundle)
    are not: they do not change what was committed.
    """
    record = read_json(root / SUCCESS) if record is None else record
    files = record.get("files")
    if not isinstance(files, dict):
        return [f"{root / SUCCESS} records no sha256 of the outputs (missing, unreadable or written by an older "
                "version)"]
    problems = []
    for rel, expected in sorted(files.items()):
        path = root / rel
        if not path.is_file():
            problems.append(f"{path} is missing")
            continue
        try:
            actual = sha256_file(path)
        except OSError as exc:
            problems.append(f"{path} cannot be read ({exc.strerror})")
            continue
        if actual != expected:
            problems.append(f"{path} changed (sha256 {actual[:12]}... instead of {expected[:12]}...)")
    return problems


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def commit(work: Path, final: Path, record: dict) -> None:
    """Write ``_SUCCESS.json`` (with the sha256 of every output file) into ``work`` and rename it to ``final``
    (replacing an older ``final``)."""
    if "files" not in record:
        record = {**record, "files": hash_outputs(work)}
    write_json_atomic(record, work / SUCCESS)
    trash = None
    if final.exists():  # --force: keep the old output until the new one is complete
        trash = final.with_name(f".trash-{final.name}-{os.getpid()}")
        os.rename(final, trash)
    os.rename(work, final)
    _fsync_dir(final.parent)
    if trash is not None:
        shutil.rmtree(trash, ignore_errors=True)


def lock_holder(work_dir: str | Path) -> dict | None:
    """Who holds ``work_dir/.lock`` right now (None if nobody)."""
    path = Path(work_dir) / ".lock"
    if not path.exists():
        return None
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    except BlockingIOError:
        return read_json(path)
    finally:
        os.close(fd)


def read_latest(work_dir: str | Path) -> dict:
    """``latest.json``, made honest: a "running" run whose process is gone reads as "died".

    A run killed with SIGKILL (or by the OOM killer, or a lost node) cannot update the file; nobody
    then holds ``.lock``, or its recorded holder's pid is dead on this host. Returns {} if there is no file.
    """
    latest = read_json(Path(work_dir) / "latest.json")
    if latest.get("status") != "running":
        return latest
    holder = lock_holder(work_dir)
    writer = {"pid": latest.get("pid"), "host": latest.get("host")}
    if holder is None or not _alive(holder) or (writer["pid"] and not _alive(writer)):
        latest = {**latest, "status": "died", "recorded_status": "running",
                  "note": f"the run (pid {latest.get('pid', '?')} on {latest.get('host', '?')}) ended without "
                          "recording it (killed?); rerun to resume"}
    return latest
