"""Helpers for the pipeline tests: tiny pipeline configs written into the test's own folder."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import yaml

from forecast.config import to_dict
from tests.conftest import TINY_SIM, tiny_train_config

ROOT = Path(__file__).resolve().parents[2]


def write_tiny_pipeline(tmp: Path, steps: list[str], ingest_input: Path | None = None, **train_overrides) -> Path:
    """A pipeline YAML over the tiny SUMO networks and a tiny model; MLflow stays inside ``tmp``."""
    sim_yaml = tmp / "sim.yaml"
    sim_yaml.write_text(yaml.safe_dump(to_dict(TINY_SIM), sort_keys=False))
    train = to_dict(tiny_train_config(tmp / "unused-store", tmp / "unused-out", **train_overrides))
    train["mlflow"]["tracking_uri"] = f"sqlite:///{tmp}/mlflow.db"
    train["trainer"]["torch_threads"] = 1
    train_yaml = tmp / "train.yaml"
    train_yaml.write_text(yaml.safe_dump(train, sort_keys=False))
    cfg = {
        "name": "tiny",
        "work_dir": str(tmp / "work"),
        "steps": steps,
        "simulate": {"config": str(sim_yaml)},
        "ingest": {"source": "sumo", "scenario_length_s": 5.0, "input": str(ingest_input) if ingest_input else None},
        "train": {"config": str(train_yaml)},
        "mlflow": {"enabled": False},
    }
    path = tmp / "pipeline.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def forecast_cmd(*args: str) -> list[str]:
    """``forecast ...`` as a child process of this interpreter (Lightning re-executes it for DDP ranks)."""
    return [sys.executable, "-m", "forecast.cli", *args]


def child_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "LOCAL_RANK", "NODE_RANK", "WORLD_SIZE",
                                                            "SLURM_PROCID", "MLFLOW_TRACKING_URI")}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    return env


@pytest.fixture
def tiny_pipeline(tmp_path):
    return lambda steps, **kw: write_tiny_pipeline(tmp_path, steps, **kw)


@pytest.fixture(scope="session")
def mlflow_uri(tmp_path_factory) -> str:
    """One SQLite tracking store for the session (creating its tables takes seconds)."""
    return f"sqlite:///{tmp_path_factory.mktemp('mlflow')}/mlflow.db"
