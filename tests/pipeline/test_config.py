"""Pipeline configs: the shipped YAMLs load, overrides reach the step configs, bad step lists are refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from forecast.config import load_yaml
from forecast.pipeline.config import PipelineConfig, deep_merge, load_pipeline, resolve_pipeline
from forecast.pipeline.steps import build_steps

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _repo_root(monkeypatch):
    monkeypatch.chdir(ROOT)  # the configs name each other relative to the repository root


def test_shipped_configs_load():
    quick = load_pipeline("configs/pipeline/quickstart.yaml")
    assert quick.config.work_dir == "runs/quickstart" and quick.config.gate.enabled
    assert quick.config.gate.must_beat_baselines == ["constant_velocity"] and quick.config.register.alias == "champion"
    assert [s.name for s in build_steps(quick)] == ["simulate", "ingest", "tag", "train", "champion", "evaluate", "export",
                                                    "register"]
    nightly = load_pipeline("configs/pipeline/nightly.yaml")
    assert nightly.config.gate.enabled and nightly.config.gate.must_beat_registered
    assert nightly.config.steps[-1] == "register"
    t = nightly.train
    assert (t.model.hidden, t.model.interaction_layers, t.features.raster.size, t.features.raster.resolution) == (128, 2, 96, 0.5)
    assert (t.features.max_agents, t.data.batch_size, t.optim.max_epochs, t.data.num_workers) == (64, 32, 30, 8)
    assert (t.trainer.accelerator, t.trainer.devices, t.trainer.strategy, t.trainer.precision) == ("gpu", "auto", "ddp", "bf16-mixed")
    assert nightly.sim.duration_s == 900


def test_overrides_reach_step_configs():
    loaded = load_pipeline("configs/pipeline/quickstart.yaml",
                           ["work_dir=/tmp/x", "train.overrides.optim.max_epochs=1", "simulate.overrides.seed=11"])
    assert loaded.config.work_dir == "/tmp/x"
    assert loaded.train.optim.max_epochs == 1 and loaded.train.model.hidden == 64  # the rest of the file stays
    assert loaded.sim.seed == 11 and len(loaded.sim.networks) == len(load_yaml("configs/data/sumo_demo.yaml")["networks"])
    assert loaded.evaluate["split"] == "test"


def test_deep_merge():
    assert deep_merge({"a": {"b": 1, "c": 2}, "d": 3}, {"a": {"b": 5}}) == {"a": {"b": 5, "c": 2}, "d": 3}


@pytest.mark.parametrize("steps, message", [
    (["train", "simulate"], "order"),
    (["simulate", "simulate"], "twice"),
    (["simulate", "ingest", "evaluate"], "needs step"),
    (["simulate", "fly"], "unknown step"),
])
def test_bad_step_lists(steps, message):
    with pytest.raises(ValueError, match=message):
        resolve_pipeline(PipelineConfig(steps=steps))


def test_unknown_key_is_named(tmp_path):
    bad = tmp_path / "p.yaml"
    bad.write_text("work_dri: runs/x\n")
    with pytest.raises(ValueError, match="work_dri"):
        load_pipeline(bad)
