"""Per-scene latency, p50 and p99 milliseconds, for 8, 32, 64 and 128 agents.

Usage: python bench/latency.py [--model model.pt | --bundle DIR] [--config configs/train/quickstart.yaml]
                               [--runs 50] [--agents 8 32 64 128] [--json PATH]

Rows: torch eager (CPU, 1 thread and all threads); onnxruntime CPU (1 thread, all threads);
preprocessing alone (``build_sample``, the runtime's code path); end to end through
``forecast.runtime.Predictor`` (1 thread); and on a GPU when one is present: torch eager fp32 and
fp16 autocast, and onnxruntime's CUDA provider when this onnxruntime has it.
Without --model/--bundle an untrained model of the config's sizes is exported (latency does not
depend on the weights). Goal (issue 5): onnxruntime CPU, one thread, 64 agents, p50 <= 10 ms for the
model, and preprocessing no more than the model's own time.
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
from forecast.model.batch import collate
from forecast.model.checkpoint import load_model, save_model
from forecast.model.world_model import WorldModel
from forecast.training.config import TrainConfig


def percentiles(fn, runs: int, warmup: int = 3, sync=None) -> tuple[float, float]:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        if sync:
            sync()
        times.append(1e3 * (time.perf_counter() - t))
    return float(np.percentile(times, 50)), float(np.percentile(times, 99))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model")
    ap.add_argument("--bundle")
    ap.add_argument("--config", default="configs/train/quickstart.yaml")
    ap.add_argument("--runs", type=int, default=50)
    ap.add_argument("--agents", type=int, nargs="+", default=[8, 32, 64, 128])
    ap.add_argument("--json")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="latency-"))
    model_path = args.model
    if not model_path and not args.bundle:
        cfg = from_dict(TrainConfig, load_yaml(args.config)).resolved()
        model_path = tmp / "model.pt"
        save_model(model_path, WorldModel(cfg.model, cfg.features.scene_scale), cfg.features, {"run_id": None})
    bundle = Path(args.bundle) if args.bundle else tmp / "bundle"
    if not args.bundle:
        from forecast.export.bundle import export_bundle

        t = time.perf_counter()
        export_bundle(model_path, bundle, fp16=torch.cuda.is_available(), progress=False)
        print(f"export: {time.perf_counter() - t:.1f} s")
    from forecast.runtime.predictor import Predictor

    pred1 = Predictor(bundle, threads=1)
    pred_all = Predictor(bundle)
    feats = pred1.features
    loaded = load_model(model_path) if model_path else None
    layers = synthetic_map_layers()
    m = rasterize_map_layers(layers, feats.raster.resolution)
    cuda = torch.cuda.is_available()
    gpu_preds = {}
    if cuda:
        import onnxruntime as ort

        if "CUDAExecutionProvider" in ort.get_available_providers():
            for variant in ("fp32", "fp16"):
                try:
                    gpu_preds[variant] = Predictor(bundle, providers=["CUDAExecutionProvider"], variant=variant)
                except Exception as exc:  # noqa: BLE001 - report, keep measuring the rest
                    print(f"onnxruntime CUDA {variant}: {exc}")
    rows = []
    all_threads = torch.get_num_threads()
    for a in args.agents:
        tracks, t0 = synthetic_tracks(a, feats, seed=a)
        sample = build_sample(tracks, t0, feats, m, with_future=False)
        feed = pred1.inputs(sample)

        def add(what: str, p50: float, p99: float, a: int = a) -> None:
            rows.append({"agents": a, "what": what, "p50_ms": p50, "p99_ms": p99})

        add("preprocessing (build_sample, map raster cached)",
            *percentiles(lambda: build_sample(tracks, t0, feats, m, with_future=False), args.runs))  # noqa: B023
        add("onnxruntime CPU, 1 thread", *percentiles(lambda: pred1.session.run(None, feed), args.runs))  # noqa: B023
        add(f"onnxruntime CPU, default threads ({os.cpu_count()} cores)",
            *percentiles(lambda: pred_all.session.run(None, feed), args.runs))  # noqa: B023
        add("end to end (runtime Predictor, 1 thread)",
            *percentiles(lambda: pred1.predict(tracks, t0, layers, map_id="bench"), args.runs))  # noqa: B023
        if loaded is not None:
            inputs = collate([sample], feats.future_steps).model_inputs()
            with torch.no_grad():
                for threads in (1, all_threads):
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
                    loaded.model.to("cpu")
        for variant, p in gpu_preds.items():
            add(f"onnxruntime CUDA provider {variant}", *percentiles(lambda: p.session.run(None, feed), args.runs))  # noqa: B023
    device = torch.cuda.get_device_name(0) if cuda else "cpu"
    report("latency" + ("-gpu" if cuda else ""), rows, {"device": device, "bundle": str(bundle), "config": args.config,
                                                       "goal": "ORT CPU 1 thread, 64 agents, p50 <= 10 ms"}, args.json)


if __name__ == "__main__":
    main()
