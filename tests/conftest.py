"""Shared fixtures: a tiny seeded SUMO data set (three small networks, one per split) and its store.

Built once per test session in a temporary folder; tests never write into the repository.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from forecast.sim.sumo import DemandConfig, NetworkConfig, SimConfig

TINY_SIM = SimConfig(
    seed=3,
    duration_s=40.0,
    warmup_s=5.0,
    demand=DemandConfig(car_period=1.0, bike_period=2.0, ped_period=1.0, ped_max_distance=300.0),
    networks=[
        NetworkConfig(name="g_train", split="train", kind="grid", seed=1, options={"grid.number": 3, "grid.length": 80}),
        NetworkConfig(name="g_val", split="val", kind="grid", seed=2, options={"grid.number": 3, "grid.length": 90}),
        NetworkConfig(name="s_test", split="test", kind="spider", seed=3,
                      options={"spider.arm-number": 4, "spider.circle-number": 2, "spider.space-radius": 70,
                               "spider.omit-center": "true"}),
    ],
)


def bench_module(monkeypatch, name: str):
    """Import ``bench/<name>.py`` the way the bench runs it (its folder on ``sys.path``, for ``_common``)."""
    import importlib

    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1] / "bench"))
    return importlib.import_module(name)


def dead_pid() -> int:
    """The pid of a process that has already exited: the owner of what a killed run left behind."""
    import subprocess
    import sys

    return int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                              text=True, check=True).stdout)


def leftover_dir(root: Path, name: str, mtime: float) -> Path:
    """``root/name`` holding one file, both last written at ``mtime``: a temporary folder a killed run left."""
    import os

    folder = root / name
    folder.mkdir()
    (folder / "c0.bin").write_bytes(b"\0" * 64)
    for path in (folder / "c0.bin", folder):
        os.utime(path, (mtime, mtime))
    return folder


@pytest.fixture(scope="session")
def sumo_runs(tmp_path_factory) -> Path:
    """Directory of three tiny SUMO runs (train/val/test), 40 simulated seconds each."""
    from forecast.sim.sumo import simulate

    out = tmp_path_factory.mktemp("sim")
    simulate(TINY_SIM, out, progress=False)
    return out


@pytest.fixture(scope="session")
def sumo_store(sumo_runs, tmp_path_factory):
    """The tiny SUMO runs ingested into a store, cut into 5 s scenarios. Treat as read-only."""
    from forecast.data.ingest import run_ingest
    from forecast.data.sources.sumo import SumoAdapter
    from forecast.data.store import Store

    store = Store(tmp_path_factory.mktemp("store") / "store")
    run_ingest(SumoAdapter(scenario_length_s=5.0), sumo_runs, store, progress=False)
    return store


def tiny_train_config(store_path, out_dir, **overrides):
    """A TrainConfig small enough for CPU tests (seconds)."""
    from forecast.config import apply_overrides, from_dict
    from forecast.training.config import TrainConfig

    base = {
        "seed": 0,
        "out_dir": str(out_dir),
        "data": {"store": str(store_path), "t0_stride": 10, "val_t0_stride": 10, "max_train_samples": 16,
                 "max_val_samples": 8, "batch_size": 4, "num_workers": 0},
        "features": {"history_steps": 10, "future_steps": 10, "max_agents": 8,
                     "raster": {"size": 16, "resolution": 2.0, "ahead": 4.0}},
        "model": {"hidden": 16, "modes": 3, "heads": 2, "interaction_layers": 1, "raster_width": 8},
        "optim": {"max_epochs": 1, "warmup_steps": 2},
        "trainer": {"accelerator": "cpu", "log_every_n_steps": 1},
        "mlflow": {"tracking_uri": f"sqlite:///{out_dir}/mlflow.db"},
    }
    return from_dict(TrainConfig, apply_overrides(base, [f"{k}={v}" for k, v in overrides.items()]))


# A tiny untrained model exported once per session through the CLI (--fp16 --int8 --verify); the export
# and runtime tests share it.
TINY_FEATURES_KW = {"history_steps": 8, "future_steps": 6, "raster": {"size": 16, "resolution": 1.0, "ahead": 4.0}}
TINY_MODEL_KW = {"hidden": 16, "modes": 3, "heads": 4, "interaction_layers": 1, "raster_width": 8, "future_steps": 6,
                 "rollout_stride": 3, "class_modes": True}


def tiny_features_and_model():
    from forecast.config import from_dict
    from forecast.features.config import FeatureConfig
    from forecast.model.config import ModelConfig

    return from_dict(FeatureConfig, TINY_FEATURES_KW), from_dict(ModelConfig, TINY_MODEL_KW)


def tiny_scenes_and_model(sizes=(3, 1, 5), model_cfg=None):
    """(features, synthetic samples of ``sizes`` agents on the synthetic map, the tiny model in eval mode with
    a non-zero head: not constant velocity); ``model_cfg`` replaces the tiny model's config."""
    import torch

    from forecast.export.onnx_export import synthetic_map_layers, synthetic_sample
    from forecast.features.raster import rasterize_map_layers
    from forecast.model.world_model import WorldModel

    features, tiny_cfg = tiny_features_and_model()
    m = rasterize_map_layers(synthetic_map_layers(), features.raster.resolution)
    samples = [synthetic_sample(n, features, seed=n, map_raster=m)[0] for n in sizes]
    torch.manual_seed(0)
    model = WorldModel(model_cfg or tiny_cfg, features.scene_scale).eval()
    torch.nn.init.normal_(model.rollout.head[-1].weight, std=0.05)
    return features, samples, model


@pytest.fixture(scope="session")
def exported(tmp_path_factory) -> Path:
    """Directory with ``model.pt`` and ``bundle/`` of the tiny model (run id "run-tiny")."""
    import torch

    import forecast
    from forecast.cli import main
    from forecast.model.checkpoint import save_model
    from forecast.model.world_model import WorldModel

    features, model_cfg = tiny_features_and_model()
    root = tmp_path_factory.mktemp("tiny_export")
    torch.manual_seed(0)
    model = WorldModel(model_cfg, features.scene_scale).eval()
    torch.nn.init.normal_(model.rollout.head[-1].weight, std=0.05)  # untrained, the head is zero: constant velocity
    save_model(root / "model.pt", model, features, {"run_id": "run-tiny", "version": forecast.__version__})
    rc = main(["--quiet", "export", "--model", str(root / "model.pt"), "--out", str(root / "bundle"), "--fp16",
               "--int8", "--verify"])
    assert rc == 0
    return root
