"""``forecast train``."""

from __future__ import annotations

import argparse


def _cmd_train(args: argparse.Namespace) -> int:
    from forecast.config import apply_overrides, from_dict, load_yaml
    from forecast.training.config import TrainConfig

    cfg = from_dict(TrainConfig, apply_overrides(load_yaml(args.config), args.overrides), where=args.config)
    from forecast.training.train import run_training  # torch and Lightning: only once the config is good
    result = run_training(cfg, progress=not args.quiet, fresh=args.fresh)
    print(f"model: {result.model_path}")
    if result.run_id:
        from forecast.tracking_uri import tracking_uri

        uri = tracking_uri(cfg.mlflow.tracking_uri)  # where the run went: the config, $MLFLOW_TRACKING_URI, ./mlflow.db
        remote = uri.startswith(("http://", "https://", "databricks"))  # a server: its own web page
        how = uri if remote else f"mlflow ui --backend-store-uri {uri}"
        print(f"mlflow run: {result.run_id}  (see it with: {how})")
    for k, v in sorted(result.metrics.items()):
        print(f"  {k:<28}{v:10.3f}")
    return 0


def register(sub) -> None:
    s = sub.add_parser("train", help="train the world model with Lightning; tracked in MLflow")
    s.add_argument("--config", required=True, help="configs/train/<name>.yaml")
    s.add_argument("--fresh", action="store_true",
                   help="discard the run out_dir holds (checkpoints, model.pt, its MLflow run id) and train from scratch; "
                        "without it an interrupted run of the same config and data continues, a finished one is "
                        "returned as it is, and a run of another config or other data is an error")
    s.add_argument("overrides", nargs="*", help="dotted overrides, e.g. optim.max_epochs=2 data.batch_size=4")
    s.set_defaults(func=_cmd_train)
