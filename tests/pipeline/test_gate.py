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


def _with_comparison(deltas: dict[str, tuple[int, float | None]]) -> dict:
    by_tag = {t: {"n": n, "minFDE@6": {"delta": d, "ci_low": None, "ci_high": None}} for t, (n, d) in deltas.items()}
    return {**METRICS, "comparison": {"by_tag": by_tag}}


def test_per_tag_regression_rule():
    cfg = GateConfig(enabled=True, max_tag_regression={"minFDE@6": 0.2}, tag_min_n=30)
    ok = decide(cfg, _with_comparison({"near_miss": (40, 0.1), "cut_in": (50, -0.3)}))
    assert ok.passed and ok.reasons == ["PASS no tag worse than the champion by more than 0.2 in minFDE@6: "
                                        "2 tags with n >= 30 within 0.2"]
    bad = decide(cfg, _with_comparison({"near_miss": (40, 0.5), "cut_in": (50, 0.1)}))
    assert not bad.passed and "near_miss +0.5000" in bad.reasons[0] and "cut_in" not in bad.reasons[0]
    # a rare tag is not judged, however bad
    assert decide(cfg, _with_comparison({"near_miss": (12, 3.0)})).passed


def test_per_tag_rule_fails_closed_and_passes_without_a_champion():
    cfg = GateConfig(enabled=True, max_tag_regression={"minFDE@6": 0.2})
    d = decide(cfg, METRICS)
    assert not d.passed and "no per-tag comparison" in d.reasons[0]
    first_run = {**METRICS, "comparison": {"skipped": "no registered model models:/m@champion yet"}}
    assert decide(cfg, first_run).passed
