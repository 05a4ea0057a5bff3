"""Evaluate, export and pipeline faults through the command line: the documented exit code, the path named."""

from __future__ import annotations

import os
from pathlib import Path

import yaml

from tests.faults.harness import Case, Env, Result, expect_cli


def _bad_model(env: Env, kind: str) -> Path:
    path = env.tmp / "model.pt"
    if kind == "missing":
        return env.tmp / "nope.pt"
    if kind == "directory":
        path.mkdir()
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "text":
        path.write_text("this is not a checkpoint")
    elif kind == "truncated":
        data = env.model.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif kind == "byte_flipped":  # inside the zip's central directory: torch must notice
        data = bytearray(env.model.read_bytes())
        data[-30] ^= 0xFF
        path.write_bytes(bytes(data))
    elif kind == "pickle_payload":  # weights_only=True must refuse code
        import pickle

        class Evil:
            def __reduce__(self):
                return (os.system, ("echo pwned",))

        path.write_bytes(pickle.dumps(Evil()))
    elif kind == "state_dict_only":
        import torch

        torch.save({"weights": torch.zeros(3)}, path)
    return path


MODEL_FAULTS = ("missing", "directory", "empty", "text", "truncated", "byte_flipped", "pickle_payload",
                "state_dict_only")


def _evaluate_argv(env: Env, model: Path | str | None = None, store: Path | None = None, out: Path | None = None,
                   *extra: str) -> list[str]:
    return ["--quiet", "evaluate", "--model", str(model or env.model), "--store", str(store or env.store),
            "--out", str(out or env.tmp / "eval"), "--no-mlflow", "--max-samples", "8", *extra]


def _export_argv(env: Env, model: Path | None = None, out: Path | None = None, *extra: str) -> list[str]:
    return ["--quiet", "export", "--model", str(model or env.model), "--out", str(out or env.tmp / "bundle"), *extra]


def _case(area: str, name: str, argv_of, code: int, *mentions, owner: str = "reliab", needs=("model", "store")):
    def run(env: Env) -> Result:
        argv = argv_of(env)
        return expect_cli(argv, code, *[m(env) if callable(m) else m for m in mentions])

    return Case(area, name, run, owner=owner, needs=needs)


def _evaluate_cases() -> list[Case]:
    out = [_case("evaluate", f"model_{k}", lambda e, k=k: _evaluate_argv(e, _bad_model(e, k)), 2,
                 lambda e, k=k: str(_bad_model_path(e, k))) for k in MODEL_FAULTS]

    def empty_store(e):
        (e.tmp / "empty").mkdir()
        return _evaluate_argv(e, store=e.tmp / "empty")

    def out_file(e):
        (e.tmp / "out").write_text("x")
        return _evaluate_argv(e, out=e.tmp / "out")

    def config(text):
        def argv(e):
            (e.tmp / "eval.yaml").write_text(text)
            return _evaluate_argv(e, None, None, None, "--config", str(e.tmp / "eval.yaml"))
        return argv

    out += [
        _case("evaluate", "store_missing", lambda e: _evaluate_argv(e, store=e.tmp / "nope"), 2, "nope"),
        _case("evaluate", "store_empty_dir", empty_store, 2, lambda e: str(e.tmp / "empty")),
        _case("evaluate", "split_absent", lambda e: _evaluate_argv(e, None, None, None, "--split", "nosuch"), 2,
              "nosuch"),
        _case("evaluate", "source_absent", lambda e: _evaluate_argv(e, None, None, None, "--source", "av2"), 2,
              "av2"),
        _case("evaluate", "max_samples_zero", lambda e: _evaluate_argv(e) + ["--max-samples", "0"], 2,
              "max-samples"),
        _case("evaluate", "max_samples_negative", lambda e: _evaluate_argv(e) + ["--max-samples", "-3"], 2,
              "max-samples"),
        _case("evaluate", "max_samples_word", lambda e: _evaluate_argv(e) + ["--max-samples", "all"], 2,
              "max-samples"),
        _case("evaluate", "t0_stride_zero", lambda e: _evaluate_argv(e) + ["--t0-stride", "0"], 2, "stride"),
        _case("evaluate", "out_is_a_file", out_file, 2, lambda e: str(e.tmp / "out")),
        _case("evaluate", "out_readonly", lambda e: _evaluate_argv(e, out=e.readonly() / "eval"), 2,
              lambda e: str(e.readonly() / "eval")),
        _case("evaluate", "config_missing", lambda e: _evaluate_argv(e, None, None, None, "--config",
                                                                     str(e.tmp / "nope.yaml")), 2, "nope.yaml"),
        _case("evaluate", "config_bad_yaml", config("a: [unclosed"), 2, "eval.yaml"),
        _case("evaluate", "config_unknown_key", config("frobnicate: 3\n"), 2, "frobnicate"),
        _case("evaluate", "config_wrong_type", config("max_samples: many\n"), 2, "max_samples"),
        _case("evaluate", "config_a_list", config("- 1\n- 2\n"), 2, "eval.yaml"),
        _case("evaluate", "model_baseline_unknown", lambda e: _evaluate_argv(e, "kalman"), 2, "kalman"),
        _case("evaluate", "bundle_without_manifest", lambda e: (e.tmp.joinpath("b").mkdir(),
                                                                _evaluate_argv(e, e.tmp / "b"))[1], 2,
              lambda e: str(e.tmp / "b")),
    ]
    return out


