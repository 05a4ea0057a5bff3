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
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from forecast import metrics as M
from forecast.config import to_dict
from forecast.data.schema import AgentType
from forecast.data.store import Store
from forecast.evaluation import slices as S
from forecast.features.config import FeatureConfig
from forecast.features.dataset import SceneSet, select_scenarios
from forecast.features.frames import to_world
from forecast.features.raster import rasterize_map_layers
from forecast.features.sample import Sample, build_sample

BASELINES = ("constant_velocity", "ctrv")
CLASSES = ("vehicle", "pedestrian", "cyclist")
METRIC_NAMES = ("minADE@1", "minFDE@1", "minADE@6", "minFDE@6", "MR@6", "brier-minFDE@6")
# Half sizes (discs, metres) for the overlap check, by AgentType value.
OVERLAP_RADIUS = {AgentType.VEHICLE: 2.0, AgentType.PEDESTRIAN: 0.3, AgentType.CYCLIST: 0.8, AgentType.OTHER: 2.0}


@dataclass
class MlflowEvalConfig:
    enabled: bool = True
    experiment: str = "forecast-eval"
    tracking_uri: str | None = None  # None: $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db here
    run_name: str | None = None


@dataclass
class WorldModelCardConfig:
    """The world-model card (issue: world-model behaviours): probes, actions, persistence, generalisation."""

    enabled: bool = True
    val_split: str = "val"  # generalisation compares the evaluated split with this one
    max_samples: int = 80  # samples per measurement (a seeded subset)
    max_pairs: int = 200  # probe pairs per probe type (the issue asks for >= 200 where the data allows)


@dataclass
class EvalConfig:
    """Settings of one evaluation (configs/eval/*.yaml); CLI flags override them."""

    split: str = "test"
    source: str | None = None  # only this source (sumo | av2 | eth_ucy)
    scenario_prefix: str | None = None
    t0_stride: int = 10  # steps between sample times
    max_samples: int | None = None  # a seeded random subset of the samples
    seed: int = 0  # subset and the random scene pictures
    miss_threshold: float = 2.0  # metres, MR@6
    horizons_s: list[float] = field(default_factory=lambda: [1.0, 2.0, 3.0])
    calibration_bins: int = 10
    num_worst: int = 4  # scene pictures of the highest-minFDE@6 agents
    num_random: int = 4  # and of random agents
    device: str = "cpu"  # torch device of model.pt predictors
    features: FeatureConfig | None = None  # sample settings when only baselines run (default FeatureConfig())
    mlflow: MlflowEvalConfig = field(default_factory=MlflowEvalConfig)
    world_model: WorldModelCardConfig = field(default_factory=WorldModelCardConfig)


# --------------------------------------------------------------------------------------------------
# predictors
# --------------------------------------------------------------------------------------------------


def is_bundle(path: Path) -> bool:
    return path.is_dir() and (path / "bundle.json").is_file()


def load_predictor(spec: str, features: FeatureConfig, device: str = "cpu"):
    """``spec`` -> ``(name, predictor)``: a baseline name, a ``model.pt`` file or an exported bundle directory.

    Every predictor has ``predict(sample) -> (traj [A, K, T, 2], prob [A, K])`` in the agent frame;
    learned ones also carry ``.features`` (the FeatureConfig their samples need).
    """
    from forecast.model.baselines import BaselinePredictor

    if spec in BASELINES:
        return spec, BaselinePredictor(spec, features.future_steps, features.dt)
    path = Path(spec)
    if is_bundle(path):
        p = BundleSamplePredictor(path)
        return p.name, p
    if path.is_file():
        from forecast.model.predictor import TorchPredictor

        try:
            p = TorchPredictor(path, device=device)
        except (FileNotFoundError, ValueError):
            raise
        except Exception as exc:  # torch raises many types for a file that is not a model.pt
            raise ValueError(f"cannot load model {spec!r} as a model.pt: {type(exc).__name__}: {exc}") from exc
        return p.name, p
    if path.is_dir():
        raise ValueError(f"model {spec!r} is a directory without bundle.json (expected a model.pt, an exported "
                         f"bundle directory or one of the baselines {', '.join(BASELINES)})")
    raise ValueError(f"unknown model {spec!r}: not a file, not a bundle directory, not a baseline "
                     f"(known baselines: {', '.join(BASELINES)})")


