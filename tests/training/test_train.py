from __future__ import annotations

import os

import mlflow
import pytest
import torch

from forecast.model.checkpoint import load_model
from forecast.training.rundir import RunDirConflict
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


def test_rerun_returns_the_finished_run_and_refuses_another_config(sumo_store, tmp_path, monkeypatch):
    """A scheduler reruns ``forecast train`` into the same out_dir: the finished run comes back untouched (it
    used to be resumed at its last epoch, recalibrated and logged again), and a changed config is refused
    rather than continued from the other run's checkpoint; ``fresh`` trains again from scratch."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    out = tmp_path / "run"
    first = run_training(tiny_train_config(sumo_store.path, out), progress=False)
    stamp = (out / "model.pt").stat().st_mtime_ns
    again = run_training(tiny_train_config(sumo_store.path, out), progress=False)
    assert (again.run_id, again.global_step, again.metrics) == (first.run_id, first.global_step, first.metrics)
    assert (out / "model.pt").stat().st_mtime_ns == stamp
    with pytest.raises(RunDirConflict, match="optim.lr"):
        run_training(tiny_train_config(sumo_store.path, out, **{"optim.lr": 0.05}), progress=False)
    fresh = run_training(tiny_train_config(sumo_store.path, out, **{"optim.lr": 0.05}), progress=False, fresh=True)
    assert fresh.run_id != first.run_id and fresh.global_step == first.global_step


def test_loader_workers_train_the_same_weights_as_the_main_process(sumo_store, tmp_path):
    # The worker's batches come through its reused shared memory (forecast.training.raster_pool), two epochs
    # so that slots are freed and refilled; the weights must not see the difference.
    kw = {"optim.max_epochs": 2}
    a = run_training(tiny_train_config(sumo_store.path, tmp_path / "a", **kw), progress=False)
    b = run_training(tiny_train_config(sumo_store.path, tmp_path / "b", **kw, **{"data.num_workers": 1}),
                     progress=False)
    sa, sb = load_model(a.model_path).model.state_dict(), load_model(b.model_path).model.state_dict()
    for k in sa:
        torch.testing.assert_close(sa[k], sb[k], rtol=0, atol=0, msg=k)
