"""Per-scene latency, p50 and p99 milliseconds, for 8, 32, 64 and 128 agents.

Usage: python bench/latency.py [--model model.pt | --bundle DIR] [--config configs/train/quickstart.yaml]
                               [--runs 50] [--agents 8 32 64 128] [--skip-cpu] [--ort-profile CALLS] [--json PATH]

Rows: the streaming runtime's per-tick state update (``SceneTracker.update``); preprocessing alone
(``build_sample``, the runtime's code path, with ``--signals`` closed traffic signals among the agents);
onnxruntime CPU one thread for every variant of the bundle (the plain graph and the one onnxruntime
optimised at export, int8 when present) and with default threads; end to end (tick update + ``SceneTracker.predict``, 1 thread); torch eager (CPU, 1
thread and all threads); and on a GPU when one is present: torch eager fp32 and fp16 autocast, a
CUDA-graph replay (``torch.compile(mode="reduce-overhead")``), end to end on the GPU (tick update and
preprocessing on the CPU, the CUDA-graph model, outputs back to the CPU), and onnxruntime's CUDA
provider when this onnxruntime has it. ``--skip-cpu`` measures the GPU rows only (a quick GPU session:
``python bench/latency.py --agents 64 128 --skip-cpu``).
Without --model/--bundle an untrained model of the config's sizes is exported (latency does not
depend on the weights). Goals (issue 13): tick update <= 1 ms at 128 agents; preprocessing <= 10 ms
at 128 agents and 128 agents <= 2.3 x 64 agents; onnxruntime CPU one thread, 64 agents, p50 <= 10 ms
and <= half of torch eager one thread; on an H100, the model <= 2 ms at 128 agents (CUDA graph) and end
to end <= 8 ms.
``--ort-profile CALLS`` adds where onnxruntime's one thread spends a call, by operator type (its profiler).
``--accuracy-store STORE`` also measures the int8 variant's accuracy cost: minFDE@6 of int8 vs fp32
on the store's ``--accuracy-split`` samples (goal: at most +2 %).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from _common import report

from forecast.config import from_dict, load_yaml
from forecast.export.onnx_export import synthetic_map_layers, synthetic_tracks
from forecast.features.raster import rasterize_map_layers
from forecast.features.sample import build_sample
from forecast.model.batch import MODEL_INPUT_NAMES, collate
from forecast.model.checkpoint import load_model, save_model
from forecast.model.world_model import WorldModel
from forecast.training.config import TrainConfig


def percentiles(fn, runs: int, warmup: int = 3, sync=None) -> tuple[float, float, float]:
    """Wall p50 and p99 (ms), and the p50 of this process's CPU time (ms): on a shared machine the CPU
    time of a one-thread call is the steadier figure (other processes inflate the wall time)."""
    for _ in range(warmup):
        fn()
    times, cpu = [], []
    for _ in range(runs):
        c = time.process_time()
        t = time.perf_counter()
        fn()
        if sync:
            sync()
        times.append(1e3 * (time.perf_counter() - t))
        cpu.append(1e3 * (time.process_time() - c))
    return float(np.percentile(times, 50)), float(np.percentile(times, 99)), float(np.percentile(cpu, 50))


def tick_replay(tracks, t0: int, tracker_cls, predictor):
    """A tracker holding the scene's history up to t0 - 1, and the detections of tick t0."""
    from forecast.runtime.tracker import Detections

    def detections(t: int) -> Detections:
        rows = np.flatnonzero(tracks.present[:, t])
        return Detections(tracks.track_ids[rows], tracks.agent_type[rows], np.nan_to_num(tracks.xy[rows, t]),
                          tracks.heading[rows, t])

    tracker = tracker_cls(predictor)
    for t in range(max(0, t0 - predictor.features.history_steps), t0):
        tracker.update(detections(t), step=t)
    return tracker, detections(t0)


