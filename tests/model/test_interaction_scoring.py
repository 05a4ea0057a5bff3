"""Rollout interaction (relative geometry), mode scoring after the rollout, the loss options, calibration."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from forecast.model.interaction import (
    EDGE_CHANNELS,
    EDGE_FEATURES,
    TO_PARAM,
    GeometricAttention,
    edge_features,
)
from forecast.model.loss import near_weights, wta_loss
from forecast.model.world_model import WorldModel
from forecast.training.calibration import fit_temperatures, nll
from tests.model.test_world_model import MCFG, _batch


def reference_edges(pos, nxt, vel, cos, sin, planned):
    """The edge features written pair by pair, as first defined: [N, A(i), A(j), 13] in PARAM_CHANNELS order."""
    ci, si = cos[:, :, None], sin[:, :, None]

    def to_i(d):  # [N, A, A, 2] scene frame -> i's frame
        return torch.stack([ci * d[..., 0] + si * d[..., 1], -si * d[..., 0] + ci * d[..., 1]], dim=-1)

    rel = to_i(pos[:, None, :, :] - pos[:, :, None, :])
    rel_next = to_i(nxt[:, None, :, :] - nxt[:, :, None, :])
    v = to_i(vel[:, None, :, :].expand(-1, pos.shape[1], -1, -1))
    dist = torch.linalg.vector_norm(rel, dim=-1, keepdim=True)
    dist_next = torch.linalg.vector_norm(rel_next, dim=-1, keepdim=True)
    cj, sj = cos[:, None, :], sin[:, None, :]
    rel_heading = torch.stack([ci * cj + si * sj, ci * sj - si * cj], dim=-1)
    flag = planned[:, None, :, None].expand(-1, pos.shape[1], -1, 1)
    return torch.cat([rel * 0.1, dist * 0.1, rel / (dist + 1e-3), rel_heading, rel_next * 0.1, dist_next * 0.1,
                      v * 0.1, flag], dim=-1)


def reference_attention(att: GeometricAttention, x, edges, key_valid):
    """logit_hij = q_hi . k_hj / sqrt(d_h) + MLP_h(e_ij), out_i = sum_j a_hij (v_hj + W_h e_ij), one pair at a
    time, with the module's parameters as checkpointed (edges [N, A, A, 13] in PARAM_CHANNELS order)."""
    n, a, d = x.shape
    q, k, v = att.qkv(x).reshape(n, a, 3, att.h, att.dh).permute(2, 0, 3, 1, 4)  # [N, H, A, dh]
    logit = q @ k.transpose(-1, -2) / att.dh**0.5 + att.bias(edges).permute(0, 3, 1, 2)
    logit = logit.masked_fill(~key_valid[:, None, None, :], -1e4)
    w = torch.softmax(logit, dim=-1)  # [N, H, A, A]
    edge_values = torch.einsum("nije,hed->nhijd", edges, att.edge_value)
    out = torch.einsum("nhij,nhijd->nihd", w, v[:, :, None] + edge_values)
    return att.out(out.reshape(n, a, d))


def _scene(n=3, a=7, seed=0):
    g = torch.Generator().manual_seed(seed)
    pos = torch.randn(n, a, 2, generator=g) * 20
    heading = torch.rand(n, a, generator=g) * 6.28
    return (pos, pos + torch.randn(n, a, 2, generator=g), torch.randn(n, a, 2, generator=g) * 5, heading.cos(),
            heading.sin(), (torch.rand(n, a, generator=g) > 0.7).float())


def test_edge_features_are_in_the_attending_agents_frame():
    # agent 0 at the origin facing +y; agent 1 two metres to its right (scene +x), facing -x
    pos = torch.tensor([[[0.0, 0.0], [2.0, 0.0]]])
    cos = torch.tensor([[0.0, -1.0]])
    sin = torch.tensor([[1.0, 0.0]])
    e = edge_features(pos, pos, torch.zeros(1, 2, 2), cos, sin, torch.tensor([[0.0, 1.0]])).edges
    assert e.shape == (EDGE_FEATURES, 1, 2, 2)

    def ch(*names):
        return [EDGE_CHANNELS.index(c) for c in names]

    rel = e[ch("rel_x", "rel_y"), 0, 0, 1] * 10  # 1 seen from 0: forward 0, right (negative y) 2 m
    torch.testing.assert_close(rel, torch.tensor([0.0, -2.0]))
    torch.testing.assert_close(e[ch("dist"), 0, 0, 1] * 10, torch.tensor([2.0]))
    torch.testing.assert_close(e[ch("bearing_cos", "bearing_sin"), 0, 0, 1], torch.tensor([0.0, -1.0]), atol=1e-3,
                               rtol=0)
    # relative heading of 1 from 0: -x vs +y is +90 degrees
    torch.testing.assert_close(e[ch("heading_cos", "heading_sin"), 0, 0, 1], torch.tensor([0.0, 1.0]))
    assert e[ch("planned"), 0, 0, 1] == 1.0 and e[ch("planned"), 0, 1, 0] == 0.0  # who follows a plan
    torch.testing.assert_close(e[ch("rel_x", "rel_y", "dist", "bearing_cos", "bearing_sin"), 0, 0, 0],
                               torch.zeros(5))  # self: no offset, no bearing


