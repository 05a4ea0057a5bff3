"""The pipeline's steps: each reads named inputs, writes named outputs into one directory, and says what it did.

A step is any object with the :class:`Step` shape, so a test (or another deployment) can swap one in:

* ``name``: the step's name, also its folder under ``work_dir``;
* ``inputs``: names of the steps whose output directories it reads;
* ``resumable``: True if a killed run may continue in the same directory (``<hash>.partial``);
  False if it must start from an empty one (``.tmp-<hash>-<pid>``);
* ``spec()``: the JSON-able, fully resolved settings that decide its output (hashed by the runner);
* ``code`` (optional): the ``forecast`` modules it runs; the runner hashes their source and that of
  every ``forecast`` module they import (:mod:`forecast.pipeline.code`), so a code change makes it stale;
* ``run(ctx)``: does the work inside ``ctx.out`` and returns a :class:`StepResult`.

The runner owns everything around it: hashing, skipping, atomic commit, locking, tracking.

=========  ====================  ============================================  ========================
step       inputs                outputs (inside its directory)                how
=========  ====================  ============================================  ========================
simulate   (data config)         ``runs/<split>/<network>/``                   ``forecast.sim.sumo.simulate``
ingest     simulate or a folder  ``store/`` (canonical store)                  ``forecast.data.ingest.run_ingest``
tag        ingest                ``tags.parquet`` (scenario tags)              ``forecast tag`` (CLI)
train      ingest                ``model.pt``, ``train_summary.json``,          ``run_training``
                                 ``checkpoints/``
champion   ingest                as train (another seed, see its overrides)    ``run_training``
evaluate   train, ingest         ``metrics.json``, ``report.html``, ``plots/``  ``forecast evaluate`` (CLI)
           (+ tag, champion)
export     train                 ``bundle/`` (``bundle.json``, ONNX files)      ``forecast export --verify`` (CLI)
register   train, evaluate,      ``registered.json``                           MLflow model registry
           export
=========  ====================  ============================================  ========================
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Protocol

import yaml

from forecast.config import to_dict
from forecast.data.atomic import sha256_file, sha256_text, write_json_atomic
from forecast.pipeline.config import (
    ExportStepConfig,
    IngestStepConfig,
    LoadedPipeline,
    RegisterStepConfig,
)
from forecast.sim.sumo import SimConfig
from forecast.training.config import TrainConfig


class StepFailed(RuntimeError):
    """A step could not produce its outputs; the message says why."""

    exit_code = 1  # what ``forecast pipeline run`` exits with when this ended the run


class QuarantineFailed(StepFailed):
    """``ingest.strict`` and something was quarantined: exit 3, as ``forecast ingest --strict``."""

    exit_code = 3


@dataclass
class StepContext:
    out: Path  # the directory the step writes into (renamed to work_dir/<step>/<hash> when it returns)
    inputs: dict[str, Path]  # output directory of each input step, by step name
    hash: str = ""  # this step's hash
    pipeline: str = "pipeline"
    progress: bool = True
    rank: int = 0  # global rank; > 0 only in extra DDP processes, which join the train step and nothing else
    run_id: str | None = None  # this step's MLflow run (None when tracking is off)
    log: Callable[[str], None] = field(default=lambda msg: print(msg, file=sys.stderr))


@dataclass
class StepResult:
    outputs: dict[str, str] = field(default_factory=dict)  # label -> path relative to the step's directory
    summary: dict = field(default_factory=dict)  # counts and ids, recorded in _SUCCESS.json
    metrics: dict[str, float] = field(default_factory=dict)  # logged to the step's MLflow run


class Step(Protocol):
    name: str
    inputs: tuple[str, ...]
    resumable: bool
    code: tuple[str, ...]  # entry modules whose source (and imports') is hashed; may be absent

    def spec(self) -> dict: ...

    def run(self, ctx: StepContext) -> StepResult: ...


def call_cli(argv: list[str]) -> None:
    """Run a ``forecast`` subcommand in this process; raise StepFailed unless it exits 0."""
    from forecast.cli import main
    from forecast.pipeline.signals import check_stop

    try:
        rc = main(argv)
    except SystemExit as exc:  # argparse on bad flags
        rc = exc.code if isinstance(exc.code, int) else 2
    check_stop()  # a stop held back inside the command's last MLflow call
    if rc:
        raise StepFailed(f"`forecast {' '.join(argv)}` exited with code {rc}")


def _package_version(name: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return "unknown"


def _require(path: Path, what: str) -> Path:
    if not path.exists():
        raise StepFailed(f"{what} {path} was not written")
    return path


# ----------------------------------------------------------------------------------------------
# simulate, ingest, train: library calls
# ----------------------------------------------------------------------------------------------


class SimulateStep:
    name, inputs, resumable = "simulate", (), True  # simulate() keeps finished networks of a killed run
    code = ("forecast.sim.sumo",)

    def __init__(self, sim: SimConfig):
        self.sim = sim

    def spec(self) -> dict:
        return {"sim": to_dict(self.sim), "sumo": _package_version("eclipse-sumo")}

    def run(self, ctx: StepContext) -> StepResult:
        from forecast.sim.sumo import simulate

        # simulate() builds each network in runs/.<network>.<random>/ and renames it when done; a killed
        # run leaves those behind, and an ingest that searches runs/ for fcd.parquet must not find them.
        for leftover in (ctx.out / "runs").glob(".*") if (ctx.out / "runs").exists() else []:
            shutil.rmtree(leftover, ignore_errors=True)
        runs = simulate(self.sim, ctx.out / "runs", progress=ctx.progress)
        splits: dict[str, int] = {}
        for r in runs:
            splits[r.parent.name] = splits.get(r.parent.name, 0) + 1
        return StepResult({"runs": "runs"}, {"networks": [str(r.relative_to(ctx.out)) for r in runs], "splits": splits},
                          {"networks": float(len(runs))})


def _adapter(source: str, scenario_length_s: float):
    if source == "sumo":
        from forecast.data.sources.sumo import SumoAdapter

        return SumoAdapter(scenario_length_s=scenario_length_s)
    if source == "av2":
        from forecast.data.sources.av2 import Av2Adapter

        return Av2Adapter()
    if source == "eth_ucy":
        from forecast.data.sources.eth_ucy import EthUcyAdapter

        return EthUcyAdapter()
    raise ValueError(f"unknown source {source!r}; known: sumo, av2, eth_ucy")


def folder_manifest(root: Path) -> str:
    """Hash of every file's relative path, size and modification time under ``root`` (cheap, no reading)."""
    root = Path(root)
    if not root.exists():
        raise FileNotFoundError(f"input {root} does not exist")
    rows = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for f in sorted(filenames):
            p = Path(dirpath) / f
            st = p.stat()
            rows.append(f"{p.relative_to(root)}\t{st.st_size}\t{st.st_mtime_ns}")
    return sha256_text("\n".join(rows))


