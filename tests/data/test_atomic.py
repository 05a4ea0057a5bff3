"""Atomic writes: whole files only, with the mode any new file of this process would get."""

from __future__ import annotations

import json
import os
import stat

import pytest

from forecast.data.atomic import atomic_write, write_json_atomic


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_written_files_follow_the_umask_not_mkstemps_private_mode(tmp_path, umask, mode):
    """mkstemp makes 0o600 files: metrics.json, report.html, model.pt and the store's manifests were
    unreadable to other users while the Parquet data beside them was readable."""
    old = os.umask(umask)
    try:
        write_json_atomic({"a": 1}, tmp_path / "m.json")
        write_json_atomic({"a": 2}, tmp_path / "m.json")  # replacing a file: same rule
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "m.json").stat().st_mode) == mode
    assert json.loads((tmp_path / "m.json").read_text()) == {"a": 2}


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    write_json_atomic({"a": 1}, tmp_path / "m.json")

    def half(tmp):
        tmp.write_text("{")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(tmp_path / "m.json", half)
    assert json.loads((tmp_path / "m.json").read_text()) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["m.json"]


def test_a_sample_plan_saved_whole_is_readable_by_others(tmp_path):
    """Directories made with mkdtemp and renamed into place (sample plans, SUMO runs, bundles) were 0o700."""
    import numpy as np

    from forecast.features.plans import SamplePlan

    plan = SamplePlan.from_arrays(np.array([0, 1]), np.array([20, 30]), np.array([2, 1]), np.array([0, 1, 0]),
                                  np.array([True, True, False]))
    old = os.umask(0o022)
    try:
        plan.save(tmp_path / "plan")
        share = tmp_path / "share"  # a team share: setgid, so that what is added later gets the team's group
        share.mkdir()
        os.chmod(share, 0o2775)
        plan.save(share / "plan")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "plan").stat().st_mode) == 0o755
    assert len(SamplePlan.load(tmp_path / "plan")) == 2
    assert stat.S_IMODE((share / "plan").stat().st_mode) == 0o2755  # the inherited setgid bit is kept
