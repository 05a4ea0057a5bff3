"""Real-dataset scale (issue 11): ingest, store, data path and evaluation at N Argoverse-2-like scenarios.

Usage: python bench/scale.py --n 1000 10000 [--batches 1000] [--parts ingest data evaluate] [--no-shards]
       [--data-from OTHER/bench/results/scale] [--json PATH]

For each N: writes N scenarios in the AV2 format (``bench/av2_synth.py``: 11 s windows of a SUMO
run, each rotated and moved to its own place, with its own map JSON), then measures

* ``ingest_agent_states_per_s_per_core``: agent-states / CPU seconds of one ``forecast ingest`` process;
  ``ingest_wall_s`` of that run and ``ingest_wall_s_2_shards`` (two ``--shard i/2`` processes at once);
* ``store_mb_per_scenario`` (the store without its ``_cache``) and ``files_per_1k_scenarios`` (Parquet);
* ``dataset_open_s`` (train SceneSet, cold: sample plan made; and ``_warm``: plan from the disk cache);
* ``first_batch_cold_s``: data module set up (train and val sample plans made) and the first training batch
  out of a one-worker loader, on a store without plans; ``first_batch_s`` the same with the plans cached;
  ``setup_cold_cpu_s``: CPU seconds of the cold set-up (this process and the planning processes);
* ``ingest_peak_rss_mb``, ``evaluate_peak_rss_mb`` (``forecast evaluate --model constant_velocity`` on
  the test split, 10 % of N, every ``--eval-t0-stride`` steps) and ``loader_worker_rss_mb`` (the worker's RSS after ``--batches`` batches).

Every number comes from a separate process (peak RSS is the process's own ``ru_maxrss``). Goals (issue
11): <= 0.3 MB and <= 2 Parquet files per 1,000 scenarios; evaluate and worker memory grow <= 1.3x
from 1k to 10k; first batch <= 10 s at 10k; ingest >= 500 k agent-states/s per core.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import RESULTS, machine, report  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
WORK = RESULTS / "scale"

_MEASURED = """
import json, resource, sys, time
sys.argv = ["forecast"] + json.loads(sys.argv[1])
out = sys.argv.pop()
t0, c0 = time.time(), time.process_time()
from forecast.cli import main
rc = main(sys.argv[1:])
ru = resource.getrusage(resource.RUSAGE_SELF)
json.dump({"rc": rc, "wall_s": time.time() - t0, "cpu_s": ru.ru_utime + ru.ru_stime,
           "peak_rss_mb": ru.ru_maxrss / 1024}, open(out, "w"))
"""


def measured(argv: list[str], tag: str) -> dict:
    """Run ``forecast ARGV`` in a fresh process; its wall, CPU and peak RSS."""
    out = WORK / f".{tag}.json"
    env = {"OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}
    subprocess.run([sys.executable, "-c", _MEASURED, json.dumps([*argv, str(out)])], check=True, env=env,
                   cwd=ROOT, stdout=subprocess.DEVNULL)
    res = json.loads(out.read_text())
    if res["rc"] != 0:
        raise RuntimeError(f"forecast {' '.join(argv)} exited {res['rc']}")
    return res


def generate(n: int, data_from: Path | None = None) -> tuple[Path, dict]:
    """``WORK/av2_N``: made once (the generator is seeded), or linked from ``data_from/av2_N`` when
    another checkout made it already (hard links: the other copy may be deleted, this one stays)."""
    from av2_synth import load_source, write_av2_like

    from forecast.sim.sumo import DemandConfig, NetworkConfig, SimConfig, simulate

    data = WORK / f"av2_{n}"
    done = data / "_done.json"
    if done.is_file():
        return data, json.loads(done.read_text())
    other = data_from / f"av2_{n}" if data_from is not None else None
    if other is not None and (other / "_done.json").is_file():
        shutil.rmtree(data, ignore_errors=True)
        shutil.copytree(other, data, copy_function=_link_or_copy)
        return data, json.loads(done.read_text())
    shutil.rmtree(data, ignore_errors=True)
    sim = SimConfig(seed=11, duration_s=600, warmup_s=60,
                    demand=DemandConfig(car_period=7.0, bike_period=14.0, ped_period=7.0),
                    networks=[NetworkConfig("scale_grid", "train", "grid", {"grid.number": 3, "grid.length": 100}, 1)])
    run = simulate(sim, RESULTS / "sim_scale", progress=False)[0]
    t = time.time()
    counts = write_av2_like(load_source(run), n, data)
    counts["generate_s"] = time.time() - t
    done.write_text(json.dumps(counts))
    return data, counts


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


_LOADER = """
import json, os, resource, sys, time
import numpy as np, psutil, torch
torch.set_num_threads(1)
store, batches, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
from forecast.data.store import Store
from forecast.features.config import FeatureConfig
from forecast.features.dataset import SceneSet, select_scenarios
from forecast.training.config import TrainConfig, DataConfig
from forecast.training.datamodule import ForecastDataModule
res = {}


