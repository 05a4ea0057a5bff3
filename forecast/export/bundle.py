"""The vehicle bundle: ``model.onnx`` (+ ``model_fp16.onnx``) and ``bundle.json``, which says how to feed it.

Layout of a bundle directory::

    model.onnx          fp32 graph, one scene (B=1), 1..max_agents agents
    model_fp16.onnx     optional: fp16 compute, float32 inputs and outputs
    model_int8.onnx     optional: int8 dynamically quantised MatMul/Gemm weights (accuracy cost: docs/measurements.md)
    *.ort.onnx          each variant with onnxruntime's graph optimisations applied (tied to its version)
    bundle.json         names, shapes, dtypes, units and frames, sample-building settings,
                        model version, training run id, sha256 of every other file
    registration.json   optional, written after MLflow registration; NOT part of the hashed bundle

The directory is built beside ``out_dir`` and moved into place when complete, so a reader
never sees half a bundle. ``bundle.json`` is never rewritten after that (its hash is stable).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import forecast
from forecast.config import to_dict
from forecast.data.atomic import default_mode, open_directory, sha256_file, write_json_atomic
from forecast.data.schema import TARGET_TYPES, AgentType
from forecast.features.config import HIST_FEATURES, FeatureConfig
from forecast.pipeline.signals import deferred
from forecast.runtime.predictor import BUNDLE_FILE, BUNDLE_FORMAT, BUNDLE_FORMAT_VERSION, REGISTRATION_FILE
from forecast.tracking_uri import tracking_uri as resolve_uri

MODEL_FILE = "model.onnx"
MODEL_FP16_FILE = "model_fp16.onnx"
MODEL_INT8_FILE = "model_int8.onnx"
ORT_OPTIMIZED_SUFFIX = ".ort.onnx"  # model.onnx -> model.ort.onnx: onnxruntime's optimised graph of a variant
DEFAULT_REGISTERED_NAME = "forecast-world-model"
DEFAULT_EXPORT_EXPERIMENT = "forecast-export"


def input_spec(features: FeatureConfig, model_cfg, max_agents: int) -> list[dict]:
    """Graph inputs, in order (``forecast.model.batch.MODEL_INPUT_NAMES``). ``A`` is the agent count."""
    th, tf, s = features.history_steps, model_cfg.future_steps, features.raster.size
    c = len(features.raster.channels)
    agent_frame = "each agent's own frame at t0: origin at its t0 position, +x along its t0 heading"
    return [
        {"name": "hist", "shape": [1, "A", th, len(HIST_FEATURES)], "dtype": "float32", "features": list(HIST_FEATURES),
         "units": {"x": "m", "y": "m", "vx": "m/s", "vy": "m/s", "cos_dh": "1", "sin_dh": "1", "valid": "0/1"},
         "frame": agent_frame, "time": f"{th} steps of dt ending at t0 (last index = t0)"},
        {"name": "hist_mask", "shape": [1, "A", th], "dtype": "bool", "meaning": "observed history steps"},
        {"name": "agent_type", "shape": [1, "A"], "dtype": "int64", "meaning": "AgentType code (see sample.agent_types)"},
        {"name": "pose", "shape": [1, "A", 4], "dtype": "float32", "features": ["x/scene_scale", "y/scene_scale", "cos", "sin"],
         "frame": "scene frame: the focal (first) agent's frame at t0; x, y divided by sample.feature_config.scene_scale"},
        {"name": "raster", "shape": [1, "A", c, s, s], "dtype": "uint8", "channels": list(features.raster.channels),
         "frame": "bird's-eye crop per agent, the agent heading up the image", "units": "0..255 (scaled to [0, 1] inside)"},
        {"name": "agent_mask", "shape": [1, "A"], "dtype": "bool", "meaning": "real agent (all True at inference)"},
        {"name": "plan", "shape": [1, "A", tf, 2], "dtype": "float32", "units": "m", "frame": agent_frame,
         "meaning": "planned future positions (the action) for agents with plan_mask; zeros elsewhere"},
        {"name": "plan_mask", "shape": [1, "A"], "dtype": "bool", "meaning": "agent follows its plan"},
    ]


def output_spec(model_cfg) -> list[dict]:
    k, tf = model_cfg.modes, model_cfg.future_steps
    agent_frame = "each agent's own frame at t0 (the frame of the hist input)"
    return [
        {"name": "traj", "shape": [1, "A", k, tf, 2], "dtype": "float32", "units": "m", "frame": agent_frame,
         "meaning": f"K={k} futures of {tf} steps, dt after dt, first step at t0 + dt"},
        {"name": "scale", "shape": [1, "A", k, tf, 2], "dtype": "float32", "units": "m", "frame": agent_frame,
         "meaning": "Laplace scale of each position"},
        {"name": "prob", "shape": [1, "A", k], "dtype": "float32", "units": "1",
         "meaning": "mode probabilities; sum to 1 over K for every agent"},
    ]


def bundle_manifest(loaded, max_agents: int, opset: int, files: dict[str, str], models: dict[str, str],
                    verification: list[dict] | None, ort_optimized: dict[str, str] | None = None,
                    operators: list[str] | None = None) -> dict:
    import onnx
    import onnxruntime
    import torch

    from forecast.export.tensorrt import optimization_profiles

    features, mcfg = loaded.features, loaded.model.cfg
    meta = loaded.meta or {}
    return {
        "format": BUNDLE_FORMAT,
        "format_version": BUNDLE_FORMAT_VERSION,
        "model_version": forecast.__version__,
        "trained_with_version": meta.get("version"),
        "exported_by": {"forecast": forecast.__version__, "torch": torch.__version__, "onnx": onnx.__version__,
                        "onnxruntime": onnxruntime.__version__, "exporter": "torch.onnx.export(dynamo=True)",
                        "opset": opset},
        "training_run_id": meta.get("run_id"),
        "training_metrics": meta.get("metrics", {}),
        "max_agents": max_agents,
        "batch_size": 1,
        "models": models,
        "onnxruntime_optimized": {
            "models": ort_optimized or {}, "onnxruntime": onnxruntime.__version__, "level": "ORT_ENABLE_EXTENDED",
            "use": "load with the same onnxruntime version only (contrib operators); else use models",
        },
        "tensorrt": {
            "profiles": [optimization_profiles(input_spec(features, mcfg, max_agents), max_agents)],
            "operators": operators or [],
            "operators_checked_against": "docs/tensorrt_operators.md (onnx-tensorrt support matrix, TensorRT 8.5)",
            "graph": "models.fp32 (model.onnx); the *.ort.onnx files are for onnxruntime's CPU provider only",
        },
        "inputs": input_spec(features, mcfg, max_agents),
        "outputs": output_spec(mcfg),
        "sample": {
            "feature_config": to_dict(features),
            "history_steps": features.history_steps,
            "future_steps": mcfg.future_steps,
            "dt": features.dt,
            "history_s": features.history_s,
            "horizon_s": mcfg.future_steps * features.dt,
            "raster": to_dict(features.raster) | {"channels": list(features.raster.channels)},
            "scene_scale": features.scene_scale,
            "hist_features": list(HIST_FEATURES),
            "agent_types": {t.label: int(t) for t in AgentType},
            "target_agent_types": [t.label for t in TARGET_TYPES],
            "modes": mcfg.modes,
            "builder": "forecast.features.sample.build_sample(with_future=False)",
        },
        "model_config": to_dict(mcfg),
        "units": {"length": "m", "time": "s", "angle": "rad, CCW from +x", "world": "the map's metric frame"},
        "verification": verification,
        "files": files,
    }


def export_bundle(model_path: str | Path, out_dir: str | Path, fp16: bool = False, verify: bool = False,
                  opset: int | None = None, tracking_uri: str | None = None, register_name: str | None = None,
                  max_agents: int = 256, progress: bool = True, int8: bool = False) -> Path:
    """Export ``model.pt`` to a vehicle bundle in ``out_dir``; returns ``out_dir``.

    Every variant is also saved with onnxruntime's graph optimisations applied (``*.ort.onnx``).
    verify: torch vs onnxruntime on ``build_sample`` scenes of 1, 7, 64 and 256 agents, every file;
    raises ``ParityError`` with the table beyond 1e-3 m (fp32) / 5e-2 m (fp16) / 0.5 m (int8).
    register_name: log the bundle to MLflow (``tracking_uri``, else $MLFLOW_TRACKING_URI, else
    sqlite:///mlflow.db) and register a model version of that name (the result goes to
    ``registration.json`` beside ``bundle.json``); None registers nothing.
    """
    import onnx

    from forecast.export.onnx_export import (
        PARITY_AGENT_COUNTS,
        convert_fp16,
        export_onnx,
        opset_of,
        parity_dicts,
        parity_table,
        quantize_int8,
        save_ort_optimized,
        verify_parity,
    )
    from forecast.export.tensorrt import graph_operators
    from forecast.model.checkpoint import load_model

    def say(msg: str) -> None:
        if progress:
            print(msg, flush=True)

    if tracking_uri and not register_name:
        raise ValueError("tracking_uri (--tracking-uri) is where register_name (--register NAME) registers; "
                         "without --register nothing is registered")
    out_dir = Path(out_dir)
    _check_out_dir(out_dir)
    loaded = load_model(model_path)
    if loaded.model.cfg.future_steps != loaded.features.future_steps:
        raise ValueError(f"{model_path}: model future_steps={loaded.model.cfg.future_steps} but features say "
                         f"{loaded.features.future_steps}")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".tmp", dir=out_dir.parent))
    try:
        t = time.perf_counter()
        export_onnx(loaded.model, loaded.features, stage / MODEL_FILE, opset=opset, max_agents=max_agents)
        say(f"exported {MODEL_FILE} in {time.perf_counter() - t:.1f} s")
        models = {"fp32": MODEL_FILE}
        if fp16:
            convert_fp16(stage / MODEL_FILE, stage / MODEL_FP16_FILE)
            models["fp16"] = MODEL_FP16_FILE
            say(f"converted {MODEL_FP16_FILE}")
        if int8:
            quantize_int8(stage / MODEL_FILE, stage / MODEL_INT8_FILE)
            models["int8"] = MODEL_INT8_FILE
            say(f"quantised {MODEL_INT8_FILE}")
        optimized = {v: f.removesuffix(".onnx") + ORT_OPTIMIZED_SUFFIX for v, f in models.items()}
        for v, f in models.items():
            save_ort_optimized(stage / f, stage / optimized[v])
        verification = None
        if verify:
            counts = tuple(n for n in PARITY_AGENT_COUNTS if n <= max_agents)
            paths = {v: stage / f for v, f in models.items()} | {f"{v}.ort": stage / f
                                                                  for v, f in optimized.items()}
            rows = verify_parity(loaded.model, loaded.features, paths, counts)
            say(parity_table(rows))
            verification = parity_dicts(rows)
        operators = sorted({op for (_, op) in graph_operators(onnx.load(str(stage / MODEL_FILE)))})
        files = {p.name: sha256_file(p) for p in sorted(stage.iterdir()) if p.is_file()}
        manifest = bundle_manifest(loaded, max_agents, opset_of(stage / MODEL_FILE), files, models, verification,
                                   optimized, operators)
        write_json_atomic(manifest, stage / BUNDLE_FILE)
        _publish(stage, out_dir)
    finally:
        if stage.exists():
            shutil.rmtree(stage, ignore_errors=True)
    # a result, not progress: printed with --quiet too, for a deployment to pin
    print(f"bundle: {out_dir}  (bundle.json sha256 {sha256_file(out_dir / BUNDLE_FILE)}: "
          f"Predictor(..., bundle_sha256=...) pins it)", flush=True)

    # Registration is asked for, never implied by $MLFLOW_TRACKING_URI: with a team's server set, every
    # ad-hoc export (and every test run) added an unvetted version of the production model name.
    if register_name:
        uri = resolve_uri(tracking_uri)
        with deferred():  # a stop inside MLflow's SQLite calls would leave the store locked for the process
            reg = register_bundle(out_dir, uri, register_name)
        how = "already registered as" if reg["reused"] else "registered"
        say(f"{how} {reg['name']} version {reg['version']} (mlflow run {reg['run_id']}, {reg['tracking_uri']})")
    return out_dir


def _check_out_dir(out_dir: Path) -> None:
    """Refuse to replace a directory that is not a bundle (e.g. ``--out .`` by mistake)."""
    if out_dir.exists():
        if not out_dir.is_dir():
            raise ValueError(f"--out {out_dir} exists and is not a directory")
        entries = [p for p in out_dir.iterdir()]
        if entries and not (out_dir / BUNDLE_FILE).exists():
            raise ValueError(f"--out {out_dir} is a non-empty directory that is not a bundle; refusing to replace it")


def _publish(stage: Path, out_dir: Path) -> None:
    """Move the finished bundle into place; an older bundle there is replaced as a whole."""
    open_directory(stage)  # mkdtemp/mkstemp create private files; a bundle is read by other users
    mode = default_mode()
    for p in stage.iterdir():
        os.chmod(p, mode)
    old = None
    if out_dir.exists():
        old = out_dir.with_name(f".{out_dir.name}.old-{os.getpid()}")
        os.replace(out_dir, old)
    os.replace(stage, out_dir)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def register_bundle(bundle_dir: Path, tracking_uri: str, name: str = DEFAULT_REGISTERED_NAME,
                    experiment: str = DEFAULT_EXPORT_EXPERIMENT, alias: str | None = None) -> dict:
    """Log the bundle as an MLflow pyfunc model in a new run and register a model version of it.

    The model wraps the runtime's Predictor (:mod:`forecast.export.mlflow_model`: signature, input
    example, the bundle files as artifacts); ``alias`` (e.g. "champion") is pointed at the version.
    The run is tagged with the training run id and the bundle's hashes. A version of the same bundle
    (its ``bundle.json`` sha256) is reused, not registered again. Returns (and writes to
    ``registration.json``, outside the hashed files) name, version, run id, URIs and ``reused``.
    """
    try:
        from mlflow.tracking import MlflowClient
    except ImportError as exc:  # pragma: no cover - mlflow is a dependency, but optional here
        raise RuntimeError(f"MLflow registration asked for, but mlflow cannot be imported: {exc}") from exc
    from forecast.export.mlflow_model import log_bundle_model

    bundle_dir = Path(bundle_dir)
    manifest = json.loads((bundle_dir / BUNDLE_FILE).read_text())
    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    manifest_sha = sha256_file(bundle_dir / BUNDLE_FILE)
    # The same bundle exported again (a scheduled rerun of `forecast export`) is the version already
    # registered, not a new one: bundle.json holds every file's sha256, so its own names the content.
    for mv in _versions(client, name):
        if (mv.tags or {}).get("forecast.bundle_json_sha256") == manifest_sha:
            if alias:
                client.set_registered_model_alias(name, alias, mv.version)
            reg = {"name": name, "version": str(mv.version), "run_id": mv.run_id, "source": mv.source,
                   "tracking_uri": tracking_uri, "bundle_json_sha256": manifest_sha, "reused": True}
            write_json_atomic(reg, bundle_dir / REGISTRATION_FILE)
            return reg
    exp = client.get_experiment_by_name(experiment)
    exp_id = exp.experiment_id if exp is not None else client.create_experiment(experiment)
    tags = {"forecast.model_version": manifest["model_version"], "forecast.bundle_format": str(manifest["format_version"]),
            "forecast.bundle_json_sha256": manifest_sha}
    if manifest.get("training_run_id"):
        tags["forecast.training_run_id"] = manifest["training_run_id"]
    run = client.create_run(exp_id, tags=tags, run_name=f"export-{manifest['model_version']}")
    run_id = run.info.run_id
    try:
        client.log_param(run_id, "max_agents", manifest["max_agents"])
        client.log_param(run_id, "opset", manifest["exported_by"]["opset"])
        client.log_param(run_id, "variants", ",".join(sorted(manifest["models"])))
        for row in manifest.get("verification") or []:
            client.log_metric(run_id, f"parity_{row['variant']}_max_abs_traj_m_a{row['agents']}", row["max_abs_traj_m"])
        logged = log_bundle_model(bundle_dir, tracking_uri, run_id=run_id, registered_name=name, alias=alias,
                                  version_tags={"forecast.training_run_id": manifest.get("training_run_id") or ""})
        client.set_terminated(run_id, "FINISHED")
    except Exception:
        client.set_terminated(run_id, "FAILED")
        raise
    reg = {"name": name, "version": str(logged.version), "run_id": run_id, "source": logged.model_uri,
           "tracking_uri": tracking_uri, "bundle_json_sha256": manifest_sha, "reused": False}
    write_json_atomic(reg, bundle_dir / REGISTRATION_FILE)
    return reg


def _versions(client, name: str) -> list:
    """The registered model's versions; none when it is not registered yet."""
    from mlflow.exceptions import MlflowException

    try:
        return list(client.search_model_versions(f"name='{name}'"))
    except MlflowException:
        return []
