"""``forecast pipeline gc``: what the current plan, the last run and the newest others use stays; the rest goes."""

from __future__ import annotations

import os

import pytest

from forecast.pipeline.gc import collect_garbage, garbage
from forecast.pipeline.runner import plan, run_pipeline
from forecast.pipeline.workdir import SUCCESS, PipelineLocked, work_dir_lock
from tests.pipeline.test_runner import chain, quiet


def _three_trainings(work):
    """train (and what reads it) run with settings 1, 2, 3, finished at t = 1000, 2000, 3000 s."""
    finals = {}
    for v in (1, 2, 3):
        steps = chain(spec={"setting": v})
        assert run_pipeline(steps, work, quiet()).status == "ok"
        finals[v] = {p.name: p.final for p in plan(steps, work)}
        for p in finals[v].values():
            os.utime(p / SUCCESS, (1000.0 * v, 1000.0 * v))
    return finals


def test_gc_keeps_the_plan_the_last_run_and_the_newest_others(tmp_path):
    work = tmp_path / "work"
    finals = _three_trainings(work)
    foreign = work / "train" / ("f" * 16 + ".partial")  # a killed run of a config nobody runs any more
    foreign.mkdir()
    (foreign / "partial.txt").write_text("attempt 1")
    unknown = work / "train" / "notes"  # not an output folder: never touched
    unknown.mkdir()

    current = chain(spec={"setting": 3})
    listed = collect_garbage(current, work, keep=1, dry_run=True)
    assert {r.path for r in listed} == {finals[1]["train"], finals[1]["evaluate"], finals[1]["export"], foreign}
    assert all(r.path.exists() for r in listed) and all(r.bytes > 0 for r in listed)  # a dry run removes nothing

    removed = collect_garbage(current, work, keep=1)
    assert {r.path for r in removed} == {r.path for r in listed}
    assert not any(r.path.exists() for r in removed) and unknown.exists()
    assert not [p for p in (work / "train").iterdir() if p.name.startswith(".")]  # no .trash left
    for v in (2, 3):
        assert all(p.exists() for p in finals[v].values())
    assert run_pipeline(current, work, quiet()).all_skipped  # the current plan is intact

    # An older config given to gc keeps its own plan, and the last run's outputs (latest.json) too.
    older = chain(spec={"setting": 2})
    assert {r.path for r in garbage(older, work, keep=0)} == set()  # setting 2 is its plan, 3 the last run's
    assert {r.path for r in garbage(current, work, keep=0)} == {finals[2][n] for n in ("train", "evaluate", "export")}


def test_gc_waits_for_no_run(tmp_path):
    work = tmp_path / "work"
    _three_trainings(work)
    with work_dir_lock(work), pytest.raises(PipelineLocked):
        collect_garbage(chain(spec={"setting": 3}), work)
    with pytest.raises(ValueError, match="--keep"):
        garbage(chain(), work, keep=-1)


def test_gc_command(tiny_pipeline, tmp_path, capsys):
    from forecast.cli import main

    cfg = tiny_pipeline(["simulate", "ingest"])
    old = tmp_path / "work" / "ingest" / ("a" * 16)  # an ingest output of some older config
    old.mkdir(parents=True)
    (old / SUCCESS).write_text("{}")
    (old / "store.bin").write_bytes(b"x" * 1000)
    assert main(["pipeline", "gc", str(cfg), "--keep", "0", "--dry-run"]) == 0
    assert f"would remove {old}  (0.0 MB: an older ingest output" in capsys.readouterr().out and old.exists()
    assert main(["pipeline", "gc", str(cfg), "--keep", "1"]) == 0 and old.exists()  # the newest other is kept
    assert main(["pipeline", "gc", str(cfg), "--keep", "0"]) == 0 and not old.exists()
    assert "removed 1 folder(s)" in capsys.readouterr().out
