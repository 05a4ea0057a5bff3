"""A plain ``forecast`` command stopped by the scheduler (SIGTERM) or Ctrl-C exits 143 / 130 and cleans up."""

from __future__ import annotations

import os
import signal
import tempfile
from pathlib import Path

import pytest

import forecast.cli as cli
from forecast.pipeline.signals import running


@pytest.mark.parametrize("signum, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_signal_removes_the_commands_temporary_folder(tmp_path, monkeypatch, capsys, signum, code):
    seen: list[Path] = []

    def command(args) -> int:
        with tempfile.TemporaryDirectory(dir=tmp_path) as tmp:  # as an evaluation's spill, a champion's download
            seen.append(Path(tmp))
            os.kill(os.getpid(), signum)
            raise AssertionError("the signal stops the command")  # pragma: no cover

    monkeypatch.setattr(cli, "_cmd_store", command)
    previous = signal.getsignal(signal.SIGTERM)
    assert cli.main(["store", str(tmp_path)]) == code
    assert seen and not seen[0].exists()
    assert f"stopped by {signal.Signals(signum).name}; exiting {code}" in capsys.readouterr().err
    assert signal.getsignal(signal.SIGTERM) is previous and not running()  # handlers put back
