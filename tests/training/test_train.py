from __future__ import annotations

import os

import mlflow
import torch

from forecast.model.checkpoint import load_model
from forecast.training.train import run_training
from tests.conftest import tiny_train_config


def test_same_seed_same_weights(sumo_store, tmp_path):
    a = run_training(tiny_train_config(sumo_store.path, tmp_path / "a"), progress=False)
    b = run_training(tiny_train_config(sumo_store.path, tmp_path / "b"), progress=False)
    sa, sb = load_model(a.model_path).model.state_dict(), load_model(b.model_path).model.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        torch.testing.assert_close(sa[k], sb[k], rtol=0, atol=0, msg=k)
    c = run_training(tiny_train_config(sumo_store.path, tmp_path / "c", seed=1), progress=False)
    sc = load_model(c.model_path).model.state_dict()
    assert any(not torch.equal(sa[k], sc[k]) for k in sa)


def test_resume_continues_step_count_and_logs_to_mlflow(sumo_store, tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    out = tmp_path / "run"
    first = run_training(tiny_train_config(sumo_store.path, out), progress=False)
    # Lightning's logger sets $MLFLOW_TRACKING_URI; training must not leave it set for later steps
    assert "MLFLOW_TRACKING_URI" not in os.environ
    assert first.global_step > 0 and (out / "checkpoints" / "last.ckpt").exists()
    second = run_training(tiny_train_config(sumo_store.path, out, **{"optim.max_epochs": 2}), progress=False)
    assert second.global_step == 2 * first.global_step
    assert second.run_id == first.run_id  # a resumed run continues its MLflow run
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{out}/mlflow.db")
    run = client.get_run(first.run_id)
    assert "val/minFDE" in run.data.metrics and "val/minFDE_vehicle" in run.data.metrics
    assert run.data.tags["forecast.version"]
    names = {f.path for f in client.list_artifacts(first.run_id)}
    assert {"config.yaml", "model.pt"} <= names
    loaded = load_model(second.model_path)
    assert loaded.meta["run_id"] == first.run_id and loaded.features.future_steps == 10


def test_ema_weights_are_what_is_validated_saved_and_resumed(sumo_store, tmp_path):
    """optim.ema_decay: the best checkpoint and model.pt hold the moving average, not the raw weights;
    last.ckpt keeps both, and a resumed run continues from them."""
    import pytest

    from forecast.training.averaging import EMA

    with pytest.raises(ValueError, match="ema_decay"):
        EMA(1.0)
    out = tmp_path / "ema"
    cfg = tiny_train_config(sumo_store.path, out, **{"optim.ema_decay": 0.5})
    first = run_training(cfg, progress=False)
    last = torch.load(out / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    averaged, raw = last["state_dict"], last["current_model_state"]
    assert averaged.keys() == raw.keys() and last["averaging_state"]["n_averaged"] == first.global_step
    name = "model.rollout.head.0.weight"
    assert not torch.equal(averaged[name], raw[name])
    saved = load_model(first.model_path).model.state_dict()
    best = torch.load(out / "checkpoints" / "best.ckpt", map_location="cpu", weights_only=True)["state_dict"]
    for k, v in saved.items():
        if k != "temperature":  # fitted on val after training
            torch.testing.assert_close(v, best["model." + k], rtol=0, atol=0, msg=k)
    second = run_training(tiny_train_config(sumo_store.path, out, **{"optim.ema_decay": 0.5, "optim.max_epochs": 2}),
                          progress=False)
    last = torch.load(out / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert second.global_step == 2 * first.global_step
    assert last["averaging_state"]["n_averaged"] == second.global_step
