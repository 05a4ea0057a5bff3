"""Committed outputs carry their sha256s and are verified before use; latest.json and the errors tell the truth."""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import pytest

from forecast.cli import main
from forecast.pipeline.runner import plan, run_pipeline
from forecast.pipeline.workdir import SUCCESS, read_latest, verify_outputs
from tests.pipeline.conftest import write_tiny_pipeline
from tests.pipeline.test_runner import chain, quiet


def _flip_byte(path: Path, at: int = 0) -> None:
    data = bytearray(path.read_bytes())
    data[at] ^= 0x01
    path.write_bytes(bytes(data))


def test_success_records_the_sha256_of_every_output(tmp_path):
    steps = chain()
    run_pipeline(steps, tmp_path, quiet())
    for p in plan(steps, tmp_path):
        record = json.loads((p.final / SUCCESS).read_text())
        assert set(record["files"]) == {"out.txt", "partial.txt"}
        assert verify_outputs(p.final) == []


def test_changed_output_is_rebuilt_with_what_read_it(tmp_path):
    steps = chain()
    run_pipeline(steps, tmp_path, quiet())
    train = plan(steps, tmp_path)[2]
    _flip_byte(train.final / "out.txt")  # as `train/<hash>/model.pt` with one byte flipped
    logs: list[str] = []
    result = run_pipeline(steps, tmp_path, _opts(logs))
    assert [o.status for o in result.outcomes] == ["skipped", "skipped", "ran", "ran", "ran"]
    assert any("out.txt changed" in m and "rerunning train" in m for m in logs), logs
    assert (train.final / "out.txt").read_text() == "train<ingest<simulate" and verify_outputs(train.final) == []
    assert run_pipeline(steps, tmp_path, quiet()).all_skipped


def _opts(logs):
    from forecast.pipeline.runner import RunOptions

    return RunOptions(name="test", progress=False, log=logs.append)


@pytest.mark.parametrize("damage", ["delete", "no_hashes", "unreadable_record"])
def test_unverifiable_output_is_rebuilt(tmp_path, damage):
    steps = chain()
    run_pipeline(steps, tmp_path, quiet())
    export = plan(steps, tmp_path)[4]
    if damage == "delete":
        (export.final / "out.txt").unlink()
    elif damage == "no_hashes":  # written by an older version: nothing vouches for the files
        record = json.loads((export.final / SUCCESS).read_text())
        del record["files"]
        (export.final / SUCCESS).write_text(json.dumps(record))
    else:
        (export.final / SUCCESS).write_text("{half")
    result = run_pipeline(steps, tmp_path, quiet())
    assert [o.status for o in result.outcomes] == ["skipped"] * 4 + ["ran"]
    assert verify_outputs(export.final) == []


def test_finished_partial_that_changed_is_not_committed(tmp_path):
    steps = chain()
    p = plan(steps, tmp_path)[0]
    p.partial.mkdir(parents=True)
    (p.partial / "out.txt").write_text("simulate, then truncated")
    (p.partial / SUCCESS).write_text(json.dumps({"hash": p.hash, "files": {"out.txt": "0" * 64}}))
    result = run_pipeline(steps, tmp_path, quiet())
    assert result.outcomes[0].status == "ran" and len(steps[0].calls) == 1
    assert (p.final / "out.txt").read_text() == "simulate"


def test_latest_json_after_the_run_died(tmp_path):
    run_pipeline(chain(), tmp_path, quiet())
    latest = json.loads((tmp_path / "latest.json").read_text())
    assert latest["pid"] == os.getpid() and read_latest(tmp_path)["status"] == "ok"
    # what a run killed with SIGKILL leaves: "running", by a pid that no longer exists, nobody holding the lock
    dead = os.fork()
    if dead == 0:
        os._exit(0)
    os.waitpid(dead, 0)
    (tmp_path / "latest.json").write_text(json.dumps({**latest, "status": "running", "pid": dead}))
    honest = read_latest(tmp_path)
    assert honest["status"] == "died" and honest["recorded_status"] == "running"
    assert f"pid {dead}" in honest["note"]
    logs: list[str] = []
    run_pipeline(chain(), tmp_path, _opts(logs))
    assert any(m.startswith("previous run:") and f"pid {dead}" in m for m in logs)


