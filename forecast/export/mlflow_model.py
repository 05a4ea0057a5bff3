"""The export bundle as an MLflow model: a pyfunc around :class:`forecast.runtime.Predictor`.

``log_bundle_model`` logs the bundle directory as the model's artifact (``bundle``), with a
signature, an input example and the runtime's pip requirements, and can register it and point an
alias (``champion``) at the new version. Anyone with MLflow then runs it as any other model::

    model = mlflow.pyfunc.load_model("models:/forecast-world-model@champion")
    futures = model.predict(observations)   # a DataFrame, one row per agent observation

The model is logged from code (``pyfunc_code.py``), not pickled. Loading checks the bundle as the runtime always does (the sha256 of every file listed in
``bundle.json``) and, in addition, the sha256 of ``bundle.json`` itself against the value recorded
when the model was logged, so a swapped manifest with matching files is refused too.

Input (one row per observation, world frame of the scene's map, metres, radians CCW from +x):

=============  =======  =========================================================================
column         dtype    meaning
=============  =======  =========================================================================
scene_id       str      scenes are predicted independently (each its own t0)
track_id       str      one agent of the scene
step           int64    time index at ``dt`` seconds per step
x, y           float64  position, metres
heading        float64  radians CCW from +x; NaN: unknown (taken from the motion)
agent_type     str      vehicle | pedestrian | cyclist | other
=============  =======  =========================================================================

Params: ``t0`` (int, -1: each scene's last step), ``dt`` (float, 0: the bundle's), ``map_wkt``
(str, JSON ``{layer: [WKT, ...]}`` in the same frame, "" for no map).

Output: one row per agent present at t0, mode and future step: ``scene_id, track_id, agent_type,
mode, probability, step`` (1..T_f after t0), ``t`` (seconds after t0), ``x, y`` (world frame).
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

BUNDLE_ARTIFACT = "bundle"
MODEL_NAME_IN_RUN = "model"
INPUT_COLUMNS = ("scene_id", "track_id", "step", "x", "y", "heading", "agent_type")
DEFAULT_PARAMS = {"t0": -1, "dt": 0.0, "map_wkt": ""}
RUNTIME_PACKAGES = ("numpy", "pandas", "onnxruntime", "shapely", "opencv-python-headless", "pyyaml", "pydantic")

try:  # the class below must exist for MLflow's loader; importing mlflow is only needed to log or load
    from mlflow.pyfunc import PythonModel
except ImportError:  # pragma: no cover - mlflow is a dependency; the runtime itself does not need it
    PythonModel = object  # type: ignore[assignment,misc]


class ForecastPyfunc(PythonModel):
    """``predict(DataFrame of observations, params) -> DataFrame of futures`` through the ONNX bundle."""

    def load_context(self, context) -> None:
        from forecast.runtime import Predictor

        bundle = Path(context.artifacts[BUNDLE_ARTIFACT])
        config = context.model_config or {}
        # Predictor checks bundle.json against the digest recorded when the model was logged, then every model
        # file against bundle.json, before onnxruntime reads any of them.
        self.predictor = Predictor(bundle, variant=config.get("variant", "fp32"),
                                   bundle_sha256=config.get("bundle_json_sha256") or None)

    def predict(self, context, model_input, params: dict | None = None):
        return predict_frame(self.predictor, model_input, {**DEFAULT_PARAMS, **(params or {})})


def predict_frame(predictor, frame, params: dict):
    """Run ``predictor`` on every scene of ``frame`` (columns :data:`INPUT_COLUMNS`); returns the futures' frame."""
    import pandas as pd

    from forecast.data.types import AgentType
    from forecast.features.tracks import AgentTracks
    from forecast.runtime import InputError

    if not isinstance(frame, pd.DataFrame):
        frame = pd.DataFrame(frame)
    missing = [c for c in INPUT_COLUMNS if c not in frame.columns and c != "scene_id"]
    if missing:
        raise InputError(f"input is missing column(s) {missing}; expected {list(INPUT_COLUMNS)}")
    if "scene_id" not in frame.columns:
        frame = frame.assign(scene_id="scene")
    dt = float(params.get("dt") or 0.0) or predictor.dt
    t0_param = int(params.get("t0", -1))
    layers = _map_layers(str(params.get("map_wkt") or ""))
    out = []
    for scene_id, rows in frame.groupby("scene_id", sort=False):
        ids = pd.unique(rows["track_id"].astype(str))
        index = {t: i for i, t in enumerate(ids)}
        steps = rows["step"].to_numpy(np.int64)
        if (steps < 0).any():
            raise InputError(f"scene {scene_id!r}: step must be >= 0")
        num_steps = int(steps.max()) + 1
        a = np.array([index[t] for t in rows["track_id"].astype(str)])
        xy = np.zeros((len(ids), num_steps, 2))
        heading = np.full((len(ids), num_steps), np.nan)
        present = np.zeros((len(ids), num_steps), bool)
        if len(set(zip(a.tolist(), steps.tolist(), strict=True))) != len(rows):
            raise InputError(f"scene {scene_id!r}: a (track_id, step) pair appears twice")
        xy[a, steps] = rows[["x", "y"]].to_numpy(np.float64)
        heading[a, steps] = rows["heading"].to_numpy(np.float64)
        present[a, steps] = True
        types = np.zeros(len(ids), np.int64)
        for tid, label in zip(rows["track_id"].astype(str), rows["agent_type"].astype(str), strict=True):
            try:
                types[index[tid]] = int(AgentType.from_label(label))
            except ValueError as exc:
                raise InputError(f"scene {scene_id!r}, track {tid!r}: {exc}") from None
        tracks = AgentTracks(xy=xy, heading=heading, present=present, agent_type=types, dt=dt,
                             track_ids=np.asarray(ids, dtype=str))
        t0 = num_steps - 1 if t0_param < 0 else t0_param
        pred = predictor.predict(tracks, t0, map_layers=layers, map_id=None)
        out.append(_futures_frame(str(scene_id), pred))
    return pd.concat(out, ignore_index=True) if out else _futures_frame("", None)


