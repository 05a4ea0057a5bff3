"""Training throughput: the data loader alone, the bare training step per option, and N steps of the real
Lightning ``Trainer.fit`` (the real DataModule and LightningModule) per option.

Usage: python bench/train.py [--config configs/train/quickstart.yaml] [--device cpu|cuda] [--batches 20]
                             [--rows loader,step,fit] [--options eager,bf16,buckets,compile,channels_last,nopin]
                             [--layouts packed,padded,grouped] [--profile] [--profile-fit] [--json PATH]
                             [key=value overrides ...]

The loader row reports scenes/s (wall) and the CPU time per scene of the loader's worker processes
and of the main process (the figure to read on a shared machine), and the agent slots the model
computes per real agent (each batch padded to its largest scene; and to agent buckets). ``--layouts``
runs it once per layout: packed (the real agents' rasters only, the default), padded (the old layout),
grouped (packed, batches of similar agent count: ``data.group_batches``, 16 unless set).

The fit row splits each batch's time into the training step and the time between steps (loader,
host-to-device copy, Lightning) and, on a GPU, reports its mean utilisation and peak memory
(``GpuUtilisation``: NVML, else nvidia-smi).

Options (join several with '+', e.g. bf16+buckets): eager (fp32, as collated), bf16 (autocast / ``bf16-mixed``), buckets (agent axis padded to
8/16/32/64...), compile (``torch.compile`` + buckets, a static graph per bucket), dynamic (compile, one graph
with symbolic agent counts), channels_last, nopin (loader batches not pinned). ``--profile`` writes a
torch.profiler table of the bare eager step to bench/results/train-profile-<config>-<device>.txt;
``--profile-fit`` profiles 3 steps of each fit row (host Python time by function, operators' CPU and
GPU time) to bench/results/train-fitprofile-<config>-<device>-<option>.txt (that row's rates then
include the profilers' cost).
Uses the config's store if it exists, else simulates and ingests a small SUMO store under bench/results.
"""

from __future__ import annotations

import argparse
import copy
import itertools
import os
import shutil
import subprocess
import threading
import time
from pathlib import Path

import lightning as L
import torch
from _common import RESULTS, report, sumo_store

from forecast.config import apply_overrides, from_dict, load_yaml
from forecast.data.store import Store
from forecast.model.loss import wta_loss
from forecast.training.config import TrainConfig
from forecast.training.datamodule import ForecastDataModule
from forecast.training.module import ForecastModule
from forecast.training.speed import AgentBuckets, SyncWatch, apply_model_options, bucket_size, pad_to_buckets

BUCKETS = [8, 16, 32, 64]
OPTIONS = {  # option -> trainer overrides
    "eager": {},
    "bf16": {"precision": "bf16-mixed"},
    "buckets": {"agent_buckets": BUCKETS},
    "compile": {"agent_buckets": BUCKETS, "compile": True},
    # one graph with symbolic agent counts (static graphs: one compilation per bucket)
    "dynamic": {"agent_buckets": BUCKETS, "compile": True, "compile_dynamic": True},
    "channels_last": {"channels_last": True},
    # loader batches not pinned (H200, batch 256: 85 ms of copy between steps against 7 ms pinned)
    "nopin": {"pin_memory": False},
}


def bench_store() -> Path:
    return sumo_store("train", "bench", seed=1, duration_s=150, train_grid=4)


def with_option(cfg: TrainConfig, option: str, device: str) -> TrainConfig:
    """``option`` is one name of OPTIONS or several joined by '+' (``bf16+buckets``)."""
    c = copy.deepcopy(cfg)
    c.trainer.precision = "32-true"
    for name in option.split("+"):
        if name not in OPTIONS:
            raise SystemExit(f"--options: unknown option {name!r} (known: {', '.join(OPTIONS)}, joined by '+')")
        for k, v in OPTIONS[name].items():
            setattr(c.trainer, k, v)
    return c