def bundle_features(path: Path) -> FeatureConfig:
    """The FeatureConfig an exported bundle was built with (``bundle.json``: ``sample.feature_config``)."""
    from forecast.config import from_dict
    from forecast.runtime.predictor import read_manifest

    return from_dict(FeatureConfig, read_manifest(path)["sample"]["feature_config"], where="bundle.json feature_config")


class BundleSamplePredictor:
    """An exported bundle run by the vehicle runtime (``forecast.runtime.Predictor``) on evaluation Samples.

    ``Predictor.predict`` starts from raw tracks and predicts every agent present at t0; evaluation
    already holds the Samples (built by the same ``build_sample``), so this adapter lets the runtime
    verify and load the bundle, then feeds its onnxruntime session with ``Predictor.inputs(sample)``.
    """

    def __init__(self, path: str | Path, variant: str = "fp32"):
        from forecast.runtime.predictor import Predictor

        self.path = Path(path)
        self.runtime = Predictor(self.path, variant=variant)  # checks every file's sha256
        self.features = self.runtime.features
        self.name = self.path.name

    def predict(self, sample: Sample, plan: np.ndarray | None = None,
                plan_mask: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """plan: [A, T_f, 2] agent-frame futures of the agents in ``plan_mask`` [A] (the action), or None."""
        if sample.num_agents > self.runtime.max_agents:
            raise ValueError(f"bundle {self.path} accepts at most {self.runtime.max_agents} agents per scene, "
                             f"a sample has {sample.num_agents}")
        names = self.runtime.output_names
        feed = self.runtime.inputs(sample)
        if plan is not None:
            feed["plan"] = np.ascontiguousarray(plan[None], dtype=np.float32)
            feed["plan_mask"] = np.ascontiguousarray(plan_mask[None], dtype=bool)
        out = dict(zip(names, self.runtime.session.run(names, feed), strict=True))
        return np.asarray(out["traj"])[0], np.asarray(out["prob"])[0]


class _SampleSource:
    """The samples of a SceneSet, rebuilt for predictors whose FeatureConfig differs from the set's
    (same agents, same t0; only history length / raster settings may differ)."""

    def __init__(self, scenes: SceneSet):
        self.scenes = scenes
        self._rasters: dict[tuple, dict] = {}

    def check(self, name: str, cfg: FeatureConfig) -> None:
        base = self.scenes.cfg
        if abs(cfg.dt - base.dt) > 1e-9 or cfg.future_steps != base.future_steps:
            raise ValueError(
                f"model {name!r} predicts {cfg.future_steps} steps at dt={cfg.dt:g} s but the evaluation samples have "
                f"{base.future_steps} steps at dt={base.dt:g} s: models compared side by side need the same future"
            )

    def sample_for(self, k: int, cfg: FeatureConfig | None, base: Sample) -> Sample:
        if cfg is None or to_dict(cfg) == to_dict(self.scenes.cfg):
            return base
        res = cfg.raster.resolution
        rasters = self._rasters.setdefault((res,), {})
        idx = self.scenes.index[k]
        info = self.scenes.infos[idx.scenario]
        raster = None
        if info.map_id:
            if info.map_id not in rasters:
                rasters[info.map_id] = rasterize_map_layers(self.scenes.map_layers(info.map_id), res)
            raster = rasters[info.map_id]
        s = build_sample(self.scenes.tracks[idx.scenario], idx.t0, cfg, raster, idx.agents, idx.agents[0],
                         scenario_id=info.scenario_id)
        s.target_mask &= idx.scored
        return s


# --------------------------------------------------------------------------------------------------
# the loop
# --------------------------------------------------------------------------------------------------


@dataclass
class AgentTable:
    """The scored agents of the evaluation, ``N`` rows, shared by every predictor."""

    gt: np.ndarray  # [N, T, 2] float64, agent frame at t0
    valid: np.ndarray  # [N, T] bool
    agent_type: np.ndarray  # [N] int64, AgentType
    agent_class: np.ndarray  # [N] str label
    source: np.ndarray  # [N] str
    map_id: np.ndarray  # [N] str ("" without a map)
    scenario_id: np.ndarray  # [N] str
    t0: np.ndarray  # [N] int
    speed: np.ndarray  # [N] float64, m/s at t0
    origin: np.ndarray  # [N, 2] float64, world position at t0
    heading: np.ndarray  # [N] float64, world heading at t0
    gt_end_world: np.ndarray  # [N, 2] float64, world frame
    gt_overlap: np.ndarray  # [N] float 0/1, ground-truth futures overlap (reference)
    sample: np.ndarray  # [N] int, index into the SceneSet
    row: np.ndarray  # [N] int, the agent's row in that sample

    def __len__(self) -> int:
        return len(self.agent_type)


@dataclass
class Outputs:
    """One predictor's outputs on the rows of the AgentTable."""

    pred: np.ndarray  # [N, K, T, 2] float32, agent frame
    prob: np.ndarray  # [N, K] float32
    end_world: np.ndarray  # [N, 2] float64, most likely mode's endpoint, world frame
    overlap: np.ndarray  # [N] float 0/1


def _radius(agent_type: np.ndarray) -> np.ndarray:
    return np.array([OVERLAP_RADIUS.get(AgentType(int(t)), 2.0) for t in agent_type], dtype=np.float64)


def _most_likely(traj: np.ndarray, prob: np.ndarray) -> np.ndarray:
    best = np.argmax(prob, axis=1)
    return traj[np.arange(len(traj)), best]


def collect(scenes: SceneSet, predictors: dict[str, object], progress: bool = True) -> tuple[AgentTable, dict[str, Outputs]]:
    """Run every predictor on every sample of ``scenes``; keep the scored agents."""
    from tqdm.auto import tqdm

    source = _SampleSource(scenes)
    feats: dict[str, FeatureConfig | None] = {}
    for name, p in predictors.items():
        cfg = getattr(p, "features", None)
        if cfg is not None:
            source.check(name, cfg)
        feats[name] = cfg
    cols: dict[str, list] = {k: [] for k in ("gt", "valid", "agent_type", "source", "map_id", "scenario_id", "t0", "speed",
                                             "origin", "heading", "gt_end", "gt_overlap", "sample", "row")}
    outs: dict[str, dict[str, list]] = {n: {"pred": [], "prob": [], "end": [], "overlap": []} for n in predictors}
    tf = scenes.cfg.future_steps
    bar = tqdm(range(len(scenes)), desc="evaluate", unit="sample", disable=not progress, file=sys.stderr)
    for k in bar:
        s = scenes.sample(k)
        sel = np.flatnonzero(s.target_mask)
        if len(sel) == 0:
            continue
        info = scenes.infos[scenes.index[k].scenario]
        radius = _radius(s.agent_type)
        assert s.future is not None and s.future_mask is not None
        gt_world = to_world(s.future.astype(np.float64), s.origin, s.heading)
        cols["gt"].append(s.future[sel].astype(np.float64))
        cols["valid"].append(s.future_mask[sel])
        cols["agent_type"].append(s.agent_type[sel])
        cols["source"] += [info.source] * len(sel)
        cols["map_id"] += [info.map_id or ""] * len(sel)
        cols["scenario_id"] += [info.scenario_id] * len(sel)
        cols["t0"] += [s.t0] * len(sel)
        cols["speed"].append(np.hypot(s.hist[sel, -1, 2], s.hist[sel, -1, 3]).astype(np.float64))
        cols["origin"].append(s.origin[sel])
        cols["heading"].append(s.heading[sel])
        last = s.future_mask.shape[1] - 1 - np.argmax(s.future_mask[:, ::-1], axis=1)
        cols["gt_end"].append(gt_world[sel, last[sel]])
        cols["gt_overlap"].append(M.overlap_rate(gt_world, radius, valid=s.future_mask)[sel])
        cols["sample"] += [k] * len(sel)
        cols["row"].append(sel)
        for name, p in predictors.items():
            traj, prob = p.predict(source.sample_for(k, feats[name], s))
            traj, prob = np.asarray(traj, dtype=np.float32), np.asarray(prob, dtype=np.float32)
            if traj.ndim != 4 or traj.shape[0] != s.num_agents or traj.shape[2] != tf or prob.shape != traj.shape[:2]:
                raise ValueError(f"predictor {name!r} returned traj {traj.shape} / prob {prob.shape}; expected "
                                 f"[{s.num_agents}, K, {tf}, 2] / [{s.num_agents}, K]")
            best_world = to_world(_most_likely(traj, prob).astype(np.float64), s.origin, s.heading)  # [A, T, 2]
            o = outs[name]
            o["pred"].append(traj[sel])
            o["prob"].append(prob[sel])
            o["end"].append(best_world[sel, -1])
            o["overlap"].append(M.overlap_rate(best_world, radius)[sel])
    if not cols["gt"]:
        raise ValueError(f"no scored agent in the {len(scenes)} samples (each needs its whole future of "
                         f"{tf} steps and {scenes.cfg.min_history_steps} history steps)")
    cat = np.concatenate
    atype = cat(cols["agent_type"]).astype(np.int64)
    agents = AgentTable(
        gt=cat(cols["gt"]), valid=cat(cols["valid"]), agent_type=atype,
        agent_class=np.array([AgentType(int(t)).label for t in atype], dtype=object),
        source=np.array(cols["source"], dtype=object), map_id=np.array(cols["map_id"], dtype=object),
        scenario_id=np.array(cols["scenario_id"], dtype=object), t0=np.array(cols["t0"], dtype=np.int64),
        speed=cat(cols["speed"]), origin=cat(cols["origin"]).astype(np.float64), heading=cat(cols["heading"]).astype(np.float64),
        gt_end_world=cat(cols["gt_end"]), gt_overlap=cat(cols["gt_overlap"]),
        sample=np.array(cols["sample"], dtype=np.int64), row=cat(cols["row"]).astype(np.int64),
    )
    outputs = {}
    for name, o in outs.items():
        ks = {p.shape[1] for p in o["pred"]}
        if len(ks) > 1:
            raise ValueError(f"predictor {name!r} returned a varying number of modes: {sorted(ks)}")
        outputs[name] = Outputs(cat(o["pred"]), cat(o["prob"]), cat(o["end"]), cat(o["overlap"]))
    return agents, outputs


# --------------------------------------------------------------------------------------------------
# metrics
# --------------------------------------------------------------------------------------------------


def _num(x: float) -> float | None:
    x = float(x)
    return None if math.isnan(x) or math.isinf(x) else x


def per_agent_metrics(pred: np.ndarray, gt: np.ndarray, prob: np.ndarray, valid: np.ndarray | None = None,
                      miss_threshold: float = 2.0) -> dict[str, np.ndarray]:
    """The six metrics per agent ``[N]`` (``@6`` uses all modes when K < 6)."""
    k6 = min(6, pred.shape[1])
    return {
        "minADE@1": M.min_ade(pred, gt, prob, k=1, valid=valid),
        "minFDE@1": M.min_fde(pred, gt, prob, k=1, valid=valid),
        "minADE@6": M.min_ade(pred, gt, prob, k=k6, valid=valid),
        "minFDE@6": M.min_fde(pred, gt, prob, k=k6, valid=valid),
        "MR@6": M.miss_rate(pred, gt, prob, k=k6, threshold=miss_threshold, valid=valid),
        "brier-minFDE@6": M.brier_min_fde(pred, gt, prob, k=k6, valid=valid),
    }


def summarise(per_agent: dict[str, np.ndarray], mask: np.ndarray | None = None) -> dict:
    """A block: ``n`` and the mean of each metric over ``mask`` (``None`` where empty)."""
    n = len(next(iter(per_agent.values())))
    m = np.ones(n, dtype=bool) if mask is None else mask
    out: dict = {"n": int(m.sum())}
    for key in METRIC_NAMES:
        out[key] = _num(M.aggregate(per_agent[key], m))
    return out


def horizons(cfg: EvalConfig, features: FeatureConfig) -> dict[str, int]:
    """``{"1s": 10, ...}``: horizon labels and their step counts that fit in the future."""
    out = {}
    for h in cfg.horizons_s:
        steps = int(round(h / features.dt))
        if 1 <= steps <= features.future_steps:
            out[f"{h:g}s"] = steps
    return out


def _drivable(layers: dict | None):
    if not layers or not layers.get("drivable_area"):
        return None
    import shapely

    return shapely.union_all(layers["drivable_area"])


def offroad_flags(end_world: np.ndarray, agents: AgentTable, drivable: dict[str, object]) -> np.ndarray:
    """``[N]`` float: 1.0 where a vehicle's endpoint is off the drivable area, 0.0 on it, NaN otherwise."""
    out = np.full(len(agents), np.nan)
    vehicle = agents.agent_type == int(AgentType.VEHICLE)
    for map_id, area in drivable.items():
        if area is None:
            continue
        sel = vehicle & (agents.map_id == map_id)
        if sel.any():
            out[sel] = M.offroad(end_world[sel], area).astype(np.float64)
    return out


def model_block(out: Outputs, agents: AgentTable, cfg: EvalConfig, features: FeatureConfig,
                drivable: dict[str, object], masks: dict[str, dict[str, np.ndarray]]) -> dict:
    """Every metric of one predictor (the per-model part of metrics.json)."""
    per = per_agent_metrics(out.pred, agents.gt, out.prob, agents.valid, cfg.miss_threshold)
    by_class = {c: summarise(per, agents.agent_class == c) for c in CLASSES}
    by_horizon, by_class_horizon = {}, {c: {} for c in CLASSES}
    for label, steps in horizons(cfg, features).items():
        per_h = per_agent_metrics(*_truncate(out, agents, steps), cfg.miss_threshold)
        by_horizon[label] = summarise(per_h)
        for c in CLASSES:
            by_class_horizon[c][label] = summarise(per_h, agents.agent_class == c)
    ece = M.expected_calibration_error(out.prob, out.pred, agents.gt, agents.valid, bins=cfg.calibration_bins)
    ece_by_class = {c: _num(M.expected_calibration_error(out.prob[sel], out.pred[sel], agents.gt[sel], agents.valid[sel],
                                                         bins=cfg.calibration_bins)) if sel.any() else None
                    for c in CLASSES for sel in [agents.agent_class == c]}
    scene = {
        "offroad_rate": _num(M.aggregate(offroad_flags(out.end_world, agents, drivable))),
        "overlap_rate": _num(M.aggregate(out.overlap)),
        "calibration_ece": _num(ece),
        "calibration_ece_by_class": ece_by_class,
        "offroad_rate_gt": _num(M.aggregate(offroad_flags(agents.gt_end_world, agents, drivable))),
        "overlap_rate_gt": _num(M.aggregate(agents.gt_overlap)),
    }
    return {
        "num_agents": {c: int((agents.agent_class == c).sum()) for c in CLASSES},
        "num_modes": int(out.pred.shape[1]),
        "overall": summarise(per),
        "by_class": by_class,
        "by_horizon": by_horizon,
        "by_class_horizon": by_class_horizon,
        "scene": scene,
        # the modes of all agents of a sample as joint futures (AV2 multi-agent: avgMinADE/FDE, actorMR)
        "joint": M.summarise_joint(M.joint_metrics(out.pred, agents.gt, agents.sample, agents.valid, cfg.miss_threshold)),
        "slices": {fam: {v: summarise(per, m) for v, m in vals.items()} for fam, vals in masks.items()},
    }


def _truncate(out: Outputs, agents: AgentTable, steps: int):
    pred, gt, valid = M.truncate_horizon(out.pred, agents.gt, agents.valid, steps)
    return pred, gt, out.prob, valid


# --------------------------------------------------------------------------------------------------
# driver
# --------------------------------------------------------------------------------------------------


@dataclass
class EvalResult:
    metrics: dict  # what metrics.json holds
    agents: AgentTable
    outputs: dict[str, Outputs]  # by predictor name: the models and the baselines
    model_names: list[str]
    scenes: SceneSet
    out_dir: Path | None = None
    run_id: str | None = None
    per_agent: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)  # by predictor: metric -> [N]
    tags: dict[str, np.ndarray] = field(default_factory=dict)  # slice family -> tag [N]


