"""What a training's out_dir holds decides whether a run continues it, returns it, or refuses it."""

from __future__ import annotations

import json

import pytest

from forecast.training.rundir import OUTPUTS, STATE_FILE, RunDirConflict, decide, flatten, write_state

CONFIG = {"seed": 0, "out_dir": "a", "data": {"store": "s", "num_workers": 0},
          "optim": {"lr": 0.002, "max_epochs": 6}, "trainer": {"max_steps": -1, "torch_threads": None}}


def _with(**changes) -> dict:
    cfg = json.loads(json.dumps(CONFIG))
    for key, value in changes.items():
        node = cfg
        *path, last = key.split("__")
        for p in path:
            node = node[p]
        node[last] = value
    return cfg


def _run(out, finished: bool, config=CONFIG, fingerprint="f1"):
    (out / "checkpoints").mkdir(parents=True)
    (out / "checkpoints" / "last.ckpt").write_bytes(b"x")
    (out / "mlflow_run_id").write_text("r1")
    if finished:
        (out / "model.pt").write_bytes(b"x")
        (out / "train_summary.json").write_text("{}")
    write_state(out, config, fingerprint)


def test_flatten():
    assert flatten({"a": {"b": 1, "c": {"d": None}}, "e": [1]}) == {"a.b": 1, "a.c.d": None, "e": [1]}


def test_empty_dir_is_new(tmp_path):
    assert decide(tmp_path, CONFIG, "f1") == "new"


def test_interrupted_run_of_the_same_config_and_data_resumes(tmp_path):
    _run(tmp_path, finished=False)
    assert decide(tmp_path, CONFIG, "f1") == "resume"
    # how it runs, not what it learns: threads, workers, the store's path with the same content
    assert decide(tmp_path, _with(trainer__torch_threads=1, data__num_workers=2, data__store="moved", out_dir="b"),
                  "f1") == "resume"


def test_finished_run_is_done_unless_it_is_trained_longer(tmp_path):
    _run(tmp_path, finished=True)
    assert decide(tmp_path, CONFIG, "f1") == "done"
    assert decide(tmp_path, _with(optim__max_epochs=4), "f1") == "done"  # shorter: nothing left to train
    assert decide(tmp_path, _with(optim__max_epochs=8), "f1") == "resume"
    assert decide(tmp_path, _with(trainer__max_steps=100), "f1") == "done"  # -1 is no limit: 100 is shorter


@pytest.mark.parametrize("finished", [False, True])
def test_another_config_or_other_data_is_refused_and_named(tmp_path, finished):
    _run(tmp_path, finished=finished)
    with pytest.raises(RunDirConflict, match=r"optim\.lr: 0\.002 -> 0\.01.*--fresh"):
        decide(tmp_path, _with(optim__lr=0.01), "f1")
    with pytest.raises(RunDirConflict, match="other data"):
        decide(tmp_path, CONFIG, "f2")


def test_fresh_discards_the_run_and_keeps_the_rest(tmp_path):
    _run(tmp_path, finished=True)
    (tmp_path / "mlflow.db").write_bytes(b"db")  # a store the user put there is not the run's
    assert decide(tmp_path, _with(optim__lr=0.01), "f2", fresh=True) == "new"
    assert not any((tmp_path / name).exists() for name in OUTPUTS)
    assert (tmp_path / "mlflow.db").exists()


def test_a_run_from_before_the_state_file_is_judged_by_its_config_yaml(tmp_path):
    import yaml

    _run(tmp_path, finished=False)
    (tmp_path / STATE_FILE).unlink()
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(CONFIG))
    assert decide(tmp_path, CONFIG, "anything") == "resume"  # its data is unknown: not held against it
    with pytest.raises(RunDirConflict, match="seed"):
        decide(tmp_path, _with(seed=1), "anything")
    (tmp_path / "config.yaml").unlink()
    with pytest.raises(RunDirConflict, match="without its config"):
        decide(tmp_path, CONFIG, "anything")


def test_only_the_launching_process_discards_the_run(tmp_path, monkeypatch):
    """Lightning re-executes ``forecast train --fresh`` for the other DDP ranks after the first began the new run."""
    _run(tmp_path, finished=False)
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert decide(tmp_path, CONFIG, "f1", fresh=True) == "resume"
    assert (tmp_path / "mlflow_run_id").exists()