def _worker_cpu_s() -> float:
    """User + system CPU seconds of this process's children (the loader's worker processes), from
    /proc (Linux; NaN elsewhere): no extra package on a bare GPU machine."""
    me, total = os.getpid(), 0.0
    tick = os.sysconf("SC_CLK_TCK")
    try:
        pids = [p for p in os.listdir("/proc") if p.isdigit()]
    except OSError:
        return float("nan")
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()  # after "pid (comm)"
        except OSError:
            continue  # gone, or not ours to read
        if int(fields[1]) == me:  # ppid
            total += (int(fields[11]) + int(fields[12])) / tick  # utime + stime
    return total


def loader_row(dm: ForecastDataModule, batches: int) -> tuple[dict, list]:
    """The loader row, timed while each batch is dropped once read (as a training loop does: a worker
    reuses the shared memory of batches the main process let go), then ``batches`` more batches kept for
    the step rows."""
    loader = dm.train_dataloader()
    it = iter(loader)
    next(it)  # worker start-up is not throughput
    w0, m0, t = _worker_cpu_s(), time.process_time(), time.perf_counter()
    sizes = []  # per batch: scenes, real agents, agent slots, padded agent count
    for _ in range(batches):
        try:
            b = next(it)
        except StopIteration:
            break
        sizes.append((b.size, int(b.agent_mask.sum()), b.agent_mask.numel(), b.hist.shape[1]))
        del b
    dt = time.perf_counter() - t
    main_cpu, worker_cpu = time.process_time() - m0, _worker_cpu_s() - w0
    kept = list(itertools.islice(it, batches))
    if len(kept) < batches:  # the epoch ended: the rest from the next one
        kept += list(itertools.islice(iter(loader), batches - len(kept)))
    del it  # stops the workers
    n = sum(x[0] for x in sizes)
    # Agent slots the model computes per real agent: each batch padded to its largest scene, and to a bucket.
    real = sum(x[1] for x in sizes)
    buckets = dm.cfg.trainer.agent_buckets or BUCKETS
    slots = sum(x[2] for x in sizes) / real
    bucket_slots = sum(x[0] * bucket_size(x[3], buckets) for x in sizes) / real
    layout = "packed" if dm.cfg.data.pack_rasters else "padded"
    if dm.cfg.data.group_batches > 1:
        layout += f", grouped by {dm.cfg.data.group_batches}"
    return {"row": f"data loader ({dm.cfg.data.num_workers} workers, {layout})", "scenes_per_s": n / dt,
            "ms_per_batch": 1e3 * dt / len(sizes),
            # Workers build ahead (prefetch), so their CPU over the window is the batches taken +- a prefetch.
            "worker_cpu_ms_per_scene": 1e3 * worker_cpu / n if dm.cfg.data.num_workers else float("nan"),
            "main_cpu_ms_per_scene": 1e3 * main_cpu / n, "slots_per_agent": slots,
            f"slots_per_agent_buckets{'/'.join(map(str, buckets))}": bucket_slots,
            "load_avg_1min": os.getloadavg()[0]}, kept


def step_row(cfg: TrainConfig, option: str, batches: list, device: str) -> dict:
    c = with_option(cfg, option, device)
    module = ForecastModule(c).to(device)
    apply_model_options(module.model, c.trainer)
    opt = torch.optim.AdamW(module.parameters(), lr=1e-3)
    amp = "bf16" in c.trainer.precision
    dev = []
    for b in batches:
        b = b.to(device)
        if c.trainer.agent_buckets:
            pad_to_buckets(b, c.trainer.agent_buckets)
        dev.append(b)

    def step(b):
        with torch.autocast(device, dtype=torch.bfloat16, enabled=amp):
            traj, scale, logits = module.model.forward_logits(*b.model_inputs())
            loss, _, _ = wta_loss(traj.float(), scale.float(), logits.float(), b.future, b.future_mask, b.target_mask)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    t = time.perf_counter()
    for b in dev:  # first pass: compilation and per-shape set-up (reported apart)
        step(b)
    sync()
    first = time.perf_counter() - t
    t = time.perf_counter()
    for b in dev:
        step(b)
    sync()
    dt = time.perf_counter() - t
    n = sum(b.size for b in dev)
    return {"row": f"bare step: {option} ({device})", "scenes_per_s": n / dt, "ms_per_batch": 1e3 * dt / len(dev),
            "first_pass_s": first}