class IngestStep:
    name, resumable = "ingest", True  # run_ingest skips units whose manifest is already in the store

    def __init__(self, cfg: IngestStepConfig):
        self.cfg = cfg
        self.inputs: tuple[str, ...] = () if cfg.input else ("simulate",)
        self.code = ("forecast.data.ingest", "forecast.data.store", f"forecast.data.sources.{cfg.source}")
        self._spec: dict | None = None

    def spec(self) -> dict:
        from forecast.data.ingest import INGEST_VERSION
        from forecast.data.schema import SCHEMA_VERSION

        if self._spec is None:  # walked once: an outside folder can hold many files
            out = {"ingest": asdict(self.cfg), "ingest_version": INGEST_VERSION, "schema_version": SCHEMA_VERSION}
            if self.cfg.input:  # an outside folder: its manifest stands in for an input step's hash
                out["input_manifest"] = folder_manifest(Path(self.cfg.input))
            self._spec = out
        return self._spec

    def run(self, ctx: StepContext) -> StepResult:
        from forecast.data.ingest import run_ingest
        from forecast.data.store import Store

        root = Path(self.cfg.input) if self.cfg.input else ctx.inputs["simulate"] / "runs"
        store = Store(ctx.out / "store")
        for leftover in store.path.rglob(".*.tmp") if store.path.exists() else []:  # atomic writes cut short
            leftover.unlink(missing_ok=True)
        summary = run_ingest(_adapter(self.cfg.source, self.cfg.scenario_length_s), root, store, (0, 1),
                             self.cfg.split, ctx.progress)
        write_json_atomic(summary.to_dict(), store.path / "_summaries" / f"ingest-{self.cfg.source}.json")
        if summary.quarantined_in_shard:  # said on the terminal, not only in the store
            reasons = ", ".join(f"{k}: {v}" for k, v in sorted(summary.quarantine_reasons.items())[:5])
            ctx.log(f"[ingest] warning: {summary.quarantined_in_shard} rows/files quarantined ({reasons}); "
                    f"see {store.quarantine_dir} or `forecast store {store.path}`")
        if self.cfg.strict and summary.quarantined_in_shard:
            raise QuarantineFailed(f"ingest.strict: {summary.quarantined_in_shard} rows/files quarantined "
                                   f"(see {store.quarantine_dir})")
        counts = {k: float(v) for k, v in summary.to_dict().items() if isinstance(v, int)}
        return StepResult({"store": "store"}, summary.to_dict(), counts)