def cpu():  # this process and its finished children (the planning processes), seconds
    a, b = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return a.ru_utime + a.ru_stime + b.ru_utime + b.ru_stime


s = Store(store)
t = time.time(); infos = select_scenarios(s, "train"); res["index_s"] = time.time() - t
for p in (s.path / "_cache" / "plans").glob("*") if (s.path / "_cache" / "plans").is_dir() else []:
    __import__("shutil").rmtree(p)  # plans are directories of .npy files
c = cpu()
t = time.time(); scenes = SceneSet(s, infos, FeatureConfig(), 10); res["dataset_open_s"] = time.time() - t
res["dataset_open_cpu_s"] = cpu() - c
res["train_samples"] = len(scenes); res["train_scenarios"] = len(infos)
del scenes
t = time.time(); scenes = SceneSet(s, select_scenarios(s, "train"), FeatureConfig(), 10)
res["dataset_open_warm_s"] = time.time() - t
del scenes
cfg = TrainConfig(data=DataConfig(store=store, batch_size=8, num_workers=1, max_val_samples=8))


def first_batch():
    t, c = time.time(), cpu()
    dm = ForecastDataModule(cfg); dm.setup("fit")
    res["setup_cpu_s"] = cpu() - c  # the last call's
    it = iter(dm.train_dataloader()); next(it)
    return time.time() - t, dm, it


for p in (s.path / "_cache" / "plans").glob("*") if (s.path / "_cache" / "plans").is_dir() else []:
    __import__("shutil").rmtree(p)
# cold: no plan made yet (the data module plans the train and the val split), as on a fresh store
res["first_batch_cold_s"], dm, it = first_batch()
res["setup_cold_cpu_s"] = res.pop("setup_cpu_s")
res["load_avg_cold"] = os.getloadavg()[0]
del dm, it
res["first_batch_s"], dm, it = first_batch()  # warm: the plans memory-mapped from STORE/_cache/plans
me = psutil.Process()
worker = max(me.children(), key=lambda c: c.create_time())  # the warm loader's worker
rss = [worker.memory_info().rss]
t = time.time()
for b in range(batches - 1):
    try:
        next(it)
    except StopIteration:
        it = iter(dm.train_dataloader())
        next(it)
    if b % 50 == 0:
        rss.append(worker.memory_info().rss)
