"""Packed rasters ([N, C, S, S], the real agents only) against padded ones ([B, A, C, S, S]): same model
outputs, same batches through a loader worker's shared memory, clear errors."""

from __future__ import annotations

import dataclasses
from functools import partial

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from forecast.export.onnx_export import synthetic_map_layers, synthetic_tracks
from forecast.features.raster import crop_map, rasterize_agents, rasterize_map_layers
from forecast.model.batch import collate, padded_rasters
from forecast.training.speed import collate_for_loader, pad_agents, pad_rows, pad_to_buckets
from tests.conftest import tiny_scenes_and_model

SIZES = (3, 1, 5)


@pytest.fixture(scope="module")
def setup():
    return tiny_scenes_and_model(SIZES)


def test_packed_collate_holds_the_real_agents_rasters_in_mask_order(setup):
    features, samples, _ = setup
    padded = collate(samples, features.future_steps)
    packed = collate(samples, features.future_steps, pack_rasters=True)
    c, s = samples[0].raster.shape[1:3]
    assert padded.raster.shape == (3, 5, c, s, s) and not padded.packed
    assert packed.raster.shape == (sum(SIZES), c, s, s) and packed.packed and packed.raster.dtype == torch.uint8
    assert packed.raster.any()  # the synthetic map shows in the rasters: the comparisons below are not of zeros
    np.testing.assert_array_equal(packed.raster.numpy(), np.concatenate([x.raster for x in samples]))
    np.testing.assert_array_equal(padded.raster[padded.agent_mask].numpy(), packed.raster.numpy())
    torch.testing.assert_close(padded_rasters(packed.raster, packed.agent_mask, packed.agent_type), padded.raster, rtol=0, atol=0)
    assert padded_rasters(padded.raster, padded.agent_mask, padded.agent_type) is padded.raster
    for f in dataclasses.fields(padded):  # every other field is the same in both layouts
        if f.name != "raster":
            torch.testing.assert_close(getattr(packed, f.name), getattr(padded, f.name), rtol=0, atol=0)


def test_packed_and_padded_give_the_same_outputs(setup):
    features, samples, model = setup
    padded = collate(samples, features.future_steps)
    packed = collate(samples, features.future_steps, pack_rasters=True)
    with torch.no_grad():
        ref = model(*padded.model_inputs())
        out = model(*packed.model_inputs())
        ref_logits = model.forward_logits(*padded.model_inputs())
        out_logits = model.forward_logits(*packed.model_inputs())
    # every slot, padding included: a padding slot gets the features of an empty raster in both layouts
    for r, o in zip((*ref, *ref_logits), (*out, *out_logits), strict=True):
        torch.testing.assert_close(o, r, atol=1e-5, rtol=1e-5)
    assert ref[0].shape[:2] == (3, 5)


def test_buckets_pad_packed_rows_and_keep_the_outputs(setup):
    features, samples, model = setup
    packed = collate(samples, features.future_steps, pack_rasters=True)
    bucketed = collate(samples, features.future_steps, pack_rasters=True)
    assert pad_to_buckets(bucketed, [4, 8]) == 8
    # agents to the bucket; rows to batch size x the smallest bucket that holds them (9 rows <= 3 x 4)
    assert bucketed.hist.shape[1] == 8 and bucketed.raster.shape[0] == 12
    assert not bucketed.raster[sum(SIZES):].any()
    with torch.no_grad():
        ref = model(*packed.model_inputs())
        out = model(*bucketed.model_inputs())
    for r, o in zip(ref, out, strict=True):
        torch.testing.assert_close(o[:, :5][packed.agent_mask], r[packed.agent_mask], atol=1e-5, rtol=1e-5)


