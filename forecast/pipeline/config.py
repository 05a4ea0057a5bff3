"""Pipeline configuration (configs/pipeline/*.yaml): which steps run, on what, into which work_dir.

Parsed once at the edge by :func:`load_pipeline`, which also loads the data and train configs a
pipeline refers to, so the steps receive typed dataclasses and never read files themselves.

A step's ``overrides`` is a nested mapping deep-merged onto the config file it names, so both of
these set the number of epochs::

    train: {config: configs/train/quickstart.yaml, overrides: {optim: {max_epochs: 1}}}
    forecast pipeline run configs/pipeline/quickstart.yaml train.overrides.optim.max_epochs=1
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from forecast.config import apply_overrides, from_dict, load_yaml
from forecast.pipeline.gate import GateConfig
from forecast.sim.sumo import SimConfig
from forecast.training.config import TrainConfig

STEP_ORDER = ("simulate", "ingest", "tag", "train", "champion", "evaluate", "export", "register")


@dataclass
class SimulateStepConfig:
    config: str = "configs/data/sumo_demo.yaml"  # a SimConfig YAML
    overrides: dict[str, Any] = field(default_factory=dict)


@dataclass
class IngestStepConfig:
    source: str = "sumo"  # sumo | av2 | eth_ucy
    input: str | None = None  # an input directory; None: the simulate step's output
    split: str | None = None  # one split for every unit (default: from run.json or the folder name)
    scenario_length_s: float = 10.0  # SUMO: seconds per scenario
    strict: bool = False  # fail the step if any row or file was quarantined


@dataclass
class TagStepConfig:
    """`forecast tag`: the scenario tag table of the ingested store (labels for per-tag metrics)."""

    splits: list[str] = field(default_factory=lambda: ["test"])  # tag only what is evaluated


@dataclass
class ChampionStepConfig:
    """A champion to compare the trained model with when no registered one is given: a second training
    with the train config plus these overrides (another seed; shorter, to keep a demo cheap)."""

    overrides: dict[str, Any] = field(default_factory=lambda: {"seed": 1})


@dataclass
class TrainStepConfig:
    config: str = "configs/train/quickstart.yaml"  # a TrainConfig YAML; out_dir and data.store are set by the step
    overrides: dict[str, Any] = field(default_factory=dict)


@dataclass
class EvaluateStepConfig:
    """`forecast evaluate` on the trained model; the physics baselines (constant_velocity, ctrv) are always scored."""

    config: str | None = "configs/eval/default.yaml"  # an EvalConfig YAML (None: evaluate's defaults)
    overrides: dict[str, Any] = field(default_factory=dict)
    split: str = "test"
    args: list[str] = field(default_factory=list)  # extra `forecast evaluate` flags, e.g. ["--max-samples", "500"]
    baseline: str | None = None  # the champion when there is no champion step: model.pt, bundle, models:/NAME@ALIAS
    suite: str | None = None  # a scenario suite run beside the evaluation (configs/suites/NAME.yaml or a file)


@dataclass
class ExportStepConfig:
    verify: bool = True  # ONNX Runtime vs torch parity check (`forecast export --verify`)
    args: list[str] = field(default_factory=list)  # extra `forecast export` flags


@dataclass
class RegisterStepConfig:
    """Register the exported bundle in the MLflow model registry (a gate that said no stops it)."""

    model_name: str = "forecast-world-model"
    alias: str = "champion"  # the alias moved to the new version; the gate compares against it


@dataclass
class PipelineMlflowConfig:
    enabled: bool = True
    experiment: str = "forecast-pipeline"
    tracking_uri: str | None = None  # None: $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db here


@dataclass
class PipelineConfig:
    name: str = "pipeline"
    work_dir: str = "runs/pipeline"  # every step writes work_dir/<step>/<hash>/
    steps: list[str] = field(default_factory=lambda: ["simulate", "ingest", "train", "evaluate", "export"])
    simulate: SimulateStepConfig = field(default_factory=SimulateStepConfig)
    ingest: IngestStepConfig = field(default_factory=IngestStepConfig)
    train: TrainStepConfig = field(default_factory=TrainStepConfig)
    tag: TagStepConfig = field(default_factory=TagStepConfig)
    champion: ChampionStepConfig = field(default_factory=ChampionStepConfig)
    evaluate: EvaluateStepConfig = field(default_factory=EvaluateStepConfig)
    export: ExportStepConfig = field(default_factory=ExportStepConfig)
    gate: GateConfig = field(default_factory=GateConfig)
    register: RegisterStepConfig = field(default_factory=RegisterStepConfig)
    mlflow: PipelineMlflowConfig = field(default_factory=PipelineMlflowConfig)

    def validate(self) -> None:
        """Steps must be known, unique and in pipeline order; the ones they need must be present."""
        unknown = [s for s in self.steps if s not in STEP_ORDER]
        if unknown:
            raise ValueError(f"pipeline {self.name}: unknown step(s) {unknown}; known: {list(STEP_ORDER)}")
        if len(set(self.steps)) != len(self.steps):
            raise ValueError(f"pipeline {self.name}: a step is listed twice: {self.steps}")
        if list(self.steps) != sorted(self.steps, key=STEP_ORDER.index):
            raise ValueError(f"pipeline {self.name}: steps must follow the order {list(STEP_ORDER)}")
        needs = {"train": ["ingest"], "tag": ["ingest"], "champion": ["ingest", "train"],
                 "evaluate": ["train", "ingest"], "export": ["train"],
                 "register": ["train", "evaluate", "export"]}
        if "ingest" in self.steps and self.ingest.input is None:
            needs["ingest"] = ["simulate"]
        for step, required in needs.items():
            missing = [r for r in required if step in self.steps and r not in self.steps]
            if missing:
                raise ValueError(f"pipeline {self.name}: step {step!r} needs step(s) {missing}")
        if "register" in self.steps and not self.mlflow.enabled:
            raise ValueError(f"pipeline {self.name}: step 'register' needs mlflow.enabled (the registry is MLflow's)")
        if self.gate.enabled and self.gate.must_beat_registered and not self.mlflow.enabled:
            raise ValueError(f"pipeline {self.name}: gate.must_beat_registered needs mlflow.enabled")
        if self.gate.enabled and "evaluate" not in self.steps:
            raise ValueError(f"pipeline {self.name}: the gate reads the evaluate step's metrics; add step 'evaluate'")


@dataclass
class LoadedPipeline:
    """A pipeline config with the configs its steps refer to, already parsed."""

    config: PipelineConfig
    sim: SimConfig | None
    train: TrainConfig | None
    evaluate: dict | None
    champion: TrainConfig | None = None  # the champion step's train config (train config + champion.overrides)  # the EvalConfig mapping handed to `forecast evaluate --config`


def deep_merge(base: dict, extra: dict) -> dict:
    """``base`` with ``extra`` merged in: mappings merge key by key, anything else replaces."""
    out = copy.deepcopy(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def load_pipeline(path: str | Path, overrides: list[str] | None = None) -> LoadedPipeline:
    """Read a pipeline YAML (plus dotted ``overrides``) and the data/train configs it names."""
    cfg = from_dict(PipelineConfig, apply_overrides(load_yaml(path), overrides or []), where=f"{path}")
    return resolve_pipeline(cfg)


def resolve_pipeline(cfg: PipelineConfig) -> LoadedPipeline:
    """Load the step configs of ``cfg`` (relative paths are taken from the current directory)."""
    cfg.validate()
    sim = train = evaluate = champion = None
    if "simulate" in cfg.steps:
        data = deep_merge(load_yaml(cfg.simulate.config), cfg.simulate.overrides)
        sim = from_dict(SimConfig, data, where=f"{cfg.simulate.config} + simulate.overrides")
    if "train" in cfg.steps:
        data = deep_merge(load_yaml(cfg.train.config), cfg.train.overrides)
        train = from_dict(TrainConfig, data, where=f"{cfg.train.config} + train.overrides")
        if "champion" in cfg.steps:
            champion = from_dict(TrainConfig, deep_merge(data, cfg.champion.overrides),
                                 where=f"{cfg.train.config} + train.overrides + champion.overrides")
    if "evaluate" in cfg.steps:
        from forecast.evaluation.evaluate import EvalConfig

        base = load_yaml(cfg.evaluate.config) if cfg.evaluate.config else {}
        evaluate = deep_merge(base, {**cfg.evaluate.overrides, "split": cfg.evaluate.split})
        # Checked now, not when the evaluate step starts after training.
        from_dict(EvalConfig, evaluate, where=f"{cfg.evaluate.config} + evaluate.overrides")
    if cfg.evaluate.suite and "evaluate" in cfg.steps:
        from forecast.scenarios.suites import load_suite

        load_suite(cfg.evaluate.suite)  # a missing or malformed suite fails now, not after training
    return LoadedPipeline(cfg, sim, train, evaluate, champion)
