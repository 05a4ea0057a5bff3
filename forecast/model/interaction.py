"""Agent-agent attention with relative geometry, used at every latent rollout step.

As in HiVT and QCNet, an agent attends to the others through *edges* that say where they are
relative to it: position, distance, bearing and relative heading in the attending agent's frame,
plus where the other agent is about to be (its plan when it has one, else moving on at its current
velocity). The edges bias the attention logits (per head) and are added to the values, so the
response can depend on geometry and not only on the other agent's latent state.

Everything is dense batched tensor algebra (modes folded into the batch axis, no data-dependent
control flow), so the rollout exports to ONNX with the dynamo exporter. The edges ([13, N, A, A], N =
modes x scenes) are the rollout's largest tensors, rebuilt at every latent step: they are made with as
few and as large operations as possible (one matrix product rotates every agent's vectors into every
other agent's frame), which is what the in-car CPU budget needs (issue 13). The weights keep the layout
they were first trained in, so every checkpoint computes the same function.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import nn
from torch.nn import functional as F

# Channels of ``edge_features``, in order (the layout the fast path builds).
EDGE_CHANNELS = ("rel_x", "rel_y", "next_x", "next_y", "vel_x", "vel_y", "heading_cos", "heading_sin",
                 "dist", "next_dist", "bearing_cos", "bearing_sin", "planned")
EDGE_FEATURES = len(EDGE_CHANNELS)
# The order in which the checkpointed weights (``bias[0].weight`` columns, ``edge_value`` rows) take the
# channels: the first layout of this model. Kept so that every model.pt trained before still loads and
# predicts the same; the weights are permuted to EDGE_CHANNELS at use (a constant in the exported graph).
PARAM_CHANNELS = ("rel_x", "rel_y", "dist", "bearing_cos", "bearing_sin", "heading_cos", "heading_sin",
                  "next_x", "next_y", "next_dist", "vel_x", "vel_y", "planned")
TO_PARAM = tuple(PARAM_CHANNELS.index(c) for c in EDGE_CHANNELS)  # edge channel c <- parameter column TO_PARAM[c]


class Frames(NamedTuple):
    """Each agent's heading as the edges need it, and the constants they use (``frames``: once per
    rollout, none of it changes during the rollout)."""

    cs: torch.Tensor  # [N, A, 2]: cos, sin
    cos8: torch.Tensor  # [N, A, 8]: cos repeated for the 8 channels of 4 (x, y) vectors
    sin8: torch.Tensor  # [N, A, 8]
    cs_rows: torch.Tensor  # [8, N, A, 2]: cs for each channel's left factor
    ones: torch.Tensor  # [N, A, 1, 8]
    self_eps: torch.Tensor  # [A, A]: the bearing's 1 mm, and a huge value on the diagonal (an agent and itself)
    swap8: torch.Tensor  # [8, 8]: ``swap_pairs(8)``; its top-left [6, 6] is ``swap_pairs(6)``
    relative: torch.Tensor  # [8]: -1 for the 4 relative channels, 0 for velocity and heading


class Edges(NamedTuple):
    """The edges of one latent step, and what the attention needs to sum them without touching every edge."""

    edges: torch.Tensor  # [13, N, A, A] channels ``EDGE_CHANNELS``
    agents: torch.Tensor  # [N, A, 9]: each agent's own (scaled) vectors, the ``u_j`` below, and its plan flag
    frames: Frames
    neg_own: torch.Tensor  # [N, A, 8]: -R_i u_i for the relative channels (0 for velocity and heading)


def frames(cos: torch.Tensor, sin: torch.Tensor) -> Frames:
    """cos, sin [N, A] -> ``Frames`` (expanded once, so that rotating [..., 8] needs no inner broadcast)."""
    n, a = cos.shape
    cs = torch.stack([cos, sin], dim=-1)
    idx = torch.arange(a, device=cos.device)
    return Frames(cs, cos[..., None].expand(n, a, 8).contiguous(), sin[..., None].expand(n, a, 8).contiguous(),
                  cs[None].expand(8, n, a, 2).contiguous(), torch.ones(n, a, 1, 8, dtype=cos.dtype, device=cos.device),
                  1e-4 + 1e6 * (idx[:, None] == idx[None, :]).to(cos.dtype), swap_pairs(8, cos),
                  (torch.arange(8, device=cos.device) >= 4).to(cos.dtype) - 1)


def swap_pairs(k2: int, like: torch.Tensor) -> torch.Tensor:
    """[2k, 2k] constant: ``v @ swap_pairs`` turns every (x, y) pair of v [..., 2k] into (y, -x).

    Made by device operations, not from Python data: ``torch.tensor(data, device="cuda")`` copies from
    pageable host memory, which waits for every kernel queued before it (a GPU sync per call). No -0.0
    entries, so the exported graph's folded constants keep their bytes."""
    i = torch.arange(k2, device=like.device)
    up = (i[:, None] == i[None, :] + 1) & (i % 2 == 0)[None, :]  # J[p + 1, p] = 1 for even p
    return up.to(like.dtype) - up.T.to(like.dtype)  # and J[p, p + 1] = -1