def test_layout_errors(setup):
    features, samples, _ = setup
    with pytest.raises(ValueError, match="at least one sample"):
        collate([], features.future_steps)
    bad = dataclasses.replace(samples[0], raster=samples[0].raster[:1])
    with pytest.raises(ValueError, match="does not match 3 agents"):
        collate([bad, samples[1]], features.future_steps, pack_rasters=True)
    padded = collate(samples, features.future_steps)
    with pytest.raises(ValueError, match="packed rasters"):
        pad_rows(padded, 20)
    packed = collate(samples, features.future_steps, pack_rasters=True)
    with pytest.raises(ValueError, match="cannot pad 9 raster rows down to 4"):
        pad_rows(packed, 4)
    pad_agents(packed, 7)  # the agent axis grows; packed rasters have none and keep their rows
    assert packed.hist.shape[1] == 7 and packed.raster.shape[0] == sum(SIZES)


def test_a_loader_worker_ships_packed_batches_through_shared_memory(setup):
    features, samples, _ = setup
    loader = DataLoader(samples, batch_size=3, num_workers=1,
                        collate_fn=partial(collate_for_loader, future_steps=features.future_steps))
    (batch,) = list(loader)
    assert batch.packed and batch.raster.is_shared()  # made in the worker's shared memory, not copied into it
    ref = collate(samples, features.future_steps, pack_rasters=True)
    for f in dataclasses.fields(ref):
        torch.testing.assert_close(getattr(batch, f.name), getattr(ref, f.name), rtol=0, atol=0)


def test_agent_rasters_carry_the_map_crops(setup):
    # The map's last channel is warped from the scene's window with the motion channels, not from
    # the whole map: the same crop up to one level of OpenCV's fixed-point rounding.
    features, _, _ = setup
    m = rasterize_map_layers(synthetic_map_layers(), features.raster.resolution)
    rng = np.random.default_rng(0)
    origins = rng.uniform(-15, 15, (6, 2))
    headings = rng.uniform(-np.pi, np.pi, 6)
    hist = np.repeat(origins[:, None], features.history_steps, 1)
    ras = rasterize_agents(m, hist, np.ones(hist.shape[:2], bool), np.zeros(6, np.int64), origins, headings,
                           features.raster)
    ref = crop_map(m, origins, headings, features.raster)
    n_map = ref.shape[1]
    assert ref.any()
    np.testing.assert_array_equal(ras[:, : n_map - 1], ref[:, : n_map - 1])
    assert np.abs(ras[:, n_map - 1].astype(int) - ref[:, n_map - 1]).max() <= 1


def test_traffic_signals_ship_no_raster_and_the_layouts_still_agree(setup):
    """A closed signal's raster is empty, so the packed layout leaves it out; the model gives it the empty
    raster's features either way."""
    from dataclasses import replace

    from forecast.data.types import AgentType
    from forecast.features.sample import build_sample

    features, _, model = setup
    m = rasterize_map_layers(synthetic_map_layers(), features.raster.resolution)
    samples = []
    for n in (4, 6):
        tracks, t0 = synthetic_tracks(n, features, seed=n)
        types = tracks.agent_type.copy()
        types[-2:] = int(AgentType.TRAFFIC_SIGNAL)  # the last two stand where they are at t0, closed
        xy = tracks.xy.copy()
        xy[-2:] = xy[-2:, t0][:, None]
        heading = tracks.heading.copy()
        heading[-2:] = 0.0
        samples.append(build_sample(replace(tracks, agent_type=types, xy=xy, heading=heading), t0, features, m,
                                    with_future=False))
    assert all(not s.raster[-2:].any() and s.raster[:-2].any() for s in samples)
    padded = collate(samples, features.future_steps)
    packed = collate(samples, features.future_steps, pack_rasters=True)
    assert packed.raster.shape[0] == 2 + 4  # the signals' rows are not shipped
    torch.testing.assert_close(padded_rasters(packed.raster, packed.agent_mask, packed.agent_type), padded.raster,
                               rtol=0, atol=0)
    with torch.no_grad():
        for r, o in zip(model(*padded.model_inputs()), model(*packed.model_inputs()), strict=True):
            torch.testing.assert_close(o, r, atol=1e-5, rtol=1e-5)
