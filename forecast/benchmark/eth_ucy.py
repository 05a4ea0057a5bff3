"""ETH/UCY leave-one-out benchmark under the standard protocol (see the data README).

For each scene (``eth``, ``hotel``, ``univ``, ``zara1``, ``zara2``): ingest ``<data_root>/<scene>``
into a store under the output folder (idempotent), train on that scene's ``train`` split with
``val`` for model selection, and score its ``test`` split:

* 8 observed steps, 12 predicted, 0.4 s per step;
* a window is one pedestrian at one t0 with all 20 steps (t0-7 .. t0+12) present; every t0
  (stride 1) of every pedestrian is scored exactly once;
* ADE / FDE in metres, best of 20 modes (the model predicts K = 20), per scene and averaged
  over the scenes (each scene weighs the same, as in the literature).

Constant velocity (the last observed step extrapolated, one sample) and an untrained *fan* of 20
constant-velocity rollouts (speed factors x heading offsets: what coverage alone buys) are scored
on the very same windows. Nothing is chosen on a test scene: the fan's factors are picked per
scene among ``fan`` candidates on that split's validation windows, and the model's validation
scores (``val``: the other scenes' val folders) are reported so that sizes and settings can be
compared on them. Published figures are never computed here: they live in ``PUBLISHED`` (copied from the
data README, with its sources) and are kept apart from measured numbers everywhere.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from forecast.benchmark.eth_ucy_windows import (
    SOURCE,
    FanConfig,
    Windows,
    choose_fan,
    collect_windows,
    constant_velocity_fan,
    constant_velocity_world,
    predict_windows,
    score,
    scored_scenes,
)
from forecast.config import from_dict, to_dict
from forecast.features.config import FeatureConfig
from forecast.features.dataset import select_scenarios
from forecast.training.config import TrainConfig

SCENES = ("eth", "hotel", "univ", "zara1", "zara2")
README = "shared/data/eth_ucy/README.md"

# The standard protocol. Fixed here; a config that asks for other values is rejected.
PROTOCOL = {
    "features.dt": 0.4,  # s per step
    "features.history_steps": 8,  # observed steps, t0 included (3.2 s)
    "features.future_steps": 12,  # predicted steps (4.8 s)
    "features.min_history_steps": 8,  # the pedestrian is present for the whole history ...
    "model.modes": 20,  # ... (and the whole future: full_future=True); best of 20
}
# Keys of the training config that the benchmark sets per scene.
RESERVED = ("out_dir", "data.store", "data.source", "data.scenario_prefix", "data.train_split", "data.val_split")


# ------------------------------------------------------------------------------------------------
# Published figures: copied from the data README, never measured here.
# ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Published:
    """One published row: ADE/FDE in metres; ``per_scene`` only where the source gives it."""

    method: str
    samples: int  # 1 = one sample; 20 = best of 20
    avg: tuple[float, float]
    per_scene: dict[str, tuple[float, float]] | None = None
    comparable: bool = True  # False: not on the same (leak-free) protocol; shown for reference only
    note: str = ""
    source: str = README


PUBLISHED: tuple[Published, ...] = (
    Published("Social-GAN", 20, (0.58, 1.18), note="its paper"),
    Published(
        "Trajectron++ (corrected)", 20, (0.32, 0.55),
        per_scene={"eth": (0.67, 1.18), "hotel": (0.18, 0.28), "univ": (0.30, 0.54), "zara1": (0.25, 0.41),
                   "zara2": (0.18, 0.32)},
        note="re-run after the velocity-leak fix (Trajectron-plus-plus issue #53); average 'about 0.32/0.55'",
    ),
    Published("Trajectron++ (paper)", 20, (0.19, 0.41), comparable=False,
              note="inflated by future leakage, not comparable (central-difference velocities; issues #26, #40, #53)"),
    Published("Constant velocity (Schoeller et al., corrected)", 1, (0.39, 0.83),
              note="'The Simpler the Better', corrected figures in the authors' repository README"),
    Published("Constant velocity, sampled headings (Schoeller et al.)", 20, (0.28, 0.56),
              note="'The Simpler the Better', corrected figures in the authors' repository README"),
    Published("Last-step extrapolation (README, these files)", 1, (0.53, 1.15),
              note="plain extrapolation of the last observed step, computed on these files: our CV's yardstick"),
)
CV_REFERENCE = PUBLISHED[-1]  # what our own constant velocity should land near (5-scene average)
CV_TOLERANCE = (0.05, 0.10)  # metres (ADE, FDE): farther than this means the windows differ


# ------------------------------------------------------------------------------------------------
# Configuration
# ------------------------------------------------------------------------------------------------


@dataclass
class BenchmarkConfig:
    data_root: str = "../shared/data/eth_ucy"  # relative paths resolve against the current directory
    scenes: list[str] = field(default_factory=lambda: list(SCENES))
    out_dir: str = "bench/results/eth_ucy"
    test_t0_stride: int = 1  # every window; the protocol
    val_t0_stride: int = 2  # validation windows (selection only; not part of the protocol)
    fan: FanConfig = field(default_factory=FanConfig)
    eval_batch_size: int = 32  # samples per forward pass when scoring
    mlflow_log: bool = False  # log the summary (metrics, JSON) as one MLflow run
    mlflow_experiment: str = "benchmark-eth-ucy"
    train: TrainConfig = field(default_factory=TrainConfig)  # per-scene training; protocol keys are set here


def load_config(path: str | Path | None, overrides: list[str] | None = None, **top: object) -> BenchmarkConfig:
    """YAML (+ dotted overrides, + top-level values such as ``out_dir``) -> checked ``BenchmarkConfig``."""
    from forecast.config import apply_overrides, load_yaml

    data = load_yaml(path) if path else {}
    data = apply_overrides(data, list(overrides or []))
    for k, v in top.items():
        if v is not None:
            data[k] = v
    return config_from_dict(data)


def config_from_dict(data: dict) -> BenchmarkConfig:
    data = copy.deepcopy(data)
    train = data.setdefault("train", {}) or {}
    data["train"] = train
    for key, value in PROTOCOL.items():
        given = _get(train, key)
        if given is not None and not isinstance(given, int | float):
            raise ValueError(f"benchmark config: train.{key}: got {given!r}, expected {type(value).__name__}")
        if given is not None and not math.isclose(float(given), float(value)):
            raise ValueError(f"benchmark config: train.{key}={given!r}, but the ETH/UCY protocol fixes it to {value!r}")
        _set(train, key, value)
    for key in RESERVED:
        if _get(train, key) is not None:
            raise ValueError(f"benchmark config: train.{key} is set by the benchmark per scene; remove it")
    cfg = from_dict(BenchmarkConfig, data)
    unknown = sorted(set(cfg.scenes) - set(SCENES))
    if unknown or not cfg.scenes:
        raise ValueError(f"benchmark config: unknown scene(s) {unknown or cfg.scenes}; known: {list(SCENES)}")
    if len(set(cfg.scenes)) != len(cfg.scenes):
        raise ValueError(f"benchmark config: scenes repeat: {cfg.scenes}")
    if cfg.test_t0_stride < 1 or cfg.val_t0_stride < 1:
        raise ValueError("benchmark config: test_t0_stride and val_t0_stride must be >= 1")
    cfg.fan.candidates()
    return cfg


def _get(d: dict, dotted: str):
    for part in dotted.split("."):
        if not isinstance(d, dict) or part not in d:
            return None
        d = d[part]
    return d


def _set(d: dict, dotted: str, value) -> None:
    *parents, last = dotted.split(".")
    for part in parents:
        d = d.setdefault(part, {})
    d[last] = value


def resolve_data_root(cfg: BenchmarkConfig) -> Path:
    root = Path(cfg.data_root).expanduser()
    root = root if root.is_absolute() else Path.cwd() / root
    if not root.is_dir():
        raise FileNotFoundError(f"ETH/UCY data_root {root} does not exist (config key data_root, relative to the "
                                f"current directory)")
    return root.resolve()


def scene_train_config(cfg: BenchmarkConfig, scene: str, store_path: Path, out_dir: Path) -> TrainConfig:
    """The training config of one scene: the shared settings plus store, prefix and output folder."""
    t = copy.deepcopy(cfg.train)
    t.data.store = str(store_path)
    t.data.source = SOURCE
    t.data.scenario_prefix = f"{SOURCE}:{scene}:"
    t.data.train_split, t.data.val_split = "train", "val"
    t.out_dir = str(out_dir)
    if t.mlflow.run_name is None:
        t.mlflow.run_name = f"eth_ucy-{scene}"
    return t.resolved()


def train_config_hash(t: TrainConfig) -> str:
    """Identifies what is trained (not where it is written): a changed config trains afresh."""
    d = to_dict(t)
    d.pop("out_dir", None)
    d.pop("mlflow", None)
    d["data"].pop("store", None)
    return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:10]


# ------------------------------------------------------------------------------------------------
# The run
# ------------------------------------------------------------------------------------------------


def _log(msg: str) -> None:
    print(f"[benchmark eth-ucy {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def ingest_scene(data_root: Path, scene: str, store, progress: bool = False) -> dict:
    from forecast.data.ingest import run_ingest
    from forecast.data.sources.eth_ucy import EthUcyAdapter

    folder = data_root / scene
    if not folder.is_dir():
        raise FileNotFoundError(f"scene folder {folder} does not exist")
    s = run_ingest(EthUcyAdapter(), folder, store, progress=progress)
    return {"units_written": s.units_written, "units_skipped": s.units_skipped, "rows_written": s.rows_written,
            "rows_quarantined": s.rows_quarantined, "files_quarantined": s.files_quarantined,
            "quarantine_reasons": s.quarantine_reasons}


def train_scene(tcfg: TrainConfig, progress: bool = False, retrain: bool = False) -> dict:
    """Train (or reuse a finished run with the same config; a killed run resumes from its checkpoint)."""
    from forecast.data.atomic import write_json_atomic
    from forecast.training.train import run_training

    out = Path(tcfg.out_dir)
    done = out / "benchmark_train.json"
    if done.exists() and (out / "model.pt").exists() and not retrain:
        info = json.loads(done.read_text())
        info["reused"] = True
        return info
    if retrain and out.exists():
        import shutil

        shutil.rmtree(out)
    resumed = (out / "checkpoints" / "last.ckpt").exists()
    t = time.perf_counter()
    result = run_training(tcfg, progress=progress)
    info = {"model": str(result.model_path), "mlflow_run_id": result.run_id, "global_step": result.global_step,
            "val_metrics": result.metrics, "train_time_s": time.perf_counter() - t, "resumed": resumed}
    write_json_atomic(info, done)
    info["reused"] = False
    return info


def evaluate_scene(store, scene: str, model_path: Path | None, features: FeatureConfig, t0_stride: int = 1,
                   batch_size: int = 32, fan: FanConfig | None = None, val_t0_stride: int = 2) -> tuple[dict, Windows]:
    """Score the model (if given), constant velocity and the CV fan on the scene's test windows.

    The fan is chosen on the split's validation windows; the model is also scored there (``val``),
    the numbers to compare settings on.
    """
    t = time.perf_counter()
    fan = fan or FanConfig()
    has_val = bool(select_scenarios(store, "val", SOURCE, f"{SOURCE}:{scene}:"))
    if has_val:  # without validation folders nothing may be chosen: no fan, no val scores
        val_scenes = scored_scenes(store, scene, features, val_t0_stride, split="val")
        val_windows = collect_windows(val_scenes)
        chosen, candidates = choose_fan(val_windows, features.future_steps, fan)
    scenes = scored_scenes(store, scene, features, t0_stride)
    windows = collect_windows(scenes)
    if not len(windows):
        raise ValueError(f"scene {scene}: no test windows with all {features.history_steps + features.future_steps} "
                         f"steps present")
    cv = constant_velocity_world(windows.hist, features.future_steps)
    out = {"test_windows": len(windows), "test_windows_per_file": windows.per_file(), "test_samples": len(scenes),
           "cv": score(cv, windows.future)}
    if has_val:
        fan_pred = constant_velocity_fan(windows.hist, features.future_steps, chosen["speeds"], chosen["headings_deg"])
        out["cv_fan"] = score(fan_pred, windows.future)
        out["fan_choice"] = {"speeds": chosen["speeds"], "headings_deg": chosen["headings_deg"], "chosen_on": "val",
                             "val_windows": len(val_windows), "candidates": candidates}
        out["val"] = {"windows": len(val_windows), "t0_stride": val_t0_stride,
                      "cv": score(constant_velocity_world(val_windows.hist, features.future_steps), val_windows.future),
                      "cv_fan": {k: chosen[k] for k in ("ADE", "FDE")}}
    if model_path is not None:
        from forecast.model.checkpoint import load_model

        loaded = load_model(model_path)
        _check_model_features(loaded.features, features)
        traj, prob = predict_windows(loaded.model, scenes, windows, batch_size)
        out["ours"] = score(traj, windows.future)  # best of K = 20
        out["ours_most_likely"] = score(traj, windows.future, prob=prob, k=1)
        out["modes"] = int(traj.shape[1])
        if has_val:
            vtraj, vprob = predict_windows(loaded.model, val_scenes, val_windows, batch_size)
            out["val"]["ours"] = score(vtraj, val_windows.future)
            out["val"]["ours_most_likely"] = score(vtraj, val_windows.future, prob=vprob, k=1)
    out["eval_time_s"] = time.perf_counter() - t
    return out, windows


def _check_model_features(model_f: FeatureConfig, f: FeatureConfig) -> None:
    for key in ("dt", "history_steps", "future_steps"):
        if not math.isclose(float(getattr(model_f, key)), float(getattr(f, key))):
            raise ValueError(f"model was trained with features.{key}={getattr(model_f, key)}, benchmark uses "
                             f"{getattr(f, key)}")


METHODS = ("ours", "ours_most_likely", "cv", "cv_fan")


def average(scenes: dict[str, dict], method: str) -> dict[str, float] | None:
    vals = [r[method] for r in scenes.values() if method in r]
    if not vals:
        return None
    return {m: float(np.mean([v[m] for v in vals])) for m in ("ADE", "FDE")}


def cv_sanity(result: dict) -> dict:
    """Our CV (5-scene average) against the README's last-step extrapolation on these files."""
    avg = result["average"].get("cv")
    ref = CV_REFERENCE.avg
    out = {"reference": CV_REFERENCE.method, "reference_ADE": ref[0], "reference_FDE": ref[1],
           "complete": result["average"]["complete"]}
    if avg is None:
        return out
    out["ADE"], out["FDE"] = avg["ADE"], avg["FDE"]
    out["dADE"], out["dFDE"] = avg["ADE"] - ref[0], avg["FDE"] - ref[1]
    out["within_tolerance"] = bool(abs(out["dADE"]) <= CV_TOLERANCE[0] and abs(out["dFDE"]) <= CV_TOLERANCE[1])
    return out


