"""Networks simulated side by side: the same data as one at a time, and an early end stops the others."""

from __future__ import annotations

import subprocess
import sys
import time
from dataclasses import replace

import pyarrow.parquet as pq
import pytest

from forecast.sim.sumo import Children, NetworkConfig, _run, simulate
from tests.conftest import TINY_SIM


def test_side_by_side_gives_the_data_of_one_at_a_time(sumo_runs, tmp_path):
    """The session's fixture ran with the default jobs (one per CPU); this run has one job."""
    runs = simulate(TINY_SIM, tmp_path, progress=False, jobs=1)
    assert [r.relative_to(tmp_path) for r in runs] == [r.relative_to(sumo_runs) for r in
                                                       simulate(TINY_SIM, sumo_runs, progress=False)]
    for run in runs:
        other = sumo_runs / run.relative_to(tmp_path)
        assert pq.read_table(run / "fcd.parquet").equals(pq.read_table(other / "fcd.parquet")), run.name
        assert (run / "run.json").read_text() == (other / "run.json").read_text()


def test_a_failed_network_ends_the_call_and_leaves_no_partial_run(tmp_path):
    slow = replace(TINY_SIM.networks[0], name="slow")
    bad = NetworkConfig(name="bad", split="train", kind="hexagon", seed=9)
    cfg = replace(TINY_SIM, duration_s=3000.0, networks=[slow, bad])
    start = time.monotonic()
    with pytest.raises(ValueError, match="kind must be grid, spider or rand"):
        simulate(cfg, tmp_path, progress=False, jobs=2)
    assert time.monotonic() - start < 60  # the slow network's tools were killed, not waited for
    assert not list(tmp_path.glob(".*")) and not list(tmp_path.glob("*/slow"))


def test_children_kill_the_running_tools_and_refuse_new_ones(tmp_path):
    children = Children()
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    assert children.add(proc)
    children.stop()
    assert proc.wait(timeout=10) != 0
    start = time.monotonic()
    with pytest.raises(RuntimeError, match="not run: the simulation was stopped"):
        _run([sys.executable, "-c", "import time; time.sleep(60)"], tmp_path, children)
    assert time.monotonic() - start < 10


def test_jobs_must_be_positive(capsys):
    from forecast.cli import main

    with pytest.raises(SystemExit) as e:
        main(["simulate", "--config", "configs/data/sumo_demo.yaml", "--out", "x", "--jobs", "0"])
    assert e.value.code == 2 and "--jobs" in capsys.readouterr().err
