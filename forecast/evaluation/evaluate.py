"""Offline scenario evaluation: run predictors over a split of the store and score them.

``evaluate(store, ["runs/x/model.pt"], EvalConfig(), out_dir=...)`` builds every sample of the split
once (``SceneSet`` with ``full_future=True``: each scored agent has its whole future), runs each
``--model`` and the physics baselines (``constant_velocity``, ``ctrv``) on the very same samples, keeps
the scored agents (``sample.target_mask``) and writes

* ``metrics.json`` (layout below), ``report.html`` (self-contained) and ``plots/*.png`` into ``out_dir``;
* an MLflow run (experiment ``forecast-eval``) with both files as artifacts and the headline metrics.

A *block* of metrics is ``{"n", "minADE@1", "minFDE@1", "minADE@6", "minFDE@6", "MR@6",
"brier-minFDE@6"}`` (means over agents; ``null`` where no agent counts). ``@k`` keeps the k most probable
modes; a model with fewer than 6 modes is scored on all of them for ``@6``. ``MR@6``: best endpoint
further than ``miss_threshold`` (2 m) from the truth. Displacements are in metres.

``metrics.json``::

    {
      "model": name of the first --model, "split", "store", "num_samples",
      "num_agents": {"vehicle": n, "pedestrian": n, "cyclist": n},
      "overall": block, "by_class": {class: block}, "by_horizon": {"1s": block, "2s": ..., "3s": ...},
      "by_class_horizon": {class: {"1s": block, ...}},
      "scene": {"offroad_rate", "overlap_rate", "calibration_ece", "calibration_ece_by_class": {class: ece},
                "offroad_rate_gt", "overlap_rate_gt"},
      "joint": {"n_scenes", "avgMinADE", "avgMinFDE", "actorMR"},   # modes shared by a sample's agents
      "slices": {family: {value: block}},        # families in forecast.evaluation.slices
      "baselines": {"constant_velocity": {same keys as a model}, "ctrv": {...}},
      "models": {name: {same keys as a model}},  # every --model, in order; the first is also at top level
      "by_tag": {tag: block + "MR@6_1s".."MR@6_3s" + "rare"},   # with a tag table (forecast.evaluation.by_tag)
      "champion": {"name", "spec", same keys as a model},      # with --baseline
      "comparison": {...},                       # with --baseline: forecast.evaluation.compare.comparison_section
      "suite": {...},                            # with --suite: forecast.evaluation.suite_run
      "config": {...}, "features": {...}          # how it was run
    }

Horizons are seconds converted with the FeatureConfig's ``dt`` (1 s = 10 steps at 10 Hz); horizons
longer than the future are left out. Scene metrics: ``offroad_rate`` is the share of *vehicles* whose
most likely endpoint lies outside the map's drivable area (agents without a map are skipped);
``overlap_rate`` the share of scored agents whose most likely future comes closer to another agent's
most likely future in the same sample (every agent of the sample, scored or context) than the sum of
their radii at the same step (discs: vehicle 2.0 m, cyclist 0.8 m, pedestrian 0.3 m, other 2.0 m);
``calibration_ece`` the expected calibration error of the mode probabilities. The ``_gt`` entries are
the same measures on the ground truth (the floor a perfect model would get with these disc sizes).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np

from forecast.config import to_dict
from forecast.data.atomic import atomic_write
from forecast.data.store import Store
from forecast.evaluation import slices as S
from forecast.evaluation.aggregate import agent_metrics, model_block, per_agent_metrics, summarise
from forecast.evaluation.by_tag import agent_keys, tag_blocks
from forecast.evaluation.collect import collect
from forecast.evaluation.compare import comparison_section
from forecast.evaluation.config import EvalConfig, MlflowEvalConfig, WorldModelCardConfig, config_from_dict
from forecast.evaluation.map_pass import LazyLayers, map_pass
from forecast.evaluation.predictors import load_predictor, resolve_model
from forecast.evaluation.report import build_report
from forecast.evaluation.results import BASELINES, CLASSES, METRIC_NAMES, AgentTable, EvalResult, Outputs
from forecast.evaluation.spill import process_tempdir
from forecast.evaluation.terminal import format_table
from forecast.evaluation.tracking import headline_metrics, log_mlflow
from forecast.features.config import FeatureConfig
from forecast.features.dataset import SceneSet, select_scenarios
from forecast.scenarios.table import tag_lookup

CHAMPION_PREFIX = "forecast-champion-"  # $TMPDIR/<prefix><pid>-*: the registered champion's download


def _unique(name: str, taken: set[str]) -> str:
    out, i = name, 2
    while out in taken or out in BASELINES:
        out = f"{name}#{i}"
        i += 1
    return out


def load_predictors(models: list[str], cfg: EvalConfig, features: FeatureConfig | None = None,
                    baseline: str | None = None, log: Callable[[str], None] | None = None):
    """``(names, predictors, feats, champion)``: every predictor an evaluation runs, and the sample settings."""
    log = log or (lambda msg: None)
    if not models:
        raise ValueError("give at least one --model (a model.pt, a bundle directory or a baseline name)")
    learned: dict[str, object] = {}
    names: list[str] = []
    for spec in models:
        if spec in BASELINES:
            names.append(spec)
            continue
        name, p = load_predictor(spec, cfg.features or FeatureConfig(), cfg.device)
        name = _unique(name, set(names))
        learned[name] = p
        names.append(name)
    first_learned = next(iter(learned.values()), None)
    feats = features or (first_learned.features if first_learned is not None else None) or cfg.features or FeatureConfig()
    predictors: dict[str, object] = {b: load_predictor(b, feats)[1] for b in BASELINES}
    predictors.update(learned)
    if len(set(names)) != len(names):
        raise ValueError(f"a model is given twice: {models}")
    champion = None
    if baseline is not None:
        champion = baseline
        if baseline not in BASELINES:
            champion = None
            # A registered champion is downloaded for loading only: the predictor holds the model in
            # memory, and a scheduled pipeline must not leave a copy in the temp folder on every run
            # (one a SIGKILL left is swept by a later evaluation).
            with process_tempdir(CHAMPION_PREFIX) as tmp:
                local = resolve_model(baseline, tmp, log, cfg.mlflow.tracking_uri)
                if local is not None:
                    cname, cp = load_predictor(local, cfg.features or FeatureConfig(), cfg.device)
                    champion = _unique(f"champion:{cname}", set(names))
                    predictors[champion] = cp
    return names, predictors, feats, champion


def evaluate(
    store: Store | str | Path,
    models: list[str],
    cfg: EvalConfig | None = None,
    out_dir: str | Path | None = None,
    features: FeatureConfig | None = None,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
    baseline: str | None = None,
    collected: tuple[AgentTable, dict[str, Outputs]] | None = None,
) -> EvalResult:
    """Evaluate ``models`` (model.pt paths, bundle directories or baseline names) and the baselines.

    ``features`` overrides the sample settings (otherwise: the first learned model's, else
    ``cfg.features``, else ``FeatureConfig()``). With ``out_dir``: writes metrics.json, report.html and
    plots there, and logs to MLflow when ``cfg.mlflow.enabled``. ``baseline``: the champion (model.pt,
    bundle, registered model ``models:/NAME@ALIAS`` or a baseline name) the first model is compared with
    (``metrics["comparison"]``). Per-tag metrics need the tag table (``forecast tag``).
    ``collected``: the scored agents and outputs of every predictor, already gathered (the parts of a
    sharded evaluation, merged by ``forecast.evaluation.shard``); the loop is then skipped.
    """
    cfg = cfg or EvalConfig()
    log = log or (lambda msg: None)
    names, predictors, feats, champion = load_predictors(models, cfg, features, baseline, log)
    store = store if isinstance(store, Store) else Store(store)
    if not store.exists():
        raise FileNotFoundError(f"no store at {store.path}")

    infos = select_scenarios(store, cfg.split, cfg.source, cfg.scenario_prefix)
    if not infos:
        raise ValueError(f"no scenarios of split {cfg.split!r} in store {store.path}"
                         + (f" (source {cfg.source})" if cfg.source else ""))
    scenes = SceneSet(store, infos, feats, cfg.t0_stride, cfg.max_samples, cfg.seed, full_future=True)
    log(f"{len(scenes)} samples from {len(infos)} scenarios of split {cfg.split}")
    agents, outputs = collect(scenes, predictors, progress) if collected is None else collected

    scored = list(dict.fromkeys(names + list(BASELINES) + ([champion] if champion else [])))
    # one map at a time (AV2 has a map per scenario): tags and off-road flags per agent, then dropped
    tags, offroad, offroad_gt = map_pass(agents, {n: outputs[n] for n in scored}, scenes.map_layers)
    layers = LazyLayers(scenes.map_layers)  # the report draws a few cases' maps
    masks = S.slice_masks(tags)
    blocks, per_agent, miss = {}, {}, {}
    for n in scored:  # one predictor's per-agent values at a time, read from the loop's arrays in chunks
        am = agent_metrics(outputs[n], agents, cfg, feats)
        blocks[n] = model_block(outputs[n], agents, cfg, masks, am, (offroad[n], offroad_gt))
        per_agent[n] = am.per
        miss[n] = {f"MR@6_{label}": per_h["MR@6"] for label, per_h in am.by_horizon.items()}
        del am
    scen_tags, track_id, store_t0 = {}, None, None
    table = tag_table(store, cfg, log)
    if table is not None:
        track_id, store_t0 = agent_keys(agents, scenes)
        scen_tags = tag_lookup(table, agents.scenario_id, track_id, store_t0)
        for n in blocks:
            blocks[n]["by_tag"] = tag_blocks(per_agent[n], miss[n], scen_tags, cfg.min_tag_count)

    first = names[0]
    card = None
    if cfg.world_model.enabled:
        card = world_model_section(store, cfg, feats, scenes, {first: predictors[first],
                                                               "constant_velocity": predictors["constant_velocity"]}, log)
    metrics = {
        "model": first,
        "split": cfg.split,
        "store": str(store.path),
        "num_samples": len(scenes),
        "num_scenarios": len(infos),
        **blocks[first],
        "baselines": {b: blocks[b] for b in BASELINES},
        "models": {n: blocks[n] for n in names},
        "config": {**to_dict(cfg), "models": list(models),
                   "mlflow": {k: v for k, v in to_dict(cfg.mlflow).items() if k != "tracking_uri"}},
        "features": to_dict(feats),
    }
    if card is not None:
        metrics["world_model"] = card
    regressions: list[int] = []
    if baseline is not None and champion is None:
        metrics["comparison"] = {"skipped": f"no registered model {baseline} yet", "champion_spec": baseline}
    if champion is not None:
        metrics["champion"] = {"name": champion, "spec": baseline, **blocks[champion]}
        cmp_masks = {"by_class": {c: agents.agent_class == c for c in CLASSES}}
        if scen_tags:
            cmp_masks["by_tag"] = scen_tags
        metrics["comparison"], regressions = comparison_section(
            first, champion, per_agent, agents.scenario_id, agents.t0 if store_t0 is None else store_t0, cmp_masks,
            cfg.compare.bootstrap, cfg.compare.level, cfg.compare.num_regressions, cfg.seed, track_id)
        metrics["comparison"]["champion_spec"] = baseline
        metrics["comparison"] = _json_safe(metrics["comparison"])
    if cfg.suite:
        from forecast.evaluation.suite_run import run_suite

        suite_preds = {n: predictors[n] for n in [first, *([champion] if champion else [])]}
        metrics["suite"] = run_suite(store, cfg.suite, suite_preds, feats, log)
    result = EvalResult(metrics, agents, outputs, names, scenes, None, per_agent=per_agent, tags=tags,
                        scenario_tags=scen_tags, track_id=track_id, store_t0=store_t0, champion=champion,
                        regressions=regressions)
    if out_dir is not None:
        write_outputs(result, Path(out_dir), cfg, layers)
        if cfg.mlflow.enabled:
            result.run_id = log_mlflow(result, cfg)
            log(f"mlflow run {result.run_id} (experiment {cfg.mlflow.experiment})")
    return result


def tag_table(store: Store, cfg: EvalConfig, log: Callable[[str], None]):
    """The tag table (``cfg.tags``, else the one beside the store), or None when there is none."""
    from forecast.scenarios.table import read_tags, tags_path

    path = Path(cfg.tags) if cfg.tags else tags_path(store)
    if not path.is_file():
        if cfg.tags:
            raise FileNotFoundError(f"no tag table at {path}")
        log(f"no tag table at {path}: per-tag metrics skipped (run `forecast tag --store {store.path}`)")
        return None
    from forecast.scenarios.table import read_meta, store_fingerprint

    made_from = (read_meta(path) or {}).get("fingerprint")
    if made_from is not None and made_from != store_fingerprint(store):
        # Its scenarios are not this store's (data added or re-ingested since): per-tag metrics, and the
        # gate's per-tag regression check, would quietly cover only part of the agents.
        raise ValueError(f"tag table {path} was made from another state of the store {store.path} (its data "
                         f"changed since): rerun `forecast tag --store {store.path}`")
    log(f"scenario tags: {path}")
    return read_tags(path)


def world_model_section(store: Store, cfg: EvalConfig, feats: FeatureConfig, scenes: SceneSet,
                        predictors: dict[str, object], log: Callable[[str], None]) -> dict | None:
    """The world-model card for the first model and constant velocity, JSON-safe (NaN -> null)."""
    from forecast.probes.card import world_model_card

    w = cfg.world_model
    val_infos = select_scenarios(store, w.val_split, cfg.source, cfg.scenario_prefix)
    if not val_infos:
        log(f"world-model card skipped: no scenarios of split {w.val_split!r}")
        return None
    val = SceneSet(store, val_infos, feats, cfg.t0_stride, cfg.max_samples, cfg.seed, full_future=True)
    log("world-model card: interaction probes, actions, persistence, generalisation")
    return _json_safe(world_model_card(predictors, val, scenes, w.max_samples, w.max_pairs, cfg.seed))


def _json_safe(obj):
    if isinstance(obj, dict):
        return {str(k): _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_json_safe(v) for v in obj]
    if isinstance(obj, float | np.floating):
        return float(obj) if np.isfinite(obj) else None
    if isinstance(obj, np.integer | np.bool_):
        return obj.item()
    return obj


def write_json(obj: dict, path: Path) -> None:
    text = json.dumps(obj, indent=2, allow_nan=False) + "\n"
    atomic_write(path, lambda tmp: tmp.write_text(text))


def write_outputs(result: EvalResult, out_dir: Path, cfg: EvalConfig, layers: dict[str, dict] | LazyLayers) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    result.out_dir = out_dir
    write_json(result.metrics, out_dir / "metrics.json")
    html = build_report(result, cfg, layers, plots_dir=out_dir / "plots")
    atomic_write(out_dir / "report.html", lambda tmp: tmp.write_text(html, encoding="utf-8"))



__all__ = [
    "BASELINES", "CLASSES", "METRIC_NAMES", "AgentTable", "EvalConfig", "EvalResult", "MlflowEvalConfig", "Outputs",
    "WorldModelCardConfig", "collect", "config_from_dict", "evaluate", "format_table", "headline_metrics",
    "load_predictor", "model_block", "per_agent_metrics", "summarise",
]
