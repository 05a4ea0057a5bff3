"""Config loading: every value checked against its declared type, errors name key, value and type, exit 2."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from forecast.cli import EXIT_USAGE, main
from forecast.config import ConfigError, apply_overrides, from_dict, load_yaml
from forecast.sim.sumo import SimConfig
from forecast.training.config import TrainConfig

ROOT = Path(__file__).resolve().parents[1]
QUICKSTART = str(ROOT / "configs/train/quickstart.yaml")


@dataclass
class Inner:
    threshold: float = 1.0


@dataclass
class Outer:
    inner: Inner = field(default_factory=Inner)
    names: list[str] = field(default_factory=list)


def _train(*overrides: str) -> TrainConfig:
    return from_dict(TrainConfig, apply_overrides(load_yaml(QUICKSTART), list(overrides)), where="quickstart.yaml")


@pytest.mark.parametrize("override, key, expected", [
    ("optim.max_epochs=ten", "optim.max_epochs", "int"),
    ("optim.lr=fast", "optim.lr", "float"),
    ("trainer.deterministic=maybe", "trainer.deterministic", "bool"),
    ("data.max_train_samples=lots", "data.max_train_samples", "int | None"),
    ("features.raster.size=[1,2]", "features.raster.size", "int"),
    ("trainer.devices=[1]", "trainer.devices", "int | str"),
    ("optim=3", "optim", "OptimConfig"),
    ("optim.max_epochs=2.5", "optim.max_epochs", "int"),
])
def test_bad_value_names_key_value_and_type(override, key, expected):
    value = override.split("=", 1)[1]
    with pytest.raises(ConfigError) as info:
        _train(override)
    msg = str(info.value)
    assert "quickstart.yaml" in msg and f"{key}: got " in msg and expected in msg
    assert value.strip("[]").split(",")[0] in msg


def test_good_values_are_converted_to_the_declared_type():
    cfg = _train("optim.max_epochs=3", "optim.lr=1e-3", "trainer.limit_train_batches=5",
                 "trainer.limit_val_batches=0.5", "trainer.devices=auto", "mlflow.run_name=2024")
    assert cfg.optim.max_epochs == 3 and isinstance(cfg.optim.max_epochs, int)
    # PyYAML reads "1e-3" as a string; the declared float wins
    assert cfg.optim.lr == pytest.approx(1e-3) and isinstance(cfg.optim.lr, float)
    assert cfg.trainer.limit_train_batches == 5 and isinstance(cfg.trainer.limit_train_batches, int)
    assert cfg.trainer.limit_val_batches == 0.5
    assert cfg.trainer.devices == "auto" and cfg.mlflow.run_name == "2024"
    assert type(cfg.features.raster).__name__ == "RasterConfig"


def test_unknown_and_missing_keys_are_named():
    with pytest.raises(ConfigError, match=r"optim\.maxepochs: unknown key .*max_epochs"):
        _train("optim.maxepochs=1")
    with pytest.raises(ConfigError, match=r"networks\[0\]\.kind: required key missing"):
        from_dict(SimConfig, {"networks": [{"name": "a", "split": "train"}]})
    with pytest.raises(ConfigError, match=r"networks\[0\]\.demand\.car_period: got 'often'"):
        from_dict(SimConfig, {"networks": [{"name": "a", "split": "train", "kind": "grid",
                                            "demand": {"car_period": "often"}}]})


def test_a_new_field_is_checked_with_no_extra_code():
    """The scheme is driven by the dataclasses: a field another module adds is checked too."""
    assert from_dict(Outer, {"inner": {"threshold": 2}}).inner.threshold == 2.0
    with pytest.raises(ConfigError, match=r"inner\.threshold: got 'high', expected float"):
        from_dict(Outer, {"inner": {"threshold": "high"}})
    with pytest.raises(ConfigError, match=r"names\[1\]: got \[\]"):
        from_dict(Outer, {"names": ["a", []]})


def test_bad_yaml_and_bad_override_syntax(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("optim: {max_epochs: [\n")
    with pytest.raises(ConfigError, match="bad.yaml"):
        load_yaml(bad)
    with pytest.raises(ConfigError, match="key.sub=value"):
        apply_overrides({}, ["optim.max_epochs"])


@pytest.mark.parametrize("override, key", [("optim.max_epochs=ten", "optim.max_epochs"),
                                           ("max_epochs=abc", "max_epochs")])
def test_train_cli_exits_2_naming_the_key(override, key, capsys):
    assert main(["train", "--config", QUICKSTART, override]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert key in err and override.split("=")[1] in err


def test_pipeline_override_of_a_step_config_is_checked_at_load(capsys):
    code = main(["pipeline", "status", str(ROOT / "configs/pipeline/quickstart.yaml"),
                 "train.overrides.optim.max_epochs=ten"])
    assert code == EXIT_USAGE
    assert "optim.max_epochs: got 'ten', expected int" in capsys.readouterr().err
    code = main(["pipeline", "status", str(ROOT / "configs/pipeline/quickstart.yaml"),
                 "evaluate.overrides.t0_stride=often"])
    assert code == EXIT_USAGE
    assert "t0_stride: got 'often'" in capsys.readouterr().err


def test_cli_process_exit_code_is_2():
    """The real console entry point, as a scheduler sees it."""
    proc = subprocess.run([sys.executable, "-m", "forecast.cli", "train", "--config", QUICKSTART,
                           "optim.max_epochs=ten"], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert "optim.max_epochs" in proc.stderr and "'ten'" in proc.stderr and "int" in proc.stderr


@pytest.mark.parametrize("path", sorted(str(p.relative_to(ROOT)) for p in (ROOT / "configs").rglob("*.yaml")))
def test_every_shipped_config_loads(path, monkeypatch):
    monkeypatch.chdir(ROOT)
    kind = Path(path).parts[1]
    if kind == "train":
        from_dict(TrainConfig, load_yaml(path), where=path)
    elif kind == "data":
        from_dict(SimConfig, load_yaml(path), where=path)
    elif kind == "eval":
        from forecast.evaluation.evaluate import EvalConfig

        from_dict(EvalConfig, load_yaml(path), where=path)
    elif kind == "pipeline":
        from forecast.pipeline.config import load_pipeline

        load_pipeline(path)
    elif kind == "benchmark":
        from forecast.benchmark.eth_ucy import load_config

        load_config(path)
    elif kind == "suites":
        from forecast.scenarios.suites import load_suite

        assert load_suite(path).cases
    else:
        pytest.fail(f"no loader known for {path}")