def gpu_end_to_end(tracks, t0: int, tracker_cls, predictor, layers: dict, graph, runs: int,
                   warmup: int = 3) -> tuple[tuple[float, float, float], tuple[float, float, float]]:
    """What the car pays per tick on a GPU: the tick's state update and ``build_sample`` on the CPU
    (``Predictor.build``, the runtime's code path) and the model's feed (``Predictor.inputs``: views of the
    sample's arrays; ``collate``'s batch copy was 0.85 ms at 128 agents, most of it page faults), the feed
    to the GPU, the CUDA-graph model, the outputs back. Returns (wall p50, wall p99, CPU p50) in ms of the
    whole and of its CPU part (update, build, feed); the tracker is rebuilt (untimed) before each run.

    The host side runs on one thread (torch and OpenCV), as a car pins its predictor's thread: with
    their default pools (16 on the H100 machine) the CPU part spent about 7 cores' worth of CPU
    time on thread hand-offs for work that takes 1.5 ms on one core (issue 13 note)."""
    import cv2

    threads, cv_threads = torch.get_num_threads(), cv2.getNumThreads()
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    try:
        return _gpu_end_to_end(tracks, t0, tracker_cls, predictor, layers, graph, runs, warmup)
    finally:
        torch.set_num_threads(threads)
        cv2.setNumThreads(cv_threads)


def _gpu_end_to_end(tracks, t0: int, tracker_cls, predictor, layers: dict, graph, runs: int,
                    warmup: int) -> tuple[tuple[float, float, float], tuple[float, float, float]]:
    whole, part = [], []
    for i in range(warmup + runs):
        tracker, det = tick_replay(tracks, t0, tracker_cls, predictor)
        torch.cuda.synchronize()
        c, start = time.process_time(), time.perf_counter()
        tracker.update(det, step=t0)
        window, t = tracker.tracks()
        sample, *_ = predictor.build(window, t, map_layers=layers, map_id="bench")
        feed = predictor.inputs(sample)  # the runtime's feed: views of the sample's arrays, no batch copy
        inputs = [torch.from_numpy(feed[k]) for k in MODEL_INPUT_NAMES]
        c_mid, mid = time.process_time(), time.perf_counter()
        traj, scale, prob = (x.cpu() for x in graph(*(x.to("cuda") for x in inputs)))  # .cpu() waits for the GPU
        if i >= warmup:
            whole.append((1e3 * (time.perf_counter() - start), 1e3 * (time.process_time() - c)))
            part.append((1e3 * (mid - start), 1e3 * (c_mid - c)))

    def stats(x: list) -> tuple[float, float, float]:
        a = np.array(x)
        return float(np.percentile(a[:, 0], 50)), float(np.percentile(a[:, 0], 99)), float(np.percentile(a[:, 1], 50))

    return stats(whole), stats(part)


def int8_accuracy(bundle: Path, store_path: str, split: str, samples: int, seed: int = 0) -> dict:
    """minFDE@6 (m) of the fp32 and int8 graphs on the same samples of a store (agents with a full future)."""
    from forecast.data.store import Store
    from forecast.features.sample import plan_samples
    from forecast.features.tracks import AgentTracks
    from forecast.runtime.predictor import Predictor

    p32, p8 = Predictor(bundle, threads=1), Predictor(bundle, variant="int8", threads=1)
    feats = p32.features
    store = Store(store_path)
    infos = store.scenarios(split=split)
    rng = np.random.default_rng(seed)
    plans = []
    scen = {}
    for sc in store.load_scenarios(infos):
        tr = AgentTracks.from_scenario(sc).resample(feats.dt)
        scen[sc.info.scenario_id] = (tr, sc.info.map_id)
        plans += [(sc.info.scenario_id, p) for p in plan_samples(tr, 0, feats, 20, full_future=True)]
    pick = rng.choice(len(plans), min(samples, len(plans)), replace=False)
    maps: dict = {}
    fde = {"fp32": [], "int8": []}
    for k in pick:
        sid, plan = plans[k]
        tr, map_id = scen[sid]
        if map_id not in maps:
            maps[map_id] = rasterize_map_layers(store.load_map(map_id), feats.raster.resolution)
        sample = build_sample(tr, plan.t0, feats, maps[map_id], plan.agents, plan.agents[0])
        scored = sample.target_mask & plan.scored & sample.future_mask.all(1)
        if not scored.any():
            continue
        feed = p32.inputs(sample)
        for name, pred in (("fp32", p32), ("int8", p8)):
            traj = dict(zip(pred.output_names, pred.session.run(None, feed), strict=True))["traj"][0]
            err = np.linalg.norm(traj[:, :, -1] - sample.future[:, None, -1], axis=-1).min(1)  # [A]
            fde[name] += err[scored].tolist()
    m32, m8 = float(np.mean(fde["fp32"])), float(np.mean(fde["int8"]))
    return {"agents": len(fde["fp32"]), "minFDE6_fp32_m": m32, "minFDE6_int8_m": m8,
            "int8_cost_pct": 100.0 * (m8 - m32) / m32, "store": store_path, "split": split}


