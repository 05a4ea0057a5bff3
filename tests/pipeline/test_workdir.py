"""The work_dir lock and atomic commits."""

from __future__ import annotations

import os

import pytest

from forecast.pipeline.runner import run_pipeline
from forecast.pipeline.workdir import PipelineLocked, commit, lock_holder, read_json, work_dir_lock
from tests.pipeline.test_runner import chain, quiet


def test_second_run_is_locked_out(tmp_path):
    with work_dir_lock(tmp_path):
        holder = lock_holder(tmp_path)
        assert holder["pid"] == os.getpid()
        with pytest.raises(PipelineLocked, match=f"pid {os.getpid()}"):
            run_pipeline(chain(), tmp_path, quiet())
    assert lock_holder(tmp_path) is None
    assert run_pipeline(chain(), tmp_path, quiet()).status == "ok"  # released


def test_commit_replaces_an_older_output_whole(tmp_path):
    final = tmp_path / "step" / "abc"
    final.mkdir(parents=True)
    (final / "old.txt").write_text("old")
    work = tmp_path / "step" / ".tmp-abc-1"
    work.mkdir()
    (work / "new.txt").write_text("new")
    commit(work, final, {"hash": "abc"})
    assert sorted(p.name for p in final.iterdir()) == ["_SUCCESS.json", "new.txt"]
    record = read_json(final / "_SUCCESS.json")
    assert record["hash"] == "abc" and list(record["files"]) == ["new.txt"]  # sha256 of every output
    assert sorted(p.name for p in (tmp_path / "step").iterdir()) == ["abc"]  # no .tmp or .trash left
