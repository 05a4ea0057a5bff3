"""Champion vs challenger: per-tag metric deltas with bootstrap intervals, and the scenes that got worse.

A delta is challenger minus champion on the very same agents (positive = the challenger is worse
for error metrics). Agents of one scenario are correlated, so the interval resamples *scenarios*
with replacement (a cluster bootstrap) and takes the percentile interval of the delta of means.
"""

from __future__ import annotations

import numpy as np

COMPARE_METRICS = ("minADE@6", "minFDE@6", "MR@6", "minFDE@1", "brier-minFDE@6")


def bootstrap_delta(challenger: np.ndarray, champion: np.ndarray, groups: np.ndarray, mask: np.ndarray | None = None,
                    n_boot: int = 1000, level: float = 0.95, seed: int = 0) -> dict:
    """Mean of ``challenger - champion`` over ``mask`` with a cluster-bootstrap interval over ``groups``.

    challenger, champion: per-agent values ``[N]`` (NaN: left out); groups: ``[N]`` cluster labels
    (scenario ids). Returns ``{"delta", "ci_low", "ci_high", "n", "n_groups"}`` (None where empty).
    """
    d = np.asarray(challenger, np.float64) - np.asarray(champion, np.float64)
    keep = np.isfinite(d) if mask is None else (np.asarray(mask, bool) & np.isfinite(d))
    d, g = d[keep], np.asarray(groups)[keep]
    if len(d) == 0:
        return {"delta": None, "ci_low": None, "ci_high": None, "n": 0, "n_groups": 0}
    labels, code = np.unique(g, return_inverse=True)
    sums = np.bincount(code, weights=d, minlength=len(labels))
    counts = np.bincount(code, minlength=len(labels)).astype(np.float64)
    rng = np.random.default_rng(seed)
    # each bootstrap draw: how often each scenario is picked, [B, S]
    w = rng.multinomial(len(labels), np.full(len(labels), 1.0 / len(labels)), size=n_boot).astype(np.float64)
    num, den = w @ sums, w @ counts
    boot = num[den > 0] / den[den > 0]
    lo, hi = np.quantile(boot, [(1 - level) / 2, 1 - (1 - level) / 2]) if len(boot) else (np.nan, np.nan)
    return {"delta": float(d.mean()), "ci_low": float(lo), "ci_high": float(hi), "n": int(len(d)),
            "n_groups": int(len(labels))}


def compare_groups(challenger: dict[str, np.ndarray], champion: dict[str, np.ndarray], groups: np.ndarray,
                   masks: dict[str, np.ndarray], n_boot: int = 1000, seed: int = 0, level: float = 0.95,
                   metrics: tuple[str, ...] = COMPARE_METRICS) -> dict[str, dict]:
    """``{group: {"n", "n_scenarios", metric: {"delta", "ci_low", "ci_high"}}}`` for every mask ``[N]``."""
    out = {}
    for name, mask in masks.items():
        entry: dict = {}
        for key in metrics:
            r = bootstrap_delta(challenger[key], champion[key], groups, mask, n_boot, level, seed)
            entry.setdefault("n", r["n"])
            entry.setdefault("n_scenarios", r["n_groups"])
            entry[key] = {k: r[k] for k in ("delta", "ci_low", "ci_high")}
        out[name] = entry
    return out


def rank_regressions(delta: np.ndarray, scene: np.ndarray, top: int) -> list[int]:
    """Rows of the ``top`` scenes where the challenger got most worse: per scene (``scene [N]`` labels,
    e.g. ``scenario@t0``) the row with the largest positive ``delta [N]``, scenes by that delta, largest first."""
    d = np.asarray(delta, np.float64)
    rows = np.flatnonzero(np.isfinite(d) & (d > 0))
    rows = rows[np.argsort(-d[rows], kind="stable")]
    seen: set = set()
    out: list[int] = []
    for r in rows:
        if scene[r] in seen:
            continue
        seen.add(scene[r])
        out.append(int(r))
        if len(out) == top:
            break
    return out


def comparison_section(challenger: str, champion: str, per_agent: dict[str, dict[str, np.ndarray]], scenario_id: np.ndarray,
                       t0: np.ndarray, masks: dict[str, dict[str, np.ndarray]], n_boot: int, level: float, top: int,
                       seed: int = 0, track_id: np.ndarray | None = None) -> tuple[dict, list[int]]:
    """The ``comparison`` part of metrics.json and the rows of the most regressed scenes.

    masks: ``{"by_tag": {tag: [N]}, "by_class": {class: [N]}}``; ``overall`` is added. Deltas of
    ``minFDE@6`` rank the regressions (one row per scene ``scenario@t0``).
    """
    ch, cp = per_agent[challenger], per_agent[champion]
    n = len(scenario_id)
    section: dict = {"challenger": challenger, "champion": champion, "bootstrap": n_boot, "level": level,
                     "note": "delta = challenger - champion (positive: challenger worse); interval: percentile "
                             "bootstrap over scenarios"}
    section["overall"] = compare_groups(ch, cp, scenario_id, {"all": np.ones(n, bool)}, n_boot, seed, level)["all"]
    for family, fam_masks in masks.items():
        section[family] = compare_groups(ch, cp, scenario_id, fam_masks, n_boot, seed, level)
    delta = ch["minFDE@6"] - cp["minFDE@6"]
    scene = np.array([f"{s}@{int(t)}" for s, t in zip(scenario_id, t0, strict=True)], dtype=object)
    rows = rank_regressions(delta, scene, top)
    section["regressions"] = [
        {"rank": j + 1, "row": r, "scenario_id": str(scenario_id[r]), "t0": int(t0[r]),
         "track_id": None if track_id is None else str(track_id[r]),
         "challenger_minFDE@6": float(ch["minFDE@6"][r]), "champion_minFDE@6": float(cp["minFDE@6"][r]),
         "delta_minFDE@6": float(delta[r]),
         "tags": sorted(t for t, m in masks.get("by_tag", {}).items() if m[r])}
        for j, r in enumerate(rows)
    ]
    ok = np.isfinite(delta)
    labels, code = np.unique(scene[ok].astype(str), return_inverse=True)
    scene_mean = np.bincount(code, weights=delta[ok], minlength=len(labels)) / np.bincount(code, minlength=len(labels))
    section["num_worse_scenes"] = int((scene_mean > 0).sum())  # the scene's mean minFDE@6 over its agents got worse
    section["num_scenes"] = int(len(labels))
    return section, rows
