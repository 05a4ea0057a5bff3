"""The promotion gate as a pure function: every rule, its reason, and missing data failing closed."""

from __future__ import annotations

from forecast.pipeline.gate import GateConfig, RegisteredModel, decide, metric_value

METRICS = {
    "overall": {"minFDE@6": 1.2, "MR@6": 0.10, "minADE@6": 0.5},
    "by_class": {"pedestrian": {"minFDE@6": 0.4}},
    "scene": {"offroad_rate": 0.02, "calibration_ece": None},
    "baselines": {"constant_velocity": {"overall": {"minFDE@6": 1.5}}, "ctrv": {"overall": {"minFDE@6": 1.1}}},
}


def test_metric_lookup():
    assert metric_value(METRICS, "minFDE@6") == 1.2
    assert metric_value(METRICS, "by_class.pedestrian.minFDE@6") == 0.4
    assert metric_value(METRICS, "scene.offroad_rate") == 0.02
    assert metric_value(METRICS, "scene.calibration_ece") is None
    assert metric_value(METRICS, "nope") is None


def test_thresholds_and_baselines():
    cfg = GateConfig(enabled=True, max_metrics={"minFDE@6": 1.5, "MR@6": 0.05}, min_metrics={"scene.offroad_rate": 0.0},
                     must_beat_baselines=["constant_velocity", "ctrv"])
    d = decide(cfg, METRICS)
    assert not d.passed
    assert d.reasons == [
        "FAIL max MR@6: MR@6 0.1000 > 0.05",
        "PASS max minFDE@6: minFDE@6 1.2000 <= 1.5",
        "PASS min scene.offroad_rate: scene.offroad_rate 0.0200 >= 0",
        "PASS beat constant_velocity: minFDE@6 1.2000 < 1.5000",
        "FAIL beat ctrv: minFDE@6 1.2000 >= 1.1000",
    ]
    assert decide(GateConfig(enabled=True, max_metrics={"minFDE@6": 1.5}), METRICS).passed
    assert d.to_dict()["checks"][0] == {"rule": "max MR@6", "passed": False, "reason": "MR@6 0.1000 > 0.05"}


def test_missing_metrics_fail():
    d = decide(GateConfig(max_metrics={"brier-minFDE@6": 2.0}, must_beat_baselines=["kalman"]), METRICS)
    assert not d.passed
    assert "missing" in d.checks[0].reason and "baseline kalman's minFDE@6 is missing" in d.checks[1].reason


def test_registered_model():
    cfg = GateConfig(must_beat_registered=True)
    assert decide(cfg, METRICS, None).passed  # nothing registered yet
    assert decide(cfg, METRICS, RegisteredModel("m", "2", {"minFDE@6": 1.3})).passed
    worse = decide(cfg, METRICS, RegisteredModel("m", "2", {"minFDE@6": 1.2}))
    assert not worse.passed and worse.reasons == ["FAIL beat registered: minFDE@6 1.2000 vs m v2's 1.2000 (needs < 1.2000)"]
    margin = GateConfig(must_beat_registered=True, min_improvement=0.2)
    assert not decide(margin, METRICS, RegisteredModel("m", "2", {"minFDE@6": 1.3})).passed
    assert decide(margin, METRICS, RegisteredModel("m", "2", {"minFDE@6": 1.4})).passed
    # A rerun of the evaluation that was registered is not asked to beat itself.
    itself = RegisteredModel("m", "2", {"minFDE@6": 1.2}, evaluate_hash="abc")
    assert decide(cfg, METRICS, itself, evaluate_hash="abc").passed
    unknown = decide(cfg, METRICS, RegisteredModel("m", "2", {}))
    assert not unknown.passed and "no recorded minFDE@6" in unknown.reasons[0]
