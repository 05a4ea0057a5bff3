from __future__ import annotations

import dataclasses

import numpy as np
import torch

from forecast.features.config import FeatureConfig, RasterConfig
from forecast.features.sample import build_sample
from forecast.features.tracks import AgentTracks
from forecast.model.baselines import BaselinePredictor, constant_velocity, ctrv
from forecast.model.batch import collate
from forecast.model.config import ModelConfig
from forecast.model.loss import wta_loss
from forecast.model.world_model import WorldModel

FEAT = FeatureConfig(dt=0.1, history_steps=8, future_steps=12, raster=RasterConfig(size=16, resolution=2.0, ahead=4.0))
MCFG = ModelConfig(hidden=32, modes=3, heads=2, interaction_layers=1, raster_width=8, future_steps=12, dt=0.1,
                   rollout_stride=4)


def _scene(seed: int, a: int = 4, t: int = 30) -> AgentTracks:
    rng = np.random.default_rng(seed)
    xy = rng.uniform(-10, 10, (a, 1, 2)) + rng.uniform(-3, 3, (a, 1, 2)) * np.arange(t)[None, :, None] * 0.1
    curve = rng.uniform(-3.0, 3.0, (a, 1, 1)) * (np.arange(t)[None, :, None] * 0.1) ** 2
    xy = xy + np.concatenate([curve, -curve], -1)
    return AgentTracks(xy, np.full((a, t), np.nan), np.ones((a, t), bool), np.array([0, 1, 2, 0][:a]), 0.1)


def _batch(n=4):
    return collate([build_sample(_scene(i), 10, FEAT, None) for i in range(n)])


def test_shapes_and_probabilities():
    torch.manual_seed(0)
    b = _batch()
    traj, scale, prob = WorldModel(MCFG).eval()(*b.model_inputs())
    assert traj.shape == (4, 4, 3, 12, 2) and scale.shape == traj.shape and prob.shape == (4, 4, 3)
    torch.testing.assert_close(prob.sum(-1), torch.ones(4, 4))
    assert (scale > 0).all()


def test_untrained_model_starts_at_constant_velocity():
    b = _batch()
    traj, _, _ = WorldModel(MCFG).eval()(*b.model_inputs())
    cv = constant_velocity(b.hist[0].numpy(), 12, 0.1)
    np.testing.assert_allclose(traj[0, :, 0].detach().numpy(), cv, atol=1e-4)


def test_the_decoded_offsets_are_the_running_sums_of_the_heads_corrections():
    """``decode_weights`` sums the head's per-step position corrections in its weights: the rollout's
    offsets must be ``cumsum`` of what the head decodes, and its scales the head's own, for the
    layout every checkpoint was trained in (rows (step, [x, y, scale x, scale y]))."""
    torch.manual_seed(0)
    rollout = WorldModel(MCFG).rollout
    torch.nn.init.normal_(rollout.head[-1].weight, std=0.3)
    torch.nn.init.normal_(rollout.head[-1].bias, std=0.3)
    h, st = torch.randn(5, MCFG.hidden), MCFG.rollout_stride
    per_step = rollout.head(h).reshape(5, st, 4)
    w, b = rollout.decode_weights()
    out = torch.nn.functional.linear(rollout.head[:-1](h), w, b).reshape(5, 2, st, 2)
    assert w.shape == (4 * st, MCFG.hidden) and b.shape == (4 * st,)
    torch.testing.assert_close(out[:, 0], per_step[..., :2].cumsum(1), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out[:, 1], per_step[..., 2:], atol=1e-6, rtol=1e-6)


def test_overfits_one_small_batch():
    torch.manual_seed(0)
    b = _batch()
    model = WorldModel(MCFG)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)

    def min_ade() -> float:
        with torch.no_grad():
            traj, _, _ = model(*b.model_inputs())
        err = torch.linalg.vector_norm(traj - b.future[:, :, None], dim=-1).mean(-1).min(-1).values
        return float(err[b.target_mask].mean())

    start = min_ade()
    for _ in range(100):
        traj, scale, logits = model.forward_logits(*b.model_inputs())
        loss, _, _ = wta_loss(traj, scale, logits, b.future, b.future_mask, b.target_mask)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert min_ade() < 0.3 * start, (start, min_ade())


def test_edge_mlp_width_is_a_setting_and_its_default_keeps_the_first_layout():
    default = WorldModel(MCFG).rollout.attn.bias
    assert default[0].out_features == 2 * MCFG.heads + 16  # every checkpoint trained before loads as it was
    narrow = WorldModel(dataclasses.replace(MCFG, edge_hidden=6)).eval()
    assert narrow.rollout.attn.bias[0].out_features == 6 and narrow.rollout.attn.bias[2].in_features == 6
    traj, _, prob = narrow(*_batch(2).model_inputs())
    assert traj.shape == (2, 4, 3, 12, 2) and torch.isfinite(traj).all()
    torch.testing.assert_close(prob.sum(-1), torch.ones(2, 4))