class GpuUtilisation:
    """Mean GPU utilisation (%) and peak memory used (MiB) while it runs, sampled every ``period`` s.

    NVML through ``torch.cuda.utilization`` where pynvml is installed, else ``nvidia-smi``; on a
    machine without either (or without a GPU) the figures are NaN.
    """

    def __init__(self, period: float = 0.1):
        self.period, self.util, self.mem = period, [], []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._started = False

    @staticmethod
    def sample() -> tuple[float, float] | None:
        if not torch.cuda.is_available():
            return None
        try:
            return float(torch.cuda.utilization()), float(torch.cuda.device_memory_used()) / 2**20
        except Exception:  # noqa: BLE001 - no pynvml: ask nvidia-smi
            pass
        if shutil.which("nvidia-smi") is None:
            return None
        try:
            out = subprocess.run(["nvidia-smi", "--query-gpu=utilization.gpu,memory.used", "--format=csv,noheader,nounits",
                                  f"--id={torch.cuda.current_device()}"], capture_output=True, text=True, timeout=5)
            util, mem = out.stdout.strip().splitlines()[0].split(",")
            return float(util), float(mem)
        except (OSError, ValueError, IndexError, subprocess.TimeoutExpired):
            return None

    def _run(self) -> None:
        while not self._stop.wait(self.period):
            got = self.sample()
            if got is None:
                return
            self.util.append(got[0])
            self.mem.append(got[1])

    def start(self) -> None:
        """Start sampling (once; later calls do nothing)."""
        if not self._started:
            self._started = True
            self._thread.start()

    def stop(self) -> None:
        if self._started:
            self._stop.set()
            self._thread.join()

    def figures(self) -> dict:
        nan = float("nan")
        return {"gpu_util_pct": sum(self.util) / len(self.util) if self.util else nan,
                "gpu_mem_peak_mib": max(self.mem) if self.mem else nan}


class _Clock(L.Callback):
    """Wall time from the end of the first training batch to the end of the last one, the GPU
    synchronised at those two points only (as the bare step's row: a synchronisation per step would
    keep the host from queueing the next step while the GPU runs this one, and a launch-bound step
    then pays both). The host's time inside training steps (start to end of a batch, kernels queued,
    not waited for) and between them (waiting for the loader, the host-to-device copy, Lightning's
    own work) is summed apart."""

    def __init__(self):
        self.t0 = self.t1 = None
        self.scenes = 0
        self.start = 0.0
        self.in_step = self.between = 0.0
        self.ends: list[tuple[float, int]] = []  # (end time, scenes so far) per measured batch
        self.util = GpuUtilisation()  # started on a GPU after the first (compiling) step; NaN figures otherwise

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.start = time.perf_counter()
        if self.t1 is not None:
            self.between += self.start - self.t1
        if self.t0 is not None and trainer.strategy.root_device.type == "cuda":
            self.util.start()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.strategy.root_device.type == "cuda" and (self.t0 is None or trainer.global_step >= trainer.max_steps):
            torch.cuda.synchronize()  # the window's two ends only
        now = time.perf_counter()
        if self.t0 is None:
            self.t0 = now
        else:
            self.scenes += batch.size
            self.in_step += now - self.start
            self.ends.append((now, self.scenes))
        self.t1 = now

    def on_train_end(self, trainer, pl_module):
        self.util.stop()


