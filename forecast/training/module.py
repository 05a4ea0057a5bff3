"""LightningModule: losses, teacher-forced plans, optimiser and schedule, validation metrics per class."""

from __future__ import annotations

import math

import lightning as L
import torch

from forecast.data.schema import TARGET_TYPES, AgentType
from forecast.model.baselines import constant_velocity
from forecast.model.batch import Batch
from forecast.model.loss import near_weights, wta_loss
from forecast.model.world_model import WorldModel
from forecast.training.config import TrainConfig


class ForecastModule(L.LightningModule):
    def __init__(self, cfg: TrainConfig):
        super().__init__()
        self.cfg = cfg
        self.model = WorldModel(cfg.model, pose_scale=cfg.features.scene_scale)
        self._val: dict[str, torch.Tensor] = {}

    def _with_plans(self, batch: Batch) -> Batch:
        """Give an agent with a full future its true future as the plan in some scenes (teacher forcing).

        The planned agent is then not a target: the model is asked how the others respond. It is
        drawn among the agents with a full future, favouring those with scored agents within
        ``near_plan_radius`` (a plan nobody is near teaches nothing about responses).
        """
        p = self.cfg.data.plan_probability
        if p <= 0 or batch.future is None:
            return batch
        full = batch.future_mask.all(-1) & batch.agent_mask  # [B, A]
        pick = torch.rand(batch.size, device=full.device) < p
        xy = batch.pose[..., :2] * self.cfg.features.scene_scale
        close = (torch.cdist(xy, xy) < self.cfg.optim.near_plan_radius) & batch.target_mask[:, None, :]
        neighbours = close.sum(-1) - 1  # [B, A]: scored agents near each agent, itself excluded
        score = (torch.rand(full.shape, device=full.device) + (neighbours > 0).float()
                 + self.cfg.optim.plan_follower_bonus * _has_follower(batch, xy).float()) * full
        # compared with an index made on the device: an index put with one made on the host copies it to
        # the GPU, a sync per step (F.one_hot reads the indices' range on the host on a CPU)
        slots = torch.arange(full.shape[1], device=full.device)
        chosen = (slots[None, :] == score.argmax(-1)[:, None]) & full & pick[:, None]
        batch.plan = torch.where(chosen[..., None, None], batch.future, torch.zeros_like(batch.future))
        batch.plan_mask = chosen
        batch.target_mask = batch.target_mask & ~chosen
        return batch

    def training_step(self, batch: Batch, _):
        batch = self._with_plans(batch)
        o = self.cfg.optim
        weight = near_weights(batch.pose, batch.plan_mask, batch.agent_mask, self.cfg.features.scene_scale,
                              o.near_plan_radius, o.near_plan_weight)
        tau = None
        if o.cls_soft_tau > 0:  # metres: a share of the distance constant velocity would travel, plus 0.1 m
            horizon = batch.future.shape[2] * self.cfg.features.dt
            tau = o.cls_soft_tau * torch.linalg.vector_norm(batch.hist[:, :, -1, 2:4], dim=-1) * horizon + 0.1
        traj, scale, logits = self.model.forward_logits(*batch.model_inputs())
        loss, reg, cls = wta_loss(traj, scale, logits, batch.future, batch.future_mask, batch.target_mask,
                                  o.cls_weight, agent_weight=weight, scene_weight=o.scene_wta_weight,
                                  marginal_weight=o.marginal_mode_weight, cls_tau=tau)
        # Lightning turns progress-bar values into numbers after every batch, bar or no bar: a GPU sync per
        # step that keeps the host from queueing the next step (issue 12: 172 ms of host time per step
        # against 98 ms for the bare step, H100, batch 256). Logged values wait for log_every_n_steps.
        bar = self.trainer.progress_bar_callback is not None
        self.log_dict({"train/loss": loss, "train/reg": reg, "train/cls": cls}, prog_bar=bar, batch_size=batch.size)
        return loss

    def on_validation_epoch_start(self) -> None:
        self._val = {}

    def validation_step(self, batch: Batch, _):
        traj, scale, logits = self.model.forward_logits(*batch.model_inputs())
        loss, _, _ = wta_loss(traj, scale, logits, batch.future, batch.future_mask, batch.target_mask)
        self.log("val/loss", loss, batch_size=batch.size, sync_dist=True)
        scored = batch.target_mask & batch.future_mask.all(-1)
        err = torch.linalg.vector_norm(traj - batch.future[:, :, None], dim=-1)  # [B, A, K, T]
        min_ade = err.mean(-1).min(-1).values
        min_fde = err[..., -1].min(-1).values
        top1 = logits.argmax(-1)[..., None]  # the most likely mode (temperature does not change the order)
        fde1 = err[..., -1].gather(2, top1).squeeze(2)
        # constant velocity on the same agents, the yardstick (on the device: no copy to the host)
        cv = constant_velocity(batch.hist, traj.shape[3], self.cfg.features.dt).to(traj.dtype)
        cv_err = torch.linalg.vector_norm(cv - batch.future, dim=-1)
        for agent_type in TARGET_TYPES:
            m = scored & (batch.agent_type == int(agent_type))
            name = agent_type.label
            for key, v in (("minADE", min_ade), ("minFDE", min_fde), ("minFDE1", fde1), ("cv_ADE", cv_err.mean(-1)), ("cv_FDE", cv_err[..., -1])):
                acc = self._val.setdefault(f"{key}_{name}", torch.zeros(2, device=traj.device))
                # a masked sum, not v[m]: boolean indexing makes the host wait for the GPU (issue 12)
                acc += torch.stack([torch.where(m, v, 0.0).sum(), m.sum().to(v.dtype)])

    def on_validation_epoch_end(self) -> None:
        if not self._val:
            return
        out = {}
        totals: dict[str, torch.Tensor] = {}
        for key, acc in self._val.items():
            acc = self.trainer.strategy.reduce(acc, reduce_op="sum") if self.trainer.world_size > 1 else acc
            out[f"val/{key}"] = acc[0] / acc[1].clamp(min=1)
            metric = key.split("_")[0] if not key.startswith("cv_") else "_".join(key.split("_")[:2])
            totals.setdefault(metric, torch.zeros(2, device=acc.device))
            totals[metric] += acc
        for metric, acc in totals.items():
            out[f"val/{metric}"] = acc[0] / acc[1].clamp(min=1)
        self.log_dict(out, prog_bar=False)
        self.log("val_minFDE", out["val/minFDE"], prog_bar=True)

    def configure_optimizers(self):
        o = self.cfg.optim
        opt = torch.optim.AdamW(self.parameters(), lr=o.lr, weight_decay=o.weight_decay)
        total = max(1, int(self.trainer.estimated_stepping_batches))

        def schedule(step: int) -> float:
            if step < o.warmup_steps:
                return (step + 1) / o.warmup_steps
            progress = min(1.0, (step - o.warmup_steps) / max(1, total - o.warmup_steps))
            return 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * progress))

        sched = torch.optim.lr_scheduler.LambdaLR(opt, schedule)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


def _has_follower(batch: Batch, xy: torch.Tensor, reach: float = 20.0, half_width: float = 2.0) -> torch.Tensor:
    """[B, A] bool: a scored vehicle drives behind the agent, in its lane and its direction, within ``reach`` m.

    Such a follower is the agent whose future most depends on the agent's own (car following), so a
    plan given there is where training can see a response. xy [B, A, 2] metres, scene frame.
    """
    cos, sin = batch.pose[..., 2], batch.pose[..., 3]  # [B, A] heading in the scene frame
    d = xy[:, None, :, :] - xy[:, :, None, :]  # [B, A(i), A(j), 2]: j relative to i
    along = cos[:, :, None] * d[..., 0] + sin[:, :, None] * d[..., 1]
    across = -sin[:, :, None] * d[..., 0] + cos[:, :, None] * d[..., 1]
    same_way = (cos[:, :, None] * cos[:, None, :] + sin[:, :, None] * sin[:, None, :]) > 0.9
    vehicle = (batch.agent_type == int(AgentType.VEHICLE)) & batch.target_mask
    behind = (along < -1.0) & (along > -reach) & (across.abs() < half_width) & same_way & vehicle[:, None, :]
    return behind.any(-1)
