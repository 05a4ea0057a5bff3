"""Mode scoring after the rollout: each mode's probability sees the future it scores.

A mode's logit comes from its final latent state, its decoded path (positions at every latent step,
its predicted uncertainty), what the map holds along it (with ``map_scoring``) and how that path sits
among the agent's other modes (offset from the modes' mean endpoint, and a pooled summary of all modes),
trained to predict which mode wins.
The inputs are detached: classification cannot bend the trajectories, only learn to rank them.
"""

from __future__ import annotations

import torch
from torch import nn


class ModeScorer(nn.Module):
    def __init__(self, d: int, path_points: int, map_channels: int = 0):
        super().__init__()
        feats = d + 2 * path_points + 2 + 2 + 1 + path_points * map_channels
        self.embed = nn.Sequential(nn.Linear(feats, d), nn.ReLU(), nn.Linear(d, d))
        self.logit = nn.Sequential(nn.Linear(2 * d, d), nn.ReLU(), nn.Linear(d, 1))

    def forward(self, h: torch.Tensor, traj: torch.Tensor, scale: torch.Tensor, stride: int,
                path_map: torch.Tensor | None = None) -> torch.Tensor:
        """h [B, A, K, D] final latent states, traj/scale [B, A, K, T_f, 2] (agent frame, m), path_map
        [B, A, K, P * W] (the raster's feature map at each latent step's end, or None) -> logits [B, A, K]."""
        h, traj, scale = h.detach(), traj.detach(), scale.detach()
        b, a, k = traj.shape[:3]
        path = traj[:, :, :, stride - 1 :: stride, :]  # [B, A, K, P, 2]: the end of every latent step
        end = traj[:, :, :, -1, :]
        offset = end - end.mean(dim=2, keepdim=True)  # [B, A, K, 2]: where this mode ends among the others
        spread = torch.log(scale[:, :, :, -1, :])  # [B, A, K, 2]: its own endpoint uncertainty
        travel = torch.linalg.vector_norm(end, dim=-1, keepdim=True)
        parts = [h, path.reshape(b, a, k, -1) * 0.1, offset * 0.1, spread, travel * 0.1]
        x = torch.cat(parts if path_map is None else [*parts, path_map.detach()], dim=-1)
        e = self.embed(x)
        pooled = e.max(dim=2, keepdim=True).values.expand(-1, -1, k, -1)  # what the other modes offer
        return self.logit(torch.cat([e, pooled], dim=-1)).squeeze(-1)
