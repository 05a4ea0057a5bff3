"""Promotion gate: may the model just evaluated be exported and registered?

A pure function of the evaluate step's ``metrics.json``, the gate settings and the registered
model's metrics (looked up by the caller): :func:`decide` returns a :class:`GateDecision` with one
:class:`Check` per rule, each with a reason a person can read in the scheduler's log.

Metric names are those of ``metrics.json`` (``minFDE@6``, ``MR@6``, ``brier-minFDE@6``, ...). A plain
name is looked up in the model's ``overall`` block; a dotted path reaches into the other blocks, e.g.
``by_class.pedestrian.minFDE@6``, ``by_horizon.3s.MR@6``, ``scene.offroad_rate`` or a scenario tag's
``by_tag.near_miss.MR@6_2s``.

Per-tag rules against the champion (``max_tag_regression: {minFDE@6: 0.3}``) read the evaluation's
``comparison`` section (``forecast evaluate --baseline CHAMPION``): no tag with at least ``tag_min_n``
agents may be worse than the champion by more than the bound (challenger minus champion, metric
units). Without a comparison the rule fails: the gate never passes on data it could not see.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field


@dataclass
class GateConfig:
    enabled: bool = False
    max_metrics: dict[str, float] = field(default_factory=dict)  # metric <= bound (errors, miss rates)
    min_metrics: dict[str, float] = field(default_factory=dict)  # metric >= bound
    must_beat_baselines: list[str] = field(default_factory=list)  # e.g. [constant_velocity]: lower compare_metric
    must_beat_registered: bool = False  # lower compare_metric than the registered model (its alias)
    compare_metric: str = "minFDE@6"  # lower is better
    min_improvement: float = 0.0  # how much lower than the registered model it must be (metric units)
    fail_on_gate: bool = True  # a failed gate makes the run exit 4 (EXIT_GATE); else 0 with the decision printed
    max_tag_regression: dict[str, float] = field(default_factory=dict)  # metric -> no tag worse than the champion by more
    tag_min_n: int = 30  # tags with fewer agents are not judged by max_tag_regression (too few to tell)


@dataclass(frozen=True)
class RegisteredModel:
    """The model version the registry alias points at, with the metrics recorded when it was registered."""

    name: str
    version: str
    metrics: dict[str, float]
    evaluate_hash: str | None = None  # hash of the evaluate step that scored it


@dataclass(frozen=True)
class Check:
    rule: str  # e.g. "max minFDE@6", "beat constant_velocity", "beat registered"
    passed: bool
    reason: str


@dataclass
class GateDecision:
    passed: bool
    checks: list[Check]

    @property
    def reasons(self) -> list[str]:
        return [f"{'PASS' if c.passed else 'FAIL'} {c.rule}: {c.reason}" for c in self.checks]

    def to_dict(self) -> dict:
        return {"passed": self.passed, "checks": [asdict(c) for c in self.checks], "reasons": self.reasons}


def metric_value(block: dict, key: str) -> float | None:
    """``key`` of a metrics block (a plain name from ``overall``, or a dotted path); None if absent or null."""
    node = block.get("overall", {}).get(key) if "." not in key else None
    if node is None:
        node = block
        for part in key.split("."):
            node = node.get(part) if isinstance(node, dict) else None
    if isinstance(node, bool) or not isinstance(node, int | float) or not math.isfinite(node):
        return None
    return float(node)


def decide(cfg: GateConfig, metrics: dict, registered: RegisteredModel | None = None,
           evaluate_hash: str | None = None) -> GateDecision:
    """Apply every rule of ``cfg`` to ``metrics`` (the evaluate step's metrics.json).

    ``registered`` is the model the registry alias points at (None: nothing registered yet);
    ``evaluate_hash`` identifies this evaluation, so a rerun is not asked to beat itself.
    A missing metric fails its rule: the gate never passes on data it could not see.
    """
    checks: list[Check] = []
    for key, bound in sorted(cfg.max_metrics.items()):
        checks.append(_bound(metrics, key, bound, upper=True))
    for key, bound in sorted(cfg.min_metrics.items()):
        checks.append(_bound(metrics, key, bound, upper=False))
    key = cfg.compare_metric
    ours = metric_value(metrics, key)
    for name in cfg.must_beat_baselines:
        base = metrics.get("baselines", {}).get(name)
        theirs = metric_value(base, key) if base else None
        rule = f"beat {name}"
        if ours is None or theirs is None:
            missing = "the model's" if ours is None else f"baseline {name}'s"
            checks.append(Check(rule, False, f"{missing} {key} is missing from metrics.json"))
        else:
            checks.append(Check(rule, ours < theirs, f"{key} {ours:.4f} {'<' if ours < theirs else '>='} {theirs:.4f}"))
    if cfg.must_beat_registered:
        checks.append(_beat_registered(cfg, ours, registered, evaluate_hash))
    for key, bound in sorted(cfg.max_tag_regression.items()):
        checks.append(_tag_regression(metrics, key, bound, cfg.tag_min_n))
    return GateDecision(all(c.passed for c in checks), checks)


def _bound(metrics: dict, key: str, bound: float, upper: bool) -> Check:
    rule = f"{'max' if upper else 'min'} {key}"
    value = metric_value(metrics, key)
    if value is None:
        return Check(rule, False, f"{key} is missing from metrics.json")
    ok = value <= bound if upper else value >= bound
    op = ("<=" if ok else ">") if upper else (">=" if ok else "<")
    return Check(rule, ok, f"{key} {value:.4f} {op} {bound:g}")


def _beat_registered(cfg: GateConfig, ours: float | None, registered: RegisteredModel | None,
                     evaluate_hash: str | None) -> Check:
    rule, key = "beat registered", cfg.compare_metric
    if registered is None:
        return Check(rule, True, "no registered model yet: nothing to beat")
    where = f"{registered.name} v{registered.version}"
    if evaluate_hash is not None and registered.evaluate_hash == evaluate_hash:
        return Check(rule, True, f"this evaluation is the registered model ({where})")
    theirs = registered.metrics.get(key)
    if ours is None:
        return Check(rule, False, f"the model's {key} is missing from metrics.json")
    if theirs is None:
        return Check(rule, False, f"{where} has no recorded {key}; cannot compare")
    need = theirs - cfg.min_improvement
    ok = ours <= need if cfg.min_improvement > 0 else ours < need
    op = "<=" if cfg.min_improvement > 0 else "<"
    return Check(rule, ok, f"{key} {ours:.4f} vs {where}'s {theirs:.4f} (needs {op} {need:.4f})")


def _tag_regression(metrics: dict, key: str, bound: float, min_n: int) -> Check:
    """Every tag with ``min_n`` agents or more: challenger minus champion ``key`` at most ``bound``."""
    rule = f"no tag worse than the champion by more than {bound:g} in {key}"
    comparison = metrics.get("comparison") or {}
    if comparison.get("skipped"):
        return Check(rule, True, f"nothing to compare with: {comparison['skipped']}")
    by_tag = comparison.get("by_tag")
    if not by_tag:
        return Check(rule, False, "metrics.json has no per-tag comparison (evaluate with --baseline and a tag table)")
    judged, worse = 0, []
    for tag, entry in sorted(by_tag.items()):
        delta = (entry.get(key) or {}).get("delta")
        if entry.get("n", 0) < min_n or delta is None:
            continue
        judged += 1
        if delta > bound:
            worse.append(f"{tag} {delta:+.4f}")
    if worse:
        return Check(rule, False, f"{', '.join(worse)} (of {judged} tags with n >= {min_n})")
    return Check(rule, True, f"{judged} tags with n >= {min_n} within {bound:g}")