def train_config_for(train: TrainConfig, out: Path, store: Path, tracking_uri: str | None) -> TrainConfig:
    """The train config with the pipeline's paths: ``out_dir`` is the step directory, the store the ingest output."""
    cfg = copy.deepcopy(train)
    cfg.out_dir = str(out)
    cfg.data.store = str(store)
    if cfg.mlflow.tracking_uri is None:
        cfg.mlflow.tracking_uri = tracking_uri
    return cfg


class TrainStep:
    # Resumable: the same directory keeps checkpoints/last.ckpt and mlflow_run_id, which run_training resumes from.
    name, inputs, resumable = "train", ("ingest",), True
    code = ("forecast.training.train",)

    def __init__(self, train: TrainConfig, tracking_uri: str | None = None):
        self.train = train
        self.tracking_uri = tracking_uri

    def spec(self) -> dict:
        d = to_dict(self.train)
        # Paths are the runner's business, and where MLflow lives does not change the model.
        d.pop("out_dir")
        d.pop("mlflow")
        d["data"].pop("store")
        return {"train": d}

    def run(self, ctx: StepContext) -> StepResult:
        from forecast.training.train import run_training

        cfg = train_config_for(self.train, ctx.out, ctx.inputs["ingest"] / "store", self.tracking_uri)
        if cfg.mlflow.run_name is None:
            cfg.mlflow.run_name = f"{ctx.pipeline}-{self.name}-{ctx.hash[:8]}"
        result = run_training(cfg, progress=ctx.progress)  # stops at the next batch end once a signal came
        if ctx.rank > 0:
            return StepResult()
        _require(ctx.out / "model.pt", "model")
        # run_training wrote the working directory's absolute path, which the commit renames away
        summary = json.loads((ctx.out / "train_summary.json").read_text())
        write_json_atomic({**summary, "model": "model.pt"}, ctx.out / "train_summary.json")
        return StepResult({"model": "model.pt", "summary": "train_summary.json", "checkpoints": "checkpoints"},
                          {"mlflow_run_id": result.run_id, "global_step": result.global_step}, dict(result.metrics))


# ----------------------------------------------------------------------------------------------
# evaluate, export: the CLI entry points, so the steps stay loosely coupled to those packages
# ----------------------------------------------------------------------------------------------


@dataclass
class MlflowFlags:
    enabled: bool = True
    tracking_uri: str | None = None

    def args(self, run_name: str) -> list[str]:
        # the store is passed with tracking off too: a champion models:/... is read from it, as the gate and
        # the register step read theirs
        uri = ["--tracking-uri", self.tracking_uri] if self.tracking_uri else []
        return (["--no-mlflow"] if not self.enabled else ["--run-name", run_name]) + uri


class ChampionStep(TrainStep):
    """The champion the trained model is compared with: a second training (another seed), same contract as train."""

    name, inputs, resumable = "champion", ("ingest",), True