def _futures_frame(scene_id: str, pred):
    import pandas as pd

    from forecast.data.types import AgentType

    if pred is None:
        return pd.DataFrame({c: [] for c in ("scene_id", "track_id", "agent_type", "mode", "probability", "step",
                                             "t", "x", "y")})
    a, k, t, _ = pred.traj_world.shape
    ai, ki, ti = np.meshgrid(np.arange(a), np.arange(k), np.arange(t), indexing="ij")
    ai, ki, ti = ai.ravel(), ki.ravel(), ti.ravel()
    labels = np.array([AgentType(int(v)).label for v in pred.agent_type])
    return pd.DataFrame({
        "scene_id": np.full(len(ai), scene_id),
        "track_id": np.asarray(pred.track_ids).astype(str)[ai],
        "agent_type": labels[ai],
        "mode": ki.astype(np.int64),
        "probability": pred.prob[ai, ki].astype(np.float64),
        "step": (ti + 1).astype(np.int64),
        "t": (ti + 1) * pred.dt,
        "x": pred.traj_world[ai, ki, ti, 0],
        "y": pred.traj_world[ai, ki, ti, 1],
    })


def _map_layers(text: str) -> dict | None:
    from forecast.runtime import MapError

    if not text:
        return None
    import shapely

    try:
        data = json.loads(text)
        return {str(layer): [shapely.from_wkt(w) for w in wkts] for layer, wkts in data.items()}
    except (ValueError, TypeError, AttributeError, shapely.errors.GEOSException) as exc:
        raise MapError(f"param map_wkt must be JSON {{layer: [WKT, ...]}}: {exc}") from None


def input_example(bundle_dir: str | Path):
    """A small scene the bundle accepts: a vehicle, a cyclist and a pedestrian moving straight for the history."""
    import pandas as pd

    from forecast.runtime import read_manifest

    sample = read_manifest(bundle_dir)["sample"]
    features = sample["feature_config"]
    steps, dt = int(features["history_steps"]), float(features["dt"])
    agents = [("car-1", "vehicle", (0.0, 0.0), (8.0, 0.0)), ("bike-1", "cyclist", (5.0, 4.0), (4.0, 0.5)),
              ("ped-1", "pedestrian", (10.0, -4.0), (0.0, 1.3))]
    rows = []
    for tid, kind, (x0, y0), (vx, vy) in agents:
        for s in range(steps):
            rows.append({"scene_id": "example", "track_id": tid, "step": s, "x": x0 + vx * s * dt,
                         "y": y0 + vy * s * dt, "heading": float(np.arctan2(vy, vx)), "agent_type": kind})
    return pd.DataFrame(rows, columns=list(INPUT_COLUMNS))


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def pip_requirements() -> list[str]:
    """The runtime's packages at the versions installed here (``forecast`` itself must be importable too)."""
    from importlib.metadata import PackageNotFoundError, version

    out = []
    for name in ("mlflow", *RUNTIME_PACKAGES):
        try:
            out.append(f"{name}=={version(name)}")
        except PackageNotFoundError:
            out.append(name)
    return out


