from __future__ import annotations

import numpy as np

from forecast.features.config import FeatureConfig, RasterConfig
from forecast.features.sample import build_sample
from forecast.features.tracks import AgentTracks
from forecast.model.baselines import BaselinePredictor
from forecast.probes.interaction import ProbePair, build_pair, score_pairs
from forecast.probes.persistence import degrade

CFG = FeatureConfig(dt=0.1, history_steps=10, future_steps=10, raster=RasterConfig(size=16, resolution=1.0, ahead=4.0))


def _road(t: int = 25) -> AgentTracks:
    """A car driving east at 10 m/s with a pedestrian 15 m ahead of it, standing on the road."""
    time = np.arange(t) * 0.1
    car = np.stack([10.0 * time, np.zeros(t)], -1)
    ped = np.stack([np.full(t, 15.0 + 10.0 * time[12]), np.zeros(t)], -1)
    xy = np.stack([car, ped])
    return AgentTracks(xy, np.full((2, t), np.nan), np.ones((2, t), bool), np.array([0, 1]), 0.1)


def _pair() -> ProbePair:
    """The car (0) responding to the pedestrian (1) on the road ahead: ``_road`` at t0 = 12."""
    return ProbePair("pedestrian_on_crossing", subject=0, cause=1)


def _road_samples(pair: ProbePair):
    return build_pair(pair, _road(), 12, np.array([0, 1]), CFG, None)


def test_removal_pair_drops_the_cause_only():
    with_cause, without_cause = _road_samples(_pair())
    assert with_cause.num_agents == 2 and without_cause.num_agents == 1
    np.testing.assert_array_equal(with_cause.hist[0], without_cause.hist[0])


def test_a_model_that_ignores_others_scores_chance():
    cv = BaselinePredictor("constant_velocity", CFG.future_steps, CFG.dt)
    out = score_pairs([_pair()], lambda s: cv.predict(s), _road_samples)
    assert out["pedestrian_on_crossing"]["right_direction"] == 0.5
    assert out["pedestrian_on_crossing"]["ties"] == 1.0 and out["mean_right_direction"] == 0.5


def test_a_model_that_yields_scores_right():
    cv = BaselinePredictor("constant_velocity", CFG.future_steps, CFG.dt)

    def yielding(sample):
        traj, prob = cv.predict(sample)
        if sample.num_agents > 1:  # someone ahead: travel half as far
            traj = traj * 0.5
        return traj, prob

    out = score_pairs([_pair()], yielding, _road_samples)
    assert out["pedestrian_on_crossing"]["right_direction"] == 1.0
    assert out["pedestrian_on_crossing"]["mean_effect_m"] > 1.0


def test_degrade_hides_history_only():
    tracks, t0 = _road(), 12
    rng = np.random.default_rng(0)
    dropped = degrade(tracks, t0, CFG.history_steps, "drop_50", rng)
    window = dropped.present[:, t0 - CFG.history_steps + 1 : t0]
    assert 0 < (~window).sum() < window.size  # some, not all, history frames removed
    assert dropped.present[:, t0].all() and dropped.present[:, t0 + 1 :].all()  # t0 and the future untouched
    hidden = degrade(tracks, t0, CFG.history_steps, "hidden_1s", rng)
    # unseen for 1 s (10 steps) ending 0.2 s before t0, clipped to the 10-step history window: steps 3..9
    assert not hidden.present[:, 3:10].any()
    assert hidden.present[:, :3].all() and hidden.present[:, 10:].all()
    assert degrade(tracks, t0, CFG.history_steps, "full", rng) is tracks


def _queue(t: int = 25) -> AgentTracks:
    """Two cars stopped one behind the other (6 m apart) on the road, and a pedestrian far off."""
    follower = np.zeros((t, 2))
    leader = np.tile([6.0, 0.0], (t, 1))
    ped = np.tile([0.0, 40.0], (t, 1)) + np.stack([np.arange(t) * 0.1, np.zeros(t)], -1)
    heading = np.zeros((3, t))
    return AgentTracks(np.stack([follower, leader, ped]), heading, np.ones((3, t), bool), np.array([0, 0, 1]), 0.1)