class TagStep:
    name, inputs, resumable = "tag", ("ingest",), False
    code = ("forecast.scenarios.tags", "forecast.scenarios.table")

    def __init__(self, splits: list[str]):
        self.splits = list(splits)

    def spec(self) -> dict:
        return {"splits": sorted(self.splits)}

    def run(self, ctx: StepContext) -> StepResult:
        from forecast.scenarios.table import read_meta

        argv = ([] if ctx.progress else ["--quiet"]) + [
            "tag", "--store", str(ctx.inputs["ingest"] / "store"), "--out", str(ctx.out / "tags.parquet")]
        for split in self.splits:
            argv += ["--split", split]
        call_cli(argv)
        meta = read_meta(_require(ctx.out / "tags.parquet", "tag table")) or {}
        counts = {f"tag/{k}": float(v) for k, v in (meta.get("counts") or {}).items()}
        return StepResult({"tags": "tags.parquet"}, {"agent_steps": meta.get("agent_steps")}, counts)


class EvaluateStep:
    name, inputs, resumable = "evaluate", ("train", "ingest"), False
    code = ("forecast.evaluation.cli", "forecast.evaluation.evaluate")

    def __init__(self, eval_config: dict, args: list[str] | None = None, mlflow: MlflowFlags | None = None,
                 with_steps: tuple[str, ...] = (), baseline: str | None = None, suite: str | None = None):
        self.eval_config = eval_config
        self.args = list(args or [])
        self.mlflow = mlflow or MlflowFlags()
        # optional inputs: the tag table and a champion model trained by this pipeline
        self.inputs = ("train", "ingest", *[s for s in ("tag", "champion") if s in with_steps])
        self.baseline = baseline
        self.suite = suite

    def spec(self) -> dict:
        cfg = {k: v for k, v in self.eval_config.items() if k != "mlflow"}
        out = {"evaluate": cfg, "args": self.args}
        if self.baseline and "champion" not in self.inputs:
            out["baseline"] = self.baseline
        if self.suite:
            from forecast.scenarios.suites import suite_path

            out["suite"] = sha256_text(suite_path(self.suite).read_text())  # the cases, not where the file is
        return out

    def run(self, ctx: StepContext) -> StepResult:
        cfg_path = ctx.out / "eval_config.yaml"
        cfg_path.write_text(yaml.safe_dump(self.eval_config, sort_keys=False))
        argv = ([] if ctx.progress else ["--quiet"]) + [
            "evaluate", "--model", str(ctx.inputs["train"] / "model.pt"), "--store", str(ctx.inputs["ingest"] / "store"),
            "--out", str(ctx.out), "--config", str(cfg_path),
            *self.mlflow.args(f"{ctx.pipeline}-evaluate-{ctx.hash[:8]}"), *self.args,
        ]
        if "tag" in ctx.inputs:
            argv += ["--tags", str(ctx.inputs["tag"] / "tags.parquet")]
        if "champion" in ctx.inputs:
            argv += ["--baseline", str(ctx.inputs["champion"] / "model.pt")]
        elif self.baseline:
            argv += ["--baseline", self.baseline]
        if self.suite:
            argv += ["--suite", self.suite]
        call_cli(argv)
        metrics = json.loads(_require(ctx.out / "metrics.json", "metrics").read_text())
        _require(ctx.out / "report.html", "report")
        return StepResult({"metrics": "metrics.json", "report": "report.html"},
                          {"split": metrics.get("split"), "num_samples": metrics.get("num_samples")},
                          headline(metrics))


def headline(metrics: dict) -> dict[str, float]:
    """The model's and the baselines' overall metrics from metrics.json, for MLflow (``@`` is not allowed there)."""
    out: dict[str, float] = {}
    blocks = [("model", metrics)] + [(f"baseline/{n}", b) for n, b in metrics.get("baselines", {}).items()]
    for prefix, block in blocks:
        for k, v in block.get("overall", {}).items():
            if isinstance(v, int | float) and not isinstance(v, bool):
                out[f"{prefix}/{k}".replace("@", "_")] = float(v)
    return out


