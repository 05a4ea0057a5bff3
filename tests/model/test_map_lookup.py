"""model.map_lookup and model.map_scoring: the raster's feature map read at points of the agent's frame,
in every latent step and by the scorer. Geometry against the rasteriser, both raster layouts, gradients, and the exported graph."""

from __future__ import annotations

import copy
import dataclasses

import numpy as np
import onnx
import pytest
import torch

import forecast
from forecast.cli import main
from forecast.export.tensorrt import check_operators, read_supported_operators
from forecast.features.config import MAP_CHANNELS, FeatureConfig, RasterConfig
from forecast.features.sample import build_sample
from forecast.features.tracks import AgentTracks
from forecast.model.batch import collate
from forecast.model.checkpoint import save_model
from forecast.model.map_lookup import cell_affine, lookup
from forecast.model.world_model import WorldModel
from tests.conftest import tiny_features_and_model, tiny_scenes_and_model

PEDESTRIAN_CHANNEL = len(MAP_CHANNELS) + 1


def _with_lookup(features: FeatureConfig, model_cfg):
    r = features.raster
    return dataclasses.replace(model_cfg, map_lookup=True, map_scoring=True, raster_size=r.size,
                               raster_resolution=r.resolution, raster_ahead=r.ahead)


def _pixel_points(cfg: RasterConfig) -> np.ndarray:
    """[S, S, 2]: each pixel centre of an agent raster as (u ahead, v left) metres, as the rasteriser defines it."""
    c, r = (cfg.size - 1) / 2.0, cfg.resolution
    rows, cols = np.meshgrid(np.arange(cfg.size), np.arange(cfg.size), indexing="ij")
    return np.stack([cfg.ahead + (c - rows) * r, (c - cols) * r], axis=-1)


def test_a_pixel_centre_reads_its_own_pixel_and_half_way_reads_half():
    cfg = RasterConfig(size=12, resolution=0.5, ahead=2.0)
    fmap = torch.zeros(1, 1, cfg.size, cfg.size)
    fmap[0, 0, 3, 8] = 1.0
    u, v = _pixel_points(cfg)[3, 8]
    pts = torch.tensor([[[[u, v], [u, v + cfg.resolution / 2], [u - cfg.resolution, v], [100.0, 0.0]]]],
                       dtype=torch.float32)
    out = lookup(fmap, pts, cell_affine(cfg.size, cfg.resolution, cfg.ahead, 1))  # [1, 1, 4, 1]
    np.testing.assert_allclose(out[0, 0, :, 0].numpy(), [1.0, 0.5, 0.0, 0.0], atol=1e-6)


def test_a_neighbour_is_read_where_the_rasteriser_drew_it():
    """A pedestrian standing 6 m ahead and 3 m to the right of an agent heading north: the agent's raster
    (drawn by the sample builder) is brightest where ``lookup`` reads the point (6, -3)."""
    features = FeatureConfig(dt=0.1, history_steps=8, future_steps=6, raster=RasterConfig(size=32, resolution=0.5, ahead=4.0))
    t = 14
    xy = np.zeros((2, t, 2))
    xy[0, :, 1] = np.arange(t) * 0.5  # agent 0 heads north (+y)
    xy[1] = [3.0, 6.0 + xy[0, 7, 1]]  # at t0 = 7: 3 m east (its right) and 6 m ahead of agent 0
    tracks = AgentTracks(xy, np.full((2, t), np.nan), np.ones((2, t), bool), np.array([0, 1]), 0.1)
    sample = build_sample(tracks, 7, features, None)
    plane = torch.from_numpy(sample.raster[0:1, PEDESTRIAN_CHANNEL : PEDESTRIAN_CHANNEL + 1]).float()  # [1, 1, S, S]
    assert plane.max() > 0
    at = cell_affine(features.raster.size, features.raster.resolution, features.raster.ahead, 1)
    pixels = torch.from_numpy(_pixel_points(features.raster)).float().reshape(1, 1, -1, 2)
    read = lookup(plane, pixels, at).reshape(features.raster.size, features.raster.size)
    torch.testing.assert_close(read, plane[0, 0], rtol=0, atol=1e-4)  # every pixel centre reads its own pixel
    assert lookup(plane, torch.tensor([[[[6.0, -3.0]]]]), at).item() >= 0.5 * plane.max().item()