def _bad_model_path(env: Env, kind: str) -> Path:
    return env.tmp / ("nope.pt" if kind == "missing" else "model.pt")


def _export_cases() -> list[Case]:
    out = [_case("export", f"model_{k}", lambda e, k=k: _export_argv(e, _bad_model(e, k)), 2,
                 lambda e, k=k: str(_bad_model_path(e, k)), needs=("model",)) for k in MODEL_FAULTS]

    def out_file(e):
        (e.tmp / "out").write_text("x")
        return _export_argv(e, out=e.tmp / "out")

    out += [
        _case("export", "out_is_a_file", out_file, 2, lambda e: str(e.tmp / "out"), needs=("model",)),
        _case("export", "out_readonly", lambda e: _export_argv(e, out=e.readonly() / "bundle"), 2,
              lambda e: str(e.readonly() / "bundle"), needs=("model",)),
        _case("export", "opset_word", lambda e: _export_argv(e) + ["--opset", "latest"], 2, "opset", needs=("model",)),
        _case("export", "opset_ancient", lambda e: _export_argv(e) + ["--opset", "3"], 2, "opset", needs=("model",)),
        _case("export", "max_agents_zero", lambda e: _export_argv(e) + ["--max-agents", "0"], 2, "max-agents",
              needs=("model",)),
        _case("export", "max_agents_negative", lambda e: _export_argv(e) + ["--max-agents", "-5"], 2, "max-agents",
              needs=("model",)),
        _case("export", "model_flag_missing", lambda e: ["export", "--out", str(e.tmp / "b")], 2, "--model",
              needs=()),
    ]
    return out


# --- pipeline ------------------------------------------------------------------------------------------------

def _pipeline_yaml(env: Env, text: str | None = None, **changes) -> Path:
    cfg = {"name": "faults", "work_dir": str(env.tmp / "work"), "steps": ["simulate"],
           "simulate": {"config": str(env.tmp / "sim.yaml")}, "mlflow": {"enabled": False}}
    (env.tmp / "sim.yaml").write_text("seed: 1\n")
    cfg.update(changes)
    path = env.tmp / "pipeline.yaml"
    path.write_text(text if text is not None else yaml.safe_dump(cfg))
    return path


def _p(name: str, argv_of, code: int, *mentions, owner: str = "reliab") -> Case:
    return _case("pipeline", name, argv_of, code, *mentions, owner=owner, needs=())


