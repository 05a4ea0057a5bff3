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

from typing import NamedTuple

import torch
from torch import nn
from torch.nn import functional as F

from forecast.model.config import ModelConfig
from forecast.model.encoders import MAP_STRIDE
from forecast.model.interaction import Frames, GeometricAttention, StepWeights, edges_of, frames, rotate
from forecast.model.map_lookup import cell_affine, lookup
from forecast.model.scoring import ModeScorer


class StepContext(NamedTuple):
    """What every latent step uses and none changes (made once per rollout; ``LatentRollout.step``)."""

    cos6: torch.Tensor  # [B, K, A, 6]: each agent's cos, for its 3 (x, y) vectors
    msin6: torch.Tensor  # [B, K, A, 6]: -sin (agent frame -> scene frame)
    swap6: torch.Tensor  # [6, 6]: ``swap_pairs(6)``
    origins: torch.Tensor  # [B, 1, A, 6]: each agent's origin (scene frame, m) for position and next position, 0 for velocity
    frames: Frames  # of [N, A] headings
    planned_flag: torch.Tensor  # [N, A]: 1.0 where an agent follows a plan
    key_valid: torch.Tensor  # [N, A] bool
    step_weights: StepWeights
    free: torch.Tensor  # [B, 1, A, 1]: 1.0 where an agent follows no plan
    free_k: torch.Tensor  # [B, K, A, 2 st]: ``free`` expanded
    cum_cv: torch.Tensor  # [B, K, A, 2 st]: constant velocity's offsets over a step (m)
    w_moving: torch.Tensor  # [D, 4]: ``where``'s weights for the scene position and position so far
    decode_w: torch.Tensor  # [4 st, D]: ``decode_weights``
    decode_b: torch.Tensor  # [4 st]
    fmap: torch.Tensor | None  # [B * A, W, H, W']: each agent's raster feature map (``map_lookup``), else None


def softplus(x: torch.Tensor) -> torch.Tensor:
    """log(1 + e^x), as relu(x) + log(1 + e^-|x|): the same function (and stable), in element-wise
    operations that onnxruntime vectorises; its own Softplus kernel is about 5 x slower."""
    return F.relu(x) + torch.log(1.0 + torch.exp(-x.abs()))