def _readonly_dir(tmp_path: Path) -> Path:
    """A folder this process cannot write into (root ignores file modes: a sysfs folder then)."""
    if os.geteuid() != 0:
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o555)
        return ro
    ro = Path("/sys/kernel")
    if not ro.is_dir() or os.access(ro, os.W_OK) and _writable(ro):
        pytest.skip("no read-only folder available to root here")
    return ro


def _writable(d: Path) -> bool:
    try:
        (d / f".probe-{os.getpid()}").write_bytes(b"")
    except OSError:
        return False
    (d / f".probe-{os.getpid()}").unlink()
    return True


@pytest.mark.parametrize("where", ["file", "readonly", "under_readonly"])
def test_bad_work_dir_is_a_clear_usage_error(tmp_path, capsys, where):
    cfg = write_tiny_pipeline(tmp_path, ["simulate"])
    if where == "file":
        work = tmp_path / "work-file"
        work.write_text("not a folder")
        expect = "is a file, not a directory"
    else:
        ro = _readonly_dir(tmp_path)
        work = ro if where == "readonly" else ro / "work"
        expect = "cannot be written"
    assert main(["--quiet", "pipeline", "run", str(cfg), f"work_dir={work}", "mlflow.enabled=false"]) == 2
    err = capsys.readouterr().err
    assert f"work_dir {work}" in err and expect in err and "Traceback" not in err


@pytest.mark.parametrize("text", ["name: [unclosed", "- a list\n- not a mapping", None])
def test_bad_pipeline_config_is_a_clear_usage_error(tmp_path, capsys, text):
    cfg = tmp_path / "pipeline.yaml"
    if text is None:
        cfg.mkdir()  # a folder where the file should be
    else:
        cfg.write_text(text)
    assert main(["pipeline", "run", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert str(cfg) in err and "Traceback" not in err


def test_ingest_into_a_readonly_store_is_a_clear_error(tmp_path, capsys, sumo_runs):
    store = _readonly_dir(tmp_path) / "store"
    assert main(["--quiet", "ingest", "--source", "sumo", str(sumo_runs), "--store", str(store)]) == 2
    err = capsys.readouterr().err
    assert str(store) in err and "Traceback" not in err


def test_strict_ingest_in_the_pipeline_warns_and_exits_3(tmp_path, capsys, sumo_runs):
    runs = tmp_path / "runs"
    shutil.copytree(sumo_runs, runs)
    fcd = sorted(runs.rglob("fcd.parquet"))[0]
    fcd.write_bytes(fcd.read_bytes()[: fcd.stat().st_size // 2])  # a corrupt input file
    cfg = write_tiny_pipeline(tmp_path, ["ingest"], ingest_input=runs)
    assert main(["--quiet", "pipeline", "run", str(cfg)]) == 0  # not strict: stored what it could, and said so
    err = capsys.readouterr().err
    assert re.search(r"\[ingest\] warning: \d+ rows/files quarantined \(.*unreadable", err), err
    assert main(["--quiet", "pipeline", "run", str(cfg), "ingest.strict=true"]) == 3
    assert "ingest.strict" in capsys.readouterr().err
    assert main(["--quiet", "pipeline", "run", str(cfg), "ingest.strict=true"]) == 3  # a resumed run too


def test_step_without_its_record_is_rebuilt_with_what_read_it(tmp_path):
    steps = chain()
    run_pipeline(steps, tmp_path, quiet())
    (plan(steps, tmp_path)[2].final / SUCCESS).unlink()  # train: nothing vouches for model.pt any more
    result = run_pipeline(steps, tmp_path, quiet())
    assert [o.status for o in result.outcomes] == ["skipped", "skipped", "ran", "ran", "ran"]