def _unique(name: str, taken: set[str]) -> str:
    out, i = name, 2
    while out in taken or out in BASELINES:
        out = f"{name}#{i}"
        i += 1
    return out


def evaluate(
    store: Store | str | Path,
    models: list[str],
    cfg: EvalConfig | None = None,
    out_dir: str | Path | None = None,
    features: FeatureConfig | None = None,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
) -> EvalResult:
    """Evaluate ``models`` (model.pt paths, bundle directories or baseline names) and the baselines.

    ``features`` overrides the sample settings (otherwise: the first learned model's, else
    ``cfg.features``, else ``FeatureConfig()``). With ``out_dir``: writes metrics.json, report.html and
    plots there, and logs to MLflow when ``cfg.mlflow.enabled``.
    """
    cfg = cfg or EvalConfig()
    log = log or (lambda msg: None)
    if not models:
        raise ValueError("give at least one --model (a model.pt, a bundle directory or a baseline name)")
    store = store if isinstance(store, Store) else Store(store)
    if not store.exists():
        raise FileNotFoundError(f"no store at {store.path}")
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

    infos = select_scenarios(store, cfg.split, cfg.source, cfg.scenario_prefix)
    if not infos:
        raise ValueError(f"no scenarios of split {cfg.split!r} in store {store.path}"
                         + (f" (source {cfg.source})" if cfg.source else ""))
    scenes = SceneSet(store, infos, feats, cfg.t0_stride, cfg.max_samples, cfg.seed, full_future=True)
    log(f"{len(scenes)} samples from {len(infos)} scenarios of split {cfg.split}")
    agents, outputs = collect(scenes, predictors, progress)

    map_ids = sorted({m for m in agents.map_id if m})
    layers = {m: scenes.map_layers(m) for m in map_ids}
    drivable = {m: _drivable(layers[m]) for m in map_ids}
    tags = S.tag_agents(agents.origin, agents.speed, agents.agent_class, agents.source, agents.map_id, layers)
    masks = S.slice_masks(tags)
    blocks = {n: model_block(outputs[n], agents, cfg, feats, drivable, masks) for n in dict.fromkeys(names + list(BASELINES))}

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
    result = EvalResult(metrics, agents, outputs, names, scenes, None,
                        per_agent={n: per_agent_metrics(outputs[n].pred, agents.gt, outputs[n].prob, agents.valid,
                                                        cfg.miss_threshold) for n in blocks},
                        tags=tags)
    if out_dir is not None:
        write_outputs(result, Path(out_dir), cfg, layers)
        if cfg.mlflow.enabled:
            result.run_id = log_mlflow(result, cfg)
            log(f"mlflow run {result.run_id} (experiment {cfg.mlflow.experiment})")
    return result


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
    calls = {name: p.predict for name, p in predictors.items()}  # predict(sample, plan=None, plan_mask=None)
    log("world-model card: interaction probes, actions, persistence, generalisation")
    return _json_safe(world_model_card(calls, val, scenes, w.max_samples, w.max_pairs, cfg.seed))


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
    from forecast.data.atomic import atomic_write

    text = json.dumps(obj, indent=2, allow_nan=False) + "\n"
    atomic_write(path, lambda tmp: tmp.write_text(text))


