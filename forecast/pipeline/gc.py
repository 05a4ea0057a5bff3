"""``forecast pipeline gc CONFIG``: remove the step outputs a pipeline no longer needs.

Every changed input, setting or code file gives a step a new hash and a new ``<step>/<hash>/``
folder, and the old ones stay, so that going back to an older config is free. A nightly pipeline
with new data therefore adds a store, two models, an evaluation and a bundle every night. Run ``gc``
after the run (same config and overrides) to keep what matters:

* every folder of the current plan, finished or ``.partial`` (the next run resumes it);
* every folder ``latest.json`` names (the last run's outputs, whatever config it ran);
* the newest ``keep`` other finished outputs of each step (by the time their ``_SUCCESS.json`` was
  written): a way back to the previous model, store or bundle.

Every other ``<hash>/`` and ``<hash>.partial/`` folder goes. The registered champion lives in MLflow's
artifact store, not here, so it does not depend on what ``gc`` keeps. Runs with the work_dir lock held:
never beside a pipeline run.
"""

from __future__ import annotations

import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from forecast.pipeline.runner import plan
from forecast.pipeline.workdir import SUCCESS, read_json, work_dir_lock

_OUTPUT = re.compile(r"^[0-9a-f]{16}(\.partial)?$")  # <hash>/ and <hash>.partial/ (step_hash: 16 hex digits)


@dataclass
class Removal:
    path: Path
    bytes: int
    why: str


def _size(root: Path) -> int:
    total = 0
    for dirpath, _, files in os.walk(root):
        for f in files:
            try:
                total += (Path(dirpath) / f).lstat().st_size
            except OSError:
                pass
    return total


def _finished_at(folder: Path) -> float:
    try:
        return (folder / SUCCESS).stat().st_mtime
    except OSError:
        return 0.0


def garbage(steps, work_dir: str | Path, keep: int = 1) -> list[Removal]:
    """The folders ``gc`` removes (nothing is removed here). ``steps``: the pipeline's steps (``build_steps``)."""
    if keep < 0:
        raise ValueError(f"--keep must be 0 or more, got {keep}")
    work_dir = Path(work_dir)
    planned = plan(steps, work_dir)
    wanted = {p.final for p in planned} | {p.partial for p in planned}
    latest = read_json(work_dir / "latest.json")
    wanted |= {Path(s["path"]) for s in (latest.get("steps") or {}).values() if isinstance(s, dict) and s.get("path")}
    out = []
    for p in planned:
        step_dir = work_dir / p.name
        if not step_dir.is_dir():
            continue
        folders = [f for f in step_dir.iterdir() if f.is_dir() and _OUTPUT.match(f.name) and f not in wanted]
        finished = sorted((f for f in folders if (f / SUCCESS).exists()), key=_finished_at, reverse=True)
        for f in finished[keep:]:
            out.append(Removal(f, _size(f), f"an older {p.name} output (the newest {keep} are kept)"))
        for f in folders:
            if not (f / SUCCESS).exists():
                why = ("a partial run of another config" if f.name.endswith(".partial")
                       else "an output that never finished")
                out.append(Removal(f, _size(f), why))
    return out


def collect_garbage(steps, work_dir: str | Path, keep: int = 1, dry_run: bool = False) -> list[Removal]:
    """Remove ``garbage(steps, work_dir, keep)`` with the work_dir lock held (PipelineLocked if a run holds it).

    Each folder is first renamed to a hidden ``.trash-`` name, so that no reader ever sees half of one;
    a gc killed midway leaves only such names, which the next run or gc removes."""
    work_dir = Path(work_dir)
    with work_dir_lock(work_dir, dead_holder_wait_s=0.0):
        removals = garbage(steps, work_dir, keep)
        if not dry_run:
            for r in removals:
                trash = r.path.with_name(f".trash-{r.path.name}-{os.getpid()}")
                os.replace(r.path, trash)
                shutil.rmtree(trash, ignore_errors=True)
    return removals
