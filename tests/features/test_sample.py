from __future__ import annotations

import numpy as np
import pytest
from shapely.geometry import LineString, box

from forecast.data.schema import AgentType
from forecast.features.config import (
    MAP_CHANNELS,
    MOTION_CHANNELS,
    SIGNAL_CHANNELS,
    FeatureConfig,
    RasterConfig,
)
from forecast.features.frames import norm2, to_local, to_world
from forecast.features.raster import rasterize_map_layers
from forecast.features.sample import build_sample, plan_samples
from forecast.features.tracks import AgentTracks, check_tracks
from forecast.model.batch import collate

CFG = FeatureConfig(dt=0.1, history_steps=10, future_steps=10, max_agents=8,
                    raster=RasterConfig(size=41, resolution=0.5, ahead=0.0))


def _tracks(seed=0, a=5, t=30) -> AgentTracks:
    rng = np.random.default_rng(seed)
    start = rng.uniform(-20, 20, (a, 1, 2))
    vel = rng.uniform(-5, 5, (a, 1, 2))
    xy = start + vel * np.arange(t)[None, :, None] * 0.1 + rng.normal(0, 0.05, (a, t, 2))
    present = np.ones((a, t), bool)
    present[1, 3] = False  # an occlusion inside the history
    return AgentTracks(xy=xy, heading=np.full((a, t), np.nan), present=present,
                       agent_type=np.array([0, 1, 2, 0, 3][:a]), dt=0.1, track_ids=np.array([f"a{i}" for i in range(a)]))


def test_frames_round_trip():
    rng = np.random.default_rng(1)
    xy = rng.normal(0, 30, (4, 7, 2))
    origin, heading = rng.normal(0, 10, (4, 2)), rng.uniform(-np.pi, np.pi, 4)
    np.testing.assert_allclose(to_world(to_local(xy, origin, heading), origin, heading), xy, atol=1e-9)
    # the agent itself sits at the origin heading along +x
    unit = origin + np.stack([np.cos(heading), np.sin(heading)], -1)
    np.testing.assert_allclose(to_local(unit[:, None], origin, heading)[:, 0], [[1, 0]] * 4, atol=1e-9)


def test_norm2_is_numpys_norm_bit_for_bit():
    rng = np.random.default_rng(0)
    for dtype in (np.float64, np.float32):
        v = (rng.standard_normal((7, 5, 3, 2)) * rng.choice([1e-8, 1.0, 1e8], (7, 5, 3, 1))).astype(dtype)
        v[0, 0, 0] = [np.inf, 1.0]
        v[0, 0, 1] = [np.nan, 0.0]
        v[0, 0, 2] = [-0.0, 0.0]
        got, want = norm2(v), np.linalg.norm(v, axis=-1)
        assert got.dtype == want.dtype and got.shape == want.shape
        np.testing.assert_array_equal(got, want)  # NaN where numpy has NaN, every other value to the bit
    np.testing.assert_array_equal(norm2(np.array([[3, 4], [5, 12]])), [5.0, 13.0])  # integers, as floats
    for bad in (np.zeros((4, 3)), np.zeros((4, 1)), np.zeros(()), np.zeros((4, 2), complex), np.zeros((4, 2), object)):
        with pytest.raises(ValueError, match="2-D vectors"):
            norm2(bad)


def test_a_sample_without_rasters_is_the_same_sample_otherwise():
    from dataclasses import fields

    from forecast.export.onnx_export import synthetic_tracks

    cfg = FeatureConfig(history_steps=10, future_steps=10, raster=RasterConfig(size=16, resolution=2.0, ahead=4.0))
    tracks, t0 = synthetic_tracks(9, cfg, seed=3)
    full = build_sample(tracks, t0, cfg, None)
    lean = build_sample(tracks, t0, cfg, None, rasterize=False)
    assert full.raster.any()  # the agents' motion is drawn
    assert lean.raster.shape == (9, len(cfg.raster.channels), 0, 0) and lean.raster.dtype == np.uint8
    for f in fields(full):
        if f.name != "raster":
            a, b = getattr(full, f.name), getattr(lean, f.name)
            if isinstance(a, np.ndarray):
                np.testing.assert_array_equal(a, b, err_msg=f.name)
            else:
                assert a == b, f.name


