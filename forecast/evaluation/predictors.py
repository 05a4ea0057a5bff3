"""Predictors the evaluation runs: a baseline name, a ``model.pt`` or an exported bundle directory.

Every predictor has ``predict(sample) -> (traj [A, K, T, 2], prob [A, K])`` in the agent frame.
"""

from __future__ import annotations

import difflib
from pathlib import Path

import numpy as np

from forecast.config import to_dict
from forecast.evaluation.results import BASELINES
from forecast.features.config import FeatureConfig
from forecast.features.dataset import SceneSet
from forecast.features.sample import Sample, build_sample


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
        idx = self.scenes.index[k]
        info = self.scenes.infos[idx.scenario]
        # drawn once per map and resolution, memory-mapped from the set's raster cache
        raster = self.scenes.raster(info.map_id, cfg.raster.resolution) if info.map_id in self.scenes.maps else None
        s = build_sample(self.scenes.tracks[idx.scenario], idx.t0, cfg, raster, idx.agents, idx.agents[0],
                         scenario_id=info.scenario_id)
        s.target_mask &= idx.scored
        return s


class _NotRegistered(Exception):
    pass


def _registered_ref(spec: str) -> tuple[str, str | None, str | None]:
    """Split ``models:/...`` as MLflow does: ``NAME/VERSION_OR_STAGE`` on the slash (a name has none),
    else ``NAME@ALIAS`` on the last ``@``. -> (NAME, ALIAS, VERSION_OR_STAGE); (ref, None, None) for
    anything else (an MLflow logged-model id), which only MLflow's own download checks."""
    ref = spec[len("models:/"):]
    parts = ref.split("/")
    if len(parts) == 2 and all(parts):
        return parts[0], None, parts[1]
    if len(parts) == 1 and "@" in ref:
        name, alias = ref.rsplit("@", 1)
        if name and alias:
            return name, alias, None
    if len(parts) == 1 and ref:
        return ref, None, None
    raise ValueError(f"--baseline {spec!r}: a registered model is models:/NAME@ALIAS or models:/NAME/VERSION")


def _missing_sqlite_store(uri: str) -> bool:
    """Whether ``uri`` is a SQLite file that does not exist (asking MLflow would create it, empty)."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        url = make_url(uri)
    except ArgumentError:  # not a database URL (a server, a file store): MLflow answers for it
        return False
    db = url.database
    return url.get_backend_name() == "sqlite" and db not in (None, "", ":memory:") and not Path(db).exists()


def _check_registered(name: str, alias: str | None, version: str | None, uri: str, spec: str) -> None:
    """Raise _NotRegistered when there is nothing to compare with yet (``name`` not registered, or no
    alias set on it at all: the pipeline's register step sets the first); ValueError for what looks
    like a mistake (another alias is set, a version that does not exist); ConnectionError when the
    registry cannot be read."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    try:
        model = client.get_registered_model(name)
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise ConnectionError(f"cannot read the registry at {uri} for {spec}: {exc}") from exc
        names = sorted(m.name for m in client.search_registered_models(max_results=20))
        raise _NotRegistered(f"{name} is not registered; registered there: {', '.join(names) or 'none'}") from exc
    aliases = dict(model.aliases or {})
    if alias is not None and alias not in aliases:
        if not aliases:  # registered, never promoted: as the gate, nothing to compare with yet
            raise _NotRegistered(f"{name} has no alias yet")
        close = difflib.get_close_matches(alias, list(aliases), n=1)
        hint = f" (did you mean @{close[0]}?)" if close else ""
        known = ", ".join(f"@{a} (version {v})" for a, v in sorted(aliases.items()))
        raise ValueError(f"--baseline {spec}: registered model {name} in {uri} has no alias {alias!r}{hint}; "
                         f"its aliases: {known}")
    if version is not None and version.isdigit():  # a stage or 'latest' is MLflow's to resolve
        try:
            client.get_model_version(name, version)
        except MlflowException as exc:
            if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
                raise ConnectionError(f"cannot read the registry at {uri} for {spec}: {exc}") from exc
            raise ValueError(f"--baseline {spec}: registered model {name} in {uri} has no version {version}") from exc


def resolve_model(spec: str, dst: str | Path, log=None, tracking_uri: str | None = None) -> str | None:
    """A registered model ``models:/NAME@ALIAS`` (or ``models:/NAME/VERSION``) -> a local bundle directory
    (MLflow downloads the registered bundle's artifacts into ``dst``, an existing directory the caller
    owns and removes); anything else as is.

    None when there is nothing to compare with yet: no model NAME registered, or NAME without any alias
    (a pipeline's first runs; the gate reads the registry the same way). Another alias than the one
    asked for, or a version that does not exist, is a ``ValueError`` naming what is there: a typo must
    not turn the comparison off with exit 0. The registry is ``tracking_uri``, else
    ``$MLFLOW_TRACKING_URI``, else ``sqlite:///mlflow.db`` here (as training); a SQLite store that does
    not exist is not created.
    """
    if not spec.startswith("models:/"):
        return spec
    import mlflow.artifacts
    from mlflow.exceptions import MlflowException

    from forecast.export.mlflow_model import tracking
    from forecast.pipeline.signals import deferred
    from forecast.tracking_uri import tracking_uri as resolve_uri

    say = log or (lambda msg: None)
    uri = resolve_uri(tracking_uri)
    name, alias, version = _registered_ref(spec)
    if _missing_sqlite_store(uri):
        say(f"no MLflow store at {uri}, so no registered model {name} yet ({spec}): comparison skipped")
        return None
    try:
        if alias is not None or version is not None:  # a logged-model id is for MLflow's download alone to check
            with deferred(), tracking(uri):
                _check_registered(name, alias, version, uri, spec)
    except _NotRegistered as exc:
        say(f"nothing to compare with in {uri} yet ({spec}: {exc}): comparison skipped")
        return None
    try:
        # models:/ URIs resolve through MLflow's process-wide registry URI, not the tracking_uri argument:
        # point it at this store for the download, then restore whatever an earlier caller had set.
        with deferred(), tracking(uri):
            local = mlflow.artifacts.download_artifacts(artifact_uri=spec, dst_path=str(dst), tracking_uri=uri)
    except MlflowException as exc:
        raise ValueError(f"cannot download the registered model {spec} from {uri}: {exc}") from exc
    path = Path(local)
    # a pyfunc model (forecast.export.mlflow_model) keeps the bundle in artifacts/bundle; older versions in bundle/
    for candidate in (path / "artifacts" / "bundle", path / "bundle"):
        if not is_bundle(path) and is_bundle(candidate):
            path = candidate
    if not is_bundle(path):
        raise ValueError(f"registered model {spec} is not an exported bundle (no bundle.json under {local})")
    if log:
        log(f"champion {spec} -> {path}")
    return str(path)