def write_outputs(result: EvalResult, out_dir: Path, cfg: EvalConfig, layers: dict[str, dict]) -> None:
    from forecast.evaluation.report import build_report

    out_dir.mkdir(parents=True, exist_ok=True)
    result.out_dir = out_dir
    write_json(result.metrics, out_dir / "metrics.json")
    html = build_report(result, cfg, layers, plots_dir=out_dir / "plots")
    from forecast.data.atomic import atomic_write

    atomic_write(out_dir / "report.html", lambda tmp: tmp.write_text(html, encoding="utf-8"))


# --------------------------------------------------------------------------------------------------
# MLflow and the terminal
# --------------------------------------------------------------------------------------------------


def mlflow_name(key: str) -> str:
    """MLflow metric names allow no ``@``: ``minFDE@6`` -> ``minFDE_6``."""
    return key.replace("@", "_").replace("#", "_")


def headline_metrics(metrics: dict) -> dict[str, float]:
    """Flattened metrics for MLflow: ``test/minFDE_6``, ``test/vehicle/minFDE_6``, ``test/2s/minFDE_6``,
    ``test/scene/offroad_rate``, ``test/baseline/ctrv/minFDE_6``, ``test/model/<name>/minFDE_6``."""
    split = metrics["split"]
    out: dict[str, float] = {}

    def put(prefix: str, block: dict) -> None:
        for k, v in block.items():
            if v is not None and not isinstance(v, dict):
                out[mlflow_name(f"{prefix}/{k}")] = float(v)

    put(split, metrics["overall"])
    for c, b in metrics["by_class"].items():
        put(f"{split}/{c}", b)
    for h, b in metrics["by_horizon"].items():
        put(f"{split}/{h}", b)
    put(f"{split}/scene", metrics["scene"])
    put(f"{split}/joint", metrics.get("joint", {}))
    for name, blk in metrics["baselines"].items():
        put(f"{split}/baseline/{name}", blk["overall"])
    for name, blk in list(metrics["models"].items())[1:]:
        put(f"{split}/model/{name}", blk["overall"])
    return out