def test_future_comes_back_in_world_frame():
    tr = _tracks()
    s = build_sample(tr, 12, CFG, None)
    world = to_world(s.future.astype(np.float64), s.origin, s.heading)
    np.testing.assert_allclose(world, tr.xy[:, 13:23], atol=1e-4)
    np.testing.assert_allclose(s.origin, tr.xy[:, 12])


def test_no_future_leakage():
    tr = _tracks()
    t0 = 15
    base = build_sample(tr, t0, CFG, None)
    xy = tr.xy.copy()
    xy[:, t0 + 1 :] += np.random.default_rng(5).normal(0, 50, xy[:, t0 + 1 :].shape)
    heading = tr.heading.copy()
    heading[:, t0 + 1 :] = 1.0
    present = tr.present.copy()
    present[0, t0 + 3] = False
    changed = AgentTracks(xy, heading, present, tr.agent_type, tr.dt, tr.track_ids)
    other = build_sample(changed, t0, CFG, None)
    for name in ("hist", "hist_mask", "agent_type", "pose", "raster", "agent_mask", "origin", "heading"):
        np.testing.assert_array_equal(getattr(base, name), getattr(other, name), err_msg=name)
    assert not np.array_equal(base.future, other.future)  # the perturbation did reach the targets


def test_occlusion_stays_missing():
    tr = _tracks()
    s = build_sample(tr, 9, CFG, None)  # history steps 0..9; agent 1 missing at step 3
    assert not s.hist_mask[1, 3] and s.hist_mask[1, [2, 4]].all()
    assert (s.hist[1, 3] == 0).all()  # not interpolated
    # the velocity after the gap is the difference over the gap (steps 2 -> 4), from the past only
    expected = (s.hist[1, 4, :2] - s.hist[1, 2, :2]) / 0.2
    np.testing.assert_allclose(s.hist[1, 4, 2:4], expected, atol=1e-4)
    assert s.hist.shape == (5, 10, 7) and s.raster.shape == (5, len(MAP_CHANNELS) + len(MOTION_CHANNELS) + len(SIGNAL_CHANNELS), 41, 41)


def test_history_before_start_is_padding():
    s = build_sample(_tracks(), 3, CFG, None)
    assert not s.hist_mask[:, :6].any() and s.hist_mask[0, 6:].all()


