"""Streaming runtime: tick-by-tick replay equals the batch Predictor; ring buffers, gaps, id reuse, errors."""

from __future__ import annotations

import numpy as np
import pytest

from forecast.features.tracks import AgentTracks
from forecast.runtime import Predictor
from forecast.runtime.tracker import (
    Detections,
    InvalidTracksError,
    SceneTracker,
    TickError,
    TooManyAgentsError,
)


@pytest.fixture(scope="module")
def predictor(exported) -> Predictor:
    return Predictor(exported / "bundle", threads=1)


@pytest.fixture(scope="module")
def scene(sumo_store):
    """The busiest scenario of the tiny SUMO store: tracks at the bundle's dt and its map layers."""
    infos = sumo_store.scenarios(split="val")
    scenarios = sumo_store.load_scenarios(infos)
    sc = max(scenarios, key=lambda s: s.present.sum())
    return AgentTracks.from_scenario(sc), sumo_store.load_map(sc.info.map_id), sc.info.map_id


def _detections(tracks: AgentTracks, t: int) -> Detections:
    rows = np.flatnonzero(tracks.present[:, t])
    return Detections(tracks.track_ids[rows], tracks.agent_type[rows], tracks.xy[rows, t], tracks.heading[rows, t])


def test_tick_replay_equals_batch_prediction_exactly(predictor, scene):
    tracks, layers, map_id = scene
    assert abs(tracks.dt - predictor.dt) < 1e-9
    tracker = SceneTracker(predictor)
    compared = 0
    for t in range(tracks.num_steps):
        stats = tracker.update(_detections(tracks, t))
        assert stats.step == t and stats.agents == tracks.present[:, t].sum()
        if t % 7 != 3 or not tracks.present[:, t].any():
            continue
        stream = tracker.predict(layers, map_id=map_id)
        batch = predictor.predict(tracks, t, layers, map_id=map_id)
        np.testing.assert_array_equal(stream.track_ids, batch.track_ids)
        np.testing.assert_array_equal(stream.traj_world, batch.traj_world)
        np.testing.assert_array_equal(stream.prob, batch.prob)
        np.testing.assert_array_equal(stream.scale, batch.scale)
        assert stream.t0 == batch.t0 == t
        compared += 1
    assert compared >= 3 and tracker.num_tracks <= tracks.num_agents
    # with a plan for one agent (the action), by track id, as in the batch call
    rows = np.flatnonzero(tracks.present[:, -1])
    who = tracks.track_ids[rows[0]]
    plan = tracks.xy[rows[0], -1] + np.cumsum(np.full((predictor.future_steps, 2), 0.5), axis=0)
    stream = tracker.predict(layers, map_id=map_id, plan=plan, plan_agent=who)
    batch = predictor.predict(tracks, tracks.num_steps - 1, layers, map_id=map_id, plan=plan, plan_agent=who)
    np.testing.assert_array_equal(stream.traj_world, batch.traj_world)
    np.testing.assert_allclose(stream.traj_world[0, 0], plan, atol=1e-3)


def _det(ids, xy, types=None, heading=None, velocity=None) -> Detections:
    xy = np.asarray(xy, dtype=np.float64).reshape(-1, 2)
    types = np.zeros(len(ids), np.int64) if types is None else np.asarray(types)
    return Detections(np.asarray(ids), types, xy, None if heading is None else np.asarray(heading, float),
                      None if velocity is None else np.asarray(velocity, float))