def run_benchmark(cfg: BenchmarkConfig, progress: bool = False, retrain: bool = False,
                  skip_train: bool = False) -> dict:
    """Run every configured scene and write ``<out_dir>/eth_ucy.json`` (and ``eth_ucy.txt``)."""
    import forecast
    from forecast.data.atomic import write_json_atomic, write_text_atomic
    from forecast.data.store import Store

    started = time.perf_counter()
    data_root = resolve_data_root(cfg)
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    store = Store(out / "store")
    if cfg.train.trainer.torch_threads:
        import torch

        torch.set_num_threads(cfg.train.trainer.torch_threads)
    result: dict = {
        "benchmark": "eth_ucy",
        "protocol": {"observed_steps": 8, "predicted_steps": 12, "dt_s": 0.4, "modes": 20,
                     "window": "one pedestrian at one t0, present on all 20 steps", "test_t0_stride": cfg.test_t0_stride,
                     "metrics": "ADE/FDE in metres; ours best of 20: per window the minimum over the 20 modes of "
                                "ADE and, separately, of FDE (as Trajectron++ evaluates); also the most likely mode; "
                                "CV one sample; averages weigh each scene equally"},
        "data_root": str(data_root),
        "scenes": {},
        "measured_note": "everything under 'scenes' and 'average' is measured by this run",
        "published": [asdict(p) for p in PUBLISHED],
        "published_note": f"copied from {README}; not measured here",
        "config": to_dict(cfg),
        "version": forecast.__version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    for scene in cfg.scenes:
        _log(f"{scene}: ingest {data_root / scene}")
        ingest = ingest_scene(data_root, scene, store, progress=progress)
        tcfg = scene_train_config(cfg, scene, store.path, out / scene / "train-pending")
        tcfg.out_dir = str(out / scene / f"train-{train_config_hash(tcfg)}")
        scene_result: dict = {"ingest": ingest, "train_dir": tcfg.out_dir}
        model_path = None
        if not skip_train:
            _log(f"{scene}: train -> {tcfg.out_dir}")
            train = train_scene(tcfg, progress=progress, retrain=retrain)
            model_path = Path(train["model"])
            scene_result["train"] = train
            _log(f"{scene}: trained in {train['train_time_s']:.0f} s ({train['global_step']} steps"
                 f"{', reused' if train['reused'] else ''})")
        ev, _ = evaluate_scene(store, scene, model_path, tcfg.features, cfg.test_t0_stride, cfg.eval_batch_size,
                               cfg.fan, cfg.val_t0_stride)
        scene_result.update(ev)
        result["scenes"][scene] = scene_result
        _log(f"{scene}: {ev['test_windows']} windows; " + "; ".join(
            f"{m} {ev[m]['ADE']:.3f}/{ev[m]['FDE']:.3f}" for m in METHODS if m in ev) + "; val: " + "; ".join(
            f"{m} {v['ADE']:.3f}/{v['FDE']:.3f}" for m, v in ev.get("val", {}).items() if isinstance(v, dict)))
        write_json_atomic(scene_result, out / scene / "result.json")
    result["average"] = {
        "scenes": list(result["scenes"]),
        "complete": set(result["scenes"]) == set(SCENES),
        **{m: a for m in METHODS if (a := average(result["scenes"], m)) is not None},
    }
    val_rows = {s: r["val"] for s, r in result["scenes"].items() if "val" in r}
    result["average_val"] = {m: a for m in METHODS if (a := average(val_rows, m)) is not None}
    result["cv_sanity"] = cv_sanity(result)
    result["total_time_s"] = time.perf_counter() - started
    json_path = out / "eth_ucy.json"
    write_json_atomic(result, json_path)
    table = format_table(result)
    write_text_atomic(table + "\n", out / "eth_ucy.txt")
    if cfg.mlflow_log:
        result["mlflow_run_id"] = log_to_mlflow(result, cfg, json_path, out / "eth_ucy.txt")
        write_json_atomic(result, json_path)
    return result


# ------------------------------------------------------------------------------------------------
# Reporting
# ------------------------------------------------------------------------------------------------


def _cell(v: tuple[float, float] | dict | None) -> str:
    if v is None:
        return "-"
    a, f = (v["ADE"], v["FDE"]) if isinstance(v, dict) else v
    return f"{a:.2f}/{f:.2f}"


def format_table(result: dict) -> str:
    """Measured rows, then the published rows (from the README), ADE/FDE in metres."""
    cols = list(SCENES)
    head = f"{'method':<56}{'samples':>8}" + "".join(f"{c:>12}" for c in cols) + f"{'avg':>12}"
    lines = ["ETH/UCY, 8 observed / 12 predicted steps at 0.4 s; ADE/FDE in metres", head, "-" * len(head)]

    def row(name, samples, per_scene: dict, avg) -> str:
        return f"{name:<56}{samples:>8}" + "".join(f"{_cell(per_scene.get(c)):>12}" for c in cols) + f"{_cell(avg):>12}"

    scenes, avg = result["scenes"], result["average"]
    lines.append("measured (this run)")
    rows = (("ours", "  ours (world model)", "20"), ("ours_most_likely", "  ours, most likely mode", "1"),
            ("cv", "  constant velocity (last step, ours)", "1"),
            ("cv_fan", "  CV fan, untrained (speeds x headings chosen on val)", "20"))
    for key, name, samples in rows:
        if key in avg:
            lines.append(row(name, samples, {s: r.get(key) for s, r in scenes.items()}, avg.get(key)))
    n = {s: r["test_windows"] for s, r in scenes.items()}
    lines.append(f"{'  test windows':<56}{'':>8}" + "".join(f"{n.get(c, '-'):>12}" for c in cols))
    if result.get("average_val"):
        lines.append("validation windows (the other scenes' val folders: where settings are compared)")
        for key, name, samples in rows:
            if key in result["average_val"]:
                lines.append(row(name, samples, {s: r.get("val", {}).get(key) for s, r in scenes.items()},
                                 result["average_val"].get(key)))
    lines.append(f"published (from {README}; not measured here)")
    for p in PUBLISHED:
        name = "  " + p.method + ("  [NOT COMPARABLE]" if not p.comparable else "")
        lines.append(row(name[:56], str(p.samples), p.per_scene or {}, p.avg))
    for p in PUBLISHED:
        if not p.comparable:
            lines.append(f"  [NOT COMPARABLE] {p.method}: {p.note}")
    if not avg["complete"]:
        lines.append(f"note: average over {', '.join(avg['scenes'])} only, not comparable with the 5-scene averages")
    s = result.get("cv_sanity", {})
    if "ADE" in s and s.get("complete"):
        verdict = "ok" if s["within_tolerance"] else "FAR OFF: check the window selection"
        lines.append(f"CV sanity: ours {s['ADE']:.3f}/{s['FDE']:.3f} vs README last-step extrapolation "
                     f"{s['reference_ADE']:.2f}/{s['reference_FDE']:.2f} ({verdict})")
    return "\n".join(lines)


def log_to_mlflow(result: dict, cfg: BenchmarkConfig, json_path: Path, table_path: Path) -> str:
    """One MLflow run with the measured numbers as metrics and the JSON and table as artifacts."""
    import mlflow

    from forecast.tracking_uri import tracking_uri

    client = mlflow.MlflowClient(tracking_uri=tracking_uri(cfg.train.mlflow.tracking_uri))
    exp = client.get_experiment_by_name(cfg.mlflow_experiment)
    exp_id = exp.experiment_id if exp else client.create_experiment(cfg.mlflow_experiment)
    run = client.create_run(exp_id, run_name="eth_ucy-" + "-".join(result["average"]["scenes"]))
    rid = run.info.run_id
    for scene, r in result["scenes"].items():
        for method in METHODS:
            for m, v in (r.get(method) or {}).items():
                client.log_metric(rid, f"{scene}/{method}_{m}", v)
        client.log_metric(rid, f"{scene}/test_windows", r["test_windows"])
        if "train" in r:
            client.log_metric(rid, f"{scene}/train_time_s", r["train"]["train_time_s"])
    for method in METHODS:
        for m, v in (result["average"].get(method) or {}).items():
            client.log_metric(rid, f"avg/{method}_{m}", v)
    client.log_param(rid, "scenes", ",".join(result["average"]["scenes"]))
    client.log_param(rid, "train_config_hash", train_config_hash(cfg.train))
    client.log_artifact(rid, str(json_path))
    client.log_artifact(rid, str(table_path))
    client.set_terminated(rid)
    return rid
