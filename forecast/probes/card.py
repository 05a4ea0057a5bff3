"""The world-model card: every behaviour measured for a model and for constant velocity, side by side."""

from __future__ import annotations

import functools
import time

import numpy as np

from forecast import metrics
from forecast.batching import Question, predict_stream
from forecast.features.dataset import SceneSet
from forecast.probes.action import evaluate_action_conditioning
from forecast.probes.interaction import find_pairs, pair_samples, score_pairs
from forecast.probes.persistence import evaluate_persistence

GOALS = {"persistence_drop_20_max_degradation": 0.10, "generalisation_max_ratio": 1.15,
         "probe_min_right_direction": 0.85, "braking_min_effect_m": 0.3, "near_plan_max_minFDE_change": -0.05}


def split_min_fde(scenes: SceneSet, predict, max_samples: int, seed: int) -> tuple[float, dict[str, float]]:
    """minFDE (all modes) over scored agents with a full future, overall and per map.

    ``predict``: a ``predict(sample)`` callable or a predictor object (``forecast.batching``)."""
    rng = np.random.default_rng(seed)

    def questions():
        for k in rng.permutation(len(scenes.index))[:max_samples]:
            s = scenes.sample(int(k))
            scored = s.target_mask & s.future_mask.all(1)
            if scored.any():
                yield (int(k), s, scored), Question(s)

    fde_by_map: dict[str, list[np.ndarray]] = {}
    for (k, s, scored), (traj, prob) in predict_stream(predict, questions()):
        prob = prob[scored] / prob[scored].sum(-1, keepdims=True)
        fde = metrics.min_fde(traj[scored], s.future[scored], prob)
        map_id = scenes.infos[scenes.index[k].scenario].map_id or "none"
        fde_by_map.setdefault(map_id, []).append(fde)
    if not fde_by_map:
        return float("nan"), {}
    per_map = {m: float(np.concatenate(v).mean()) for m, v in fde_by_map.items()}
    return float(np.concatenate([np.concatenate(v) for v in fde_by_map.values()]).mean()), per_map


def world_model_card(predictors: dict[str, object], val: SceneSet, test: SceneSet, max_samples: int = 150,
                     max_pairs: int = 200, seed: int = 0) -> dict:
    """Measure each predictor (name -> ``predict(sample, plan=None, plan_mask=None)``, or an object with
    that ``predict`` and optionally ``predict_batch``: ``forecast.batching``) on every behaviour.

    Returns ``{name: {"interaction", "action_conditioning", "persistence", "generalisation"}}``
    plus ``"goals"`` and ``"pairs"`` counts.
    """
    pairs = find_pairs(test, max_pairs=max_pairs, seed=seed)
    card: dict = {"goals": GOALS, "pairs": {p: sum(q.probe == p for q in pairs) for p in {q.probe for q in pairs}}}
    for name, predict in predictors.items():
        t = time.perf_counter()
        val_fde, _ = split_min_fde(val, predict, max_samples, seed)
        test_fde, test_by_map = split_min_fde(test, predict, max_samples, seed)
        persistence = evaluate_persistence(test, predict, max_samples=max_samples // 2, seed=seed)
        card[name] = {
            "interaction": score_pairs(pairs, predict, functools.partial(pair_samples, test)),
            "action_conditioning": evaluate_action_conditioning(test, predict, max_samples=max_samples // 2, seed=seed),
            "persistence": persistence,
            "generalisation": {
                "val_minFDE": val_fde,
                "test_minFDE": test_fde,
                "test_to_val": test_fde / val_fde if val_fde else float("nan"),
                "test_to_val_by_map": {m: v / val_fde for m, v in test_by_map.items()} if val_fde else {},
            },
            "seconds": time.perf_counter() - t,
        }
        d20 = persistence.get("drop_20", {}).get("minFDE_degradation", float("nan"))
        probes = card[name]["interaction"]
        near = card[name]["action_conditioning"].get("near_minFDE_change", float("nan"))
        card[name]["goals_met"] = {
            "probes_right_direction": bool(all(probes[p]["right_direction"] >= GOALS["probe_min_right_direction"]
                                               for p in probes if isinstance(probes[p], dict) and probes[p]["n"])),
            "braking_effect": bool(probes["lead_vehicle_braking"]["mean_effect_m"] > GOALS["braking_min_effect_m"]),
            "near_plan_response": bool(near <= GOALS["near_plan_max_minFDE_change"]),
            "persistence_drop_20": bool(d20 <= GOALS["persistence_drop_20_max_degradation"]),
            "generalisation": bool(card[name]["generalisation"]["test_to_val"] <= GOALS["generalisation_max_ratio"]),
        }
    return card