def test_missed_ticks_stay_missing_and_old_tracks_are_forgotten(predictor):
    tracker = SceneTracker(predictor)
    h = tracker.window
    tracker.update(_det(["a", "b"], [[0, 0], [10, 0]]))
    tracker.update(_det(["a"], [[1, 0]]))  # b missed a tick
    tracker.update(_det(["a", "b"], [[2, 0], [12, 0]]))
    tr, t0 = tracker.tracks()
    assert t0 == h - 1 and list(tr.track_ids) == ["a", "b"]
    np.testing.assert_array_equal(tr.present[:, -3:], [[True, True, True], [True, False, True]])
    assert not tr.present[:, : h - 3].any()  # before the first tick: nothing
    np.testing.assert_array_equal(tr.xy[0, -3:, 0], [0, 1, 2])
    # skipped ticks (step given): the columns in between are missing
    tracker.update(_det(["b", "a"], [[13, 0], [3, 0]]), step=5)
    tr, _ = tracker.tracks()
    assert list(tr.track_ids) == ["b", "a"]  # the order of this tick's detections
    np.testing.assert_array_equal(tr.present[1, -6:], [True, True, True, False, False, True])
    # a track unseen for a whole window is forgotten; its id then starts afresh
    stats = tracker.update(_det(["a"], [[4, 0]]), step=4 + h)
    assert stats.forgotten == 0 and tracker.num_tracks == 2  # b's step 5 is still in the window
    stats = tracker.update(_det(["a"], [[4, 0]]))
    assert stats.forgotten == 1 and tracker.num_tracks == 1
    stats = tracker.update(_det(["a", "b"], [[4.1, 0], [30, 0]]))
    assert stats.new == 1
    tr, _ = tracker.tracks()
    assert tr.present[1].sum() == 1


def test_reused_ids_start_new_tracks(predictor):
    tracker = SceneTracker(predictor)
    tracker.update(_det(["x", "y"], [[0, 0], [5, 5]], types=[0, 1]))
    tracker.update(_det(["x", "y"], [[1, 0], [5, 6]], types=[0, 1]))
    # x comes back as a pedestrian; y 500 m away one tick later: both are new agents under old ids
    stats = tracker.update(_det(["x", "y"], [[1, 1], [505, 6]], types=[1, 1]))
    assert stats.restarted == 2 and stats.new == 2
    tr, _ = tracker.tracks()
    assert tr.present.sum(1).tolist() == [1, 1] and tr.agent_type.tolist() == [1, 1]


def test_heading_from_velocity_when_perception_gives_no_heading(predictor):
    tracker = SceneTracker(predictor)
    tracker.update(_det(["a", "b", "c"], [[0, 0], [5, 5], [9, 9]], heading=[0.5, np.nan, np.nan],
                        velocity=[[1, 1], [0, 2], [0.01, 0]]))
    tr, _ = tracker.tracks()
    np.testing.assert_allclose(tr.heading[:2, -1], [0.5, np.pi / 2])  # given heading wins; else from velocity
    assert np.isnan(tr.heading[2, -1])  # standing still: unknown, the sample builder decides


def test_bad_ticks_are_refused(predictor):
    tracker = SceneTracker(predictor)
    tracker.update(_det(["a"], [[0, 0]]), step=3)
    with pytest.raises(TickError, match="not after"):
        tracker.update(_det(["a"], [[0, 0]]), step=3)
    with pytest.raises(TickError, match="duplicate"):
        tracker.update(_det(["a", "a"], [[0, 0], [1, 1]]))
    with pytest.raises(InvalidTracksError, match=r"NaN or infinite position for track 'b' \(row 1\)$"):
        tracker.update(_det(np.array(["a", "b"]), [[0, 0], [np.nan, 0]]))  # ids as numpy gives them, named plainly
    with pytest.raises(InvalidTracksError, match="unknown agent type"):
        tracker.update(_det(["a"], [[0, 0]], types=[9]))
    small = SceneTracker(predictor, capacity=2)
    with pytest.raises(TooManyAgentsError):
        small.update(_det(["a", "b", "c"], [[0, 0], [1, 1], [2, 2]]))
    assert small.step is None  # a refused tick changes nothing


def test_empty_tick_and_capacity_eviction(predictor):
    tracker = SceneTracker(predictor, capacity=2)
    tracker.update(_det(["a", "b"], [[0, 0], [1, 1]]))
    tracker.update(Detections.empty())
    with pytest.raises(Exception, match="no agent"):
        tracker.predict()
    tracker.update(_det(["c"], [[2, 2]]))  # full: the track seen longest ago makes room
    assert tracker.num_tracks == 2 and tracker.current_ids == ["c"]
