"""Code-aware steps: a step's hash covers the source it runs; `forecast pipeline status` says why a step is stale."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

import forecast.pipeline.code as code
from forecast.cli import main
from forecast.pipeline.code import code_files, code_modules
from forecast.pipeline.config import load_pipeline
from forecast.pipeline.runner import RunOptions, run_pipeline, step_states
from forecast.pipeline.stale import why_stale
from forecast.pipeline.steps import StepResult, build_steps

ROOT = Path(__file__).resolve().parents[2]
QUICKSTART = ROOT / "configs/pipeline/quickstart.yaml"


def _write(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    return root / "forecast"


def test_closure_follows_lazy_relative_and_from_imports(tmp_path):
    pkg = _write(tmp_path, {
        "forecast/__init__.py": "",
        "forecast/a/__init__.py": "",
        "forecast/a/entry.py": "def f():\n    from forecast.b import helper  # lazy\n    return helper\n",
        "forecast/b/__init__.py": "from .impl import x\n",
        "forecast/b/impl.py": "from . import deep\nx = 1\n",
        "forecast/b/deep.py": "import numpy\n",
        "forecast/b/helper.py": "",
        "forecast/c.py": "# never imported\n",
    })
    mods = code_modules(("forecast.a.entry",), pkg)
    assert mods == ["forecast", "forecast.a", "forecast.a.entry", "forecast.b", "forecast.b.deep", "forecast.b.helper",
                    "forecast.b.impl"]
    before = code_files(("forecast.a.entry",), pkg)
    assert set(before) == {"forecast/__init__.py", "forecast/a/__init__.py", "forecast/a/entry.py",
                           "forecast/b/__init__.py", "forecast/b/deep.py", "forecast/b/helper.py", "forecast/b/impl.py"}
    (pkg / "b/deep.py").write_text("import numpy  # edited\n")
    after = code_files(("forecast.a.entry",), pkg)
    assert {f for f in before if before[f] != after[f]} == {"forecast/b/deep.py"}
    (pkg / "c.py").write_text("# edited, but nobody runs it\n")
    assert code_files(("forecast.a.entry",), pkg) == after


def test_each_step_runs_the_model_code_it_should():
    steps = {s.name: s for s in build_steps(load_pipeline(QUICKSTART))}
    uses_rollout = {n for n, s in steps.items() if "forecast/model/rollout.py" in code_files(s.code)}
    assert "forecast/runtime/predictor.py" in code_files(steps["register"].code)  # the pyfunc wraps it
    # register reaches the model package through forecast.export's __init__ (a conservative superset);
    # the tag step runs no model code
    assert uses_rollout >= {"train", "champion", "evaluate", "export"}
    assert not uses_rollout & {"simulate", "ingest", "tag"}
    assert "forecast/data/sources/sumo.py" in code_files(steps["ingest"].code)
    assert "forecast/sim/sumo.py" in code_files(steps["simulate"].code)


class _NoOp:
    """A real step's name, inputs, code and spec (so the same hash) with a run that writes nothing."""

    def __init__(self, step):
        self.step = step
        self.name, self.inputs, self.resumable, self.code = step.name, step.inputs, step.resumable, step.code

    def spec(self) -> dict:
        return self.step.spec()

    def run(self, ctx) -> StepResult:
        return StepResult()


@pytest.fixture
def copied_package(tmp_path, monkeypatch) -> Path:
    """A copy of the forecast package that the code hashing reads, so a test can edit it."""
    pkg = tmp_path / "src" / "forecast"
    shutil.copytree(code.PACKAGE_DIR, pkg, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(code, "PACKAGE_DIR", pkg)
    return pkg


def test_editing_rollout_makes_train_evaluate_export_stale(tmp_path, copied_package, capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    work = tmp_path / "work"
    overrides = [f"work_dir={work}", f"mlflow.tracking_uri=sqlite:///{tmp_path}/unused.db"]
    loaded = load_pipeline(QUICKSTART, overrides)
    result = run_pipeline([_NoOp(s) for s in build_steps(loaded)], work,
                          RunOptions(name="t", progress=False, log=lambda m: None))
    assert result.status == "ok"
    assert [s["state"] for s in step_states(build_steps(loaded), work)] == ["done"] * len(loaded.config.steps)

    rollout = copied_package / "model/rollout.py"
    rollout.write_text(rollout.read_text() + "\n# a change to the model\n")
    states = {s["step"]: s for s in step_states(build_steps(load_pipeline(QUICKSTART, overrides)), work)}
    assert {n: s["state"] for n, s in states.items()} == {
        "simulate": "done", "ingest": "done", "tag": "done", "train": "stale", "champion": "stale", "evaluate": "stale",
        "export": "stale", "register": "stale"}
    for name in ("train", "champion", "evaluate", "export"):
        assert "code changed: forecast/model/rollout.py" in states[name]["why"]
    assert any(w.startswith("input train changed") for w in states["evaluate"]["why"])
    assert any(w.startswith("input export changed") for w in states["register"]["why"])  # its inputs, not its code

    assert main(["pipeline", "status", str(QUICKSTART), *overrides]) == 0
    out = capsys.readouterr().out
    for name in ("train", "champion", "evaluate", "export"):
        line = next(ln for ln in out.splitlines() if ln.strip().startswith(name))
        assert "stale" in line
    assert out.count("code changed: forecast/model/rollout.py") == 5  # train, champion, evaluate, export, register
    assert next(ln for ln in out.splitlines() if ln.strip().startswith("ingest")).split()[1] == "done"


def test_why_stale_names_settings_inputs_version_and_old_records():
    prev = {"spec": {"train": {"optim": {"max_epochs": 1}}}, "input_hashes": {"ingest": "aaa"},
            "code_files": {"forecast/x.py": "1", "forecast/gone.py": "2"}, "forecast_version": "0.1.0"}
    why = why_stale(prev, spec={"train": {"optim": {"max_epochs": 2}}}, input_hashes={"ingest": "bbb"},
                    code_files={"forecast/x.py": "1", "forecast/new.py": "3"}, version="0.2.0")
    assert why == ["code added: forecast/new.py", "code removed: forecast/gone.py",
                   "settings changed: train.optim.max_epochs: 1 -> 2", "input ingest changed (aaa -> bbb)",
                   "forecast version 0.1.0 -> 0.2.0"]
    old = {k: v for k, v in prev.items() if k != "code_files"}
    assert "code not recorded" in why_stale(old, prev["spec"], prev["input_hashes"], {"forecast/x.py": "1"}, "0.1.0")[0]
