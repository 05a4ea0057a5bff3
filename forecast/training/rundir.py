"""What a training's ``out_dir`` already holds, and whether this run may continue it.

A run writes ``run_state.json`` (its config and a fingerprint of the store's content) before it fits.
The next run in the same directory then:

* continues an interrupted run (``checkpoints/last.ckpt``, no ``model.pt`` yet) of the same config and data;
* continues a finished run when only its length grew (``optim.max_epochs``, ``trainer.max_steps``);
* does nothing for a finished run of the same config and data (a rerun is free: its result is returned);
* refuses a run of another config or other data, naming what differs. Continuing it would mix two
  trainings into one checkpoint, or (a finished run) silently hand back yesterday's model as today's.
  ``fresh=True`` (``forecast train --fresh``) discards what the directory holds and trains from scratch.

Settings that change how a run goes but not what it learns (threads, workers, logging, the store's
path when its content is the same) may differ.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

from forecast.data.atomic import write_json_atomic
from forecast.training.ranks import ddp_rank_from_env

STATE_FILE = "run_state.json"
# What a training writes into out_dir (config.yaml is rewritten by every run; an MLflow store the user
# put there is not the run's to remove).
OUTPUTS = ("checkpoints", "mlflow_run_id", "model.pt", "train_summary.json", STATE_FILE)
RUNTIME_KEYS = ("out_dir", "data.store", "data.num_workers", "trainer.torch_threads", "trainer.log_every_n_steps",
                "trainer.pin_memory", "mlflow.run_name")
LENGTH_KEYS = ("optim.max_epochs", "trainer.max_steps")


class RunDirConflict(ValueError):
    """out_dir holds a run that this one must not continue."""


def flatten(d: dict, prefix: str = "") -> dict[str, object]:
    """{"a": {"b": 1}} -> {"a.b": 1}."""
    out: dict[str, object] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, f"{key}."))
        else:
            out[key] = v
    return out


def data_fingerprint(store_path: str | Path) -> str:
    """sha256 of the store's ingest manifests (every committed unit, its input hash and counts): it changes
    when data is added to or re-ingested into the store. Cheap: no table is read."""
    from forecast.data.store import Store

    store = Store(store_path)
    if not store.exists():
        raise FileNotFoundError(f"store {store.path} does not exist; run `forecast ingest` first")
    manifests = store.manifests()
    return hashlib.sha256(json.dumps(manifests, sort_keys=True, default=str).encode()).hexdigest()


def _length(flat: dict, key: str) -> float:
    v = flat.get(key)
    return float("inf") if v is None or (key == "trainer.max_steps" and v == -1) else float(v)


def decide(out: Path, config: dict, fingerprint: str, fresh: bool = False) -> str:
    """-> "new" (nothing to continue), "resume" (continue the run in ``out``) or "done" (``out`` holds the
    finished run of this config and data). ``config``: ``to_dict`` of the resolved TrainConfig.
    Raises ``RunDirConflict`` when ``out`` holds a run of another config or other data."""
    if fresh and ddp_rank_from_env() > 0:
        # Lightning's launcher re-executes the command for the other ranks once fit starts: by then the
        # first process has cleared the directory and begun the new run, which they must not remove.
        fresh = False
    if fresh:
        for name in OUTPUTS:
            p = out / name
            shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
        return "new"
    finished = (out / "model.pt").is_file() and (out / "train_summary.json").is_file()
    started = finished or (out / "checkpoints" / "last.ckpt").is_file()
    if not started:
        return "new"
    state_path = out / STATE_FILE
    if state_path.is_file():
        state = json.loads(state_path.read_text())
        before, before_data = state["config"], state.get("data_fingerprint")
    elif (out / "config.yaml").is_file():  # a run from before run_state.json: its config, data unknown
        import yaml

        before, before_data = yaml.safe_load((out / "config.yaml").read_text()), None
    else:
        before, before_data = None, None
    hint = (f"train into another out_dir, or pass --fresh (python: run_training(..., fresh=True)) to discard "
            f"what {out} holds")
    if before is None:
        raise RunDirConflict(f"{out} holds a training run without its config (no {STATE_FILE}, no config.yaml): "
                             f"cannot tell whether this run may continue it; {hint}")
    old, new = flatten(before), flatten(config)
    differ = sorted(k for k in set(old) | set(new)
                    if k not in RUNTIME_KEYS and k not in LENGTH_KEYS and old.get(k) != new.get(k))
    if differ:
        shown = ", ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in differ[:6])
        more = f" and {len(differ) - 6} more" if len(differ) > 6 else ""
        raise RunDirConflict(f"{out} holds a {'finished' if finished else 'interrupted'} run of another config "
                             f"({shown}{more}); {hint}")
    if before_data is not None and before_data != fingerprint:
        raise RunDirConflict(f"{out} holds a {'finished' if finished else 'interrupted'} run trained on other data "
                             f"(the store {new.get('data.store')} changed since: its ingest manifests differ); {hint}")
    if not finished:
        return "resume"
    longer = any(_length(new, k) > _length(old, k) for k in LENGTH_KEYS)
    return "resume" if longer else "done"


def write_state(out: Path, config: dict, fingerprint: str) -> None:
    write_json_atomic({"config": config, "data_fingerprint": fingerprint}, out / STATE_FILE)