def ort_op_profile(model: bytes, feed: dict, runs: int, warmup: int = 3) -> list[dict]:
    """Where onnxruntime's one thread spends a call, by operator type: kernel ms per call and kernels
    per call over ``runs`` calls after ``warmup`` (onnxruntime's own profiler, which adds some overhead
    of its own, so the sum is above the timed p50). ``model``: the graph's bytes, as verified from the bundle."""
    import json
    from collections import defaultdict

    import onnxruntime as ort

    with tempfile.TemporaryDirectory(prefix="ort-profile-") as d:
        so = ort.SessionOptions()
        so.intra_op_num_threads, so.inter_op_num_threads, so.log_severity_level = 1, 1, 3
        so.enable_profiling, so.profile_file_prefix = True, str(Path(d) / "ort")
        sess = ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])
        for _ in range(warmup + runs):
            sess.run(None, feed)
        events = json.loads(Path(sess.end_profiling()).read_text())
    calls = sorted(e["ts"] for e in events if e.get("cat") == "Session" and e.get("name") == "model_run")
    if len(calls) < warmup + runs:
        raise RuntimeError(f"onnxruntime's profile holds {len(calls)} calls, {warmup + runs} were made")
    start = calls[warmup]  # the warm-up calls (allocations, first-touch) are left out
    ms, count = defaultdict(float), defaultdict(int)
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time") and e["ts"] >= start:
            op = e["args"]["op_name"]
            ms[op] += e["dur"] / 1e3 / runs
            count[op] += 1
    return [{"op": op, "ms_per_call": ms[op], "kernels_per_call": count[op] / runs}
            for op in sorted(ms, key=ms.get, reverse=True)]