def test_edge_features_equal_the_pairwise_definition():
    # one matrix product for every pair (the in-car speed-up of issue 13) computes the same features
    scene = _scene(a=9)
    fast = edge_features(*scene).edges  # [13, N, A, A]
    ref = reference_edges(*scene)[..., list(TO_PARAM)].permute(3, 0, 1, 2)
    torch.testing.assert_close(fast, ref, atol=1e-5, rtol=1e-5)


def test_geometric_attention_equals_the_pairwise_definition_with_the_checkpointed_weights():
    torch.manual_seed(0)
    att = GeometricAttention(16, 2).eval()
    for p in att.parameters():
        p.data += 0.1 * torch.randn_like(p)
    scene = _scene(a=6, seed=1)
    x = torch.randn(3, 6, 16)
    valid = torch.ones(3, 6, dtype=torch.bool)
    valid[1, 4:] = False
    expected = reference_attention(att, x, reference_edges(*scene), valid)
    torch.testing.assert_close(att(x, edge_features(*scene), valid), expected, atol=1e-5, rtol=1e-4)


def test_geometric_attention_is_permutation_equivariant_and_ignores_padding():
    torch.manual_seed(0)
    att = GeometricAttention(16, 2).eval()
    x = torch.randn(1, 4, 16)
    pos = torch.randn(1, 4, 2) * 5
    cos, sin = torch.ones(1, 4), torch.zeros(1, 4)
    edges = edge_features(pos, pos, torch.zeros(1, 4, 2), cos, sin, torch.zeros(1, 4))
    valid = torch.tensor([[True, True, True, False]])
    out = att(x, edges, valid)
    perm = torch.tensor([2, 0, 1, 3])
    e2 = edge_features(pos[:, perm], pos[:, perm], torch.zeros(1, 4, 2), cos, sin, torch.zeros(1, 4))
    torch.testing.assert_close(att(x[:, perm], e2, valid[:, perm])[:, :3], out[:, perm][:, :3])
    x_pad = x.clone()
    x_pad[0, 3] += 100.0  # whatever the padding holds, the real agents do not see it
    torch.testing.assert_close(att(x_pad, edges, valid)[:, :3], out[:, :3])
    far = pos.clone()
    far[0, 1] += 30.0  # but where a real agent is matters
    e3 = edge_features(far, far, torch.zeros(1, 4, 2), cos, sin, torch.zeros(1, 4))
    assert not torch.allclose(att(x, e3, valid)[0, 0], out[0, 0])


def test_mode_scores_see_the_rollout_and_temperature_scales_them():
    torch.manual_seed(0)
    model = WorldModel(MCFG).eval()
    for p in model.parameters():
        p.data += 0.05 * torch.randn_like(p)
    b = _batch(2)
    _, _, logits = model.forward_logits(*b.model_inputs())
    assert logits.shape == (2, 4, 3) and not torch.allclose(logits[..., 0], logits[..., 1])
    _, _, prob1 = model(*b.model_inputs())
    model.temperature.fill_(4.0)
    _, _, prob4 = model(*b.model_inputs())
    torch.testing.assert_close(prob4, torch.softmax(logits / 4.0, -1))
    assert (prob4.max(-1).values <= prob1.max(-1).values + 1e-6).all()  # hotter: flatter
    assert "temperature" in model.state_dict()  # travels with model.pt and into the ONNX graph


def test_scoring_loss_does_not_move_the_trajectories():
    torch.manual_seed(0)
    model = WorldModel(MCFG)
    b = _batch(2)
    traj, scale, logits = model.forward_logits(*b.model_inputs())
    logits.sum().backward()
    assert model.rollout.head[-1].weight.grad is None or model.rollout.head[-1].weight.grad.abs().sum() == 0
    assert model.rollout.scorer.logit[-1].weight.grad.abs().sum() > 0


