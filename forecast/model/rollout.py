"""Multimodal latent rollout: the world state is stepped forward one step at a time for all agents.

state_{t+1} = GRUCell([where agents are, what the others do, the action], state_t), per mode.
Agents attend to each other at every step, so a plan given for one agent (the action) changes
what the others do. Each step's motion is decoded as a correction to moving on at the t0
velocity: an untrained model starts as constant velocity and learns where that is wrong.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from forecast.model.config import ModelConfig


class LatentRollout(nn.Module):
    def __init__(self, cfg: ModelConfig, pose_scale: float = 50.0):
        super().__init__()
        d = cfg.hidden
        if cfg.future_steps % cfg.rollout_stride:
            raise ValueError(f"future_steps={cfg.future_steps} must be a multiple of rollout_stride={cfg.rollout_stride}")
        self.cfg = cfg
        self.stride = cfg.rollout_stride
        self.pose_scale = pose_scale
        self.mode_emb = nn.Parameter(torch.randn(cfg.modes, d) * 0.5)
        self.init = nn.Sequential(nn.Linear(2 * d, d), nn.ReLU(), nn.Linear(d, d))
        self.score = nn.Sequential(nn.Linear(d, d), nn.ReLU(), nn.Linear(d, 1))
        self.where = nn.Linear(6, d)  # scene-frame position, heading and local position so far
        self.action = nn.Linear(2 * self.stride + 1, d)  # the planned positions of this latent step, and a flag
        self.attn = nn.MultiheadAttention(d, cfg.heads, batch_first=True)
        self.norm = nn.LayerNorm(d)
        self.cell = nn.GRUCell(d, d)
        self.head = nn.Sequential(nn.Linear(d, d), nn.ReLU(), nn.Linear(d, 4 * self.stride))
        nn.init.zeros_(self.head[-1].weight)
        nn.init.zeros_(self.head[-1].bias)

    def forward(self, tokens, scene, pose, velocity, agent_mask, plan, plan_mask):
        """tokens [B, A, D], scene [B, D], pose [B, A, 4], velocity [B, A, 2] (agent frame at t0, m/s),
        agent_mask [B, A], plan [B, A, T_f, 2], plan_mask [B, A].

        Returns traj [B, A, K, T_f, 2] (agent frame, m), scale [B, A, K, T_f, 2] (Laplace, m) and
        mode logits [B, A, K]. The latent state steps every ``rollout_stride`` output steps (one
        latent step decodes that many positions), which keeps the unrolled graph small enough for
        the in-car latency budget.
        """
        b, a, d = tokens.shape
        k, t_f, st = self.cfg.modes, self.cfg.future_steps, self.stride
        ctx = torch.cat([tokens, scene[:, None, :].expand(b, a, d)], dim=-1)
        h = self.init(ctx)[:, :, None, :] + self.mode_emb[None, None]  # [B, A, K, D]
        logits = self.score(h).squeeze(-1)  # [B, A, K]

        # Per-agent rotation into the scene frame, for where the agents are during the rollout.
        cos, sin = pose[..., 2:3, None], pose[..., 3:4, None]  # [B, A, 1, 1]
        origin = pose[..., None, :2]  # [B, A, 1, 2]
        pm = plan_mask.to(tokens.dtype)[:, :, None, None]  # [B, A, 1, 1]
        pad = (~agent_mask)[:, None, :].expand(b, k, a).reshape(b * k, a)
        pos = torch.zeros(b, a, k, 2, dtype=tokens.dtype, device=tokens.device)
        step_cv = (velocity * self.cfg.dt)[:, :, None, None, :]  # [B, A, 1, 1, 2]
        h = h.reshape(b * a * k, d)
        chunks, scales = [], []
        for s in range(t_f // st):
            planned = plan[:, :, None, s * st : (s + 1) * st, :].expand(b, a, k, st, 2)  # [B, A, K, st, 2]
            act = self.action(torch.cat([planned.reshape(b, a, k, 2 * st) * pm / 10.0, pm.expand(b, a, k, 1)], dim=-1))
            scene_xy = origin + torch.cat([cos * pos[..., :1] - sin * pos[..., 1:], sin * pos[..., :1] + cos * pos[..., 1:]],
                                          dim=-1) / self.pose_scale
            where = self.where(torch.cat([scene_xy, cos.expand(b, a, k, 1), sin.expand(b, a, k, 1), pos / 10.0], dim=-1))
            q = self.norm(h.reshape(b, a, k, d) + where + act).permute(0, 2, 1, 3).reshape(b * k, a, d)
            others, _ = self.attn(q, q, q, key_padding_mask=pad, need_weights=False)
            others = others.reshape(b, k, a, d).permute(0, 2, 1, 3)
            h = self.cell((where + others + act).reshape(-1, d), h)
            out = self.head(h).reshape(b, a, k, st, 4)
            chunk = pos[:, :, :, None, :] + torch.cumsum(step_cv + out[..., :2], dim=3)
            # The planned agent follows its plan: the others see the action, not a guess of it.
            pmc = pm[..., None]
            chunk = pmc * planned + (1.0 - pmc) * chunk
            pos = chunk[:, :, :, -1, :]
            chunks.append(chunk)
            scales.append(F.softplus(out[..., 2:]) + self.cfg.min_scale)
        traj = torch.cat(chunks, dim=3)  # [B, A, K, T_f, 2]
        scale = torch.cat(scales, dim=3)
        return traj, scale, logits