def log_mlflow(result: EvalResult, cfg: EvalConfig) -> str:
    """Log params, headline metrics and the two files to a new run; returns its id.

    Uses an explicit client, not the fluent API: ``mlflow.set_tracking_uri`` would change the
    process's ``$MLFLOW_TRACKING_URI`` for every later step (e.g. make an export register itself).
    """
    import warnings

    from mlflow import MlflowClient
    from mlflow.entities import Metric, Param

    from forecast.training.train import tracking_uri

    warnings.filterwarnings("ignore", ".*MLflow Model Registry.*")
    client = MlflowClient(tracking_uri=tracking_uri(cfg.mlflow.tracking_uri))
    exp = client.get_experiment_by_name(cfg.mlflow.experiment)
    exp_id = exp.experiment_id if exp else client.create_experiment(cfg.mlflow.experiment)
    m = result.metrics
    run_name = cfg.mlflow.run_name or f"eval-{'+'.join(result.model_names)}-{cfg.split}"
    run = client.create_run(exp_id, run_name=run_name[:250])
    rid = run.info.run_id
    try:
        params = {
            "models": ",".join(m["config"]["models"])[:500], "split": cfg.split, "store": m["store"][:500],
            "num_samples": m["num_samples"], "t0_stride": cfg.t0_stride, "max_samples": cfg.max_samples,
            "seed": cfg.seed, "history_steps": m["features"]["history_steps"],
            "future_steps": m["features"]["future_steps"], "dt": m["features"]["dt"],
        }
        now = int(time.time() * 1000)
        client.log_batch(rid, metrics=[Metric(k, float(v), now, 0) for k, v in headline_metrics(m).items()],
                         params=[Param(k, str(v)) for k, v in params.items()])
        assert result.out_dir is not None
        client.log_artifact(rid, str(result.out_dir / "metrics.json"))
        client.log_artifact(rid, str(result.out_dir / "report.html"))
        client.set_terminated(rid, "FINISHED")
    except Exception:
        client.set_terminated(rid, "FAILED")
        raise
    return rid


