"""Vehicle-side predictor: a verified bundle, onnxruntime, and the training code's sample builder.

No torch and no lightning here (nor in anything imported from here): numpy, shapely, OpenCV,
onnxruntime and ``forecast.features`` only.
"""

from __future__ import annotations

import hashlib
import json
import re
import warnings
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from forecast.config import from_dict
from forecast.features.config import FeatureConfig
from forecast.features.frames import to_local, to_world
from forecast.features.raster import MapRaster, rasterize_map_layers
from forecast.features.sample import Sample, build_sample
from forecast.features.tracks import AgentTracks
from forecast.metrics import least_risk_mode
from forecast.runtime import validation
from forecast.runtime.errors import (  # noqa: F401  (re-exported: their historical home)
    BundleIntegrityError,
    EmptySceneError,
    InputError,
    InvalidTracksError,
    MapError,
    OptionError,
    PlanError,
    TooManyAgentsError,
    UnitMismatchError,
)

BUNDLE_FILE = "bundle.json"
REGISTRATION_FILE = "registration.json"  # written after registration; not part of the hashed bundle
BUNDLE_FORMAT = "forecast-bundle"
BUNDLE_FORMAT_VERSION = 1
INPUT_DTYPES = {"hist": np.float32, "hist_mask": np.bool_, "agent_type": np.int64, "pose": np.float32,
                "raster": np.uint8, "agent_mask": np.bool_, "plan": np.float32, "plan_mask": np.bool_}
PROVIDER_ALIASES = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider",
                    "tensorrt": "TensorrtExecutionProvider", "trt": "TensorrtExecutionProvider"}


@dataclass
class Prediction:
    """Predicted futures of the agents present at t0, in the world frame of the input tracks."""

    traj_world: np.ndarray  # [A, K, T_f, 2] float64, metres, world frame; step i at t0 + (i + 1) dt
    prob: np.ndarray  # [A, K] float32, sums to 1 per agent
    track_ids: np.ndarray  # [A] track ids (str), or the agents' indices in the tracks when there are no ids
    agent_type: np.ndarray  # [A] int64, AgentType
    agent_index: np.ndarray  # [A] int64, rows of the input tracks
    scale: np.ndarray  # [A, K, T_f, 2] float32, Laplace scale (m) along each agent's t0 frame axes
    t0: int  # the step of the input tracks the prediction starts from
    dt: float  # seconds per predicted step

    @property
    def num_agents(self) -> int:
        return len(self.agent_index)

    def least_risk_mode(self) -> np.ndarray:
        """[A] int: per agent, the mode of least expected endpoint error under ``prob``
        (:func:`forecast.metrics.least_risk_mode`): the one future to hand a planner that reads one.
        The most likely mode (``prob.argmax(1)``) can lie apart from where most of the mass is."""
        return least_risk_mode(self.traj_world, self.prob)


# --- bundle reading and verification (shared with the exporter) -----------------------------------------


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def read_manifest(bundle_dir: str | Path, expected_sha256: str | None = None) -> dict:
    """``bundle.json`` of ``bundle_dir``, checked. ``expected_sha256``: the digest of ``bundle.json`` itself
    as the deployment recorded it (``forecast export`` prints it; ``registration.json`` has it): the
    manifest holds every other file's sha256, so only a digest kept outside the bundle covers an edit of it."""
    bundle_dir = Path(bundle_dir)
    path = bundle_dir / BUNDLE_FILE
    if bundle_dir.is_file():
        raise BundleIntegrityError(f"{bundle_dir} is a file; a bundle is the directory `forecast export --out` "
                                   f"wrote (with {BUNDLE_FILE} and the ONNX files)")
    if not bundle_dir.is_dir():
        raise BundleIntegrityError(f"bundle directory {bundle_dir} does not exist")
    if not path.exists():
        raise BundleIntegrityError(f"{bundle_dir} is not a bundle: {BUNDLE_FILE} is missing")
    want = None
    if expected_sha256 is not None:  # read from a file or a config: its newline and case are not the bundle's fault
        want = expected_sha256.strip().lower() if isinstance(expected_sha256, str) else ""
        if not re.fullmatch(r"[0-9a-f]{64}", want):
            raise OptionError(f"bundle_sha256 must be a sha256 digest (64 hex digits), got {expected_sha256!r}")
    try:
        raw = path.read_bytes()
        if want is not None and (actual := _sha256(raw)) != want:
            raise BundleIntegrityError(f"{path}: sha256 {actual} differs from the expected {want} "
                                       f"(recorded when the model was exported or logged); refusing to load it")
        manifest = json.loads(raw.decode())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BundleIntegrityError(f"{path}: unreadable ({exc})") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != BUNDLE_FORMAT:
        raise BundleIntegrityError(f"{path}: not a {BUNDLE_FORMAT} manifest")
    if manifest.get("format_version") != BUNDLE_FORMAT_VERSION:
        raise BundleIntegrityError(f"{path}: bundle format version {manifest.get('format_version')} is not supported "
                                   f"(this runtime reads version {BUNDLE_FORMAT_VERSION})")
    if not isinstance(manifest.get("files"), dict) or not manifest["files"]:
        raise BundleIntegrityError(f"{path}: no file hashes")
    validation.check_manifest(manifest, str(path))
    return manifest