def test_rasters_show_layers_in_the_right_place():
    # A north-south road x in [0, 10]; a crosswalk across it 10 m north of the agent; a sidewalk east of it.
    layers = {
        "drivable_area": [box(0, -60, 10, 60)],
        "lane": [box(5, -60, 10, 60)],
        "lane_centerline": [LineString([(7.5, -60), (7.5, 60)])],
        "crosswalk": [box(0, 9, 10, 11)],
        "sidewalk": [box(10, -60, 13, 60)],
    }
    m = rasterize_map_layers(layers, 0.25)
    # agent at (7.5, 0) heading north; a pedestrian 6 m ahead of it
    xy = np.zeros((2, 2, 2))
    xy[0] = [[7.5, -1.0], [7.5, 0.0]]
    xy[1] = [[7.5, 6.0], [7.5, 6.0]]
    tr = AgentTracks(xy, np.full((2, 2), np.nan), np.ones((2, 2), bool), np.array([0, 1]), 0.1)
    cfg = FeatureConfig(dt=0.1, history_steps=2, future_steps=1, raster=RasterConfig(size=81, resolution=0.5, ahead=0.0))
    s = build_sample(tr, 1, cfg, m, with_future=False)
    r = s.raster[0].astype(int)
    c = 40  # centre pixel = the agent (ahead = 0)
    ch = {name: i for i, name in enumerate(cfg.raster.channels)}
    assert abs(s.heading[0] - np.pi / 2) < 1e-9
    # up the image is north (ahead), left of the image is west (the agent's left)
    assert r[ch["drivable_area"], c, c] == 255
    assert r[ch["drivable_area"], c, c - 16] == 0  # 8 m west: off the road (it spans 7.5 m west)
    assert r[ch["drivable_area"], c, c - 14] == 255  # 7 m west: still road
    assert r[ch["lane"], c, c - 6] == 0 and r[ch["lane"], c, c + 3] == 255  # the lane is the east half
    assert r[ch["sidewalk"], c, c + 8] == 255 and r[ch["sidewalk"], c, c] == 0  # 4 m east: sidewalk
    assert r[ch["crosswalk"], c - 20, c] == 255 and r[ch["crosswalk"], c + 20, c] == 0  # 10 m ahead, not behind
    assert r[ch["lane_centerline"], c, c] == 255
    # the pedestrian, 6 m ahead, appears in the pedestrian channel there and nowhere else
    assert r[ch["pedestrian"], c - 12, c] > 0 and r[ch["pedestrian"]].sum() == r[ch["pedestrian"], c - 12, c]
    # the scene's motion is drawn once and cropped per agent: every agent sees every included agent,
    # itself too. The standing pedestrian faces east (heading 0): itself at its centre, the vehicle 6 m
    # to its right (south)
    p = s.raster[1].astype(int)
    assert abs(s.heading[1]) < 1e-9
    assert p[ch["pedestrian"], c, c] > 0 and p[ch["pedestrian"]].sum() == p[ch["pedestrian"], c, c]
    assert p[ch["vehicle"], c, c + 12] > 0 and r[ch["vehicle"], c, c] > 0


def test_plan_scores_each_target_once():
    tr = _tracks(a=5, t=40)
    plan = plan_samples(tr, 0, CFG, t0_stride=5)
    by_t0: dict[int, list[int]] = {}
    for p in plan:
        assert len(p.agents) <= CFG.max_agents and p.scored[0]
        by_t0.setdefault(p.t0, []).extend(p.agents[p.scored].tolist())
    for scored in by_t0.values():
        assert len(scored) == len(set(scored))
        assert 4 not in scored  # type OTHER is context, never a target


def test_collate_pads_and_masks():
    tr = _tracks()
    s1 = build_sample(tr, 12, CFG, None)
    s2 = build_sample(tr, 12, CFG, None, agents=np.array([0, 2]))
    b = collate([s1, s2])
    assert b.hist.shape == (2, 5, 10, 7) and b.raster.shape[:2] == (2, 5) and b.future.shape == (2, 5, 10, 2)
    assert b.agent_mask[0].all() and b.agent_mask[1].tolist() == [True, True, False, False, False]
    assert not b.target_mask[1, 2:].any() and not b.future_mask[1, 2:].any()
    assert b.plan.shape == (2, 5, 10, 2) and not b.plan_mask.any()


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda tr: AgentTracks(tr.xy[:0], tr.heading[:0], tr.present[:0], tr.agent_type[:0], 0.1), "empty scene"),
        (lambda tr: AgentTracks(np.where(np.arange(30)[None, :, None] == 4, np.nan, tr.xy), tr.heading, tr.present,
                                tr.agent_type, 0.1, tr.track_ids), "NaN"),
        (lambda tr: AgentTracks(tr.xy.astype(np.int64), tr.heading, tr.present, tr.agent_type, 0.1), "dtype"),
        (lambda tr: AgentTracks(tr.xy, tr.heading, tr.present, np.array([0, 1, 9, 0, 0]), 0.1), "unknown agent type"),
    ],
)
def test_bad_tracks_have_clear_errors(change, message):
    with pytest.raises(ValueError, match=message):
        check_tracks(change(_tracks()))