def test_each_agent_reads_its_own_strided_feature_map_where_the_point_lies():
    """Through the model's own CNN layers: with centre-tap convolutions the stride-4 feature map holds the
    raster's value at pixel (4 i, 4 j), so a ramp raster (column, row, agent) must read back, at the centre
    of any interior raster pixel, that pixel's column and row and its own agent's number, for every agent
    of a batch (rows (b, a))."""
    from forecast.model.encoders import MAP_STRIDE, RasterEncoder

    cfg = RasterConfig(size=48, resolution=0.75, ahead=8.0)
    b, a, s = 2, 3, cfg.size
    enc = RasterEncoder(dataclasses.replace(tiny_features_and_model()[1], raster_channels=3, raster_width=6))
    with torch.no_grad():
        for i in (0, 2):
            conv = enc.net[i]
            conv.weight.zero_()
            conv.bias.zero_()
            for ch in range(3):
                conv.weight[ch, ch, 1, 1] = 255.0 if i == 0 else 1.0  # undoes the first layer's 1 / 255
    rows, cols = np.meshgrid(np.arange(s), np.arange(s), indexing="ij")
    raster = np.stack([np.stack([cols, rows, np.full_like(cols, 10 * n)]) for n in range(b * a)]).astype(np.uint8)
    with torch.no_grad():
        _, fmap = enc(torch.from_numpy(raster))
    assert fmap.shape == (b * a, 6, s // MAP_STRIDE, s // MAP_STRIDE)
    inner = np.arange(0, s - MAP_STRIDE + 1)  # pixels between the first and the last cell centre
    pix = np.stack(np.meshgrid(inner, inner, indexing="ij"), -1).reshape(-1, 2)  # (row, col)
    uv = _pixel_points(cfg)[pix[:, 0], pix[:, 1]]
    points = torch.from_numpy(np.broadcast_to(uv, (b, a, *uv.shape)).copy()).float()
    read = lookup(fmap, points, cell_affine(cfg.size, cfg.resolution, cfg.ahead, MAP_STRIDE))  # [B, A, M, 6]
    agent = np.arange(b * a).reshape(b, a, 1)
    np.testing.assert_allclose(read[..., 0].numpy(), np.broadcast_to(pix[:, 1], (b, a, len(pix))), atol=1e-3)
    np.testing.assert_allclose(read[..., 1].numpy(), np.broadcast_to(pix[:, 0], (b, a, len(pix))), atol=1e-3)
    np.testing.assert_allclose(read[..., 2].numpy(), np.broadcast_to(10.0 * agent, (b, a, len(pix))), atol=1e-3)


@pytest.fixture(scope="module")
def setup():
    return tiny_scenes_and_model((3, 1, 5), _with_lookup(*tiny_features_and_model()))


def test_packed_and_padded_rasters_give_the_same_outputs(setup):
    features, samples, model = setup
    with torch.no_grad():
        ref = model.forward_logits(*collate(samples, features.future_steps).model_inputs())
        out = model.forward_logits(*collate(samples, features.future_steps, pack_rasters=True).model_inputs())
    for r, o in zip(ref, out, strict=True):
        torch.testing.assert_close(o, r, rtol=0, atol=1e-5)


def test_the_steps_and_the_scorer_read_the_map(setup):
    """Changing the raster under the agents changes the paths and the scores through the lookup, and the
    map's weights get gradients from the regression (the scorer's inputs are detached)."""
    features, samples, model = setup
    batch = collate(samples, features.future_steps)
    traj, _, logits = model.forward_logits(*batch.model_inputs())
    traj.abs().sum().backward()
    assert model.rollout.map_in.weight.grad.abs().sum() > 0
    model.zero_grad()
    _, _, logits2 = model.forward_logits(*batch.model_inputs())
    logits2.sum().backward()
    assert model.rollout.map_in.weight.grad is None or model.rollout.map_in.weight.grad.abs().sum() == 0
    model.zero_grad()
    with torch.no_grad():  # the map's weights zeroed: paths and scores change
        blind = copy.deepcopy(model)
        blind.rollout.map_in.weight.zero_()
        blind.rollout.map_in.bias.zero_()
        blind_steps = blind.forward_logits(*batch.model_inputs())
        w = model.cfg.raster_width * (features.future_steps // model.cfg.rollout_stride)
        blind.rollout.scorer.embed[0].weight[:, -w:] = 0.0
        blind_all = blind.forward_logits(*batch.model_inputs())
    assert (blind_steps[0] - traj).abs().max() > 1e-4
    assert (blind_all[2] - blind_steps[2]).abs().max() > 1e-4
    torch.testing.assert_close(blind_all[0], blind_steps[0], rtol=0, atol=0)  # the scorer bends no path


def test_the_untrained_model_is_still_constant_velocity(setup):
    features, samples, _ = setup
    torch.manual_seed(1)
    model = WorldModel(_with_lookup(*tiny_features_and_model()), features.scene_scale).eval()
    batch = collate(samples, features.future_steps)
    with torch.no_grad():
        traj, _, _ = model(*batch.model_inputs())
    v = batch.hist[:, :, -1, 2:4]  # [B, A, 2] agent frame, m/s
    steps = torch.arange(1, features.future_steps + 1) * features.dt
    cv = v[:, :, None, None, :] * steps[:, None]
    m = batch.agent_mask
    torch.testing.assert_close(traj[m], cv.expand_as(traj)[m], rtol=0, atol=1e-4)


def test_the_exported_graph_reads_the_map_as_torch_does(setup, tmp_path):
    """Through the CLI with --fp16 --int8 --verify: parity of every variant at 1, 7, 64 and 256 agents,
    and every operator of the graph one that TensorRT's parser supports (docs/tensorrt_operators.md)."""
    features, _, model = setup
    save_model(tmp_path / "model.pt", model, features, {"run_id": "run-map", "version": forecast.__version__})
    assert main(["--quiet", "export", "--model", str(tmp_path / "model.pt"), "--out", str(tmp_path / "bundle"),
                 "--fp16", "--int8", "--verify"]) == 0
    proto = onnx.load(str(tmp_path / "bundle" / "model.onnx"))
    rows = check_operators(proto, read_supported_operators())
    assert all(ok for _, _, ok in rows), [r for r in rows if not r[2]]


@pytest.mark.parametrize(("steps", "scoring"), [(True, False), (False, True)])
def test_either_reader_alone(setup, steps, scoring):
    features, samples, _ = setup
    cfg = dataclasses.replace(_with_lookup(*tiny_features_and_model()), map_lookup=steps, map_scoring=scoring)
    torch.manual_seed(0)
    model = WorldModel(cfg, features.scene_scale).eval()
    assert (model.rollout.map_in is not None) == steps
    with torch.no_grad():
        traj, scale, prob = model(*collate(samples, features.future_steps, pack_rasters=True).model_inputs())
    assert traj.shape == (3, 5, 3, 6, 2) and torch.isfinite(traj).all() and torch.isfinite(prob).all()


def test_a_model_whose_raster_geometry_was_edited_is_refused(setup, tmp_path):
    from forecast.model.checkpoint import ModelFileError, load_model

    features, _, model = setup
    save_model(tmp_path / "model.pt", model, features, {"run_id": "run-map"})
    load_model(tmp_path / "model.pt")  # as saved: loads
    payload = torch.load(tmp_path / "model.pt", weights_only=True)
    payload["model_config"]["raster_resolution"] = 2.0 * features.raster.resolution
    torch.save(payload, tmp_path / "edited.pt")
    with pytest.raises(ModelFileError, match="reads its raster at points"):
        load_model(tmp_path / "edited.pt")


def test_the_training_and_the_inference_reads_are_the_same_function():
    """With a gradient wanted the read is a product with tent weights (deterministic backward), without one
    ``grid_sample`` (the exported graph's GridSample): equal everywhere, points off the map and on its
    edges included, and the tent read's gradient is the bilinear one."""
    torch.manual_seed(0)
    fmap = torch.randn(6, 5, 12, 12)
    points = torch.empty(2, 3, 40, 2).uniform_(-30.0, 45.0)  # the raster spans -10 to 26 m ahead, +-18 m sideways
    points[0, 0, :4] = torch.tensor([[8.0 + 17.625, 0.0], [8.0 - 17.625, 17.625], [8.0, -18.0], [60.0, 0.0]])
    at = cell_affine(48, 0.75, 8.0, 4)
    with torch.no_grad():
        fast = lookup(fmap, points, at)
    fmap.requires_grad_(True)
    points.requires_grad_(True)
    tent = lookup(fmap, points, at)
    torch.testing.assert_close(tent, fast, rtol=1e-5, atol=1e-5)
    assert (fast == 0).all(-1).float().mean() > 0.1 and (fast != 0).any(-1).float().mean() > 0.3  # both kinds
    tent.sum().backward()
    ref_f, ref_p = fmap.detach().clone().requires_grad_(True), points.detach().clone().requires_grad_(True)
    col = ref_p[..., 1:2] * at.scale + at.col0
    row = ref_p[..., 0:1] * at.scale + at.row0
    grid = torch.cat([col * (2.0 / 12) + (1.0 / 12 - 1.0), row * (2.0 / 12) + (1.0 / 12 - 1.0)], dim=-1)
    torch.nn.functional.grid_sample(ref_f, grid.reshape(6, 40, 1, 2), align_corners=False).sum().backward()
    torch.testing.assert_close(fmap.grad, ref_f.grad, rtol=1e-4, atol=1e-4)
    off_kinks = torch.ones(2, 3, 40, dtype=torch.bool)
    off_kinks[0, 0, :4] = False  # the points placed on cell centres, where the slope is one-sided
    torch.testing.assert_close(points.grad[off_kinks], ref_p.grad[off_kinks], rtol=1e-3, atol=1e-3)