def test_class_modes_give_each_agent_type_its_own_mode_embeddings():
    torch.manual_seed(0)
    shared = WorldModel(MCFG).eval()
    per_class = WorldModel(dataclasses.replace(MCFG, class_modes=True)).eval()
    for p in shared.parameters():  # an untrained head outputs zeros
        p.data += 0.05 * torch.randn_like(p)
    state = shared.state_dict()
    state["rollout.mode_emb"] = state["rollout.mode_emb"][None].repeat(MCFG.num_agent_types, 1, 1)
    per_class.load_state_dict(state)
    b = _batch(2)
    same = [m(*b.model_inputs())[0] for m in (shared, per_class)]
    torch.testing.assert_close(same[0], same[1])  # every type given the shared table: the shared model
    pedestrian = 1  # _scene's second agent
    assert int(b.agent_type[0, pedestrian]) == pedestrian
    with torch.no_grad():
        per_class.rollout.mode_emb[pedestrian] += 1.0
    moved = per_class(*b.model_inputs())[0]
    assert not torch.allclose(moved[:, pedestrian], same[1][:, pedestrian])


def test_plan_is_followed_and_conditions_the_others():
    torch.manual_seed(0)
    model = WorldModel(MCFG).eval()
    for p in model.parameters():  # an untrained head outputs zeros; give it something to condition
        p.data += 0.05 * torch.randn_like(p)
    b = _batch(1)
    base, _, _ = model(*b.model_inputs())
    b.plan[0, 0] = torch.linspace(0, 5, 12)[:, None].repeat(1, 2)
    b.plan_mask[0, 0] = True
    planned, _, _ = model(*b.model_inputs())
    torch.testing.assert_close(planned[0, 0], b.plan[0, 0][None].expand(3, 12, 2))
    assert not torch.allclose(planned[0, 1:], base[0, 1:])  # the others respond to the action


def test_constant_velocity_is_exact_on_a_constant_velocity_track():
    t = np.arange(30) * 0.1
    xy = np.stack([3.0 + 4.0 * t, -2.0 + 1.5 * t], -1)[None]
    tr = AgentTracks(xy, np.full((1, 30), np.nan), np.ones((1, 30), bool), np.array([0]), 0.1)
    s = build_sample(tr, 10, FEAT, None)
    for name in ("constant_velocity", "ctrv"):
        traj, prob = BaselinePredictor(name, 12, 0.1).predict(s)
        np.testing.assert_allclose(traj[:, 0], s.future, atol=1e-5)
        assert prob.tolist() == [[1.0]]


def test_ctrv_follows_a_circle():
    r, w = 10.0, 0.3  # metres, rad/s
    t = np.arange(30) * 0.1
    xy = np.stack([r * np.cos(w * t), r * np.sin(w * t)], -1)[None]
    tr = AgentTracks(xy, np.full((1, 30), np.nan), np.ones((1, 30), bool), np.array([0]), 0.1)
    s = build_sample(tr, 10, FEAT, None)
    err_ctrv = np.abs(ctrv(s.hist, s.hist_mask, 12, 0.1) - s.future).max()
    err_cv = np.abs(constant_velocity(s.hist, 12, 0.1) - s.future).max()
    assert err_ctrv < 0.1 < err_cv


def test_a_model_of_other_raster_channels_is_refused_by_name(tmp_path):
    from dataclasses import replace

    import pytest

    from forecast.model.checkpoint import ModelFileError, load_model, save_model

    feats = FeatureConfig(history_steps=8, future_steps=12, raster=RasterConfig(size=16, resolution=1.0))
    good = tmp_path / "good.pt"
    save_model(good, WorldModel(replace(MCFG, raster_channels=len(feats.raster.channels))), feats, {})
    assert load_model(good).model.cfg.raster_channels == len(feats.raster.channels)
    old = tmp_path / "old.pt"  # from before the traffic-signal channel
    save_model(old, WorldModel(replace(MCFG, raster_channels=8)), feats, {})
    with pytest.raises(ModelFileError, match=r"old\.pt was trained on 8-channel rasters.*builds 9.*traffic_signal"):
        load_model(old)


def test_a_damaged_model_file_is_refused(tmp_path):
    """64 zeroed bytes inside a weight: torch's zip format checks no checksum of tensor data, and the damaged
    model loaded, evaluated and exported without a word. model.pt now carries its weights' sha256."""
    from dataclasses import replace

    import pytest

    from forecast.model.checkpoint import ModelFileError, load_model, save_model

    feats = FeatureConfig(history_steps=8, future_steps=12, raster=RasterConfig(size=16, resolution=1.0))
    model = WorldModel(replace(MCFG, raster_channels=len(feats.raster.channels)))
    path = tmp_path / "model.pt"
    save_model(path, model, feats, {})
    assert load_model(path).model.cfg == model.cfg
    data = bytearray(path.read_bytes())
    name, weight = max(model.state_dict().items(), key=lambda kv: kv[1].numel())
    at = bytes(data).find(weight.detach().numpy().tobytes()[:256])  # torch stores tensor bytes uncompressed
    assert at > 0, name
    data[at + 64: at + 128] = bytes(64)
    damaged = tmp_path / "damaged.pt"
    damaged.write_bytes(bytes(data))
    with pytest.raises(ModelFileError, match=r"damaged\.pt.*weights do not match the sha256 written with them"):
        load_model(damaged)
    legacy = torch.load(path, weights_only=True)  # a file from before the digest still loads
    del legacy["weights_sha256"]
    torch.save(legacy, tmp_path / "legacy.pt")
    assert load_model(tmp_path / "legacy.pt").model.cfg == model.cfg