def test_queued_vehicle_probe_finds_the_leader_and_removes_it():
    from forecast.probes.interaction import _pairs_in_sample

    tracks, t0 = _queue(), 12
    pairs = [p for p in _pairs_in_sample(tracks, t0, np.array([0, 1, 2]), CFG, None)
             if p.probe == "queued_leader_removed"]
    # the follower (0) sees its leader (1); the leader has nobody ahead
    assert len(pairs) == 1
    p = pairs[0]
    assert p.subject_with == 0 and p.subject_without == 0 and p.cause == 1
    with_cause, without_cause = build_pair(p, tracks, t0, np.array([0, 1, 2]), CFG, None)
    assert with_cause.num_agents == 3 and without_cause.num_agents == 2
    np.testing.assert_allclose(without_cause.origin, with_cause.origin[[0, 2]])


def test_a_queue_held_by_a_closed_signal_is_no_queued_vehicle_pair():
    from forecast.data.types import AgentType
    from forecast.probes.interaction import _pairs_in_sample

    q = _queue()
    t = q.xy.shape[1]
    wall = np.tile([12.0, 1.5], (t, 1))[None]  # the stop line 6 m past the leader, heading the queue's way
    held = AgentTracks(np.concatenate([q.xy, wall]), np.zeros((4, t)), np.ones((4, t), bool),
                       np.array([0, 0, 1, int(AgentType.TRAFFIC_SIGNAL)]), 0.1)
    queued = lambda tr: [p for p in _pairs_in_sample(tr, 12, np.arange(tr.num_agents), CFG, None)  # noqa: E731
                         if p.probe == "queued_leader_removed"]
    assert queued(held) == []
    # the same signal for the cross traffic (heading north) holds nobody here
    cross = AgentTracks(held.xy, np.where(np.arange(4)[:, None] == 3, np.pi / 2, 0.0) * np.ones((4, t)),
                        held.present, held.agent_type, 0.1)
    assert len(queued(cross)) == 1


def test_effect_sizes_in_metres():
    cv = BaselinePredictor("constant_velocity", CFG.future_steps, CFG.dt)

    def yielding(sample):
        traj, prob = cv.predict(sample)
        return (traj * 0.5 if sample.num_agents > 1 else traj), prob

    out = score_pairs([_pair(), _pair()], yielding, _road_samples)["pedestrian_on_crossing"]
    # the car travels 10 m in 1 s; with the pedestrian present half of it: 5 m removed
    assert out["mean_effect_m"] == np.float64(out["median_effect_m"]) and abs(out["mean_effect_m"] - 5.0) < 0.2
    assert out["mean_abs_effect_m"] == out["mean_effect_m"]


def test_action_conditioning_reports_agents_near_the_plan():
    from types import SimpleNamespace

    from forecast.probes.action import evaluate_action_conditioning

    # a car, a pedestrian 15 m ahead of it (near) and a second pedestrian 60 m away (far), all moving
    t = 25
    time = np.arange(t) * 0.1
    xy = np.stack([np.stack([10.0 * time, np.zeros(t)], -1), np.stack([np.full(t, 15.0), time], -1),
                   np.stack([np.full(t, 60.0), time], -1)])
    tracks = AgentTracks(xy, np.full((3, t), np.nan), np.ones((3, t), bool), np.array([0, 1, 1]), 0.1)
    s = build_sample(tracks, 12, CFG, None, np.array([0, 1, 2]), 0)
    scenes = SimpleNamespace(index=[0], sample=lambda k: s)

    def predict(sample, plan=None, plan_mask=None):
        traj = np.repeat(sample.future[:, None] + 1.0, 2, axis=1)  # 1 m off in x and y
        if plan is not None:  # the plan helps the agents within 20 m of the planned one only
            near = np.linalg.norm(sample.origin - sample.origin[0], axis=-1) < 20.0
            traj[near] = sample.future[near][:, None]
        return traj, np.full((sample.num_agents, 2), 0.5)

    out = evaluate_action_conditioning(scenes, predict, max_samples=1)
    assert out["n"] == 2 and out["n_near"] == 1
    assert out["near_minFDE_change"] == -1.0  # the near pedestrian becomes exact
    assert out["others_minFDE_change"] == -0.5  # averaged with the far one, which does not change
    # the near agent's most likely mode improves as much; its endpoints moved by the 1.41 m offset, the far one's not
    assert out["near_minFDE1_change"] == -1.0 and out["near_minFDE_change_by_class"] == {"pedestrian": -1.0}
    assert out["n_near_by_class"] == {"pedestrian": 1}
    assert abs(out["near_endpoint_shift_m"] - np.sqrt(2.0)) < 1e-6 and out["far_endpoint_shift_m"] == 0.0