def test_resample_refuses_upsampling():
    tr = _tracks()
    assert tr.resample(0.2).num_steps == 15
    with pytest.raises(ValueError, match="resample"):
        tr.resample(0.05)
    assert AgentType.PEDESTRIAN == 1


def _scene(a: int, seed: int = 0, spread: float = 60.0):
    rng = np.random.default_rng(seed)
    xy = rng.uniform(-spread, spread, (a, 1, 2)) + rng.normal(0, 1.0, (a, 1, 2)) * np.arange(10)[None, :, None]
    valid = rng.random((a, 10)) < 0.9
    valid[:, -1] = True
    return xy, valid, rng.integers(0, 4, a), xy[:, -1], rng.uniform(-np.pi, np.pi, a)


def test_motion_rasters_are_one_scene_drawing_cropped_per_agent():
    from forecast.features.raster import rasterize_agents

    cfg = RasterConfig(size=32, resolution=0.5, ahead=4.0)
    xy, valid, types, origin, heading = _scene(12)
    full = rasterize_agents(None, xy, valid, types, origin, heading, cfg)
    # Each agent's raster depends on the scene, not on which other agents are cropped alongside it
    # (up to one level of OpenCV's fixed-point rounding where the drawing window moves).
    for i in (0, 5, 11):
        alone = rasterize_agents(None, xy, valid, types, origin[i : i + 1], heading[i : i + 1], cfg)
        assert np.abs(alone[0].astype(int) - full[i]).max() <= 1
    # An agent whose history is far from everyone only ever sees itself.
    far = xy.copy()
    far[0] += 10_000.0
    r = rasterize_agents(None, far, valid, types, far[:, -1], heading, cfg)
    mine = rasterize_agents(None, far[:1], valid[:1], types[:1], far[:1, -1], heading[:1], cfg)
    assert np.abs(r[0].astype(int) - mine[0]).max() <= 1 and mine[0].any()


