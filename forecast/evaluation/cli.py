"""``forecast evaluate``: score models and the physics baselines on a split of the store."""

from __future__ import annotations

import argparse
import sys


def _features(path: str):
    """A FeatureConfig from a YAML file: the mapping itself, or its ``features:`` section (a train config)."""
    from forecast.config import from_dict, load_yaml
    from forecast.features.config import FeatureConfig

    data = load_yaml(path)
    if "features" in data and isinstance(data["features"], dict):
        data = data["features"]
    return from_dict(FeatureConfig, data, where=f"{path}")


# What each part recorded when it was evaluated (``--shard``): ``--merge`` takes them from the parts.
DECIDED_BY_THE_PARTS = ("model", "store", "shard", "baseline", "split", "source", "max_samples", "t0_stride", "seed",
                        "features", "tags", "suite", "device")


def config_from_args(args: argparse.Namespace):
    from forecast.config import from_dict, load_yaml
    from forecast.evaluation.evaluate import EvalConfig

    cfg = from_dict(EvalConfig, load_yaml(args.config) if args.config else {}, where=args.config or "")
    for flag, attr in (("split", "split"), ("max_samples", "max_samples"), ("t0_stride", "t0_stride"), ("seed", "seed"),
                       ("source", "source"), ("device", "device")):
        value = getattr(args, flag)
        if value is not None:
            setattr(cfg, attr, value)
    if args.t0_stride is not None and args.t0_stride < 1:
        raise ValueError(f"--t0-stride must be >= 1, got {args.t0_stride}")
    if args.max_samples is not None and args.max_samples < 1:
        raise ValueError(f"--max-samples must be >= 1, got {args.max_samples}")
    if args.features:
        cfg.features = _features(args.features)
    if args.no_mlflow:
        cfg.mlflow.enabled = False
    if args.tracking_uri:
        cfg.mlflow.tracking_uri = args.tracking_uri
    if args.experiment:
        cfg.mlflow.experiment = args.experiment
    if args.run_name:
        cfg.mlflow.run_name = args.run_name
    if args.tags:
        cfg.tags = args.tags
    if args.suite:
        cfg.suite = args.suite
    return cfg


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from forecast.evaluation.evaluate import evaluate, format_table

    cfg = config_from_args(args)
    quiet = getattr(args, "quiet", False)
    log = lambda msg: print(msg, file=sys.stderr)  # noqa: E731
    if args.merge:
        ignored = [f"--{dest.replace('_', '-')}" for dest in DECIDED_BY_THE_PARTS if getattr(args, dest) is not None]
        if ignored:  # the parts hold their models, samples and champion: a flag here would be silently unused
            raise ValueError(f"--merge combines what the parts evaluated; {', '.join(ignored)} belong(s) to the "
                             "runs that wrote them (forecast evaluate ... --shard i/N)")
        from forecast.evaluation.shard import merge_parts

        result = merge_parts(args.merge, args.out, cfg, progress=not quiet, log=log)
    else:
        if not args.model or not args.store:
            raise ValueError("--model and --store are needed (except with --merge)")
        if args.shard:
            from forecast.data.ingest import parse_shard
            from forecast.evaluation.shard import evaluate_part

            path = evaluate_part(args.store, args.model, cfg, parse_shard(args.shard), args.out, args.baseline,
                                 progress=not quiet, log=log)
            print(f"part: {path}  (merge every part with: forecast evaluate --merge PARTS... --out DIR)")
            return 0
        result = evaluate(args.store, args.model, cfg, out_dir=args.out, progress=not quiet, log=log,
                          baseline=args.baseline)
    print(format_table(result.metrics))
    cmp = result.metrics.get("comparison") or {}
    if cmp.get("skipped"):
        print(f"champion vs challenger: {cmp['skipped']}")
    elif cmp:
        d = cmp["overall"]["minFDE@6"]
        worse = [t for t, e in cmp.get("by_tag", {}).items()
                 if e["minFDE@6"]["ci_low"] is not None and e["minFDE@6"]["ci_low"] > 0]
        print(f"{cmp['challenger']} vs champion {cmp['champion']}: minFDE@6 {d['delta']:+.3f} m "
              f"[{d['ci_low']:+.3f}, {d['ci_high']:+.3f}]; tags clearly worse: {', '.join(worse) or 'none'}")
    suite = result.metrics.get("suite")
    if suite:
        for name, s in suite["summary"].items():
            print(f"suite {suite['name']} v{suite['version']} {name}: {s['passed']} passed, {s['failed']} failed, "
                  f"{s['missing']} missing")
    print(f"metrics: {result.out_dir / 'metrics.json'}")
    print(f"report:  {result.out_dir / 'report.html'}")
    if result.run_id:
        print(f"mlflow run: {result.run_id} (experiment {cfg.mlflow.experiment})")
    return 0


def register(sub) -> None:
    s = sub.add_parser(
        "evaluate", help="score models and the physics baselines on a split: metrics.json, report.html, MLflow",
        description="Evaluate one or more models (model.pt, exported bundle directory, or a baseline name: "
                    "constant_velocity, ctrv) on the same samples of a split; the baselines are always scored too.",
    )
    s.add_argument("--model", action="append", metavar="M",
                   help="model.pt, a bundle directory (with bundle.json) or a baseline name; repeat to compare")
    s.add_argument("--baseline", metavar="CHAMPION",
                   help="the champion the first --model (the challenger) is compared with: model.pt, bundle, "
                        "models:/NAME@ALIAS (registry) or a baseline name; per-tag deltas with bootstrap intervals")
    s.add_argument("--suite", help="also run this scenario suite (configs/suites/NAME.yaml or a file)")
    s.add_argument("--tags", help="tag table (default STORE/tags/tags.parquet; `forecast tag`)")
    s.add_argument("--store", help="store directory")
    s.add_argument("--shard", metavar="i/N", help="evaluate only this share of the split's scenarios and write "
                   "OUT/part-i-of-N.npz (no metrics); --merge turns the N parts into one evaluation")
    s.add_argument("--merge", nargs="+", metavar="PART", help="part files of every shard: write the metrics, "
                   "report and MLflow run of the whole split, identical to one run")
    s.add_argument("--out", required=True, help="output directory (metrics.json, report.html, plots/)")
    s.add_argument("--config", help="configs/eval/<name>.yaml (flags below override it)")
    s.add_argument("--split", help="split to evaluate (default: test)")
    s.add_argument("--source", help="only this source (sumo | av2 | eth_ucy)")
    s.add_argument("--max-samples", type=int, help="a seeded random subset of this many samples")
    s.add_argument("--t0-stride", type=int, help="steps between sample times (default 10)")
    s.add_argument("--seed", type=int, help="seed of the subset and of the random scene pictures")
    s.add_argument("--features", help="FeatureConfig YAML (or a train config) for baseline-only runs")
    s.add_argument("--device", help="torch device of model.pt predictors (default cpu)")
    s.add_argument("--no-mlflow", action="store_true", help="do not log to MLflow")
    s.add_argument("--tracking-uri", help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db)")
    s.add_argument("--experiment", help="MLflow experiment (default forecast-eval)")
    s.add_argument("--run-name", help="MLflow run name")
    s.set_defaults(func=_cmd_evaluate)
