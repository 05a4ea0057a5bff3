"""Two-process DDP training on CPU (gloo) through Lightning, as the nightly config runs it on GPUs."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import torch

from tests.pipeline.conftest import ROOT, child_env, forecast_cmd, write_tiny_pipeline


def test_two_process_ddp_writes_model(sumo_store, tmp_path):
    out = tmp_path / "run"
    # Lightning starts rank 1 by re-executing this script, so the training lives in a file of its own.
    script = tmp_path / "train_ddp.py"
    script.write_text(textwrap.dedent(f"""
        from forecast.training.train import run_training
        from tests.conftest import tiny_train_config

        cfg = tiny_train_config({str(sumo_store.path)!r}, {str(out)!r}, **{{
            "trainer.strategy": "ddp", "trainer.devices": 2, "trainer.accelerator": "cpu",
            "trainer.torch_threads": 1, "optim.max_epochs": 1}})
        result = run_training(cfg, progress=False)
        print("global_step", result.global_step)
    """))
    proc = subprocess.run([sys.executable, str(script)], cwd=ROOT, env=child_env(), capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "distributed_backend=gloo" in proc.stderr and "All distributed processes registered" in proc.stderr
    assert (out / "model.pt").exists()
    summary = json.loads((out / "train_summary.json").read_text())
    # 16 samples, batches of 4, split over 2 processes: 2 optimiser steps each.
    assert summary["global_step"] == 2
    payload = torch.load(out / "model.pt", weights_only=True)
    assert payload["meta"]["train_config"]["trainer"]["strategy"] == "ddp"


def test_pipeline_train_step_under_ddp(sumo_runs, tmp_path):
    """Lightning re-executes `forecast pipeline run ...` for rank 1: that process must join the train
    step in the same .partial directory, not take the lock, and not run any other step."""
    cfg = write_tiny_pipeline(tmp_path, ["ingest", "train"], ingest_input=sumo_runs, **{
        "trainer.strategy": "ddp", "trainer.devices": 2, "optim.max_epochs": 1})
    proc = subprocess.run(forecast_cmd("--quiet", "pipeline", "run", str(cfg)), cwd=ROOT, env=child_env(),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "All distributed processes registered" in proc.stderr and "locked" not in proc.stderr
    latest = json.loads((tmp_path / "work" / "latest.json").read_text())
    train = tmp_path / "work" / "train" / latest["steps"]["train"]["hash"]
    assert json.loads((train / "_SUCCESS.json").read_text())["summary"]["global_step"] == 2
    assert (train / "model.pt").exists()
