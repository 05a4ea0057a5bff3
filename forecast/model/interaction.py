"""Agent-agent attention with relative geometry, used at every latent rollout step.

As in HiVT and QCNet, an agent attends to the others through *edges* that say where they are
relative to it: position, distance, bearing and relative heading in the attending agent's frame,
plus where the other agent is about to be (its plan when it has one, else moving on at its current
velocity). The edges bias the attention logits (per head) and are added to the values, so the
response can depend on geometry and not only on the other agent's latent state.

Everything is dense batched tensor algebra (modes folded into the batch axis, no data-dependent
control flow), so the rollout exports to ONNX with the dynamo exporter.
"""

from __future__ import annotations

import math

import torch
from torch import nn

EDGE_FEATURES = 13


def edge_features(pos: torch.Tensor, nxt: torch.Tensor, vel: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                  planned: torch.Tensor) -> torch.Tensor:
    """Relative geometry of every ordered pair of agents of one mode, in the attending agent's frame.

    pos [N, A, 2]: where each agent is now, scene frame (metres); nxt [N, A, 2]: where it is about to
    be at the end of this latent step (scene frame, metres); vel [N, A, 2]: its velocity (scene
    frame, m/s); cos/sin [N, A]: its heading at t0; planned [N, A]: 1.0 where it follows a plan.

    Returns [N, A(i), A(j), 13]: j seen from i, scaled to O(1): relative position / 10 m (2),
    distance / 10 m (1), bearing cos/sin (2), relative heading cos/sin (2), relative position at the
    end of the step / 10 m (2), its distance / 10 m (1), j's velocity / 10 m/s in i's frame (2), and
    whether j follows a plan (1).
    """
    ci, si = cos[:, :, None], sin[:, :, None]  # [N, A, 1]: i's frame

    def to_i(d: torch.Tensor) -> torch.Tensor:  # d [N, A, A, 2] scene frame -> i's frame
        return torch.stack([ci * d[..., 0] + si * d[..., 1], -si * d[..., 0] + ci * d[..., 1]], dim=-1)

    rel = to_i(pos[:, None, :, :] - pos[:, :, None, :])
    rel_next = to_i(nxt[:, None, :, :] - nxt[:, :, None, :])
    v = to_i(vel[:, None, :, :].expand(-1, pos.shape[1], -1, -1))
    dist = torch.linalg.vector_norm(rel, dim=-1, keepdim=True)
    dist_next = torch.linalg.vector_norm(rel_next, dim=-1, keepdim=True)
    bearing = rel / (dist + 1e-3)
    cj, sj = cos[:, None, :], sin[:, None, :]
    rel_heading = torch.stack([ci * cj + si * sj, ci * sj - si * cj], dim=-1)  # cos/sin of (h_j - h_i)
    flag = planned[:, None, :, None].expand(-1, pos.shape[1], -1, 1)
    return torch.cat([rel * 0.1, dist * 0.1, bearing, rel_heading, rel_next * 0.1, dist_next * 0.1, v * 0.1, flag],
                     dim=-1)


class GeometricAttention(nn.Module):
    """Multi-head attention over agents with edge features as logit bias and value offset.

    ``logit_hij = q_hi . k_hj / sqrt(d_h) + bias_h(e_ij)``; ``out_i = sum_j a_hij (v_hj + W_h e_ij)``.
    The edge-value term is linear in the edges, so it is computed from the attention-weighted edges
    ``sum_j a_hij e_ij`` ([N, A, H, E]) instead of an [N, A, A, D] tensor.
    """

    def __init__(self, d: int, heads: int, edges: int = EDGE_FEATURES):
        super().__init__()
        if d % heads:
            raise ValueError(f"hidden={d} must be a multiple of heads={heads}")
        self.h, self.dh = heads, d // heads
        self.qkv = nn.Linear(d, 3 * d)
        self.bias = nn.Sequential(nn.Linear(edges, 2 * heads + 16), nn.ReLU(), nn.Linear(2 * heads + 16, heads))
        self.edge_value = nn.Parameter(torch.randn(heads, edges, self.dh) / math.sqrt(edges))
        self.out = nn.Linear(d, d)

    def forward(self, x: torch.Tensor, edges: torch.Tensor, key_valid: torch.Tensor) -> torch.Tensor:
        """x [N, A, D], edges [N, A, A, E], key_valid [N, A] bool (False = padding) -> [N, A, D]."""
        n, a, d = x.shape
        q, k, v = self.qkv(x).reshape(n, a, 3, self.h, self.dh).permute(2, 0, 3, 1, 4)  # each [N, H, A, dh]
        logit = q @ k.transpose(-1, -2) * (1.0 / math.sqrt(self.dh)) + self.bias(edges).permute(0, 3, 1, 2)
        # A large negative instead of -inf: a padded query row stays finite (its output is ignored).
        logit = logit + (~key_valid)[:, None, None, :].to(x.dtype) * -1e4
        att = torch.softmax(logit, dim=-1)  # [N, H, A, A]
        out = (att @ v).permute(0, 2, 1, 3)  # [N, A, H, dh]
        weighted_edges = att.permute(0, 2, 1, 3) @ edges  # [N, A, H, E]
        out = out + (weighted_edges[..., None] * self.edge_value[None, None]).sum(-2)  # [N, A, H, dh]
        return self.out(out.reshape(n, a, d))
