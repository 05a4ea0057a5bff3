"""``forecast pipeline run|status``: exit codes, argument handling, and kill -9 during training then resume."""

from __future__ import annotations

import json
import os
import subprocess
import time

from forecast.cli import EXIT_LOCKED, main
from forecast.pipeline.cli import exit_code
from forecast.pipeline.gate import GateConfig
from forecast.pipeline.runner import PipelineResult
from forecast.pipeline.workdir import work_dir_lock
from tests.pipeline.conftest import ROOT, child_env, forecast_cmd, write_tiny_pipeline

EPOCHS = 6
STEPS_PER_EPOCH = 4  # 16 training samples, batches of 4


def _wait_for(pattern: str, root, proc, timeout: float = 180.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = list(root.glob(pattern))
        if found:
            return found[0]
        if proc.poll() is not None:
            raise AssertionError(f"pipeline exited ({proc.returncode}) before {pattern} appeared:\n"
                                 + proc.stderr.read().decode()[-3000:])
        time.sleep(0.05)
    raise AssertionError(f"{pattern} did not appear within {timeout} s")


def test_kill_9_during_training_then_rerun_resumes(tmp_path, capsys):
    cfg = write_tiny_pipeline(tmp_path, ["simulate", "ingest", "train"], **{"optim.max_epochs": EPOCHS})
    cmd = forecast_cmd("--quiet", "pipeline", "run", str(cfg))
    work = tmp_path / "work"
    proc = subprocess.Popen(cmd, cwd=ROOT, env=child_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        _wait_for("train/*.partial/checkpoints/last.ckpt", work, proc)
        assert proc.poll() is None, "training finished before it could be killed"
        proc.kill()  # SIGKILL: no cleanup of any kind
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert not list(work.glob("train/[0-9a-f]*[0-9a-f]")), "a train output appeared although training was killed"
    assert json.loads((work / "latest.json").read_text())["status"] == "running"  # all a killed run can leave
    assert main(["pipeline", "status", str(cfg), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["last_run"]["status"] == "died"  # ... read honestly

    rerun = subprocess.run(cmd, cwd=ROOT, env=child_env(), capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    latest = json.loads((work / "latest.json").read_text())
    assert {k: v["status"] for k, v in latest["steps"].items()} == {"simulate": "skipped", "ingest": "skipped",
                                                                     "train": "ran"}
    train = work / "train" / latest["steps"]["train"]["hash"]
    record = json.loads((train / "_SUCCESS.json").read_text())
    assert record["resumed"] is True
    assert record["summary"]["global_step"] == EPOCHS * STEPS_PER_EPOCH  # continued, not restarted
    assert (train / "model.pt").exists() and not list(work.glob("train/*.partial"))
    summary = json.loads((train / "train_summary.json").read_text())
    assert (train / summary["model"]).is_file() and ".partial" not in summary["model"]

    assert main(["--quiet", "pipeline", "run", str(cfg)]) == 0  # in this process: nothing left to import
    assert "nothing to do: all 3 steps are up to date (skipped)" in capsys.readouterr().out


def test_cli_exits_75_when_locked(tmp_path, capsys):
    cfg = ROOT / "configs" / "pipeline" / "quickstart.yaml"
    with work_dir_lock(tmp_path / "work"):  # a second flock on the same file, as another process would take
        code = main(["--quiet", "pipeline", "run", str(cfg), f"work_dir={tmp_path / 'work'}", "mlflow.enabled=false",
                     "steps=[simulate,ingest,train]", "gate.enabled=false"])  # register needs MLflow, the gate evaluate
    assert code == EXIT_LOCKED == 75
    assert f"pid {os.getpid()}" in capsys.readouterr().err


def test_exit_codes():
    assert exit_code(PipelineResult("ok"), GateConfig()) == 0
    assert exit_code(PipelineResult("failed"), GateConfig()) == 1
    assert exit_code(PipelineResult("gate_failed"), GateConfig(fail_on_gate=True)) == 4
    assert exit_code(PipelineResult("gate_failed"), GateConfig(fail_on_gate=False)) == 0


def test_status_says_when_the_gate_shown_is_from_an_earlier_run(tmp_path, capsys):
    """A run with the gate off left the previous run's FAILED gate under 'last run: ok' as if it were its own."""
    cfg = write_tiny_pipeline(tmp_path, ["simulate", "ingest", "train"])
    work = tmp_path / "work"
    work.mkdir(exist_ok=True)
    (work / "gate.json").write_text(json.dumps({"passed": False, "reasons": ["FAIL beat constant_velocity"],
                                                "decided": "2026-11-28T10:00:00"}))
    for started, earlier in (("2026-11-29T10:00:00", True), ("2026-11-28T09:59:00", False)):
        (work / "latest.json").write_text(json.dumps({"status": "ok", "started": started, "updated": started,
                                                      "steps": {}}))
        assert main(["pipeline", "status", str(cfg)]) == 0
        out = capsys.readouterr().out
        assert "gate (2026-11-28T10:00:00" in out and "FAILED" in out
        assert ("from an earlier run, the last run did not gate" in out) is earlier


def test_status_and_options_after_the_config(tmp_path, capsys):
    cfg = write_tiny_pipeline(tmp_path, ["simulate", "ingest", "train"])
    assert main(["pipeline", "status", str(cfg), "--json"]) == 0
    states = json.loads(capsys.readouterr().out)
    assert [s["state"] for s in states["steps"]] == ["pending"] * 3 and states["locked_by"] is None
    assert main(["pipeline", "run", str(cfg), "--until", "nope"]) == 2
    assert "--until 'nope'" in capsys.readouterr().err
    assert main(["pipeline", "run", str(cfg), "--frobnicate"]) == 2


def test_the_run_summary_gives_the_committed_bundle_with_its_digest(tmp_path, capsys):
    """The export step printed its digest beside the staging folder's path; the summary gives the committed
    bundle with the digest to pin in the car."""
    from types import SimpleNamespace

    from forecast.data.atomic import sha256_file
    from forecast.pipeline.cli import _print_summary
    from forecast.pipeline.runner import StepOutcome

    export = tmp_path / "export" / "f5d8"
    (export / "bundle").mkdir(parents=True)
    (export / "bundle" / "bundle.json").write_text('{"files": {}}')
    result = PipelineResult("ok", [StepOutcome("export", "f5d8", "ran", export, 1.0)])
    _print_summary(result, SimpleNamespace(name="t", work_dir=str(tmp_path)))
    digest = sha256_file(export / "bundle" / "bundle.json")
    assert f"bundle: {export / 'bundle'}  (bundle.json sha256 {digest})" in capsys.readouterr().out