def with_signals(tracks, t0: int, k: int):
    """``tracks`` with its last ``k`` agents turned into closed traffic signals, standing where they are at t0
    (the raster's signal channel and its warp are then part of what preprocessing costs), and ``t0``."""
    if k <= 0:
        return tracks, t0
    from dataclasses import replace

    from forecast.data.types import AgentType

    xy, heading, types = tracks.xy.copy(), tracks.heading.copy(), tracks.agent_type.copy()
    idx = np.arange(tracks.num_agents - k, tracks.num_agents)
    xy[idx] = xy[idx, t0][:, None]
    heading[idx] = np.nan_to_num(heading[idx, t0])[:, None]
    types[idx] = int(AgentType.TRAFFIC_SIGNAL)
    return replace(tracks, xy=xy, heading=heading, agent_type=types), t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model")
    ap.add_argument("--bundle")
    ap.add_argument("--config", default="configs/train/quickstart.yaml")
    ap.add_argument("--runs", type=int, default=50)
    ap.add_argument("--agents", type=int, nargs="+", default=[8, 32, 64, 128])
    ap.add_argument("--accuracy-store")
    ap.add_argument("--accuracy-split", default="val")
    ap.add_argument("--accuracy-samples", type=int, default=300)
    ap.add_argument("--skip-cpu", action="store_true",
                    help="GPU rows only (torch eager, CUDA graph, end to end, onnxruntime CUDA); needs a GPU")
    ap.add_argument("--signals", type=int, default=8,
                    help="closed traffic signals per scene (at most a quarter of its agents): a signalised junction's")
    ap.add_argument("--ort-profile", type=int, default=0, metavar="CALLS",
                    help="also profile onnxruntime's one-thread fp32 graph by operator type over CALLS calls per agent count")
    ap.add_argument("--json")
    args = ap.parse_args()
    cuda = torch.cuda.is_available()
    if args.skip_cpu and not cuda:
        ap.error("--skip-cpu leaves only the GPU rows, and torch sees no GPU here")
    if args.skip_cpu and args.bundle and not args.model:
        ap.error("--skip-cpu with --bundle measures nothing: the GPU rows need the torch model (--model)")
    tmp_dir = tempfile.TemporaryDirectory(prefix="latency-")  # removed when the run ends, even on an error
    tmp = Path(tmp_dir.name)
    model_path = args.model
    if not model_path and not args.bundle:
        cfg = from_dict(TrainConfig, load_yaml(args.config)).resolved()
        model_path = tmp / "model.pt"
        save_model(model_path, WorldModel(cfg.model, cfg.features.scene_scale), cfg.features, {"run_id": None})
    bundle = Path(args.bundle) if args.bundle else tmp / "bundle"
    if not args.bundle:
        from forecast.export.bundle import export_bundle

        t = time.perf_counter()
        export_bundle(model_path, bundle, fp16=cuda, int8=not args.skip_cpu, progress=False)
        print(f"export: {time.perf_counter() - t:.1f} s")
    from forecast.runtime.predictor import Predictor, verify_bundle
    from forecast.runtime.tracker import SceneTracker

    pred1 = Predictor(bundle, threads=1)
    pred_all = None if args.skip_cpu else Predictor(bundle)
    ort1 = {} if args.skip_cpu else {"fp32 (plain graph)": Predictor(bundle, threads=1, optimized=False).session,
            f"fp32 ({pred1.model_file})": pred1.session}
    if "int8" in pred1.manifest["models"] and not args.skip_cpu:
        p8 = Predictor(bundle, threads=1, variant="int8")
        ort1[f"int8 ({p8.model_file})"] = p8.session
    feats = pred1.features
    loaded = load_model(model_path) if model_path else None
    layers = synthetic_map_layers()
    m = rasterize_map_layers(layers, feats.raster.resolution)
    gpu_preds = {}
    if cuda:
        import onnxruntime as ort

        if "CUDAExecutionProvider" in ort.get_available_providers():
            for variant in ("fp32", "fp16"):
                try:
                    gpu_preds[variant] = Predictor(bundle, providers=["CUDAExecutionProvider"], variant=variant)
                except Exception as exc:  # noqa: BLE001 - report, keep measuring the rest
                    print(f"onnxruntime CUDA {variant}: {exc}")
    rows, profiles = [], {}
    all_threads = torch.get_num_threads()
    for a in args.agents:
        tracks, t0 = with_signals(*synthetic_tracks(a, feats, seed=a), min(args.signals, a // 4))
        sample = build_sample(tracks, t0, feats, m, with_future=False)
        feed = pred1.inputs(sample)

        def add(what: str, p50: float, p99: float, cpu: float = float("nan"), a: int = a) -> None:
            rows.append({"agents": a, "what": what, "p50_ms": p50, "p99_ms": p99, "cpu_p50_ms": cpu})
            # each row as it comes: a run cut short by its time limit (a GPU lease) still shows what it measured
            print(f"  {a} agents, {what}: p50 {p50:.3f} ms, p99 {p99:.3f} ms", flush=True)

        def tick(a=a, tracks=tracks, t0=t0):
            tracker, det = tick_replay(tracks, t0, SceneTracker, pred1)
            c, start = time.process_time(), time.perf_counter()
            tracker.update(det, step=t0)
            return 1e3 * (time.perf_counter() - start), 1e3 * (time.process_time() - c)

        if not args.skip_cpu:
            ticks = np.array([tick() for _ in range(args.runs)])
            add("tick update (SceneTracker.update)", float(np.percentile(ticks[:, 0], 50)),
                float(np.percentile(ticks[:, 0], 99)), float(np.percentile(ticks[:, 1], 50)))
            add("preprocessing (build_sample, map raster cached)",
                *percentiles(lambda: build_sample(tracks, t0, feats, m, with_future=False), args.runs))  # noqa: B023
            for name, sess in ort1.items():
                add(f"onnxruntime CPU 1 thread, {name}",
                    *percentiles(lambda s=sess: s.run(None, feed), args.runs))  # noqa: B023
            if args.ort_profile:
                profiles[a] = ort_op_profile(verify_bundle(bundle)[pred1.model_file], feed, args.ort_profile)
                print(f"  {a} agents, onnxruntime one thread ({pred1.model_file}) by operator, kernel ms per call:")
                for r in profiles[a][:12]:
                    print(f"    {r['op']:<22} {r['ms_per_call']:7.3f} ms  {r['kernels_per_call']:5.0f} kernels")
                print(f"    {'all':<22} {sum(r['ms_per_call'] for r in profiles[a]):7.3f} ms  "
                      f"{sum(r['kernels_per_call'] for r in profiles[a]):5.0f} kernels")
            add(f"onnxruntime CPU, default threads ({os.cpu_count()} cores)",
                *percentiles(lambda: pred_all.session.run(None, feed), args.runs))  # noqa: B023
            tracker, _ = tick_replay(tracks, t0 + 1, SceneTracker, pred1)
            add("end to end (tick update + SceneTracker.predict, 1 thread)",
                *percentiles(lambda: tracker.predict(layers, map_id="bench"), args.runs))  # noqa: B023
        if loaded is not None:
            inputs = collate([sample], feats.future_steps).model_inputs()
            with torch.no_grad():
                for threads in () if args.skip_cpu else sorted({1, all_threads}):
                    torch.set_num_threads(threads)
                    add(f"torch eager CPU, {threads} thread(s)",
                        *percentiles(lambda: loaded.model(*inputs), max(10, args.runs // 3)))  # noqa: B023
                torch.set_num_threads(all_threads)
                if cuda:
                    gm = loaded.model.to("cuda")
                    ginputs = [x.to("cuda") for x in inputs]
                    add("torch eager CUDA fp32", *percentiles(lambda: gm(*ginputs), args.runs,  # noqa: B023
                                                              sync=torch.cuda.synchronize))

                    def half():
                        with torch.autocast("cuda", dtype=torch.float16):
                            gm(*ginputs)  # noqa: B023

                    add("torch eager CUDA fp16 autocast", *percentiles(half, args.runs, sync=torch.cuda.synchronize))
                    graph = torch.compile(gm, mode="reduce-overhead", dynamic=False)
                    add("torch CUDA graph replay fp32 (compile reduce-overhead)",
                        *percentiles(lambda g=graph: g(*ginputs), args.runs, warmup=5,  # noqa: B023
                                     sync=torch.cuda.synchronize))
                    whole, part = gpu_end_to_end(tracks, t0, SceneTracker, pred1, layers, graph, args.runs)
                    add("end to end GPU (tick update + preprocessing on 1 CPU thread, CUDA graph model, outputs to CPU)", *whole)
                    add("  of which CPU side (tick update + build_sample + feed)", *part)
                    loaded.model.to("cpu")
        for variant, p in gpu_preds.items():
            add(f"onnxruntime CUDA provider {variant}", *percentiles(lambda: p.session.run(None, feed), args.runs))  # noqa: B023
    summary = _summary(rows, pred1.model_file)
    for k, v in summary.items():
        print(f"{k}: {v}")
    if profiles:
        summary["ort_profile"] = {str(a): r for a, r in profiles.items()}
    if args.accuracy_store and "int8" in pred1.manifest["models"]:
        summary["int8_accuracy"] = int8_accuracy(bundle, args.accuracy_store, args.accuracy_split, args.accuracy_samples)
        print("int8 accuracy:", summary["int8_accuracy"])
    device = torch.cuda.get_device_name(0) if cuda else "cpu"
    report("latency" + ("-gpu" if cuda else ""), rows, {"device": device, "bundle": str(bundle), "config": args.config,
                                                       "summary": summary}, args.json)


def _summary(rows: list[dict], ort_file: str) -> dict:
    def p50(a: int, prefix: str, key: str = "p50_ms") -> float | None:
        hit = [r[key] for r in rows if r["agents"] == a and r["what"].startswith(prefix)]
        return hit[0] if hit else None

    out = {}
    for key in ("p50_ms", "cpu_p50_ms"):
        pre64, pre128 = p50(64, "preprocessing", key), p50(128, "preprocessing", key)
        if pre64 and pre128:
            out[f"preprocessing_128_over_64 ({key})"] = pre128 / pre64
    for key in ("p50_ms", "cpu_p50_ms"):
        ort64 = p50(64, f"onnxruntime CPU 1 thread, fp32 ({ort_file})", key)
        torch64 = p50(64, "torch eager CPU, 1 thread", key)
        if ort64 and torch64:
            out[f"ort_over_torch_at_64 ({key})"] = ort64 / torch64
    tick128 = p50(128, "tick update")
    if tick128 is not None:
        out["tick_update_128_ms"] = tick128
    for a in (64, 128):
        graph, e2e = p50(a, "torch CUDA graph replay"), p50(a, "end to end GPU")
        if graph is not None:
            out[f"cuda_graph_model_{a}_ms"] = graph
        if e2e is not None:
            out[f"end_to_end_gpu_{a}_ms"] = e2e
    return out


if __name__ == "__main__":
    main()