def _pipeline_cases() -> list[Case]:
    def run(*extra, text=None, **changes):
        return lambda e: ["--quiet", "pipeline", "run", str(_pipeline_yaml(e, text, **changes)), *extra]

    def workdir_file(e):
        (e.tmp / "wd").write_text("x")
        return ["--quiet", "pipeline", "run", str(_pipeline_yaml(e, work_dir=str(e.tmp / "wd")))]

    def config_dir(e):
        (e.tmp / "cfg.yaml").mkdir()
        return ["pipeline", "run", str(e.tmp / "cfg.yaml")]

    pyaml = lambda e: str(e.tmp / "pipeline.yaml")  # noqa: E731
    return [
        _p("config_missing", lambda e: ["pipeline", "run", str(e.tmp / "nope.yaml")], 2, "nope.yaml"),
        _p("config_is_a_folder", config_dir, 2, lambda e: str(e.tmp / "cfg.yaml")),
        _p("config_bad_yaml", run(text="steps: [simulate\n"), 2, pyaml),
        _p("config_tabs", run(text="name:\tx\n\tsteps: []\n"), 2, pyaml),
        _p("config_a_list", run(text="- simulate\n"), 2, pyaml),
        _p("config_binary", lambda e: (e.tmp.joinpath("p.yaml").write_bytes(b"\xff\xfe\x00\x01"),
                                       ["pipeline", "run", str(e.tmp / "p.yaml")])[1], 2, "p.yaml"),
        _p("unknown_key", run(frobnicate=1), 2, "frobnicate"),
        _p("unknown_step", run(steps=["simulate", "deploy"]), 2, "deploy"),
        _p("steps_out_of_order", run(steps=["train", "ingest"]), 2, "train"),
        _p("steps_duplicated", run(steps=["simulate", "simulate"]), 2, "simulate"),
        _p("steps_empty", run(steps=[]), 2, "steps"),
        _p("steps_not_a_list", run(steps="simulate"), 2, "steps"),
        _p("work_dir_is_a_file", workdir_file, 2, lambda e: str(e.tmp / "wd")),
        _p("work_dir_readonly", lambda e: ["--quiet", "pipeline", "run", str(_pipeline_yaml(e)),
                                           f"work_dir={e.readonly()}"], 2, lambda e: str(e.readonly())),
        _p("work_dir_under_readonly", lambda e: ["--quiet", "pipeline", "run", str(_pipeline_yaml(e)),
                                                 f"work_dir={e.readonly() / 'w'}"], 2,
           lambda e: str(e.readonly() / "w")),
        _p("until_unknown", run("--until", "deploy"), 2, "deploy"),
        _p("force_unknown", run("--force", "deploy"), 2, "deploy"),
        _p("override_without_equals", run("work_dir"), 2, "work_dir"),
        _p("override_unknown_key", run("nope.key=1"), 2, "nope"),
        _p("override_wrong_type", run("mlflow.enabled=sometimes"), 2, "mlflow.enabled"),
        _p("unknown_flag", run("--frobnicate"), 2, "frobnicate"),
        _p("max_epochs_word", run("train.overrides.optim.max_epochs=abc", steps=["simulate", "ingest", "train"],
                                  train={"config": "configs/train/quickstart.yaml"}), 2, "max_epochs", owner="eco"),
        _p("train_config_missing", run(steps=["simulate", "ingest", "train"], train={"config": "nope.yaml"}), 2,
           "nope.yaml"),
        _p("simulate_config_bad_key", lambda e: (e.tmp.joinpath("sim2.yaml").write_text("frobnicate: 1\n"),
                                                 ["--quiet", "pipeline", "run",
                                                  str(_pipeline_yaml(e, simulate={"config": str(e.tmp / "sim2.yaml")}))])[1],
           2, "frobnicate"),
        _p("status_never_run", lambda e: ["pipeline", "status", str(_pipeline_yaml(e))], 0),
        _p("status_bad_config", lambda e: ["pipeline", "status", str(_pipeline_yaml(e, text="[1"))], 2, pyaml),
        _p("latest_json_garbage", lambda e: ((e.tmp / "work").mkdir(), (e.tmp / "work" / "latest.json")
                                             .write_text("{garbage"),
                                             ["pipeline", "status", str(_pipeline_yaml(e))])[2], 0),
        _p("lock_is_a_folder", lambda e: ((e.tmp / "work" / ".lock").mkdir(parents=True),
                                          ["--quiet", "pipeline", "run", str(_pipeline_yaml(e))])[1], 2, ".lock"),
    ]


def cases() -> list[Case]:
    return _evaluate_cases() + _export_cases() + _pipeline_cases()