class _FitProfile(L.Callback):
    """Profiles ``active`` training steps of a ``fit`` from step ``first`` on: the host's Python time by
    function (cProfile: where a launch-bound step spends it) and the operators' CPU and GPU time
    (torch.profiler), written to ``path`` (.txt)."""

    def __init__(self, first: int, active: int, path: Path):
        self.first, self.last, self.path = first, first + active - 1, path
        self.prof = self.host = None

    # counted by optimizer steps, not batch_idx, which starts again with each epoch
    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step == self.first and self.host is None:
            import cProfile

            from torch.profiler import ProfilerActivity, profile

            cuda = trainer.strategy.root_device.type == "cuda"
            if cuda:
                torch.cuda.synchronize()
            self.prof = profile(activities=[ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else []))
            self.prof.__enter__()
            self.host = cProfile.Profile()
            self.host.enable()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step == self.last + 1 and self.host is not None and self.prof is not None:
            import io
            import pstats

            if trainer.strategy.root_device.type == "cuda":
                torch.cuda.synchronize()
            self.host.disable()
            self.prof.__exit__(None, None, None)
            text = io.StringIO()
            pstats.Stats(self.host, stream=text).sort_stats("cumulative").print_stats(45)
            sort = "cuda_time_total" if trainer.strategy.root_device.type == "cuda" else "cpu_time_total"
            ops = self.prof.key_averages().table(sort_by=sort, row_limit=30)
            self.path.write_text(f"# {self.last - self.first + 1} Lightning fit steps from batch {self.first}\n"
                                 f"## host Python time (cProfile, cumulative)\n{text.getvalue()}\n"
                                 f"## operators (torch.profiler, by {sort})\n{ops}\n")
            print(f"wrote {self.path}")
            self.prof = None