def test_reused_working_arrays_leave_nothing_of_an_earlier_scene():
    """``rasterize_agents`` reuses its working arrays from call to call (per thread): a scene's rasters
    must not depend on what was drawn before it, nor on another thread drawing at the same time."""
    import threading

    from forecast.data.types import AgentType
    from forecast.features.raster import rasterize_agents

    cfg = RasterConfig(size=24, resolution=0.5, ahead=2.0)
    m = rasterize_map_layers({"drivable_area": [box(-80, -80, 80, 80).buffer(-5)],
                              "lane": [LineString([(-70, 0), (70, 10)])]}, 0.5)
    big, small = _scene(30, seed=1), _scene(6, seed=2)
    small[2][2] = int(AgentType.TRAFFIC_SIGNAL)  # a blank row among drawn ones

    def fresh(scene):  # a new thread: new working arrays
        out = []
        t = threading.Thread(target=lambda: out.append(rasterize_agents(m, *scene, cfg)))
        t.start()
        t.join()
        return out[0]

    expected = fresh(small)
    assert expected[2].sum() == 0 and expected[[0, 1, 3]].any()
    rasterize_agents(m, *big, cfg)  # fills the working arrays with a larger scene
    np.testing.assert_array_equal(rasterize_agents(m, *small, cfg), expected)
    # concurrent threads, each drawing its own scene over and over
    results: dict[int, list] = {0: [], 1: []}
    scenes = (big, small)
    threads = [threading.Thread(target=lambda i=i: results[i].extend(
        rasterize_agents(m, *scenes[i], cfg) for _ in range(20))) for i in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    want = (fresh(big), expected)
    assert all(np.array_equal(r, want[i]) for i in (0, 1) for r in results[i])


def test_a_closed_signal_is_a_bar_across_its_stop_line_in_its_own_channel():
    from forecast.data.types import AgentType
    from forecast.features.raster import SIGNAL_HALF_WIDTH_M, rasterize_agents

    cfg = RasterConfig(size=41, resolution=0.5, ahead=0.0)
    sig = int(AgentType.TRAFFIC_SIGNAL)
    xy = np.zeros((3, 5, 2))
    xy[0, :, 0] = np.arange(-4.0, 1.0)  # a car driving +x to the origin
    xy[1] = (10.0, 0.0)  # its approach's signal, closed, 10 m ahead
    xy[2] = (0.0, -8.0)  # another signal, open at t0 (seen earlier only): not drawn
    valid = np.ones((3, 5), bool)
    valid[2, -1] = False
    types = np.array([int(AgentType.VEHICLE), sig, sig])
    r = rasterize_agents(None, xy, valid, types, xy[:, -1], np.zeros(3), cfg)
    ch = cfg.channels.index("traffic_signal")
    rows, cols = np.nonzero(r[0, ch])
    # 10 m ahead is 20 px up from the centre (row 20): rows 0-1; across the lane, +-3.5 m = +-7 px around col 20
    assert rows.min() == 0 and rows.max() <= 2
    half = SIGNAL_HALF_WIDTH_M / cfg.resolution
    assert 20 - half - 1 <= cols.min() <= 20 - half + 1 and 20 + half - 1 <= cols.max() <= 20 + half + 1
    assert not r[1:].any()  # a signal's own raster is empty (its place is in its pose)
    # the signals draw nothing in the motion channels, the car nothing in the signal channel
    no_sig = rasterize_agents(None, xy, valid, np.array([0, 3, 3]), xy[:, -1], np.zeros(3), cfg)
    np.testing.assert_array_equal(no_sig[0, :ch], r[0, :ch])
    assert not no_sig[:, ch].any() and not rasterize_agents(None, xy[:1], valid[:1], types[:1], xy[:1, -1],
                                                             np.zeros(1), cfg)[0, ch].any()


def test_tiled_windows_equal_one_window(monkeypatch):
    from forecast.features import raster

    cfg = RasterConfig(size=24, resolution=0.5, ahead=2.0)
    xy, valid, types, origin, heading = _scene(20, seed=3, spread=300.0)
    m = rasterize_map_layers({"drivable_area": [box(-400, -400, 400, 400).buffer(-50)],
                              "lane": [LineString([(-300, 0), (300, 10)])]}, 0.5)
    one = raster.rasterize_agents(m, xy, valid, types, origin, heading, cfg)
    monkeypatch.setattr(raster, "MAX_WINDOW_PIXELS", 10)  # forces tiles of 512 px
    monkeypatch.setattr(raster, "_TILE_PIXELS", 64)
    tiled = raster.rasterize_agents(m, xy, valid, types, origin, heading, cfg)
    assert np.abs(one.astype(int) - tiled).max() <= 1 and (one != tiled).mean() < 1e-3
    assert one[:, len(MAP_CHANNELS):].any() and one[:, : len(MAP_CHANNELS)].any()


def test_ahead_on_its_way_hand_worked():
    from forecast.features.frames import ahead_on_its_way

    # an agent at (10, 0) heading north; points (x, y) with their headings
    xy = np.array([[10.0, 20.0], [10.0, -5.0], [14.0, 20.0], [10.0, 60.0], [10.0, 20.0], [7.0, 10.0]])
    headings = np.array([np.pi / 2, np.pi / 2, np.pi / 2, np.pi / 2, 0.0, np.pi / 2 + 0.4])
    got = ahead_on_its_way(np.array([10.0, 0.0]), np.pi / 2, xy, headings, 50.0, 3.0, 0.5)
    # ahead; behind; 4 m to the side; too far; facing across; 3 m to the left but within 0.5 rad: out (< 3 m only)
    assert got.tolist() == [True, False, False, False, False, False]
    assert ahead_on_its_way(np.array([10.0, 0.0]), np.pi / 2, xy[5:], headings[5:], 50.0, 3.5, 0.5).tolist() == [True]
