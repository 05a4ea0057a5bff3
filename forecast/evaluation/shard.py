"""A large split evaluated in parts: ``forecast evaluate --shard i/N`` runs the loop on a share of the
scenarios and writes a part file; ``forecast evaluate --merge PART...`` computes metrics.json from
all parts, identical to one run over the whole split.

Scenarios go to shards by a hash of their id (no coordination between workers). Each part holds
the scored agents and every predictor's outputs (``npz``, no pickle) plus the settings that must
match. The merge puts the rows back in the order one run produces (the split's sample plan:
scenario, t0, group) before any metric is computed, so even float sums come out the same.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import fields
from pathlib import Path

import numpy as np

from forecast.config import to_dict
from forecast.data.atomic import atomic_write
from forecast.data.ingest import in_shard
from forecast.data.store import Store
from forecast.evaluation.collect import collect
from forecast.evaluation.config import EvalConfig
from forecast.evaluation.results import AgentTable, EvalResult, Outputs
from forecast.features.dataset import SceneSet, select_scenarios

PART_VERSION = 1
_TEXT = ("agent_class", "source", "map_id", "scenario_id")  # object columns, stored as unicode


def _settings(store: Store, models: list[str], cfg: EvalConfig, feats, baseline: str | None) -> dict:
    return {"version": PART_VERSION, "store": str(store.path), "models": list(models), "baseline": baseline,
            "config": {k: v for k, v in to_dict(cfg).items() if k != "mlflow"}, "features": to_dict(feats)}


def evaluate_part(store: Store | str | Path, models: list[str], cfg: EvalConfig, shard: tuple[int, int],
                  out_dir: str | Path, baseline: str | None = None, progress: bool = True,
                  log: Callable[[str], None] | None = None) -> Path:
    """Run every predictor on the scenarios of ``shard``; write ``out_dir/part-<i>-of-<N>.npz``."""
    from forecast.evaluation.evaluate import load_predictors

    log = log or (lambda msg: None)
    store = store if isinstance(store, Store) else Store(store)
    if cfg.max_samples is not None:
        raise ValueError("--shard evaluates every sample of its scenarios: --max-samples draws a subset of the "
                         "whole split, which no single part can draw; leave it out (or use --source/--split)")
    names, predictors, feats, champion = load_predictors(models, cfg, None, baseline, log)
    infos = [i for i in select_scenarios(store, cfg.split, cfg.source, cfg.scenario_prefix)
             if in_shard(i.scenario_id, shard)]
    path = Path(out_dir) / f"part-{shard[0]}-of-{shard[1]}.npz"
    arrays: dict[str, np.ndarray] = {}
    if infos:
        scenes = SceneSet(store, infos, feats, cfg.t0_stride, None, cfg.seed, full_future=True)
        log(f"shard {shard[0]}/{shard[1]}: {len(scenes)} samples from {len(infos)} scenarios")
        agents, outputs = collect(scenes, predictors, progress)
        for f in fields(AgentTable):
            v = getattr(agents, f.name)
            arrays[f"agents.{f.name}"] = v.astype(str) if f.name in _TEXT else v
        # the sample's focal agent locates it in the whole split's plan (sample indices are per part)
        arrays["agents.focal"] = np.array([scenes.index[int(k)].agents[0] for k in agents.sample], np.int64)
        for name, out in outputs.items():
            for f in fields(Outputs):
                arrays[f"out.{name}.{f.name}"] = getattr(out, f.name)
    meta = {**_settings(store, models, cfg, feats, baseline), "shard": list(shard), "predictors": list(predictors),
            "scenarios": len(infos), "names": names, "champion": champion}
    arrays["meta"] = np.array(json.dumps(meta, sort_keys=True))

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as fh:
            np.savez(fh, **arrays)

    atomic_write(path, write)
    return path


def _load(path: Path) -> tuple[dict, dict[str, np.ndarray]]:
    with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    return json.loads(str(arrays.pop("meta"))), arrays


def merge_parts(parts: list[str | Path], out_dir: str | Path | None = None, cfg: EvalConfig | None = None,
                progress: bool = True, log: Callable[[str], None] | None = None) -> EvalResult:
    """metrics.json (and report, MLflow) of the whole split from the parts of ``--shard i/N`` runs.

    Every part of 0..N-1 must be there once, from the same store, models and settings.
    """
    from forecast.evaluation.evaluate import evaluate

    log = log or (lambda msg: None)
    loaded = [(_load(Path(p)), Path(p)) for p in parts]
    if not loaded:
        raise ValueError("give the part files of every shard to merge")
    metas = [m for (m, _), _ in loaded]
    n = metas[0]["shard"][1]
    seen = sorted(m["shard"][0] for m in metas)
    if seen != list(range(n)) or any(m["shard"][1] != n for m in metas):
        raise ValueError(f"the parts cover shards {seen} of {n}: need each of 0..{n - 1} exactly once ({parts})")
    keys = ("version", "store", "models", "baseline", "config", "features", "predictors")
    for (m, _), p in loaded[1:]:
        diff = [k for k in keys if m[k] != metas[0][k]]
        if diff:
            raise ValueError(f"part {p} differs from {loaded[0][1]} in {', '.join(diff)}: parts of one evaluation "
                             "need the same store, models and settings")
    meta = metas[0]
    from forecast.config import from_dict

    base = cfg or EvalConfig()
    run_cfg = from_dict(EvalConfig, {**to_dict(base), **meta["config"], "mlflow": to_dict(base.mlflow)})
    from forecast.features.config import FeatureConfig

    feats = from_dict(FeatureConfig, meta["features"])
    store = Store(meta["store"])
    infos = select_scenarios(store, run_cfg.split, run_cfg.source, run_cfg.scenario_prefix)
    scenes = SceneSet(store, infos, feats, run_cfg.t0_stride, None, run_cfg.seed, full_future=True)
    where = {(infos[i.scenario].scenario_id, i.t0, int(i.agents[0])): k for k, i in enumerate(scenes.index)}
    full = [a for (_, a), _ in loaded if a]
    if not full:
        raise ValueError("no part holds a scored agent")
    cat = {k: np.concatenate([a[k] for a in full]) for k in full[0]}
    sample = np.array([where[(s, int(t), int(f))] for s, t, f in
                       zip(cat["agents.scenario_id"], cat["agents.t0"], cat["agents.focal"], strict=True)], np.int64)
    order = np.lexsort((cat["agents.row"], sample))  # the order one run over the split produces
    cols = {}
    for f in fields(AgentTable):
        v = cat[f"agents.{f.name}"][order]
        cols[f.name] = v.astype(object) if f.name in _TEXT else v
    cols["sample"] = sample[order]
    agents = AgentTable(**cols)
    outputs = {name: Outputs(**{f.name: cat[f"out.{name}.{f.name}"][order] for f in fields(Outputs)})
               for name in meta["predictors"]}
    log(f"merged {len(loaded)} parts: {len(agents)} scored agents from {len(infos)} scenarios")
    return evaluate(store, meta["models"], run_cfg, out_dir=out_dir, features=feats, progress=progress, log=log,
                    baseline=meta["baseline"], collected=(agents, outputs))