def fit_row(cfg: TrainConfig, option: str, steps: int, device: str, profile: Path | None = None) -> dict:
    c = with_option(cfg, option, device)
    clock = _Clock()
    # torch's count of host-GPU syncs per step (CUDA only; NaN elsewhere); before the clock, whose own
    # synchronisation at the window's end must not count
    syncs = SyncWatch()
    callbacks = [syncs, clock] + ([AgentBuckets(c.trainer.agent_buckets)] if c.trainer.agent_buckets else [])
    if profile is not None:  # a few steps past the middle: buckets met, allocator warm
        callbacks.append(_FitProfile(max(1, steps // 2), 3, profile))
    trainer = L.Trainer(accelerator=device if device != "cuda" else "gpu", devices=1, precision=c.trainer.precision,
                        max_steps=steps, limit_val_batches=0, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, callbacks=callbacks,
                        num_sanity_val_steps=0)
    module = ForecastModule(c)
    apply_model_options(module.model, c.trainer)
    t = time.perf_counter()
    trainer.fit(module, datamodule=ForecastDataModule(c))
    total = time.perf_counter() - t
    dt = (clock.t1 - clock.t0) if clock.t0 is not None else float("nan")
    n = max(1, steps - 1)
    util = clock.util.figures()
    # torch.compile may compile again for a later agent bucket inside the measured window; the second
    # half of the batches shows the rate once every graph is built
    half = clock.ends[len(clock.ends) // 2:] if len(clock.ends) >= 4 else []
    steady = (half[-1][1] - half[0][1]) / (half[-1][0] - half[0][0]) if half else float("nan")
    return {"row": f"Lightning fit: {option} ({device}, {c.data.num_workers} workers)",
            "scenes_per_s": clock.scenes / dt if dt > 0 else float("nan"),
            "scenes_per_s_second_half": steady,
            "ms_per_batch": 1e3 * dt / n, "first_pass_s": total - dt,
            # where the host's time goes: a loader that keeps up leaves host_ms_between_steps near zero
            "host_ms_in_step": 1e3 * clock.in_step / n, "host_ms_between_steps": 1e3 * clock.between / n,
            "host_syncs_per_step": syncs.per_step(), **util}


def profile_step(cfg: TrainConfig, batches: list, device: str, path: Path) -> None:
    from torch.profiler import ProfilerActivity, profile

    module = ForecastModule(cfg).to(device)
    opt = torch.optim.AdamW(module.parameters(), lr=1e-3)
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device == "cuda" else [])
    dev = [b.to(device) for b in batches[:5]]
    with profile(activities=acts, record_shapes=False) as prof:
        for b in dev:
            traj, scale, logits = module.model.forward_logits(*b.model_inputs())
            loss, _, _ = wta_loss(traj, scale, logits, b.future, b.future_mask, b.target_mask)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    sort = "cuda_time_total" if device == "cuda" else "cpu_time_total"
    path.write_text(prof.key_averages().table(sort_by=sort, row_limit=30))
    print(f"wrote {path}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="configs/train/quickstart.yaml")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--batches", type=int, default=20)
    ap.add_argument("--rows", default="loader,step")
    ap.add_argument("--options", default="eager")
    ap.add_argument("--layouts", default="packed",
                    help="loader rows: packed, padded (raster layouts), grouped (packed, data.group_batches=16 unless set)")
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--profile-fit", action="store_true",
                    help="fit rows: profile 3 steps from the middle of the run (host Python time and operators) to "
                         "bench/results/train-fitprofile-<config>-<device>-<option>.txt")
    ap.add_argument("--json")
    ap.add_argument("overrides", nargs="*")
    args = ap.parse_args()
    cfg = from_dict(TrainConfig, apply_overrides(load_yaml(args.config), args.overrides)).resolved()
    if not Store(cfg.data.store).exists():
        cfg.data.store = str(bench_store())
        cfg.data.source = None
    rows_wanted, options, layouts = args.rows.split(","), args.options.split(","), args.layouts.split(",")
    if set(layouts) - {"packed", "padded", "grouped"}:
        raise SystemExit(f"--layouts takes packed, padded and/or grouped, got {args.layouts!r}")
    rows = []
    batches: list = []
    for layout in layouts:  # the step and fit rows use the first layout's batches
        c = copy.deepcopy(cfg)
        c.data.pack_rasters = layout != "padded"
        if layout == "grouped":
            c.data.group_batches = c.data.group_batches if c.data.group_batches > 1 else 16
        elif "grouped" in layouts:
            c.data.group_batches = 0  # the A/B against grouped batches
        dm = ForecastDataModule(c)
        dm.setup()
        row, got = loader_row(dm, args.batches)
        batches = batches or got
        if "loader" in rows_wanted:
            rows.append(row)
    cfg.data.pack_rasters = layouts[0] != "padded"
    if layouts[0] == "grouped":
        cfg.data.group_batches = cfg.data.group_batches if cfg.data.group_batches > 1 else 16
    for option in options:
        if "step" in rows_wanted:
            rows.append(step_row(cfg, option, batches, args.device))
        if "fit" in rows_wanted:
            where = RESULTS / f"train-fitprofile-{Path(args.config).stem}-{args.device}-{option.replace('+', '_')}.txt"
            rows.append(fit_row(cfg, option, args.batches, args.device, where if args.profile_fit else None))
    agents = float(sum(int(b.agent_mask.sum()) for b in batches)) / max(1, len(batches))
    print(f"config {args.config}: batch {cfg.data.batch_size}, ~{agents:.0f} agents/batch, raster "
          f"{cfg.features.raster.size}px, hidden {cfg.model.hidden}, torch threads {torch.get_num_threads()}")
    name = f"train-{Path(args.config).stem}-{args.device}"
    report(name, rows, {"config": args.config, "batch_size": cfg.data.batch_size, "agents_per_batch": agents,
                        "layouts": layouts, "overrides": args.overrides}, args.json)
    if args.profile:
        profile_step(cfg, batches, args.device, RESULTS / f"train-profile-{Path(args.config).stem}-{args.device}.txt")


if __name__ == "__main__":
    main()