def _fmt(v: float | None, width: int = 10) -> str:
    return f"{'-':>{width}}" if v is None else f"{v:>{width}.3f}"


def format_table(metrics: dict) -> str:
    """Terminal table: rows model(s) and baselines; columns minADE@6, minFDE@6, MR@6, minFDE@1, brier; per class."""
    cols = ("minADE@6", "minFDE@6", "MR@6", "minFDE@1", "brier-minFDE@6")
    heads = ("minADE@6", "minFDE@6", "MR@6", "minFDE@1", "brier")
    rows = [(n, b) for n, b in metrics["models"].items()]
    rows += [(f"{n} (baseline)", b) for n, b in metrics["baselines"].items() if n not in metrics["models"]]
    width = max(24, *(len(n) + 4 for n, _ in rows))
    lines = [f"{'':<{width}}{'n':>7}" + "".join(f"{h:>10}" for h in heads)]
    for group in ("overall", *CLASSES):
        lines.append(group)
        for name, blk in rows:
            b = blk["overall"] if group == "overall" else blk["by_class"][group]
            lines.append(f"  {name:<{width - 2}}{b['n']:>7}" + "".join(_fmt(b[c]) for c in cols))
    scene = [(n, b["scene"]) for n, b in rows]
    lines.append("scene")
    lines.append(f"  {'':<{width - 2}}{'':>7}{'offroad':>10}{'overlap':>10}{'ECE':>10}")
    for name, sc in scene:
        lines.append(f"  {name:<{width - 2}}{'':>7}" + _fmt(sc["offroad_rate"]) + _fmt(sc["overlap_rate"])
                     + _fmt(sc["calibration_ece"]))
    return "\n".join(lines)


def config_from_dict(data: dict) -> EvalConfig:
    from forecast.config import from_dict

    return from_dict(EvalConfig, data)


__all__ = [
    "BASELINES", "CLASSES", "METRIC_NAMES", "AgentTable", "EvalConfig", "EvalResult", "MlflowEvalConfig", "Outputs",
    "collect", "config_from_dict", "evaluate", "format_table", "headline_metrics", "load_predictor", "model_block",
    "per_agent_metrics", "summarise",
]