def verify_bundle(bundle_dir: str | Path, manifest: dict | None = None) -> dict[str, bytes]:
    """Check the sha256 of every file listed in ``bundle.json``; return their contents.

    Raises ``BundleIntegrityError`` naming the first missing or altered file. The bytes returned
    are the bytes that were hashed, so what is then loaded is what was checked.
    """
    bundle_dir = Path(bundle_dir)
    manifest = manifest if manifest is not None else read_manifest(bundle_dir)
    blobs: dict[str, bytes] = {}
    for name, expected in sorted(manifest["files"].items()):
        if Path(name).name != name or name in (BUNDLE_FILE, REGISTRATION_FILE):
            raise BundleIntegrityError(f"{BUNDLE_FILE} lists an invalid file name {name!r}")
        path = bundle_dir / name
        if not path.is_file():
            raise BundleIntegrityError(f"bundle file {name} is missing from {bundle_dir}")
        data = path.read_bytes()
        actual = _sha256(data)
        if actual != expected:
            raise BundleIntegrityError(f"bundle file {name} does not match its sha256 in {BUNDLE_FILE} "
                                       f"(expected {expected[:16]}..., got {actual[:16]}...): refusing to load it")
        blobs[name] = data
    for variant, name in manifest.get("models", {}).items():
        if name not in blobs:
            raise BundleIntegrityError(f"model {variant} ({name}) is not among the hashed files of {BUNDLE_FILE}")
    return blobs


def resolve_providers(providers) -> list:
    """Provider list for onnxruntime: CPU by default; asked-for providers that this build lacks are
    skipped with a warning; CPU is always last as the fallback. Accepts aliases cpu/cuda/tensorrt
    and (name, options) pairs."""
    import onnxruntime as ort

    if providers is None:
        return ["CPUExecutionProvider"]
    if isinstance(providers, str):
        providers = [providers]
    available = set(ort.get_available_providers())
    out: list = []
    for p in providers:
        name, opts = (p if isinstance(p, tuple) else (p, None))
        name = PROVIDER_ALIASES.get(str(name).lower(), name)
        if name not in available:
            warnings.warn(f"onnxruntime provider {name} is not available in this build "
                          f"(available: {sorted(available)}); skipping it", RuntimeWarning, stacklevel=3)
            continue
        out.append((name, opts) if opts else name)
    if "CPUExecutionProvider" not in [p[0] if isinstance(p, tuple) else p for p in out]:
        out.append("CPUExecutionProvider")
    return out


# --- the predictor ------------------------------------------------------------------------------------