res["loader_s_per_batch"] = (time.time() - t) / max(1, batches - 1)
res["loader_worker_rss_mb"] = worker.memory_info().rss / 2**20
res["loader_worker_rss_max_mb"] = max(rss) / 2**20
res["loader_worker_uss_mb"] = worker.memory_full_info().uss / 2**20
res["main_rss_mb"] = me.memory_info().rss / 2**20
json.dump(res, open(out, "w"))
"""


def data_path(store: Path, batches: int) -> dict:
    out = WORK / ".loader.json"
    env = {"OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}
    subprocess.run([sys.executable, "-c", _LOADER, str(store), str(batches), str(out)], check=True, env=env, cwd=ROOT)
    return json.loads(out.read_text())


def one(n: int, batches: int, eval_stride: int, parts: set[str], shards: bool, data_from: Path | None = None) -> dict:
    data, gen = generate(n, data_from)
    row: dict = {"n": n, "agent_states": gen["agent_states"], "agent_states_per_scenario": gen["agent_states"] / n,
                 "tracks_per_scenario": gen["tracks"] / n, "load_avg_start": os.getloadavg()[0]}
    store = WORK / f"store_{n}"
    if "ingest" in parts or not (store / "scenarios").is_dir():
        shutil.rmtree(store, ignore_errors=True)
        r = measured(["--quiet", "ingest", "--source", "av2", str(data), "--store", str(store)], "ingest")
        row["ingest_agent_states_per_s_per_core"] = gen["agent_states"] / r["cpu_s"]
        row["ingest_wall_s"] = r["wall_s"]
        row["ingest_cpu_s"] = r["cpu_s"]
        row["ingest_peak_rss_mb"] = r["peak_rss_mb"]
    if shards:
        sharded = WORK / f"store_{n}_sharded"
        shutil.rmtree(sharded, ignore_errors=True)
        t = time.time()
        procs = [subprocess.Popen([sys.executable, "-m", "forecast.cli", "--quiet", "ingest", "--source", "av2",
                                   str(data), "--store", str(sharded), "--shard", f"{i}/2"], cwd=ROOT,
                                  stdout=subprocess.DEVNULL,
                                  env={"OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
                 for i in range(2)]
        codes = [p.wait() for p in procs]  # every shard reaped, not only up to the first that failed
        if any(codes):
            raise RuntimeError("a sharded ingest failed")
        row["ingest_wall_s_2_shards"] = time.time() - t
        shutil.rmtree(sharded, ignore_errors=True)
    files = [p for p in store.rglob("*") if p.is_file() and "_cache" not in p.parts]
    row["store_mb_per_scenario"] = sum(p.stat().st_size for p in files) / 2**20 / n
    row["files_per_1k_scenarios"] = sum(p.suffix == ".parquet" for p in files) / n * 1000
    if "data" in parts:
        row.update(data_path(store, batches))
    if "evaluate" in parts:
        ev = measured(["--quiet", "evaluate", "--model", "constant_velocity", "--store", str(store), "--split", "test",
                       "--no-mlflow", "--t0-stride", str(eval_stride), "--out", str(WORK / f"eval_{n}")], "evaluate")
        row["evaluate_peak_rss_mb"] = ev["peak_rss_mb"]
        row["evaluate_wall_s"] = ev["wall_s"]
        row["evaluate_cpu_s"] = ev["cpu_s"]
        metrics = json.loads((WORK / f"eval_{n}" / "metrics.json").read_text())
        row["test_scenarios"], row["test_samples"] = metrics["num_scenarios"], metrics["num_samples"]
        row["test_scored_agents"] = sum(metrics["num_agents"].values())
        row["eval_t0_stride"] = eval_stride
    cache = store / "_cache"
    row["cache_mb"] = sum(p.stat().st_size for p in cache.rglob("*") if p.is_file()) / 2**20 if cache.is_dir() else 0
    row["load_avg_end"] = os.getloadavg()[0]
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, nargs="+", default=[1000, 10000])
    ap.add_argument("--batches", type=int, default=1000, help="training batches before the worker's RSS is read")
    ap.add_argument("--eval-t0-stride", type=int, default=30,
                    help="evaluate every n-th step (30: 3 s; the same for every N, so memory growth compares)")
    ap.add_argument("--parts", nargs="+", default=["ingest", "data", "evaluate"], choices=["ingest", "data", "evaluate"],
                    help="what to measure (a store left by an earlier run is reused when ingest is left out)")
    ap.add_argument("--no-shards", action="store_true", help="skip the two-shard ingest (it doubles the ingest time)")
    ap.add_argument("--data-from", type=Path,
                    help="a scale folder of another checkout (bench/results/scale) whose av2_N to reuse when this "
                         "one has none: the data are the same (seeded), generating 10,000 takes minutes")
    ap.add_argument("--json")
    args = ap.parse_args()
    WORK.mkdir(parents=True, exist_ok=True)
    rows = []
    for n in args.n:
        rows.append(one(n, args.batches, args.eval_t0_stride, set(args.parts), not args.no_shards, args.data_from))
        print(json.dumps(rows[-1]), flush=True)
        # results so far, in case a later N does not finish
        (WORK / "partial.json").write_text(json.dumps({"machine": machine(), "rows": rows}, indent=2))
    keys = ["n", "ingest_agent_states_per_s_per_core", "ingest_wall_s", "ingest_wall_s_2_shards", "store_mb_per_scenario",
            "files_per_1k_scenarios", "dataset_open_s", "dataset_open_warm_s", "first_batch_cold_s", "first_batch_s",
            "ingest_peak_rss_mb", "evaluate_peak_rss_mb", "loader_worker_rss_mb"]
    report("scale", [{k: r.get(k, "-") for k in keys} for r in rows], {"rows": rows}, args.json)


if __name__ == "__main__":
    main()