def rotate(v: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, swap: torch.Tensor) -> torch.Tensor:
    """v [..., 2k] as k (x, y) pairs -> in the frame of heading (cos, sin) (broadcastable to v): R v =
    cos v + sin J v, J (x, y) = (y, -x), ``swap`` = J ([2k, 2k], ``swap_pairs``: made once per rollout, in
    ``Frames``). To rotate back (frame -> scene), pass -sin."""
    return cos * v + sin * (v @ swap)


def edge_features(pos: torch.Tensor, nxt: torch.Tensor, vel: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                  planned: torch.Tensor) -> Edges:
    """Relative geometry of every ordered pair of agents of one mode, in the attending agent's frame.

    pos [N, A, 2]: where each agent is now, scene frame (metres); nxt [N, A, 2]: where it is about to
    be at the end of this latent step (scene frame, metres); vel [N, A, 2]: its velocity (scene
    frame, m/s); cos/sin [N, A]: its heading at t0; planned [N, A]: 1.0 where it follows a plan.

    Returns ``Edges``, whose ``edges`` are [13, N, A(i), A(j)], channels first (each channel one
    contiguous plane, which keeps every operation on it a long contiguous loop, and the edge MLP one
    2-D matrix product): j seen from i, scaled to O(1), channels
    ``EDGE_CHANNELS``: relative position / 10 m (2), relative position at the end of the step / 10 m
    (2), j's velocity / 10 m/s (2), relative heading cos/sin (2), the two distances / 10 m (2),
    bearing cos/sin (2), whether j follows a plan (1).
    """
    return edges_of(torch.cat([pos, nxt, vel], dim=-1) * 0.1, frames(cos, sin), planned)


def edges_of(vectors: torch.Tensor, fr: Frames, planned: torch.Tensor) -> Edges:
    """``edge_features`` of vectors [N, A, 6] (position, next position, velocity; scene frame, / 10),
    fr (``frames``: each agent's heading) and planned [N, A]."""
    n, a = vectors.shape[:2]
    u = torch.cat([vectors, fr.cs], dim=-1)  # [N, A, 8]: every agent's vectors, scaled
    ju = u @ fr.swap8  # each (x, y) -> (y, -x)
    # R_i (u_j - u_i) = cos_i u_j + sin_i J u_j - R_i u_i, for every channel, i and j in one product of
    # [8, N, A, 3] (cos_i, sin_i, -R_i u_i) by [8, N, 3, A] (u_j, J u_j, 1). Velocity and heading are
    # j's own, not relative: no R_i u_i for them.
    neg_own = (fr.cos8 * u + fr.sin8 * ju) * fr.relative  # [N, A, 8]
    left = torch.cat([fr.cs_rows, neg_own.permute(2, 0, 1)[..., None]], dim=-1)
    right = torch.cat([u[:, :, None], ju[:, :, None], fr.ones], dim=2).permute(3, 0, 2, 1)
    rot = left @ right  # [8, N, A, A]
    sq = rot[:4] * rot[:4]
    # [2, N, A, A] (/10 m). The floor keeps the gradient finite where agents coincide (an agent and
    # itself, padding): sqrt's derivative at 0 is infinite, clamp's below the floor 0.
    dist = torch.sqrt((sq[0::2] + sq[1::2]).clamp_min(1e-20))
    # bearing = rel / (|rel| + 1 mm). An agent's own edge is rounding noise, not 0, and noise / 1 mm
    # is not small: a huge denominator there (``self_eps``) keeps its bearing 0.
    bearing = rot[:2] / (dist[:1] + fr.self_eps)
    flag = planned[None, :, None, :].expand(1, n, a, a)
    return Edges(torch.cat([rot, dist, bearing, flag], dim=0), torch.cat([u, planned[..., None]], dim=-1), fr,
                 neg_own)


class StepWeights(NamedTuple):
    """``GeometricAttention``'s weights rearranged for its forward pass (``step_weights``)."""

    qv: torch.Tensor  # [2D, D]: q (scaled by 1/sqrt(d_h)) and v
    qv_bias: torch.Tensor  # [2D]
    k: torch.Tensor  # [D, D]
    k_bias: torch.Tensor  # [D, 1]
    edge_mlp: torch.Tensor  # [F, E]: the edge MLP's first layer, channels in EDGE_CHANNELS order
    edge_value: torch.Tensor  # [H, E, dh], channels in EDGE_CHANNELS order