class ExportStep:
    name, inputs, resumable = "export", ("train",), False
    code = ("forecast.export.cli",)

    def __init__(self, cfg: ExportStepConfig):
        self.cfg = cfg

    def spec(self) -> dict:
        return {"export": asdict(self.cfg)}

    def run(self, ctx: StepContext) -> StepResult:
        bundle = ctx.out / "bundle"
        argv = ([] if ctx.progress else ["--quiet"]) + [
            "export", "--model", str(ctx.inputs["train"] / "model.pt"), "--out", str(bundle),
            *(["--verify"] if self.cfg.verify else []), *self.cfg.args,
        ]
        call_cli(argv)  # registers nothing (no --register): in the pipeline the register step does, after the gate
        manifest = json.loads(_require(bundle / "bundle.json", "bundle manifest").read_text())
        return StepResult({"bundle": "bundle", "manifest": "bundle/bundle.json"},
                          {"files": sorted(manifest.get("files", {})), "models": manifest.get("models", {}),
                           "bundle_json_sha256": sha256_file(bundle / "bundle.json")})  # to pin in the car


# ----------------------------------------------------------------------------------------------
# register: the MLflow model registry
# ----------------------------------------------------------------------------------------------


class RegisterStep:
    name, inputs, resumable = "register", ("train", "evaluate", "export"), False
    code = ("forecast.pipeline.registry",)

    def __init__(self, cfg: RegisterStepConfig, registry):
        self.cfg = cfg
        self.registry = registry  # forecast.pipeline.registry.MlflowRegistry or a stand-in

    def spec(self) -> dict:
        return {"register": asdict(self.cfg)}

    def run(self, ctx: StepContext) -> StepResult:
        from forecast.pipeline.gate import metric_value

        metrics = json.loads((ctx.inputs["evaluate"] / "metrics.json").read_text())
        recorded = {k: v for k in metrics.get("overall", {}) if (v := metric_value(metrics, k)) is not None}
        train = json.loads((ctx.inputs["train"] / "train_summary.json").read_text())
        tags = {"pipeline.name": ctx.pipeline, "pipeline.evaluate_hash": ctx.inputs["evaluate"].name,
                "pipeline.export_hash": ctx.inputs["export"].name, "pipeline.train_hash": ctx.inputs["train"].name,
                "train.run_id": str(train.get("run_id")), "evaluate.split": str(metrics.get("split"))}
        version = self.registry.register(self.cfg.model_name, self.cfg.alias, ctx.inputs["export"] / "bundle",
                                         recorded, tags, run_id=ctx.run_id)
        info = {"model_name": self.cfg.model_name, "version": version, "alias": self.cfg.alias, "metrics": recorded,
                "tags": tags}
        write_json_atomic(info, ctx.out / "registered.json")
        ctx.log(f"registered {self.cfg.model_name} version {version} (alias {self.cfg.alias})")
        return StepResult({"registered": "registered.json"}, {"version": version})


def build_steps(loaded: LoadedPipeline, registry=None) -> list[Step]:
    """The configured steps, in order. ``registry`` is needed by the register step only."""
    cfg = loaded.config
    flags = MlflowFlags(cfg.mlflow.enabled, cfg.mlflow.tracking_uri)
    make: dict[str, Callable[[], Step]] = {
        "simulate": lambda: SimulateStep(loaded.sim),
        "ingest": lambda: IngestStep(cfg.ingest),
        "tag": lambda: TagStep(cfg.tag.splits),
        "train": lambda: TrainStep(loaded.train, cfg.mlflow.tracking_uri),
        "champion": lambda: ChampionStep(loaded.champion, cfg.mlflow.tracking_uri),
        "evaluate": lambda: EvaluateStep(loaded.evaluate or {}, cfg.evaluate.args, flags, tuple(cfg.steps),
                                         cfg.evaluate.baseline, cfg.evaluate.suite),
        "export": lambda: ExportStep(cfg.export),
        "register": lambda: RegisterStep(cfg.register, registry),
    }
    return [make[name]() for name in cfg.steps]
