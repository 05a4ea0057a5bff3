"""Each tag on a hand-made scene: one where it must fire, one near miss of the definition where it must not."""

from __future__ import annotations

import numpy as np
import pytest

from forecast.scenarios import tags as G

DT = 0.1
T = 60
VEH, PED, CYC = G.VEH, G.PED, G.CYC
CFG = G.TagConfig()


def line(x0: float, y0: float, vx: float, vy: float, t: int = T) -> np.ndarray:
    """[t, 2] positions moving at constant velocity (m/s)."""
    s = np.arange(t) * DT
    return np.stack([x0 + vx * s, y0 + vy * s], axis=1)


def speed_profile(x0: float, y0: float, speeds: np.ndarray) -> np.ndarray:
    """[T, 2] positions along +x with the given speed per step."""
    x = x0 + np.concatenate([[0.0], np.cumsum(speeds[:-1] * DT)])
    return np.stack([x, np.full_like(x, y0)], axis=1)


def scene(*tracks: np.ndarray, types: list[int], present: np.ndarray | None = None) -> G.Motion:
    xy = np.stack(tracks).astype(np.float64)
    pres = np.ones(xy.shape[:2], bool) if present is None else present
    return G.motion(xy, pres, np.array(types), DT)


def test_motion_recovers_velocity_and_acceleration():
    speeds = np.clip(10 - 4 * np.arange(T) * DT, 0, None)  # 10 m/s braking at 4 m/s^2
    m = scene(speed_profile(0, 0, speeds), types=[VEH])
    assert m.speed[0, 5] == pytest.approx(speeds[5], abs=0.3)
    assert m.accel[0, 10] == pytest.approx(-4.0, abs=0.3)
    assert m.heading[0, 5] == pytest.approx(0.0, abs=1e-9)


def test_braking_or_yielding():
    braking = np.clip(12 - 5 * np.arange(T) * DT, 0, None)  # brakes at 5 m/s^2 to a stop
    cruising = np.full(T, 12.0)
    gentle = np.clip(12 - 1 * np.arange(T) * DT, 0, None)  # 1 m/s^2, never stops within 6 s
    m = scene(speed_profile(0, 0, braking), speed_profile(0, 10, cruising), speed_profile(0, 20, gentle),
              types=[VEH, VEH, VEH])
    ev = G.braking_or_yielding(m, CFG)
    assert ev[0].any() and not ev[1].any() and not ev[2].any()
    # a pedestrian stopping is not a vehicle braking
    assert not G.braking_or_yielding(scene(speed_profile(0, 0, braking), types=[PED]), CFG).any()


def test_stop_and_go():
    go = np.where(np.arange(T) < 20, 0.0, np.minimum((np.arange(T) - 20) * DT * 3.0, 8.0))  # waits 2 s, then drives
    stays = np.zeros(T)
    m = scene(speed_profile(0, 0, go), speed_profile(0, 10, stays), speed_profile(0, 20, np.full(T, 8.0)),
              types=[VEH, VEH, CYC])
    ev = G.stop_and_go(m, CFG)
    assert ev[0].any() and not ev[1].any() and not ev[2].any()
    first = int(np.argmax(ev[0]))
    assert m.speed[0, first] > CFG.move_speed


def test_junction_turn():
    # a quarter circle of radius 10 m at 5 m/s (pi/2 in 3.14 s), inside a junction the whole time
    ang = np.minimum(np.arange(T) * DT * 0.5, np.pi / 2)
    turn = np.stack([10 * np.sin(ang), 10 - 10 * np.cos(ang)], axis=1)
    straight = line(0, 20, 5, 0)
    m = scene(turn, straight, types=[VEH, VEH])
    inside = np.ones((2, T), bool)
    ev = G.junction_turn(m, CFG, inside)
    assert ev[0].any() and not ev[1].any()
    assert not G.junction_turn(m, CFG, np.zeros((2, T), bool)).any()  # the same turn outside a junction


def test_occluded_or_new():
    present = np.ones((3, T), bool)
    present[1, :25] = False  # appears at step 25
    present[2, 30:35] = False  # occluded for 0.5 s
    m = scene(line(0, 0, 1, 0), line(0, 5, 1, 0), line(0, 10, 1, 0), types=[PED, VEH, CYC], present=present)
    ev = G.occluded_or_new(m)
    assert not ev[0].any()
    assert np.flatnonzero(ev[1]).tolist() == [25]
    assert np.flatnonzero(ev[2]).tolist() == [35]


def test_traffic_signals_are_neither_new_agents_nor_near_misses():
    sig = int(G.AgentType.TRAFFIC_SIGNAL)
    present = np.ones((2, T), bool)
    present[1, :25] = False  # the light turns red at step 25: its stop wall appears
    car = line(0, 0, 10, 0)  # drives at 10 m/s straight through where the wall stands
    m = scene(car, line(40, 0, 0, 0), types=[VEH, sig], present=present)
    assert not G.occluded_or_new(m).any()
    assert not _pair_events(m)["near_miss"].any()
    # the same stationary thing as an ``other`` object is a near miss, and new when it appears
    m = scene(car, line(40, 0, 0, 0), types=[VEH, int(G.AgentType.OTHER)], present=present)
    assert _pair_events(m)["near_miss"].any() and G.occluded_or_new(m)[1, 25]


