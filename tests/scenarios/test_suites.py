"""Suite expectations (pass/fail on hand-made predictions), the suite file, and running a suite on the tiny store."""

from __future__ import annotations

import numpy as np
import pytest

from forecast.scenarios.suites import (
    Case,
    Suite,
    check_case,
    keeps_crossing,
    load_suite,
    slows_down,
    suite_yaml,
)

DT, T = 0.1, 30


def straight(speeds: np.ndarray, angle: float = 0.0) -> np.ndarray:
    """[T, 2] agent-frame path with the given speed per step, heading ``angle`` radians."""
    d = np.cumsum(speeds * DT)
    return np.stack([d * np.cos(angle), d * np.sin(angle)], axis=1)


def test_slows_down_pass_and_fail():
    braking = straight(np.clip(10 - 4 * np.arange(1, T + 1) * DT, 0, None))[None]
    constant = straight(np.full(T, 10.0))[None]
    ok, value, _ = slows_down(braking, np.ones(1), speed=10.0, dt=DT)
    assert ok and value < 0.9
    ok, value, reason = slows_down(constant, np.ones(1), speed=10.0, dt=DT)
    assert not ok and value == pytest.approx(1.0) and "needs < 0.9" in reason


def test_expectation_judges_the_most_probable_mode():
    braking = straight(np.clip(10 - 4 * np.arange(1, T + 1) * DT, 0, None))
    constant = straight(np.full(T, 10.0))
    traj = np.stack([constant, braking])
    assert slows_down(traj, np.array([0.2, 0.8]), 10.0, DT)[0]
    assert not slows_down(traj, np.array([0.8, 0.2]), 10.0, DT)[0]


def test_keeps_crossing():
    walk = straight(np.full(T, 1.4))[None]
    stops = straight(np.where(np.arange(T) < 5, 1.4, 0.0))[None]
    turns_back = straight(np.full(T, 1.4), angle=np.pi * 0.75)[None]
    assert keeps_crossing(walk, np.ones(1), 1.4, DT)[0]
    assert not keeps_crossing(stops, np.ones(1), 1.4, DT)[0]
    assert not keeps_crossing(turns_back, np.ones(1), 1.4, DT)[0]


def test_case_params_override_defaults_and_unknown_kind_is_refused():
    half = straight(np.full(T, 5.0))[None]  # 0.5 x constant velocity at 10 m/s
    case = Case("c", "s", 10, "a", "slows_down", params={"ratio": 0.4})
    assert not check_case(case, half, np.ones(1), 10.0, DT)[0]
    with pytest.raises(ValueError, match="unknown expectation"):
        check_case(Case("c", "s", 10, "a", "flies"), half, np.ones(1), 10.0, DT)


def test_suite_file_round_trip_and_errors(tmp_path):
    suite = Suite("demo", 3, [Case("a-01", "sumo/x", 19, "veh1", "slows_down", why="leader brakes"),
                              Case("b-01", "sumo/y", 29, "ped2", "keeps_crossing", params={"min_ratio": 0.4})], "d")
    path = tmp_path / "demo.yaml"
    path.write_text(suite_yaml(suite))
    assert load_suite(path) == suite
    path.write_text(suite_yaml(Suite("demo", 1, [Case("a", "s", 1, "t", "flies")])))
    with pytest.raises(ValueError, match="unknown expectation"):
        load_suite(path)
    path.write_text("name: demo\ncases: []\n")
    with pytest.raises(ValueError, match="needs name, version"):
        load_suite(path)
    with pytest.raises(FileNotFoundError):
        load_suite("no-such-suite")


def _moving_agent(store, min_speed: float):
    """(scenario_id, t0, track_id, speed) of an agent with 1 s of history and 2 s of future in the test split."""
    from forecast.scenarios.tags import motion

    for info in store.scenarios(split="test"):
        sc = store.load_scenario(info.scenario_id)
        m = motion(sc.xy, sc.present, sc.agent_type, info.dt, sc.heading)
        t0 = 19
        full = sc.present[:, t0 - 9 : t0 + 21].all(1) & (m.speed[:, t0] > min_speed)
        if full.any():
            a = int(np.flatnonzero(full)[0])
            return info.scenario_id, t0, str(sc.track_ids[a]), float(m.speed[a, t0])
    pytest.skip("no moving agent with a whole future in the tiny test split")


def test_run_suite_with_constant_velocity(sumo_store, tmp_path):
    """Constant velocity never slows down and keeps going: it fails slows_down and passes keeps_crossing."""
    from forecast.evaluation.predictors import load_predictor
    from forecast.evaluation.suite_run import run_suite
    from forecast.features.config import FeatureConfig, RasterConfig

    feats = FeatureConfig(history_steps=10, future_steps=20, dt=0.1, max_agents=16,
                          raster=RasterConfig(size=16, resolution=2.0, ahead=4.0))
    sid, t0, tid, _ = _moving_agent(sumo_store, 2.0)
    suite = Suite("t", 1, [Case("slow", sid, t0, tid, "slows_down"), Case("go", sid, t0, tid, "keeps_crossing"),
                           Case("gone", "sumo/nowhere", t0, tid, "slows_down"),
                           Case("late", sid, 45, tid, "slows_down")])
    path = tmp_path / "t.yaml"
    path.write_text(suite_yaml(suite))
    _, cv = load_predictor("constant_velocity", feats)
    out = run_suite(sumo_store, str(path), {"constant_velocity": cv}, feats)
    status = {c["id"]: c["results"]["constant_velocity"]["status"] for c in out["cases"]}
    assert status == {"slow": "fail", "go": "pass", "gone": "missing", "late": "missing"}
    assert out["summary"]["constant_velocity"] == {"passed": 1, "failed": 1, "missing": 2}
    late = next(c for c in out["cases"] if c["id"] == "late")["results"]["constant_velocity"]["reason"]
    assert "future" in late or "present" in late