class GeometricAttention(nn.Module):
    """Multi-head attention over agents with edge features as logit bias and value offset.

    ``logit_hij = q_hi . k_hj / sqrt(d_h) + bias_h(e_ij)``; ``out_i = sum_j a_hij (v_hj + W_h e_ij)``.
    The edge-value term is linear in the edges, so it is computed from the attention-weighted edges
    ``sum_j a_hij e_ij`` ([H, N, A, E]) instead of an [N, A, A, D] tensor.
    """

    def __init__(self, d: int, heads: int, edges: int = EDGE_FEATURES, edge_hidden: int | None = None):
        super().__init__()
        if d % heads:
            raise ValueError(f"hidden={d} must be a multiple of heads={heads}")
        self.h, self.dh = heads, d // heads
        self.qkv = nn.Linear(d, 3 * d)
        # The edge MLP runs on every pair of agents at every latent step: its width is paid A^2 times per step.
        eh = 2 * heads + 16 if edge_hidden is None else edge_hidden
        self.bias = nn.Sequential(nn.Linear(edges, eh), nn.ReLU(), nn.Linear(eh, heads))
        self.edge_value = nn.Parameter(torch.randn(heads, edges, self.dh) / math.sqrt(edges))
        self.out = nn.Linear(d, d)
        # A buffer, so that it moves with the module: torch.tensor(..., device="cuda") at every call would
        # copy from pageable memory, a GPU sync. Not in the state dict (every checkpoint loads as before).
        self.register_buffer("edge_order", torch.tensor(TO_PARAM), persistent=False)

    def step_weights(self) -> StepWeights:
        """The weights as the forward pass uses them; once per rollout, not per step (a constant of the
        exported graph): the edge channels in ``EDGE_CHANNELS`` order, 1/sqrt(d_h) folded into q."""
        d, scale = self.h * self.dh, 1.0 / math.sqrt(self.dh)
        wq, wk, wv = self.qkv.weight.reshape(3, d, d)
        bq, bk, bv = self.qkv.bias.reshape(3, d)
        return StepWeights(torch.cat([wq * scale, wv]), torch.cat([bq * scale, bv]), wk, bk[:, None],
                           self.bias[0].weight[:, self.edge_order], self.edge_value[:, self.edge_order])

    def forward(self, x: torch.Tensor, geo: Edges, key_valid: torch.Tensor,
                weights: StepWeights | None = None) -> torch.Tensor:
        """x [N, A, D], geo: ``edge_features`` (edges [E, N, A, A]), key_valid [N, A] bool (False = padding),
        weights: ``step_weights()`` when the caller has them -> [N, A, D]."""
        n, a, d = x.shape
        w = weights if weights is not None else self.step_weights()
        # q and v as [H, N, A, dh]; k straight as its transpose [H, N, dh, A] (W_k @ x^T), so that no
        # element-wise transpose is needed for q k^T.
        q, v = F.linear(x, w.qv, w.qv_bias).reshape(n, a, 2, self.h, self.dh).permute(2, 3, 0, 1, 4)
        kt = (w.k @ x.transpose(1, 2) + w.k_bias).reshape(n, self.h, self.dh, a).transpose(0, 1)
        # The edge MLP as two 2-D matrix products on the edges ([F, E] @ [E, N * A * A]): one Gemm each,
        # bias (and ReLU) fused; the logit bias comes out as [H, N, A, A], the logits' own layout.
        hidden = F.relu(torch.addmm(self.bias[0].bias[:, None], w.edge_mlp, geo.edges.reshape(-1, n * a * a)))
        bias = torch.addmm(self.bias[2].bias[:, None], self.bias[2].weight, hidden).reshape(self.h, n, a, a)
        logit = q @ kt + bias
        # A large negative instead of -inf: a padded query row stays finite (its output is ignored).
        logit = logit + (~key_valid)[None, :, None, :].to(x.dtype) * -1e4
        att = torch.softmax(logit, dim=-1)  # [H, N, A, A]
        # sum_j a_hij e_ij ([H, N, A, E]). The channels linear in j's vectors need no edge: sum_j a_hij
        # R_i (u_j - u_i) = R_i (sum_j a_hij u_j) - R_i u_i, as the weights sum to 1. Only the distances
        # and the bearing are summed over the edges.
        summed = att @ geo.agents  # [H, N, A, 9]
        rot = rotate(summed[..., :8], geo.frames.cos8, geo.frames.sin8, geo.frames.swap8) + geo.neg_own
        nonlinear = (att.permute(1, 2, 0, 3) @ geo.edges[8:12].permute(1, 2, 3, 0)).permute(2, 0, 1, 3)  # [H, N, A, 4]
        weighted_edges = torch.cat([rot, nonlinear, summed[..., 8:]], dim=-1).reshape(self.h, n * a, -1)
        out = att @ v + (weighted_edges @ w.edge_value).reshape(self.h, n, a, self.dh)  # [H, N, A, dh]
        out = out.permute(1, 2, 0, 3)  # [N, A, H, dh]
        return self.out(out.reshape(n, a, d))
