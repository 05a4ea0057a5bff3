"""Run a scenario suite: build each case's sample with the one sample builder, predict, check the expectation.

``metrics.json["suite"]``::

    {"name", "version", "file", "models": [...],
     "summary": {model: {"passed", "failed", "missing"}},
     "cases": [{"id", "scenario_id", "t0", "track_id", "expect", "why",
                "results": {model: {"status": "pass" | "fail" | "missing", "value", "reason"}}}]}

A case is ``missing`` when its scenario, agent or t0 is not in the store (another SUMO version gave
other tracks) or its agent lacks the history or whole future the sample needs; missing never passes.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from forecast.data.store import Store
from forecast.features.config import FeatureConfig
from forecast.features.raster import rasterize_map_layers
from forecast.features.sample import build_sample
from forecast.features.tracks import AgentTracks
from forecast.scenarios.suites import Case, check_case, load_suite, suite_path


def case_sample(tracks: AgentTracks, raster, case: Case, t0: int, cfg: FeatureConfig):
    """The case agent's sample at ``t0`` (feature steps): it first, then the nearest present agents.

    Returns ``(sample, None)`` or ``(None, why it is missing)``.
    """
    ids = [str(t) for t in tracks.track_ids] if tracks.track_ids is not None else []
    if case.track_id not in ids:
        return None, f"agent {case.track_id} not in the scenario"
    a = ids.index(case.track_id)
    if not (0 <= t0 < tracks.num_steps) or not tracks.present[a, t0]:
        return None, f"agent {case.track_id} not present at t0"
    if t0 + cfg.future_steps >= tracks.num_steps or not tracks.present[a, t0 + 1 : t0 + 1 + cfg.future_steps].all():
        return None, "no whole future after t0"
    if tracks.present[a, max(0, t0 - cfg.history_steps + 1) : t0 + 1].sum() < cfg.min_history_steps:
        return None, "too little history"
    here = np.flatnonzero(tracks.present[:, t0])
    d = np.hypot(*(tracks.xy[here, t0] - tracks.xy[a, t0]).T)
    order = np.argsort(d, kind="stable")
    group = here[order][d[order] <= cfg.neighbour_radius][: cfg.max_agents]
    group = np.concatenate([[a], group[group != a]])[: cfg.max_agents]
    return build_sample(tracks, t0, cfg, raster, group, a), None


def run_suite(store: Store, name_or_path: str, predictors: dict[str, object], default_features: FeatureConfig,
              log: Callable[[str], None] | None = None) -> dict:
    """Every case of the suite for every predictor (each on samples built with its own FeatureConfig)."""
    log = log or (lambda msg: None)
    path = suite_path(name_or_path)
    suite = load_suite(path)
    known = {i.scenario_id: i for i in store.scenarios()}
    cache: dict[tuple, object] = {}
    cases_out = []
    summary = {n: {"passed": 0, "failed": 0, "missing": 0} for n in predictors}
    for case in suite.cases:
        entry = {"id": case.id, "scenario_id": case.scenario_id, "t0": case.t0, "track_id": case.track_id,
                 "expect": case.expect, "why": case.why, "results": {}}
        info = known.get(case.scenario_id)
        for pname, p in predictors.items():
            cfg = getattr(p, "features", None) or default_features
            res = {"status": "missing", "value": None, "reason": f"scenario {case.scenario_id} not in the store"}
            if info is not None:
                n = int(round(cfg.dt / info.dt))
                if case.t0 % n:
                    res["reason"] = f"t0 {case.t0} is not on the {cfg.dt:g} s grid of the model"
                else:
                    key = (case.scenario_id, cfg.dt, cfg.raster.resolution)
                    if key not in cache:
                        tracks = AgentTracks.from_scenario(store.load_scenario(case.scenario_id)).resample(cfg.dt)
                        raster = (rasterize_map_layers(store.load_map(info.map_id), cfg.raster.resolution)
                                  if info.map_id else None)
                        cache[key] = (tracks, raster)
                    tracks, raster = cache[key]
                    sample, why = case_sample(tracks, raster, case, case.t0 // n, cfg)
                    if sample is None:
                        res["reason"] = why
                    else:
                        traj, prob = p.predict(sample)
                        speed = float(np.hypot(sample.hist[0, -1, 2], sample.hist[0, -1, 3]))
                        ok, value, reason = check_case(case, np.asarray(traj)[0], np.asarray(prob)[0], speed, cfg.dt)
                        res = {"status": "pass" if ok else "fail", "value": float(value) if np.isfinite(value) else None,
                               "reason": reason}
            summary[pname][{"pass": "passed", "fail": "failed", "missing": "missing"}[res["status"]]] += 1
            entry["results"][pname] = res
        cases_out.append(entry)
    for pname, s in summary.items():
        log(f"suite {suite.name} v{suite.version} ({pname}): {s['passed']} passed, {s['failed']} failed, "
            f"{s['missing']} missing")
    return {"name": suite.name, "version": suite.version, "file": str(path), "description": suite.description,
            "models": list(predictors), "summary": summary, "cases": cases_out}
