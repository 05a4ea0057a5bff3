"""Networks simulated side by side: the same data as one at a time, and an early end stops the others."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from dataclasses import replace

import pyarrow.parquet as pq
import pytest

from forecast.sim.sumo import Children, NetworkConfig, _run, simulate
from tests.conftest import TINY_SIM


def test_side_by_side_gives_the_data_of_one_at_a_time(tmp_path):
    one = simulate(TINY_SIM, tmp_path / "one", progress=False, jobs=1)
    three = simulate(TINY_SIM, tmp_path / "three", progress=False, jobs=3)
    assert [r.relative_to(tmp_path / "one") for r in one] == [r.relative_to(tmp_path / "three") for r in three]
    for a, b in zip(one, three, strict=True):
        assert pq.read_table(a / "fcd.parquet").equals(pq.read_table(b / "fcd.parquet")), a.name
        assert (a / "run.json").read_text() == (b / "run.json").read_text()


def test_networks_of_one_run_directory_are_refused(tmp_path):
    cfg = replace(TINY_SIM, networks=[TINY_SIM.networks[0], replace(TINY_SIM.networks[0], seed=5)])
    with pytest.raises(ValueError, match="listed twice"):
        simulate(cfg, tmp_path, progress=False, jobs=2)


def test_a_failed_network_ends_the_call_and_leaves_no_partial_run(tmp_path):
    slow = replace(TINY_SIM.networks[0], name="slow")
    bad = NetworkConfig(name="bad", split="train", kind="hexagon", seed=9)
    cfg = replace(TINY_SIM, duration_s=3000.0, networks=[slow, bad])
    start = time.monotonic()
    with pytest.raises(ValueError, match="kind must be grid, spider or rand"):
        simulate(cfg, tmp_path, progress=False, jobs=2)
    assert time.monotonic() - start < 60  # the slow network's tools were killed, not waited for
    assert not list(tmp_path.glob(".*")) and not list(tmp_path.glob("*/slow"))


LAUNCHER = "import subprocess, sys; subprocess.call([sys.executable, '-c', 'import time; time.sleep(60)'])"


def _sleepers() -> list[str]:
    out = subprocess.run(["pgrep", "-f", "time.sleep\\(60\\)"], capture_output=True, text=True).stdout
    return out.split()


def test_stop_kills_a_tool_and_what_it_started(tmp_path):
    """pip's ``sumo`` is a launcher script that runs the real binary as its child: a stop must reach both,
    or the tool's output pipes stay open and the stop waits for the whole simulation."""
    children = Children()
    stopper = threading.Timer(1.0, children.stop)
    stopper.start()
    start = time.monotonic()
    with pytest.raises(RuntimeError, match="failed"):
        _run([sys.executable, "-c", LAUNCHER], tmp_path, children)
    assert time.monotonic() - start < 20
    time.sleep(0.5)
    assert not _sleepers()
    start = time.monotonic()
    with pytest.raises(RuntimeError, match="not run: the simulation was stopped"):
        _run([sys.executable, "-c", LAUNCHER], tmp_path, children)  # stopped: no new tool starts
    assert time.monotonic() - start < 10


def test_jobs_must_be_positive(capsys):
    from forecast.cli import main

    with pytest.raises(SystemExit) as e:
        main(["simulate", "--config", "configs/data/sumo_demo.yaml", "--out", "x", "--jobs", "0"])
    assert e.value.code == 2 and "--jobs" in capsys.readouterr().err