def _crossing_scene(ped_xy0: tuple[float, float], ped_v: tuple[float, float], t: int = 25):
    """A car driving east at 10 m/s (at x = 0 at t0 = 12), a crossing 14..18 m ahead of it across the
    road (y -6..6), and one pedestrian at ``ped_xy0`` at t0 moving at ``ped_v`` (m/s)."""
    import shapely

    time = (np.arange(t) - 12) * 0.1
    car = np.stack([10.0 * time, np.zeros(t)], -1)
    ped = np.asarray(ped_xy0) + time[:, None] * np.asarray(ped_v)
    heading = np.zeros((2, t))
    heading[1] = np.arctan2(ped_v[1], ped_v[0]) if np.hypot(*ped_v) > 0 else np.pi / 2
    tracks = AgentTracks(np.stack([car, ped]), heading, np.ones((2, t), bool), np.array([0, 1]), 0.1)
    return tracks, shapely.box(14.0, -6.0, 18.0, 6.0)


def _probes_found(tracks, crosswalks, probe):
    from forecast.probes.interaction import _pairs_in_sample

    return [p for p in _pairs_in_sample(tracks, 12, np.arange(tracks.num_agents), CFG, crosswalks)
            if p.probe == probe]


def test_pedestrian_probe_takes_a_walking_pedestrian_on_the_crossing():
    tracks, crosswalks = _crossing_scene((16.0, -3.0), (0.0, 1.2))  # on it, walking into the car's path
    pairs = _probes_found(tracks, crosswalks, "pedestrian_on_crossing")
    assert len(pairs) == 1 and pairs[0].cause == 1
    with_cause, without_cause = build_pair(pairs[0], tracks, 12, np.arange(tracks.num_agents), CFG, None)
    assert with_cause.num_agents == 2 and without_cause.num_agents == 1


def test_pedestrian_probe_leaves_out_one_waiting_beside_the_crossing():
    # Standing 0.8 m off the crossing at the kerb: at a signal that is a pedestrian waiting for
    # green, a cue that the cars go; the old selection (within 1 m, any speed) took it.
    tracks, crosswalks = _crossing_scene((16.0, -6.8), (0.0, 0.0))
    assert _probes_found(tracks, crosswalks, "pedestrian_on_crossing") == []
    # walking on the crossing but away from the car's path (5 m to its side, walking off): not a cause either
    tracks, crosswalks = _crossing_scene((16.0, -5.0), (0.0, -1.2))
    assert _probes_found(tracks, crosswalks, "pedestrian_on_crossing") == []


