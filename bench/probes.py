"""The world-model card's interaction probes on one split for several models (issue 10 item 4).

Usage: python bench/probes.py --model M [M ...] --store STORE [--source sumo] [--split val]
                              [--samples 4000] [--t0-stride 10] [--pairs 200] [--json PATH]

``forecast evaluate`` scores the probes on the test split, which must not choose settings; this runs
the same pairs (``forecast.probes.interaction``: find_pairs, score_pairs) on a validation split, so that
a training option can be judged on them across seeds. One row per model and probe: pairs, share in the
right direction (goal >= 85 %), mean and median effect (m; braking goal > 0.3 m) and ties.
"""

from __future__ import annotations

import functools

import torch
from _common import models_on_split_parser, report

from forecast.data.store import Store
from forecast.features.dataset import SceneSet, select_scenarios
from forecast.model.predictor import TorchPredictor
from forecast.probes.interaction import find_pairs, pair_samples, score_pairs


def main() -> None:
    ap = models_on_split_parser(__doc__)
    ap.add_argument("--samples", type=int, default=4000, help="samples scanned for pairs (as the demo's evaluation)")
    ap.add_argument("--t0-stride", type=int, default=10)
    ap.add_argument("--pairs", type=int, default=200, help="at most this many pairs per probe")
    args = ap.parse_args()
    torch.set_num_threads(1)
    store = Store(args.store)
    infos = select_scenarios(store, args.split, args.source)
    rows, pairs, scenes = [], None, None
    for path in args.model:
        model = TorchPredictor(path)
        if scenes is None:  # the same pairs for every model (the models share the features)
            scenes = SceneSet(store, infos, model.features, args.t0_stride, args.samples, args.seed, full_future=True)
            pairs = find_pairs(scenes, max_pairs=args.pairs, seed=args.seed)
        elif model.features != scenes.cfg:
            raise SystemExit(f"{path}: its features differ from the first model's; probe them in separate runs")
        scored = score_pairs(pairs, model, functools.partial(pair_samples, scenes))
        for probe, r in scored.items():
            if isinstance(r, dict):
                rows.append({"model": path, "probe": probe, "pairs": r["n"], "right_direction": r["right_direction"],
                             "mean_effect_m": r["mean_effect_m"], "median_effect_m": r["median_effect_m"],
                             "ties": r["ties"]})
        print(f"{path}: " + ", ".join(f"{r['probe']} {r['right_direction']:.2f}" for r in rows if r["model"] == path),
              flush=True)
    report("probes", rows, {"store": args.store, "split": args.split, "source": args.source,
                            "samples": args.samples, "t0_stride": args.t0_stride}, args.json)


if __name__ == "__main__":
    main()
