"""Multimodal latent rollout: the world state is stepped forward one step at a time for all agents.

state_{t+1} = GRUCell([where agents are, what the others do, the action], state_t), per mode.
At every step each agent attends to the others of the same mode through their relative geometry
(``forecast.model.interaction``): where they are now and where they are about to be, in its own
frame, so a plan given for one agent (the action) changes what the others do. Each step's motion
is decoded as a correction to moving on at the t0 velocity: an untrained model starts as constant
velocity and learns where that is wrong. The modes are scored *after* the rollout
(``forecast.model.scoring``), from each mode's final state and decoded path.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from forecast.model.config import ModelConfig
from forecast.model.interaction import GeometricAttention, edge_features
from forecast.model.scoring import ModeScorer


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
        self.where = nn.Linear(6, d)  # scene-frame position, heading and local position so far
        self.action = nn.Linear(2 * self.stride + 1, d)  # the planned positions of this latent step, and a flag
        self.attn = GeometricAttention(d, cfg.heads)
        self.norm = nn.LayerNorm(d)
        self.cell = nn.GRUCell(d, d)
        self.head = nn.Sequential(nn.Linear(d, d), nn.ReLU(), nn.Linear(d, 4 * self.stride))
        nn.init.zeros_(self.head[-1].weight)
        nn.init.zeros_(self.head[-1].bias)
        self.scorer = ModeScorer(d, cfg.future_steps // self.stride)

    def forward(self, tokens, scene, pose, velocity, agent_mask, plan, plan_mask):
        """tokens [B, A, D], scene [B, D], pose [B, A, 4], velocity [B, A, 2] (agent frame at t0, m/s),
        agent_mask [B, A], plan [B, A, T_f, 2], plan_mask [B, A].

        Returns traj [B, A, K, T_f, 2] (agent frame, m), scale [B, A, K, T_f, 2] (Laplace, m) and
        mode logits [B, A, K] (uncalibrated). The latent state steps every ``rollout_stride``
        output steps (one latent step decodes that many positions), which keeps the unrolled graph
        small enough for the in-car latency budget.
        """
        b, a, d = tokens.shape
        k, t_f, st, dt = self.cfg.modes, self.cfg.future_steps, self.stride, self.cfg.dt
        ctx = torch.cat([tokens, scene[:, None, :].expand(b, a, d)], dim=-1)
        h = self.init(ctx)[:, :, None, :] + self.mode_emb[None, None]  # [B, A, K, D]

        # Per-agent rotation into the scene frame, for where the agents are during the rollout.
        cos, sin = pose[..., 2:3, None], pose[..., 3:4, None]  # [B, A, 1, 1]
        origin = pose[..., None, :2] * self.pose_scale  # [B, A, 1, 2] metres, scene frame

        def to_scene(local: torch.Tensor) -> torch.Tensor:  # [B, A, K, 2] agent frame -> scene frame (m)
            return torch.cat([cos * local[..., :1] - sin * local[..., 1:], sin * local[..., :1] + cos * local[..., 1:]],
                             dim=-1)

        def per_mode(x: torch.Tensor) -> torch.Tensor:  # [B, A, K, ...] -> [B*K, A, ...]
            return x.transpose(1, 2).reshape(b * k, a, *x.shape[3:])

        pm = plan_mask.to(tokens.dtype)[:, :, None, None]  # [B, A, 1, 1]
        key_valid = agent_mask[:, None, :].expand(b, k, a).reshape(b * k, a)
        heading_cos = per_mode(cos[..., 0].expand(b, a, k)[..., None])[..., 0]  # [B*K, A]
        heading_sin = per_mode(sin[..., 0].expand(b, a, k)[..., None])[..., 0]
        planned_flag = per_mode(pm[..., 0].expand(b, a, k)[..., None])[..., 0]
        pos = torch.zeros(b, a, k, 2, dtype=tokens.dtype, device=tokens.device)
        vel = velocity[:, :, None, :].expand(b, a, k, 2)  # agent frame, m/s: the latest decoded velocity
        step_cv = (velocity * dt)[:, :, None, None, :]  # [B, A, 1, 1, 2]
        h = h.reshape(b * a * k, d)
        chunks, scales = [], []
        for s in range(t_f // st):
            planned = plan[:, :, None, s * st : (s + 1) * st, :].expand(b, a, k, st, 2)  # [B, A, K, st, 2]
            act = self.action(torch.cat([planned.reshape(b, a, k, 2 * st) * pm / 10.0, pm.expand(b, a, k, 1)], dim=-1))
            # Where each agent is now and where it is about to be: its plan, else on at its latest velocity.
            nxt = pm * planned[:, :, :, -1, :] + (1.0 - pm) * (pos + vel * (st * dt))
            scene_pos = origin + to_scene(pos)
            edges = edge_features(per_mode(scene_pos), per_mode(origin + to_scene(nxt)), per_mode(to_scene(vel)),
                                  heading_cos, heading_sin, planned_flag)
            where = self.where(torch.cat([scene_pos / self.pose_scale, cos.expand(b, a, k, 1), sin.expand(b, a, k, 1),
                                          pos / 10.0], dim=-1))
            q = self.norm(h.reshape(b, a, k, d) + where + act)
            others = self.attn(per_mode(q), edges, key_valid).reshape(b, k, a, d).transpose(1, 2)
            h = self.cell((where + others + act).reshape(-1, d), h)
            out = self.head(h).reshape(b, a, k, st, 4)
            chunk = pos[:, :, :, None, :] + torch.cumsum(step_cv + out[..., :2], dim=3)
            # The planned agent follows its plan: the others see the action, not a guess of it.
            pmc = pm[..., None]
            chunk = pmc * planned + (1.0 - pmc) * chunk
            prev = torch.cat([pos[:, :, :, None, :], chunk], dim=3)
            vel = (prev[:, :, :, -1, :] - prev[:, :, :, -2, :]) * (1.0 / dt)
            pos = chunk[:, :, :, -1, :]
            chunks.append(chunk)
            scales.append(F.softplus(out[..., 2:]) + self.cfg.min_scale)
        traj = torch.cat(chunks, dim=3)  # [B, A, K, T_f, 2]
        scale = torch.cat(scales, dim=3)
        logits = self.scorer(h.reshape(b, a, k, d), traj, scale, st)
        return traj, scale, logits