ARTIFACT_BAR = "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"


@contextmanager
def tracking(uri: str):
    """Point MLflow's fluent API at ``uri`` for a block, then leave its global state exactly as it was.

    ``set_tracking_uri``/``set_registry_uri`` and ``set_experiment`` are process-wide; restoring them
    through the public setters would *pin* the registry to whatever URI was current before (and so
    ignore a later ``$MLFLOW_TRACKING_URI``), hence the module globals are saved and put back as such.
    MLflow's own artifact progress bar (tqdm) is drawn only on a terminal, as ours are
    (:mod:`forecast.progress`), unless ``$MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR`` says otherwise.
    """
    import mlflow
    import mlflow.tracking._model_registry.utils as registry_state
    import mlflow.tracking._tracking_service.utils as tracking_state
    import mlflow.tracking.fluent as fluent

    env = {k: os.environ.get(k) for k in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "MLFLOW_EXPERIMENT_ID",
                                          "MLFLOW_EXPERIMENT_NAME", ARTIFACT_BAR)}
    if env[ARTIFACT_BAR] is None and not sys.stderr.isatty():
        os.environ[ARTIFACT_BAR] = "false"  # read by MLflow at each transfer
    saved = [(m, name, getattr(m, name)) for m, name in ((tracking_state, "_tracking_uri"),
                                                          (registry_state, "_registry_uri"),
                                                          (fluent, "_active_experiment_id")) if hasattr(m, name)]
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    try:
        yield
    finally:
        for module, name, value in saved:
            setattr(module, name, value)
        for key, value in env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@dataclass
class LoggedBundleModel:
    model_uri: str  # models:/<model id>
    run_id: str
    name: str | None = None  # registered model name
    version: str | None = None
    alias: str | None = None


def log_bundle_model(bundle_dir: str | Path, tracking_uri: str, run_id: str | None = None,
                     experiment: str = "forecast-export", registered_name: str | None = None,
                     alias: str | None = None, version_tags: dict[str, str] | None = None,
                     variant: str = "fp32") -> LoggedBundleModel:
    """Log ``bundle_dir`` as a pyfunc model in run ``run_id`` (else a new run of ``experiment``).

    With ``registered_name``: register a version (tagged ``version_tags``) and, with ``alias``, point
    the alias at it. The bundle is checked (sha256 of every file) before anything is logged.
    """
    import mlflow
    from mlflow.models import infer_signature
    from mlflow.tracking import MlflowClient

    from forecast.runtime import Predictor

    bundle_dir = Path(bundle_dir)
    predictor = Predictor(bundle_dir, variant=variant)  # verifies the bundle; also gives the example's output
    example = input_example(bundle_dir)
    with warnings.catch_warnings():  # "integer columns cannot hold missing values": ours (step, mode) never miss
        warnings.filterwarnings("ignore", message=".*[Ii]nteger column.*")
        signature = infer_signature(example, predict_frame(predictor, example, DEFAULT_PARAMS), params=DEFAULT_PARAMS)
    manifest_sha = _sha256(bundle_dir / "bundle.json")
    with tracking(tracking_uri):
        if run_id is None:
            mlflow.set_experiment(experiment)
        else:
            mlflow.set_experiment(experiment_id=MlflowClient(tracking_uri).get_run(run_id).info.experiment_id)
        with mlflow.start_run(run_id=run_id, run_name=None if run_id else "export-model") as run:
            info = mlflow.pyfunc.log_model(
                # models from code: the model is this file plus the artifacts, not a pickled object
                name=MODEL_NAME_IN_RUN, python_model=str(Path(__file__).with_name("pyfunc_code.py")),
                artifacts={BUNDLE_ARTIFACT: str(bundle_dir)},
                signature=signature, input_example=example, pip_requirements=pip_requirements(),
                model_config={"bundle_json_sha256": manifest_sha, "variant": variant},
                tags={"forecast.bundle_json_sha256": manifest_sha},
            )
            run_id = run.info.run_id
        result = LoggedBundleModel(info.model_uri, run_id)
        if registered_name:
            tags = {"forecast.bundle_json_sha256": manifest_sha, **(version_tags or {})}
            mv = mlflow.register_model(info.model_uri, registered_name, tags=tags)
            result.name, result.version = registered_name, str(mv.version)
            if alias:
                MlflowClient(tracking_uri, tracking_uri).set_registered_model_alias(registered_name, alias, mv.version)
                result.alias = alias
    return result
