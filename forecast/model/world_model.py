"""WorldModel: encoders -> latent world state -> multimodal rollout. A plain nn.Module (no Lightning)."""

from __future__ import annotations

import torch
from torch import nn

from forecast.model.config import ModelConfig
from forecast.model.encoders import SceneEncoder
from forecast.model.rollout import LatentRollout


class WorldModel(nn.Module):
    """Inputs as in ``forecast.model.batch.Batch`` (see ``Batch.model_inputs``).

    Returns traj [B, A, K, T_f, 2] (metres, each agent's frame at t0), scale [B, A, K, T_f, 2]
    (Laplace scale, metres) and prob [B, A, K] (mode probabilities, summing to 1).

    ``prob`` is ``softmax(logits / temperature[agent_type])``: the per-class temperatures are a
    buffer fitted on the validation split after training (``forecast.training.calibration``), so
    ``model.pt``, the ONNX graph and the runtime all carry the calibrated probabilities.
    """

    def __init__(self, cfg: ModelConfig, pose_scale: float = 50.0):
        super().__init__()
        self.cfg = cfg
        self.encoder = SceneEncoder(cfg)
        self.rollout = LatentRollout(cfg, pose_scale)
        self.register_buffer("temperature", torch.ones(cfg.num_agent_types))

    def forward(self, hist, hist_mask, agent_type, pose, raster, agent_mask, plan, plan_mask):
        traj, scale, logits = self.forward_logits(hist, hist_mask, agent_type, pose, raster, agent_mask, plan, plan_mask)
        temperature = self.temperature[agent_type]  # [B, A]
        return traj, scale, torch.softmax(logits / temperature[..., None], dim=-1)

    def forward_logits(self, hist, hist_mask, agent_type, pose, raster, agent_mask, plan, plan_mask):
        """Like forward, with uncalibrated mode logits instead of probabilities (for a stable loss)."""
        del hist_mask  # the history's valid flag is one of its features; kept for a stable signature
        tokens, scene, fmap = self.encoder(hist, agent_type, pose, raster, agent_mask)
        return self.rollout(tokens, scene, pose, hist[:, :, -1, 2:4], agent_mask, plan, plan_mask, agent_type, fmap)