def test_time_to_collision_hand_worked():
    # 10 m apart, closing at 5 m/s, radii summing to 2 m: contact after (10 - 2) / 5 = 1.6 s
    ttc = G.time_to_collision(np.array([[10.0, 0]]), np.array([[-5.0, 0]]), np.array([2.0]))
    assert ttc[0] == pytest.approx(1.6)
    assert np.isinf(G.time_to_collision(np.array([[10.0, 0]]), np.array([[5.0, 0]]), np.array([2.0])))[0]  # apart
    assert np.isinf(G.time_to_collision(np.array([[0.0, 3]]), np.array([[-5.0, 0]]), np.array([2.0])))[0]  # pass by
    assert G.time_to_collision(np.array([[1.0, 0]]), np.array([[-1.0, 0]]), np.array([2.0]))[0] == 0.0  # overlapping


def _pair_events(m: G.Motion, **kw) -> dict[str, np.ndarray]:
    return G.scene_events(m, CFG, **kw)


def test_near_miss():
    car = line(0, 0, 10, 0)
    ped_ahead = line(25, -3, 0, 1.2)  # walks into the car's path: reaches y=0 at 2.5 s when the car is at x=25
    ped_safe = line(25, -40, 0, 1.2)  # same walk, far away
    ev = _pair_events(scene(car, ped_ahead, types=[VEH, PED]))["near_miss"]
    assert ev[0].any() and ev[1].any()
    assert not _pair_events(scene(car, ped_safe, types=[VEH, PED]))["near_miss"].any()
    # without a vehicle in the pair it is not a near miss (SUMO's pedestrians and bicycles pass through each other)
    assert not _pair_events(scene(line(0, 0, 1.5, 0), line(6, 0, -1.5, 0), types=[PED, PED]))["near_miss"].any()
    assert not _pair_events(scene(line(0, 0, 4.0, 0), line(8, 0, -1.5, 0), types=[CYC, PED]))["near_miss"].any()
    assert _pair_events(scene(line(0, 0, 4.0, 0), line(8, 0, -4.0, 0), types=[CYC, VEH]))["near_miss"].all(axis=0).any()


def test_pedestrian_crossing():
    car = line(0, 0, 5, 0)
    ped = line(12, -3, 0, 1.3)  # crosses 12 m ahead of the car's start
    ev = _pair_events(scene(car, ped, types=[VEH, PED]))["pedestrian_crossing"]
    assert ev[0].any() and ev[1].any()
    behind = line(-12, -3, 0, 1.3)  # crosses behind the car
    assert not _pair_events(scene(car, behind, types=[VEH, PED]))["pedestrian_crossing"].any()
    along = line(8, 3, 1.3, 0)  # walks along the sidewalk beside the road
    assert not _pair_events(scene(car, along, types=[VEH, PED]))["pedestrian_crossing"].any()
    # standing still on a crosswalk in the car's path counts
    still = line(10, 0.5, 0, 0)
    cw = np.zeros((2, T), bool)
    cw[1] = True
    assert _pair_events(scene(car, still, types=[VEH, PED]), on_crosswalk=cw)["pedestrian_crossing"][1].any()


def test_cyclist_in_lane():
    bike = line(0, 0, 5, 0)
    car_behind = line(-10, 0.5, 6, 0)
    ev = _pair_events(scene(bike, car_behind, types=[CYC, VEH]))["cyclist_in_lane"]
    assert ev[0].any() and ev[1].any()
    car_next_lane = line(-10, 3.5, 6, 0)
    assert not _pair_events(scene(bike, car_next_lane, types=[CYC, VEH]))["cyclist_in_lane"].any()
    oncoming = line(30, 0.5, -6, 0)
    assert not _pair_events(scene(bike, oncoming, types=[CYC, VEH]))["cyclist_in_lane"].any()


def test_cut_in():
    ego = line(0, 0, 10, 0)
    # from the adjacent lane 3.2 m to the left, 8 m ahead, moves over within 2 s
    lat = np.clip(3.2 - np.arange(T) * DT * 1.6, 0, None)
    cutter = np.stack([8 + 11 * np.arange(T) * DT, lat], axis=1)
    ev = _pair_events(scene(ego, cutter, types=[VEH, VEH]))["cut_in"]
    assert ev[0].any() and ev[1].any()
    stays = line(8, 3.2, 11, 0)  # stays in its lane
    assert not _pair_events(scene(ego, stays, types=[VEH, VEH]))["cut_in"].any()
    leader = line(8, 0, 11, 0)  # already in the lane: following, not a cut-in
    assert not _pair_events(scene(ego, leader, types=[VEH, VEH]))["cut_in"].any()


def test_window_reaches_into_the_future_and_past():
    ev = np.zeros((1, 50), bool)
    ev[0, 30] = True
    present = np.ones((1, 50), bool)
    w = G.windowed(ev, present, back=10, ahead=5)
    assert np.flatnonzero(w[0]).tolist() == list(range(25, 41))
    present[0, 26] = False  # absent at t0: no tag
    assert not G.windowed(ev, present, 10, 5)[0, 26]


def test_scene_tags_has_every_tag():
    m = scene(line(0, 0, 5, 0), types=[VEH])
    tags = G.scene_tags(m, CFG)
    assert set(tags) == set(G.TAGS)
    assert all(t.shape == (1, T) and t.dtype == bool for t in tags.values())


@pytest.mark.parametrize("n", [0, 1, 2, 300])
def test_neighbour_pairs_are_the_distance_matrix_pairs(n):
    rng = np.random.default_rng(n)
    p = rng.uniform(0, 200, (n, 2))
    p[1::7] = p[::7][: len(p[1::7])]  # coincident points are neighbours of each other
    i, j = G.neighbour_pairs(p, 30.0)
    d = np.hypot(*(p[None] - p[:, None]).transpose(2, 0, 1))
    ei, ej = np.nonzero((d <= 30.0) & ~np.eye(n, dtype=bool))
    np.testing.assert_array_equal(i, ei)
    np.testing.assert_array_equal(j, ej)
    assert i.dtype == np.int64 and j.dtype == np.int64
