"""Winner-takes-all Laplace regression plus mode classification, as in MTR/QCNet-style forecasters."""

from __future__ import annotations

import torch
from torch.nn import functional as F


def wta_loss(traj, scale, logits, future, future_mask, target_mask, cls_weight: float = 1.0,
             agent_weight: torch.Tensor | None = None, scene_weight: float = 0.0, marginal_weight: float = 0.0,
             cls_tau: torch.Tensor | None = None):
    """traj/scale [B, A, K, T, 2], logits [B, A, K], future [B, A, T, 2], future_mask [B, A, T],
    target_mask [B, A], agent_weight [B, A] (optional, default 1: how much each agent counts).

    Regression: the Laplace NLL of the winning mode only. An agent's winner is its mode with the
    lowest average displacement over its valid future steps; with ``scene_weight`` w > 0 a share w
    of the regression instead goes to the *scene's* winner, the mode with the lowest summed
    displacement over all scored agents of the scene (all agents of a scene share it: a joint
    future, as Argoverse 2's multi-agent task scores it).

    With ``marginal_weight`` > 0, mode 0 is also regressed on *every* agent (weighted so): it learns
    the conditional median future, a safe most-likely mode where the other modes are long shots.

    Classification: the logits are trained to predict the mode whose endpoint (the last valid
    step) is closest to the truth, the mode that minFDE@1 and brier-minFDE pick. With ``cls_tau``
    [B, A] (metres) the target is soft instead, ``softmax(-FDE_k / tau)``: modes that are nearly as
    close share the credit, so the most likely mode leans to the one that is *usually* close.
    Returns (total, regression, classification) scalars.
    """
    m = (future_mask & target_mask[..., None]).float()  # [B, A, T]
    n_steps = m.sum(-1).clamp(min=1.0)  # [B, A]
    err = torch.linalg.vector_norm(traj - future[:, :, None], dim=-1)  # [B, A, K, T]
    ade = (err * m[:, :, None]).sum(-1) / n_steps[:, :, None]  # [B, A, K]
    agent = target_mask & future_mask.any(-1)
    w = agent.float() if agent_weight is None else agent.float() * agent_weight
    n_agents = w.sum().clamp(min=1e-6)
    nll = (torch.log(2 * scale) + (future[:, :, None] - traj).abs() / scale).sum(-1)  # [B, A, K, T]
    nll = (nll * m[:, :, None]).sum(-1) / n_steps[:, :, None]  # [B, A, K]

    best = ade.argmin(-1)  # [B, A]
    reg = (nll.gather(2, best[..., None]).squeeze(2) * w).sum() / n_agents
    if scene_weight > 0:
        scene_best = (ade * w[..., None]).sum(1).argmin(-1)  # [B]
        idx = scene_best[:, None, None].expand(-1, ade.shape[1], 1)
        reg_scene = (nll.gather(2, idx).squeeze(2) * w).sum() / n_agents
        reg = (1.0 - scene_weight) * reg + scene_weight * reg_scene
    if marginal_weight > 0:
        reg = reg + marginal_weight * (nll[:, :, 0] * w).sum() / n_agents

    last = future_mask.shape[-1] - 1 - future_mask.flip(-1).float().argmax(-1)  # [B, A] last valid step
    fde = err.gather(3, last[:, :, None, None].expand(-1, -1, err.shape[2], 1)).squeeze(-1)  # [B, A, K]
    if cls_tau is None:
        winner = fde.argmin(-1)
        ce = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), winner.reshape(-1), reduction="none")
        ce = ce.reshape(winner.shape)
    else:
        target = torch.softmax(-fde.detach() / cls_tau[..., None], dim=-1)
        ce = -(target * torch.log_softmax(logits, dim=-1)).sum(-1)
    cls = (ce * w).sum() / n_agents
    return reg + cls_weight * cls, reg, cls


def near_weights(pose: torch.Tensor, plan_mask: torch.Tensor, agent_mask: torch.Tensor, pose_scale: float,
                 radius: float = 20.0, boost: float = 1.0) -> torch.Tensor:
    """[B, A] loss weights: ``1 + boost`` for agents within ``radius`` metres of a planned agent at t0, else 1.

    pose [B, A, 4] (x/scale, y/scale, cos, sin), plan_mask/agent_mask [B, A]. How the agents near a
    plan respond is what action conditioning is for, so their errors count more.
    """
    xy = pose[..., :2] * pose_scale
    d = torch.cdist(xy, xy)  # [B, A, A]
    near = ((d < radius) & plan_mask[:, None, :]).any(-1) & agent_mask & ~plan_mask
    return 1.0 + boost * near.float()
