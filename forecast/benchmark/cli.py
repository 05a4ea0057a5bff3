"""``forecast benchmark eth-ucy``: the ETH/UCY leave-one-out benchmark (see ``forecast.benchmark.eth_ucy``)."""

from __future__ import annotations

import argparse
from pathlib import Path

DEFAULT_CONFIG = "configs/benchmark/eth_ucy.yaml"


def _default_config() -> Path:
    """``configs/benchmark/eth_ucy.yaml`` here, else in the repository this package comes from."""
    here = Path(DEFAULT_CONFIG)
    if here.exists():
        return here
    return Path(__file__).resolve().parents[2] / DEFAULT_CONFIG


def _cmd_eth_ucy(args: argparse.Namespace) -> int:
    from forecast.benchmark.eth_ucy import format_table, load_config, run_benchmark

    scenes, overrides = args.scenes, list(args.overrides)
    if scenes:
        # `--scenes eth hotel key=value` would hand the override to --scenes: give it back.
        overrides += [s for s in scenes if "=" in s]
        scenes = [s for s in scenes if "=" not in s]
    top = {"out_dir": args.out, "scenes": scenes or None, "data_root": args.data_root}
    if args.mlflow:
        top["mlflow_log"] = True
    cfg = load_config(Path(args.config) if args.config else _default_config(), overrides, **top)
    result = run_benchmark(cfg, progress=not args.quiet and _tty(), retrain=args.retrain, skip_train=args.cv_only)
    print(format_table(result))
    print(f"results: {Path(cfg.out_dir) / 'eth_ucy.json'}")
    if "mlflow_run_id" in result:
        print(f"mlflow run: {result['mlflow_run_id']}")
    return 0


def _tty() -> bool:
    import sys

    return sys.stderr.isatty()


def register(sub) -> None:
    s = sub.add_parser("benchmark", help="public benchmarks under their published protocols (eth-ucy)")
    bsub = s.add_subparsers(dest="benchmark", required=True, metavar="BENCHMARK")
    e = bsub.add_parser("eth-ucy", help="ETH/UCY leave-one-out: 8 observed / 12 predicted steps, best of 20, per scene")
    e.add_argument("--config", help=f"benchmark config (default {DEFAULT_CONFIG})")
    e.add_argument("--scenes", nargs="+", metavar="SCENE", help="subset of: eth hotel univ zara1 zara2")
    e.add_argument("--out", help="output folder (store, per-scene training, eth_ucy.json); default: config out_dir")
    e.add_argument("--data-root", help="ETH/UCY folder (default: config data_root, relative to the current directory)")
    e.add_argument("--mlflow", action="store_true", help="log the summary to MLflow as one run")
    e.add_argument("--retrain", action="store_true", help="train afresh even where a finished run with this config exists")
    e.add_argument("--cv-only", action="store_true", help="no training: constant velocity and window counts only")
    e.add_argument("overrides", nargs="*", help="dotted overrides, e.g. train.optim.max_epochs=2")
    e.set_defaults(func=_cmd_eth_ucy)