class LatentRollout(nn.Module):
    def __init__(self, cfg: ModelConfig, pose_scale: float = 50.0):
        super().__init__()
        d = cfg.hidden
        if cfg.future_steps % cfg.rollout_stride:
            raise ValueError(f"future_steps={cfg.future_steps} must be a multiple of rollout_stride={cfg.rollout_stride}")
        self.cfg = cfg
        self.stride = cfg.rollout_stride
        self.pose_scale = pose_scale
        # Shared modes: [K, D]. Per class ([types, K, D]): a pedestrian's modes compete only with other
        # pedestrians' for winners, so a mode that became a vehicle's long shot is not dead weight for them.
        shape = (cfg.num_agent_types, cfg.modes, d) if cfg.class_modes else (cfg.modes, d)
        self.mode_emb = nn.Parameter(torch.randn(*shape) * 0.5)
        self.init = nn.Sequential(nn.Linear(2 * d, d), nn.ReLU(), nn.Linear(d, d))
        self.where = nn.Linear(6, d)  # scene-frame position, heading and local position so far
        self.action = nn.Linear(2 * self.stride + 1, d)  # the planned positions of this latent step, and a flag
        self.attn = GeometricAttention(d, cfg.heads, edge_hidden=cfg.edge_hidden)
        self.norm = nn.LayerNorm(d)
        self.cell = nn.GRUCell(d, d)
        self.head = nn.Sequential(nn.Linear(d, d), nn.ReLU(), nn.Linear(d, 4 * self.stride))
        nn.init.zeros_(self.head[-1].weight)
        nn.init.zeros_(self.head[-1].bias)
        # Reading the raster's feature map where an agent is about to be (every step) and along each
        # mode's path (the scorer): ``forecast.model.map_lookup``.
        self.map_in = nn.Linear(cfg.raster_width, d) if cfg.map_lookup else None
        self.cells = cell_affine(cfg.raster_size, cfg.raster_resolution, cfg.raster_ahead, MAP_STRIDE)
        self.map_scoring = cfg.map_scoring
        self.scorer = ModeScorer(d, cfg.future_steps // self.stride, cfg.raster_width if cfg.map_scoring else 0)

    def decode_weights(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The head's last layer as the rollout uses it: weight [4 st, D], bias [4 st]; rows (offset, step,
        xy) for the offsets from the step's start, then (step, xy) for the raw scales.

        The head decodes per-step position corrections; the offsets are their running sums (on top of
        constant velocity), and a running sum of a linear map is a linear map: the sums are taken over
        the weights' rows once per rollout (folded into a constant of the exported graph by the
        exporter's constant folding, at the configs' sizes), not over every step's outputs. The same
        function as ``cumsum(corrections)``, up to float rounding."""
        lin, st, d = self.head[-1], self.stride, self.cfg.hidden
        w, bias = lin.weight.reshape(st, 2, 2, d), lin.bias.reshape(st, 2, 2)  # (step, position/scale, xy)
        return (torch.cat([w[:, 0].cumsum(0).reshape(2 * st, d), w[:, 1].reshape(2 * st, d)]),
                torch.cat([bias[:, 0].cumsum(0).reshape(2 * st), bias[:, 1].reshape(2 * st)]))

    def step(self, h: torch.Tensor, pos: torch.Tensor, vel: torch.Tensor, plan_end: torch.Tensor,
             fixed: torch.Tensor, planned: torch.Tensor, c: StepContext):
        """One latent step of every mode: h [N * A, D] (rows (b, k, a)), pos / vel [B, K, A, 2] (agent
        frame, m, m/s), plan_end [B, 1, A, 2] (where a planned agent is at the step's end, else 0),
        fixed [B, 1, A, D] (the step's action and the heading's part of ``where``), planned [B, K, A, 2 st]
        (the plan's positions, else 0) -> (h, pos, vel, chunk [B, K, A, 2 st] positions of the step,
        raw scales [B, K, A, 2 st]).

        Its own method so that ``torch.compile`` can compile it once and replay it at every step
        (``forecast.training.speed``: regional compilation) instead of the unrolled rollout."""
        b, k, a, _ = pos.shape
        n, d, st, dt = b * k, h.shape[-1], self.stride, self.cfg.dt
        # Where each agent is now and where it is about to be: its plan, else on at its latest velocity.
        nxt = plan_end + c.free * (pos + vel * (st * dt))
        scene = rotate(torch.cat([pos, nxt, vel], dim=-1), c.cos6, c.msin6, c.swap6) + c.origins  # [B, K, A, 6] scene frame
        geo = edges_of(scene.reshape(n, a, 6) * 0.1, c.frames, c.planned_flag)
        where_act = F.linear(torch.cat([scene[..., :2], pos], dim=-1), c.w_moving) + fixed
        if c.fmap is not None:  # what the map holds where each agent is about to be
            where_act = where_act + self.map_in(lookup(c.fmap, nxt.transpose(1, 2), self.cells).transpose(1, 2))
        q = self.norm(h.reshape(b, k, a, d) + where_act)
        others = self.attn(q.reshape(n, a, d), geo, c.key_valid, c.step_weights).reshape(b, k, a, d)
        # In h's own dtype: under CUDA autocast the cell returns bf16 where the first step's h is fp32, and a
        # compiled step is specialised on its inputs' dtypes (it would compile twice)
        h = self.cell((where_act + others).reshape(n * a, d), h).to(h.dtype)
        # Offsets from here (the corrections already summed over the steps, in the weights) and scales:
        # one Gemm, the two halves contiguous.
        out = F.linear(self.head[:-1](h), c.decode_w, c.decode_b).reshape(b, k, a, 2, 2 * st)
        # pos expanded explicitly: onnxruntime's broadcasting of an inner (x, y) pair is slow
        chunk = pos[..., None, :].expand(b, k, a, st, 2).reshape(b, k, a, 2 * st) + c.cum_cv + out[..., 0, :]
        # The planned agent follows its plan: the others see the action, not a guess of it.
        chunk = c.free_k * chunk + planned
        before = chunk[..., -4:-2] if st > 1 else pos
        vel = (chunk[..., -2:] - before) * (1.0 / dt)
        # pos and vel contiguous and fp32 at every step, as at the first: a compiled step then sees the
        # same strides every time, and compiles once
        return h, chunk[..., -2:].contiguous(), vel, chunk, out[..., 1, :]

    def forward(self, tokens, scene, pose, velocity, agent_mask, plan, plan_mask, agent_type, fmap=None):
        """tokens [B, A, D], scene [B, D], pose [B, A, 4], velocity [B, A, 2] (agent frame at t0, m/s),
        agent_mask [B, A], plan [B, A, T_f, 2], plan_mask [B, A], agent_type [B, A] (int), fmap
        [B * A, W, H, W'] (each agent's raster feature map; with ``map_lookup`` or ``map_scoring`` only).

        Returns traj [B, A, K, T_f, 2] (agent frame, m), scale [B, A, K, T_f, 2] (Laplace, m) and
        mode logits [B, A, K] (uncalibrated). The latent state steps every ``rollout_stride``
        output steps (one latent step decodes that many positions), which keeps the unrolled graph
        small enough for the in-car latency budget.
        """
        b, a, d = tokens.shape
        k, t_f, st, dt = self.cfg.modes, self.cfg.future_steps, self.stride, self.cfg.dt
        n, steps = b * k, t_f // st
        # Layout [B, K, A, ...]: the modes are folded into the batch axis (N = B * K scenes of A
        # agents) for the whole rollout; what does not depend on the mode is [B, 1, A, ...] and broadcasts.
        ctx = torch.cat([tokens, scene[:, None, :].expand(b, a, d)], dim=-1)
        if self.mode_emb.dim() == 3:
            modes = self.mode_emb[agent_type].transpose(1, 2)  # [B, K, A, D]
        else:
            modes = self.mode_emb[None, :, None]  # [1, K, 1, D]
        h = (self.init(ctx)[:, None] + modes).reshape(n * a, d)  # rows (b, k, a)

        # Each agent's frame: (cos, sin) of its heading, and its origin in the scene frame.
        cs = pose[:, None, :, 2:4]  # [B, 1, A, 2]
        # rotate() by (cos, -sin): agent frame -> scene frame, for position, next position and velocity
        cos6, msin6 = (x.expand(b, k, a, 6).contiguous() for x in (pose[:, None, :, 2:3], -pose[:, None, :, 3:4]))
        origin = pose[:, None, :, :2] * self.pose_scale  # [B, 1, A, 2] metres, scene frame
        origins = torch.cat([origin, origin, torch.zeros_like(origin)], dim=-1)  # of position, next position, velocity

        def per_mode(x: torch.Tensor) -> torch.Tensor:  # [B, 1 or K, A, ...] -> [N, A, ...]
            return x.expand(b, k, *x.shape[2:]).reshape(n, *x.shape[2:])

        pm = plan_mask.to(tokens.dtype)[:, None, :, None]  # [B, 1, A, 1]
        free = 1.0 - pm
        key_valid = per_mode(agent_mask[:, None])
        fr, planned_flag = frames(per_mode(cs[..., 0]), per_mode(cs[..., 1])), per_mode(pm[..., 0])
        step_weights = self.attn.step_weights()
        swap6 = fr.swap8[:6, :6]  # (x, y) -> (y, -x) for position, next position and velocity
        plan_steps = plan.reshape(b, 1, a, steps, st, 2)
        planned_pm = plan_steps * pm[..., None, None]  # [B, 1, A, S, st, 2]: the plan where there is one, else 0
        # What does not change during the rollout, once: the action of every latent step (it does
        # not depend on the mode) and the heading's part of ``where`` with its bias: [B, 1, A, S, D].
        # where(scene_pos / scale, cos, sin, pos / 10) is split along its input into that and the part
        # that moves (``w_moving``, applied to [scene_pos, pos]).
        act_all = self.action(torch.cat([plan_steps.reshape(b, 1, a, steps, 2 * st) * pm[..., None] / 10.0,
                                         pm[..., None].expand(b, 1, a, steps, 1)], dim=-1))
        w = self.where.weight
        fixed = F.linear(cs, w[:, 2:4], self.where.bias)[..., None, :] + act_all
        w_moving = torch.cat([w[:, :2] / self.pose_scale, w[:, 4:6] / 10.0], dim=1)  # [D, 4]
        # The first step's pos and vel require a gradient when the later steps' do, and have their dtype
        # (the velocity's: fp32 under autocast too): a compiled step is specialised on both, and then
        # compiles once, not twice. Not inside a compiled forward, where a tensor made with
        # requires_grad breaks the graph (the whole-forward compile: trainer.compile_scope=model).
        # The zeros' own gradient is never used.
        pos = torch.zeros(b, k, a, 2, dtype=velocity.dtype, device=velocity.device,
                          requires_grad=h.requires_grad and not torch.compiler.is_compiling())
        vel = velocity[:, None] + pos  # agent frame, m/s: the latest decoded velocity
        # Expanded to every mode once, so that the per-step arithmetic needs no broadcasting (onnxruntime's
        # broadcasting of small inner dimensions is slow). Positions are [B, K, A, st * 2], each step's
        # (x, y) side by side: one row per agent and mode.
        cum_cv = ((velocity * dt)[:, None, :, None, :] * torch.arange(1, st + 1, dtype=velocity.dtype,
                  device=velocity.device)[:, None]).expand(b, k, a, st, 2).reshape(b, k, a, 2 * st)
        free_k = free.expand(b, k, a, 2 * st).contiguous()
        planned_k = planned_pm.expand(b, k, a, steps, st, 2).reshape(b, k, a, steps, 2 * st)
        c = StepContext(cos6, msin6, swap6, origins, fr, planned_flag, key_valid, step_weights, free, free_k,
                        cum_cv, w_moving, *self.decode_weights(), fmap if self.map_in is not None else None)
        chunks, raw_scales = [], []
        for s in range(steps):
            h, pos, vel, chunk, raw_scale = self.step(h, pos, vel, planned_pm[:, :, :, s, -1], fixed[:, :, :, s],
                                                      planned_k[:, :, :, s], c)
            chunks.append(chunk)
            raw_scales.append(raw_scale)
        traj = torch.cat(chunks, dim=3).reshape(b, k, a, t_f, 2).transpose(1, 2)  # [B, A, K, T_f, 2]
        scale = (softplus(torch.cat(raw_scales, dim=3)) + self.cfg.min_scale).reshape(b, k, a, t_f, 2).transpose(1, 2)
        path_map = None
        if self.map_scoring:  # the map under every latent step's end of every mode: [B, A, K, P * W]
            path = traj[:, :, :, st - 1 :: st].detach()  # the scorer cannot bend the paths (nor the map)
            p = path.shape[3]
            path_map = lookup(fmap.detach(), path.reshape(b, a, k * p, 2), self.cells).reshape(b, a, k, -1)
        logits = self.scorer(h.reshape(b, k, a, d).transpose(1, 2), traj, scale, st, path_map)
        return traj, scale, logits
