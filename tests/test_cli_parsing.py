"""The command line as a shell user meets it: flags in either place, and a reader that goes away."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from forecast.cli import build_parser
from forecast.pipeline.cli import _split_rest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("argv, quiet", [
    (["--quiet", "store", "S"], True),
    (["store", "S", "--quiet"], True),  # was "unrecognized arguments: --quiet"
    (["store", "S"], False),
    (["train", "--config", "c.yaml", "optim.lr=0.001", "--quiet"], True),
    (["evaluate", "--model", "ctrv", "--out", "o", "--quiet"], True),
    (["--quiet", "pipeline", "run", "c.yaml"], True),
    (["pipeline", "run", "c.yaml", "--quiet", "work_dir=w"], True),
    (["pipeline", "status", "c.yaml"], False),
])
def test_quiet_before_or_after_the_subcommand(argv, quiet):
    args = build_parser().parse_args(argv)
    if args.command == "pipeline":
        _split_rest(args)
        assert "--quiet" not in args.overrides
    assert args.quiet is quiet


@pytest.mark.parametrize("unbuffered", ["", "1"])
@pytest.mark.parametrize("extra", [[], ["--json"], ["--help"]])
def test_a_closed_pipe_ends_the_command_quietly(sumo_store, unbuffered, extra):
    """`forecast store S | head -1`: the reader goes away before the output is written. The command said
    "error: Broken pipe" and exited 1 (a failure), or, with stdout block-buffered as it is in a pipe,
    "Exception ignored ... BrokenPipeError" and 120 at exit; it now ends as a Unix tool does, with 141."""
    read, write = os.pipe()
    os.close(read)  # the reader is gone before the command writes anything
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])
    if unbuffered:
        env["PYTHONUNBUFFERED"] = unbuffered
    argv = ["--help"] if extra == ["--help"] else ["store", str(sumo_store.path), *extra]
    proc = subprocess.run([sys.executable, "-m", "forecast.cli", *argv], stdout=write,
                          stderr=subprocess.PIPE, text=True, env=env, timeout=300)
    os.close(write)
    # argparse's own --help swallows a failed unbuffered write and exits 0; a buffered one fails at our flush
    expected = {0, 128 + signal.SIGPIPE} if extra == ["--help"] and unbuffered else {128 + signal.SIGPIPE}
    assert proc.returncode in expected, proc.stderr
    assert "Broken pipe" not in proc.stderr and "BrokenPipe" not in proc.stderr and "Traceback" not in proc.stderr


def test_a_broken_pipe_that_is_not_stdout_is_a_failure(monkeypatch, capsys, tmp_path):
    """Only stdout's reader going away is the quiet 141: a write to a child process that died is an error."""
    import forecast.cli as cli

    def command(args) -> int:
        raise BrokenPipeError(32, "Broken pipe")

    monkeypatch.setattr(cli, "_cmd_store", command)
    assert cli.main(["store", str(tmp_path)]) == 1
    assert "forecast store: error: [Errno 32] Broken pipe" in capsys.readouterr().err


def test_train_points_at_the_store_its_run_went_to(monkeypatch, capsys, tmp_path):
    """The hint after training named ./mlflow.db whatever $MLFLOW_TRACKING_URI said."""
    from types import SimpleNamespace

    import forecast.training.train as train
    from forecast.cli import main

    monkeypatch.setattr(train, "run_training", lambda cfg, progress, fresh: SimpleNamespace(
        model_path=tmp_path / "model.pt", run_id="abc123", metrics={"val/minFDE@6": 1.0}))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/team.db")
    assert main(["--quiet", "train", "--config", str(ROOT / "configs/train/quickstart.yaml")]) == 0
    assert f"mlflow run: abc123  (see it with: mlflow ui --backend-store-uri sqlite:///{tmp_path}/team.db)" \
        in capsys.readouterr().out
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "https://mlflow.example.com")
    assert main(["--quiet", "train", "--config", str(ROOT / "configs/train/quickstart.yaml")]) == 0
    assert "(see it with: https://mlflow.example.com)" in capsys.readouterr().out


def test_train_on_a_missing_store_leaves_no_out_dir(tmp_path, capsys):
    """It failed with a clear message but left an empty out_dir behind, which a later run had to explain."""
    from forecast.cli import main

    out = tmp_path / "train"
    assert main(["--quiet", "train", "--config", str(ROOT / "configs/train/quickstart.yaml"),
                 f"data.store={tmp_path / 'nostore'}", f"out_dir={out}"]) == 2
    assert "does not exist; run `forecast ingest` first" in capsys.readouterr().err
    assert not out.exists()