def _toy(k=2):
    """Two agents of one scene, 2 modes: mode 0 0.1 m off for agent 0 and 4.9 m for agent 1, mode 1 0.9 m
    off for both: each agent alone would pick differently, the scene picks mode 1."""
    fut = torch.full((1, 2, 4, 2), 0.1)
    traj = torch.zeros(1, 2, k, 4, 2)
    traj[0, 1, 0, :, 0] = 5.0
    traj[0, :, 1, :, 0] = 1.0
    scale = torch.ones_like(traj)
    return traj, scale, torch.zeros(1, 2, k), fut, torch.ones(1, 2, 4, dtype=torch.bool), torch.ones(1, 2, dtype=torch.bool)


def test_scene_level_wta_trains_the_shared_mode():
    traj, scale, logits, fut, fm, tm = _toy()
    traj.requires_grad_(True)
    wta_loss(traj, scale, logits, fut, fm, tm, scene_weight=1.0)[1].backward()
    g = traj.grad.abs().sum(dim=(0, 3, 4))  # [A, K]
    assert (g[:, 1] > 0).all() and (g[:, 0] == 0).all()  # the scene's winner (mode 1) for both agents
    traj.grad = None
    wta_loss(traj, scale, logits, fut, fm, tm, scene_weight=0.0)[1].backward()
    g = traj.grad.abs().sum(dim=(0, 3, 4))
    assert g[0, 0] > 0 and g[0, 1] == 0 and g[1, 1] > 0  # each agent its own winner


def test_agent_weights_and_near_plan_weights():
    traj, scale, logits, fut, fm, tm = _toy()
    base = wta_loss(traj, scale, logits, fut, fm, tm)[1]
    w = torch.tensor([[1.0, 0.0]])  # only agent 0 counts
    only0 = wta_loss(traj, scale, logits, fut, fm, tm, agent_weight=w)[1]
    assert only0 < base  # agent 0 is matched within 0.1 m, agent 1 is 0.9 m off
    pose = torch.tensor([[[0.0, 0.0, 1.0, 0.0], [0.1, 0.0, 1.0, 0.0], [1.0, 0.0, 1.0, 0.0]]])  # x/50: 0, 5, 50 m
    weights = near_weights(pose, torch.tensor([[True, False, False]]), torch.ones(1, 3, dtype=torch.bool), 50.0,
                           radius=20.0, boost=2.0)
    torch.testing.assert_close(weights, torch.tensor([[1.0, 3.0, 1.0]]))  # the planned agent itself: not boosted


def test_temperature_fit_recovers_a_known_temperature():
    rng = np.random.default_rng(0)
    raw = rng.normal(size=(4000, 6)) * 2.0
    p = np.exp(raw / 2.5)
    p /= p.sum(-1, keepdims=True)
    winner = np.array([rng.choice(6, p=row) for row in p])
    types = np.zeros(4000, np.int64)
    out = fit_temperatures(raw, winner, types, num_types=3)
    assert out["temperature"][0] == pytest.approx(2.5, rel=0.1)
    assert out["temperature"][1:] == [1.0, 1.0]  # no validation agents of those types: unchanged
    assert nll(raw, winner, out["temperature"][0]) <= nll(raw, winner, 1.0)


def test_marginal_mode_is_trained_on_every_agent():
    traj, scale, logits, fut, fm, tm = _toy()
    traj.requires_grad_(True)
    wta_loss(traj, scale, logits, fut, fm, tm, marginal_weight=0.5)[1].backward()
    g = traj.grad.abs().sum(dim=(0, 3, 4))  # [A, K]
    assert g[1, 0] > 0  # agent 1's winner is mode 1, but mode 0 learns from it too


def test_soft_mode_targets_share_credit_between_close_modes():
    traj, scale, _, fut, fm, tm = _toy()
    logits = torch.zeros(1, 2, 2, requires_grad=True)
    wta_loss(traj, scale, logits, fut, fm, tm, cls_tau=torch.full((1, 2), 100.0))[2].backward()
    assert logits.grad.abs().max() < 0.05  # a huge tau: both modes nearly equal targets, uniform logits fit
    logits.grad = None
    wta_loss(traj, scale, logits, fut, fm, tm, cls_tau=torch.full((1, 2), 0.01))[2].backward()
    hard = logits.grad.clone()
    logits.grad = None
    wta_loss(traj, scale, logits, fut, fm, tm)[2].backward()
    torch.testing.assert_close(hard, logits.grad)  # a tiny tau is the hard winner