class Predictor:
    """Run an exported bundle on raw world-frame tracks.

    ``Predictor(bundle_dir)`` checks every file's sha256 before onnxruntime sees any of them; with
    ``bundle_sha256`` (the digest ``forecast export`` printed for ``bundle.json``) it also refuses an
    edited ``bundle.json``, which holds those hashes and so cannot vouch for itself.
    ``variant`` picks ``fp32`` (default) or ``fp16`` when the bundle has it; ``threads`` sets
    onnxruntime's intra-op threads (None: its default). ``optimized``: on the CPU provider alone, load
    the variant's graph as onnxruntime optimised it at export (``*.ort.onnx``, hashed like every
    file) when this onnxruntime is the version that wrote it; otherwise the plain graph.
    """

    def __init__(self, bundle_dir: str | Path, providers=None, variant: str = "fp32", threads: int | None = None,
                 map_cache_size: int = 8, optimized: bool = True, bundle_sha256: str | None = None):
        import onnxruntime as ort

        self.bundle_dir = Path(bundle_dir)
        self.manifest = read_manifest(self.bundle_dir, bundle_sha256)
        blobs = verify_bundle(self.bundle_dir, self.manifest)
        spec = validation.check_manifest(self.manifest, str(self.bundle_dir / BUNDLE_FILE))
        models = spec.models
        validation.check_variant(variant, models, str(self.bundle_dir))
        threads = validation.check_threads(threads)
        try:
            self.features: FeatureConfig = from_dict(FeatureConfig, spec.feature_config)
        except (TypeError, ValueError) as exc:
            raise BundleIntegrityError(f"{self.bundle_dir / BUNDLE_FILE}: sample.feature_config: {exc}") from exc
        self.future_steps: int = spec.future_steps
        self.modes: int = spec.modes
        self.max_agents: int = spec.max_agents
        self.agent_types: dict[str, int] = spec.agent_types
        self.variant = variant
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        if threads:
            opts.intra_op_num_threads = threads
            opts.inter_op_num_threads = 1
        self.providers = resolve_providers(providers)
        self.model_file = self._model_file(variant, models, blobs, optimized, ort.__version__)
        try:
            self.session = ort.InferenceSession(blobs[self.model_file], opts, providers=self.providers)
        except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph/InvalidProtobuf classes
            raise BundleIntegrityError(f"{self.bundle_dir / self.model_file}: onnxruntime cannot load it "
                                       f"({type(exc).__name__}: {str(exc)[:300]})") from exc
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.output_names = [o.name for o in self.session.get_outputs()]
        expected_in = spec.input_names
        if self.input_names != expected_in:
            raise BundleIntegrityError(f"graph inputs {self.input_names} differ from {BUNDLE_FILE}'s {expected_in}")
        missing = {"traj", "prob", "scale"} - set(self.output_names)
        if missing:
            raise BundleIntegrityError(f"graph outputs {self.output_names} lack {sorted(missing)}")
        self._maps: OrderedDict[object, tuple[object, MapRaster]] = OrderedDict()
        self._map_cache_size = map_cache_size

    def _model_file(self, variant: str, models: dict, blobs: dict, optimized: bool, ort_version: str) -> str:
        info = self.manifest.get("onnxruntime_optimized")
        cpu_only = all((p[0] if isinstance(p, tuple) else p) == "CPUExecutionProvider" for p in self.providers)
        if optimized and cpu_only and isinstance(info, dict) and info.get("onnxruntime") == ort_version:
            name = (info.get("models") or {}).get(variant)
            if isinstance(name, str) and name in blobs:
                return name
        return models[variant]

    @property
    def dt(self) -> float:
        return self.features.dt

    # -- input checks --

    def check_tracks(self, tracks: AgentTracks) -> None:
        """Every check of the input tracks, each with its own error class (``forecast.runtime.validation``)."""
        validation.check_tracks(tracks, self.agent_types)

    def _match_dt(self, tracks: AgentTracks, t0: int) -> tuple[AgentTracks, int]:
        """Tracks at the bundle's dt, keeping step ``t0``: whole-multiple downsampling only."""
        return validation.check_tracks_dt(tracks, self.features.dt, t0)

    def map_raster(self, map_layers: dict | None, map_id: str | None = None) -> MapRaster | None:
        """The map drawn once and cached (by ``map_id`` when given, else by the layers object)."""
        if map_id is not None and not isinstance(map_id, str):
            raise OptionError(f"map_id must be a string or None, got {type(map_id).__name__}")
        if map_layers is None:
            if map_id is not None and map_id in self._maps:
                return self._maps[map_id][1]
            if map_id is not None:
                raise MapError(f"map {map_id!r} is not cached; pass its layers once")
            return None
        key = map_id if map_id is not None else ("id", id(map_layers))
        hit = self._maps.get(key)
        if hit is not None and (map_id is not None or hit[0] is map_layers):
            self._maps.move_to_end(key)
            return hit[1]
        checked = validation.check_map_layers(map_layers)
        try:
            raster = rasterize_map_layers(checked, self.features.raster.resolution)
        except ValueError as exc:
            raise MapError(str(exc)) from exc
        self._maps[key] = (map_layers, raster)  # holding the layers keeps id() from being reused
        while len(self._maps) > self._map_cache_size:
            self._maps.popitem(last=False)
        return raster

    # -- inference --

    def build(self, tracks: AgentTracks, t0: int, map_layers: dict | None = None,
              map_id: str | None = None) -> tuple[Sample, AgentTracks, int, np.ndarray]:
        """Checks, dt matching and ``build_sample``: (sample, tracks at the bundle's dt, t0 there, agents)."""
        self.check_tracks(tracks)
        t0 = validation.check_t0(t0, tracks.num_steps)
        tr, t = self._match_dt(tracks, t0)
        agents = np.flatnonzero(tr.present[:, t])
        if len(agents) == 0:
            raise EmptySceneError(f"empty scene: no agent is present at t0={t0}")
        if len(agents) > self.max_agents:
            raise TooManyAgentsError(f"{len(agents)} agents are present at t0={t0}; this bundle accepts at most "
                                     f"{self.max_agents} per call (drop far-away agents or split the scene)")
        raster = self.map_raster(map_layers, map_id)
        sample = build_sample(tr, t, self.features, raster, agents=agents, with_future=False)
        return sample, tr, t, agents

    def inputs(self, sample: Sample, plan_local: np.ndarray | None = None, plan_row: int | None = None) -> dict:
        a = sample.num_agents
        plan = np.zeros((1, a, self.future_steps, 2), np.float32)
        plan_mask = np.zeros((1, a), bool)
        if plan_local is not None:
            plan[0, plan_row] = plan_local
            plan_mask[0, plan_row] = True
        arrays = {"hist": sample.hist, "hist_mask": sample.hist_mask, "agent_type": sample.agent_type,
                  "pose": sample.pose, "raster": sample.raster, "agent_mask": sample.agent_mask}
        feed = {k: np.ascontiguousarray(v[None], dtype=INPUT_DTYPES[k]) for k, v in arrays.items()}
        feed["plan"], feed["plan_mask"] = plan, plan_mask
        return feed

    def predict(self, tracks: AgentTracks, t0: int, map_layers: dict | None = None, plan: np.ndarray | None = None,
                plan_agent: int | str | None = None, map_id: str | None = None) -> Prediction:
        """Predict every agent present at step ``t0`` of ``tracks`` (world frame, metres, ``dt`` s/step).

        map_layers: ``{layer: [shapely geometry, ...]}`` in the tracks' world frame (None: no map).
        plan: world-frame ``[T_f, 2]`` future of agent ``plan_agent`` (row index into the tracks,
        or its track id): that agent follows it and the others react to it.
        """
        sample, _, t, agents = self.build(tracks, t0, map_layers, map_id)
        plan_local = row = None
        if plan is not None or plan_agent is not None:
            row, plan_local = self._plan(sample, tracks, agents, plan, plan_agent)
        out = dict(zip(self.output_names, self.session.run(self.output_names, self.inputs(sample, plan_local, row)),
                       strict=True))
        traj = out["traj"][0].astype(np.float64)
        ids = sample.track_ids if sample.track_ids is not None else agents.astype(str)
        return Prediction(
            traj_world=to_world(traj, sample.origin, sample.heading),
            prob=out["prob"][0],
            track_ids=np.asarray(ids),
            agent_type=sample.agent_type,
            agent_index=agents,
            scale=out["scale"][0],
            t0=int(t0),
            dt=self.features.dt,
        )

    def _plan(self, sample: Sample, tracks: AgentTracks, agents: np.ndarray, plan, plan_agent) -> tuple[int, np.ndarray]:
        plan, idx = validation.check_plan(plan, plan_agent, self.future_steps, self.features.dt, tracks)
        where = np.flatnonzero(agents == idx)
        if len(where) == 0:
            raise PlanError(f"plan_agent {plan_agent!r} is not present at t0 (only agents present at t0 are predicted)")
        row = int(where[0])
        local = to_local(plan[None].astype(np.float64), sample.origin[row : row + 1], sample.heading[row : row + 1])[0]
        return row, local.astype(np.float32)