def test_cyclist_probe_needs_a_cyclist_going_the_vehicles_way():
    t = 25
    time = (np.arange(t) - 12) * 0.1
    car = np.stack([10.0 * time, np.zeros(t)], -1)
    for bike_heading, found in ((0.0, 1), (np.pi / 2, 0)):  # ahead in the lane: along it, and across it
        bike = np.stack([15.0 + 4.0 * np.cos(bike_heading) * time, 4.0 * np.sin(bike_heading) * time], -1)
        bike[:, 1] = np.clip(bike[:, 1], -0.5, 0.5) if bike_heading else bike[:, 1]  # stays in the lane at t0
        heading = np.stack([np.zeros(t), np.full(t, bike_heading)])
        tracks = AgentTracks(np.stack([car, bike]), heading, np.ones((2, t), bool), np.array([0, 2]), 0.1)
        assert len(_probes_found(tracks, None, "cyclist_in_lane")) == found


def test_braking_leader_history_stays_within_its_speed():
    """The braked leader was never faster than the cruising one: an out-of-data fast past (the old
    probe reached the same t0 speed from 8 m/s faster) made models predict the braked leader
    *further*, not shorter."""
    t = 25
    time = (np.arange(t) - 12) * 0.1
    follower = np.stack([10.0 * time, np.zeros(t)], -1)
    leader = np.stack([20.0 + 10.0 * time, np.zeros(t)], -1)
    tracks = AgentTracks(np.stack([follower, leader]), np.zeros((2, t)), np.ones((2, t), bool), np.array([0, 0]), 0.1)
    pairs = _probes_found(tracks, None, "lead_vehicle_braking")
    assert len(pairs) == 1
    brake, cruise = build_pair(pairs[0], tracks, 12, np.arange(tracks.num_agents), CFG, None)
    np.testing.assert_allclose(brake.origin, cruise.origin)  # same place at t0
    np.testing.assert_array_equal(brake.hist[0], cruise.hist[0])  # the follower's own past untouched
    v_brake = np.linalg.norm(np.diff(brake.hist[1, :, :2], axis=0), axis=-1) / 0.1
    v_cruise = np.linalg.norm(np.diff(cruise.hist[1, :, :2], axis=0), axis=-1) / 0.1
    np.testing.assert_allclose(v_cruise, 10.0, atol=1e-6)
    assert v_brake.max() <= 10.0 + 1e-6 and np.all(np.diff(v_brake) < 0)  # decelerating from the cruise speed
    from forecast.probes.interaction import BRAKE_MS2, braking_distance_before

    np.testing.assert_allclose(v_brake[-1], 10.0 - BRAKE_MS2 * 0.1 * (CFG.history_steps - 1) + BRAKE_MS2 * 0.05, atol=1e-6)
    # to a stop and standing: never driving backwards
    d = braking_distance_before(np.arange(-19, 1) * 0.1, 2.0, 4.0)
    assert d[-1] == 0.0 and np.all(np.diff(d) <= 1e-12) and abs(d[0] - 0.5) < 1e-9  # 2 m/s stops in 0.5 m


def test_action_conditioning_survives_an_exact_forecast():
    """A forecast with zero error has no relative change: NaN, not a ZeroDivisionError (the fault suite's tiny model)."""
    from types import SimpleNamespace

    from forecast.probes.action import evaluate_action_conditioning

    t = 25
    time = np.arange(t) * 0.1
    xy = np.stack([np.stack([10.0 * time, np.zeros(t)], -1), np.stack([np.full(t, 15.0), time], -1)])
    tracks = AgentTracks(xy, np.full((2, t), np.nan), np.ones((2, t), bool), np.array([0, 1]), 0.1)
    s = build_sample(tracks, 12, CFG, None, np.array([0, 1]), 0)
    scenes = SimpleNamespace(index=[0], sample=lambda k: s)
    out = evaluate_action_conditioning(scenes, lambda sample, plan=None, plan_mask=None:
                                       (np.repeat(sample.future[:, None], 2, axis=1), np.full((2, 2), 0.5)),
                                       max_samples=1)
    assert out["n_near"] == 1 and np.isnan(out["near_minFDE_change"]) and np.isnan(out["others_minFDE_change"])
    assert np.isnan(out["near_minFDE_change_by_class"]["pedestrian"]) and out["near_endpoint_shift_m"] == 0.0
