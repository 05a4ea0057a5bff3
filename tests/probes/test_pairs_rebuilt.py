"""The card keeps only what identifies a probe pair and rebuilds its samples when it scores it (issue 11:
holding the samples grew `forecast evaluate`'s memory with the split). The rebuilt samples, and so
every probe figure, must be the ones built at the moment the pair was found (what the card held before)."""

from __future__ import annotations

import functools
from dataclasses import fields

import numpy as np
import pytest

from forecast.features.config import FeatureConfig, RasterConfig
from forecast.features.dataset import SceneSet, select_scenarios
from forecast.probes.interaction import (
    PROBES,
    _pairs_in_sample,
    build_pair,
    crosswalks_of,
    find_pairs,
    pair_samples,
    sample_place,
    score_pairs,
)

CFG = FeatureConfig(history_steps=10, future_steps=10, max_agents=8,
                    raster=RasterConfig(size=16, resolution=2.0, ahead=4.0))


def _found_eagerly(scenes: SceneSet, max_pairs: int, seed: int) -> list:
    """The scan as the card made it before: each pair's samples built at once, from the scan's own
    tracks and map, and kept: [(pair, with_cause, without_cause)]."""
    found: dict[str, list] = {p: [] for p in PROBES}
    for k in np.random.default_rng(seed).permutation(len(scenes.index)):
        if all(len(v) >= max_pairs for v in found.values()):
            break
        idx, tracks, m = sample_place(scenes, int(k))
        for pair in _pairs_in_sample(tracks, idx.t0, idx.agents, scenes.cfg, crosswalks_of(scenes, idx)):
            if len(found[pair.probe]) < max_pairs:
                found[pair.probe].append((int(k), pair, *build_pair(pair, tracks, idx.t0, idx.agents, scenes.cfg, m)))
    return [p for v in found.values() for p in v]


def _sensitive(sample):
    """A predictor whose forecast depends on every input field: any difference between samples shows."""
    a = sample.num_agents
    speed = np.linalg.norm(sample.hist[:, -1, 2:4], axis=-1)  # [A]
    crowd = 1.0 / (1.0 + a + sample.raster.reshape(a, -1).mean(1) / 255.0 + np.abs(sample.pose).sum())
    steps = np.arange(1, 11, dtype=np.float32)
    traj = np.zeros((a, 2, 10, 2), np.float32)
    traj[:, 0, :, 0] = (speed * crowd)[:, None] * steps
    traj[:, 1, :, 0] = speed[:, None] * steps * 0.1 * sample.hist[:, :, 0].std(1)[:, None]
    return traj, np.full((a, 2), 0.5, np.float32)


@pytest.mark.parametrize(("block", "max_pairs"), [(1024, 6), (7, 6), (7, 3)])
def test_rebuilt_pairs_equal_the_pairs_found(sumo_store, monkeypatch, block, max_pairs):
    """find_pairs reads its samples in blocks in scenario order (``SCAN_BLOCK``): the pairs are still the
    ones a scan one sample at a time in the random order finds, for one block and for many, and when every
    probe fills before the end (the scan stops early)."""
    import forecast.probes.interaction as I

    monkeypatch.setattr(I, "SCAN_BLOCK", block)
    scenes = SceneSet(sumo_store, select_scenarios(sumo_store, "test"), CFG, t0_stride=5)
    assert block > len(scenes.index) or len(scenes.index) > 3 * block  # one block, or many
    eager = _found_eagerly(scenes, max_pairs=max_pairs, seed=0)
    # small caches: the rebuilds read tracks and draw maps again instead of reusing the scan's objects
    lean = SceneSet(sumo_store, select_scenarios(sumo_store, "test"), CFG, t0_stride=5, tracks_cache=1, raster_cache=1)
    pairs = find_pairs(lean, max_pairs=max_pairs, seed=0)
    if max_pairs == 3:
        assert len(pairs) == 3 * len(PROBES)  # every probe full: the early stop is exercised
    assert len({p.probe for p in pairs}) >= 2, "the fixture should hold at least two kinds of probe situation"
    assert any(p.subject > p.cause for p in pairs if p.probe != "lead_vehicle_braking")  # a cause before its subject
    assert [(k, e.probe, e.subject, e.cause) for k, e, *_ in eager] == [(p.sample, p.probe, p.subject, p.cause)
                                                                       for p in pairs]
    for (_, _, *held), pair in zip(eager, pairs, strict=True):
        with_cause, without_cause = pair_samples(lean, pair)
        # the responding vehicle is the same agent on both sides (the cause may come before it among the agents)
        np.testing.assert_array_equal(with_cause.origin[pair.subject_with], without_cause.origin[pair.subject_without])
        for old, new in zip(held, (with_cause, without_cause), strict=True):
            for f in fields(old):
                a, b = getattr(old, f.name), getattr(new, f.name)
                if isinstance(a, np.ndarray):
                    np.testing.assert_array_equal(a, b, err_msg=f"{pair}: {f.name}")
                    assert a.dtype == b.dtype
                else:
                    assert a == b, (pair, f.name)
    held = {id(p): (w, wo) for p, (_, _, w, wo) in zip(pairs, eager, strict=True)}
    before = score_pairs(pairs, _sensitive, lambda p: held[id(p)])
    after = score_pairs(pairs, _sensitive, functools.partial(pair_samples, lean))
    assert after == before
    assert any(v["n"] and v["mean_abs_effect_m"] > 0 for k, v in after.items() if k in PROBES)  # the figures move
