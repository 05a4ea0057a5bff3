"""One training run: seed, data, Lightning Trainer with checkpoints and resume, MLflow tracking, model.pt."""

from __future__ import annotations

import json
import os
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import torch
import yaml
from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint
from lightning.pytorch.loggers import MLFlowLogger

import forecast
from forecast.config import to_dict
from forecast.data.atomic import write_json_atomic
from forecast.model.checkpoint import save_model
from forecast.pipeline.signals import deferred, lightning_callback
from forecast.tracking_uri import tracking_uri
from forecast.training.calibration import calibrate
from forecast.training.config import TrainConfig
from forecast.training.datamodule import ForecastDataModule
from forecast.training.module import ForecastModule
from forecast.training.rundir import data_fingerprint, decide, write_state
from forecast.training.speed import AgentBuckets, apply_model_options, scaled_lr


@dataclass
class TrainResult:
    model_path: Path
    run_id: str | None
    metrics: dict[str, float]
    global_step: int


def run_training(cfg: TrainConfig, progress: bool = True, extra_callbacks: list | None = None,
                 fresh: bool = False) -> TrainResult:
    """Train, write ``model.pt`` and ``train_summary.json`` into ``cfg.out_dir``, log to MLflow.

    What ``cfg.out_dir`` already holds decides what happens (``forecast.training.rundir``): an
    interrupted run of the same config and data continues, a finished one is returned as it is (or
    continued when ``max_epochs``/``max_steps`` grew), a run of another config or other data is an
    error. ``fresh``: discard what the directory holds and train from scratch.
    """
    # Lightning's MLFlowLogger calls mlflow.set_tracking_uri, which also sets $MLFLOW_TRACKING_URI
    # for the rest of the process; put it back so later steps see what the user set.
    env_uri = os.environ.get("MLFLOW_TRACKING_URI")
    try:
        return _run_training(cfg, progress, extra_callbacks, fresh)
    finally:
        if env_uri is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = env_uri


def _run_training(cfg: TrainConfig, progress: bool, extra_callbacks: list | None, fresh: bool) -> TrainResult:
    cfg = cfg.resolved()
    out = Path(cfg.out_dir)
    config, fingerprint = to_dict(cfg), data_fingerprint(cfg.data.store)  # a missing store fails before out_dir exists
    out.mkdir(parents=True, exist_ok=True)
    if decide(out, config, fingerprint, fresh) == "done":
        summary = json.loads((out / "train_summary.json").read_text())
        print(f"{out} holds the finished run of this config and data: nothing to train "
              f"(--fresh trains it again)", file=sys.stderr)
        return TrainResult(out / "model.pt", summary.get("run_id"), summary.get("metrics", {}),
                           int(summary.get("global_step", 0)))
    write_state(out, config, fingerprint)
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    if cfg.trainer.torch_threads:
        torch.set_num_threads(cfg.trainer.torch_threads)
    warnings.filterwarnings("ignore", ".*does not have many workers.*")
    warnings.filterwarnings("ignore", ".*MLflow Model Registry.*")
    (out / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))

    logger = MLFlowLogger(experiment_name=cfg.mlflow.experiment, tracking_uri=tracking_uri(cfg.mlflow.tracking_uri),
                          run_name=cfg.mlflow.run_name, run_id=_previous_run_id(out), log_model=False)
    if logger.run_id:  # None on ranks > 0 under torchrun/SLURM (only rank 0 talks to MLflow)
        remember_run_id(out, logger.run_id)  # before fit: a killed run resumes into the same MLflow run
    ckpt_dir = out / "checkpoints"
    best = ModelCheckpoint(dirpath=ckpt_dir, filename="best", monitor="val/minFDE", mode="min", save_top_k=1,
                           save_last=True)
    t = cfg.trainer
    trainer = L.Trainer(
        accelerator=t.accelerator, devices=t.devices, strategy=t.strategy, num_nodes=t.num_nodes, precision=t.precision,
        max_epochs=cfg.optim.max_epochs, max_steps=t.max_steps, gradient_clip_val=cfg.optim.grad_clip,
        limit_train_batches=t.limit_train_batches, limit_val_batches=t.limit_val_batches,
        log_every_n_steps=t.log_every_n_steps, deterministic=t.deterministic, logger=logger,
        # StopOnSignal: a stop that came inside a tracking call (only recorded there) ends training at the next
        # batch end, in a pipeline and in a plain `forecast train` alike (a no-op outside StopSignals).
        callbacks=[best, LearningRateMonitor("step"), *speed_callbacks(t), lightning_callback(), *(extra_callbacks or [])],
        # A scheduler's log is no terminal: a bar there is one line per step.
        enable_progress_bar=progress and sys.stderr.isatty(), enable_model_summary=progress, default_root_dir=str(out),
    )
    if cfg.optim.lr_reference_batch_size:  # the lr actually used goes into the run's record, scaled once
        cfg.optim.lr = scaled_lr(cfg.optim.lr, cfg.data.batch_size, trainer.world_size,
                                 cfg.optim.lr_reference_batch_size)
        cfg.optim.lr_reference_batch_size = None
    module = ForecastModule(cfg)
    apply_model_options(module.model, t)
    data = ForecastDataModule(cfg)
    last = ckpt_dir / "last.ckpt"
    resume = str(last) if last.exists() else None
    trainer.fit(module, datamodule=data, ckpt_path=resume, weights_only=True if resume else None)

    run_id = logger.run_id
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val")}
    if trainer.is_global_zero:
        if best.best_model_path:
            state = torch.load(best.best_model_path, map_location="cpu", weights_only=True)["state_dict"]
            module.load_state_dict(state)
        # Mode probabilities calibrated on val (a temperature per class, stored in the weights).
        calibration = calibrate(module.model.cpu(), data.val_dataloader())
        meta = {"run_id": run_id, "version": forecast.__version__, "metrics": metrics, "seed": cfg.seed,
                "global_step": trainer.global_step, "train_config": to_dict(cfg), "calibration": calibration}
        model_path = out / "model.pt"
        save_model(model_path, module.model, cfg.features, meta)
        write_json_atomic({"run_id": run_id, "metrics": metrics, "global_step": trainer.global_step,
                           "model": str(model_path), "calibration": calibration}, out / "train_summary.json")
        with deferred():
            client = logger.experiment
            client.log_artifact(run_id, str(out / "config.yaml"))
            client.log_artifact(run_id, str(model_path))
            client.set_tag(run_id, "forecast.version", forecast.__version__)
            client.set_tag(run_id, "torch.version", torch.__version__)
    return TrainResult(out / "model.pt", run_id, metrics, trainer.global_step)


def speed_callbacks(t) -> list:
    """Callbacks of the trainer's speed options (``forecast.training.speed``)."""
    return [AgentBuckets(t.agent_buckets)] if t.agent_buckets else []


def _previous_run_id(out: Path) -> str | None:
    """Resuming continues the same MLflow run."""
    path = out / "mlflow_run_id"
    return path.read_text().strip() if path.exists() else None


def remember_run_id(out: Path, run_id: str) -> None:
    from forecast.data.atomic import write_text_atomic

    write_text_atomic(run_id, out / "mlflow_run_id")


def summary_json(result: TrainResult) -> str:
    return json.dumps({"model": str(result.model_path), "run_id": result.run_id, "metrics": result.metrics}, indent=2)
