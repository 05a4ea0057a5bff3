"""Winner-takes-all Laplace regression plus mode classification, as in MTR/QCNet-style forecasters."""

from __future__ import annotations

import torch
from torch.nn import functional as F


def wta_loss(traj, scale, logits, future, future_mask, target_mask, cls_weight: float = 1.0):
    """traj/scale [B, A, K, T, 2], logits [B, A, K], future [B, A, T, 2], future_mask [B, A, T],
    target_mask [B, A]. The best mode is the one with the lowest average displacement over the
    valid future steps; it alone gets the Laplace NLL; every mode gets the classification loss.
    Returns (total, regression, classification) scalars.
    """
    m = (future_mask & target_mask[..., None]).float()  # [B, A, T]
    n_steps = m.sum(-1).clamp(min=1.0)  # [B, A]
    err = torch.linalg.vector_norm(traj - future[:, :, None], dim=-1)  # [B, A, K, T]
    ade = (err * m[:, :, None]).sum(-1) / n_steps[:, :, None]  # [B, A, K]
    best = ade.argmin(-1)  # [B, A]
    idx = best[..., None, None, None].expand(-1, -1, 1, *traj.shape[3:])
    mu = traj.gather(2, idx).squeeze(2)
    b = scale.gather(2, idx).squeeze(2)
    nll = (torch.log(2 * b) + (future - mu).abs() / b).sum(-1)  # [B, A, T]
    agent = target_mask & future_mask.any(-1)
    n_agents = agent.float().sum().clamp(min=1.0)
    reg = ((nll * m).sum(-1) / n_steps)[agent].sum() / n_agents
    cls = F.cross_entropy(logits[agent], best[agent], reduction="sum") / n_agents
    return reg + cls_weight * cls, reg, cls
