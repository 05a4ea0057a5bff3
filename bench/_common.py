"""Shared helpers for the bench scripts: timing, a printed table, a JSON result file and a small SUMO store."""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results"


def machine() -> dict:
    import numpy

    info = {"python": platform.python_version(), "machine": platform.machine(), "cpus": os.cpu_count(),
            "cpu": cpu_model(), "numpy": numpy.__version__}
    try:
        import torch

        info["torch"] = torch.__version__
        info["torch_threads"] = torch.get_num_threads()
    except ImportError:
        pass
    return info


def cpu_model(cpuinfo: str | None = None) -> dict:
    """The CPU as /proc/cpuinfo names it (``cpuinfo``: its text, read here when None), with its widest
    vector extension: single-thread figures moved by 2-3 x between hosts of one machine kind (Zen 3
    without AVX-512, Zen 4 and 5 with it), so a bench figure says which one it came from. Always the
    keys name, family, model, vector (None where the OS does not say)."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            cpuinfo = ""
    first = {}
    for line in cpuinfo.split("\n\n", 1)[0].splitlines():
        key, sep, value = line.partition(":")
        if sep:
            first[key.strip()] = value.strip()
    flags = set((first.get("flags") or first.get("Features") or "").split())  # x86 / ARM
    vector = next((f for f in ("avx512f", "avx2", "avx", "sse4_2", "sve2", "sve", "asimd") if f in flags), None)
    name = first.get("model name") or (f"ARM implementer {first['CPU implementer']} part {first.get('CPU part')}"
                                       if "CPU implementer" in first else platform.processor() or None)
    return {"name": name, "family": first.get("cpu family"), "model": first.get("model"), "vector": vector}


def best_of(fn, repeat: int = 3) -> float:
    """Best wall time of ``repeat`` calls (seconds): the least disturbed by the rest of the machine."""
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def models_on_split_parser(doc: str):
    """The arguments of a bench that compares trained models on one split of a store (validation by
    default: what may choose a setting): --model M [M ...], --store, --split, --source, --seed, --json."""
    import argparse

    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", nargs="+", required=True)
    ap.add_argument("--store", required=True)
    ap.add_argument("--split", default="val")
    ap.add_argument("--source", default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json")
    return ap


def report(name: str, rows: list[dict], extra: dict | None = None, out: str | None = None) -> Path:
    cols = list(dict.fromkeys(c for r in rows for c in r))  # every row's columns, first seen first
    width = {c: max(len(c), *(len(_fmt(r.get(c, ""))) for r in rows)) for c in cols}
    print("  ".join(c.ljust(width[c]) for c in cols))
    for r in rows:
        print("  ".join(_fmt(r.get(c, "")).ljust(width[c]) for c in cols))
    path = Path(out) if out else RESULTS / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"bench": name, "machine": machine(), "rows": rows, **(extra or {})}, indent=2))
    print(f"wrote {path}")
    return path


def _fmt(v) -> str:
    return f"{v:,.3f}" if isinstance(v, float) else str(v)


def sumo_store(name: str, networks: str, seed: int, duration_s: float, train_grid: int) -> Path:
    """A SUMO store at ``RESULTS/store_<name>``, simulated and ingested when missing or stale: a
    ``train_grid`` x ``train_grid`` grid for training and a 3 x 3 one for validation, networks named
    ``<networks>_train`` / ``<networks>_val``. Returns its path."""
    from forecast.data.ingest import run_ingest
    from forecast.data.sources.sumo import SumoAdapter
    from forecast.data.store import Store
    from forecast.sim.sumo import DemandConfig, NetworkConfig, SimConfig, simulate

    sim = SimConfig(seed=seed, duration_s=duration_s, warmup_s=30,
                    demand=DemandConfig(car_period=1.2, bike_period=2.5, ped_period=1.0),
                    networks=[NetworkConfig(f"{networks}_train", "train", "grid",
                                            {"grid.number": train_grid, "grid.length": 120}, 1),
                              NetworkConfig(f"{networks}_val", "val", "grid", {"grid.number": 3, "grid.length": 120}, 2)])
    store = Store(RESULTS / f"store_{name}")
    # both skip what is up to date (the simulation by its config hash, ingest by its inputs' sha256), and
    # redo what a code change made stale (e.g. the simulator's traffic-signal objects)
    simulate(sim, RESULTS / f"sim_{name}", progress=False)
    run_ingest(SumoAdapter(10.0), RESULTS / f"sim_{name}", store, progress=False)
    return store.path
