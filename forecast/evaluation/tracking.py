"""MLflow logging of an evaluation: headline metrics flattened to MLflow names, the two files as artifacts."""

from __future__ import annotations

import time

from forecast.evaluation.config import EvalConfig
from forecast.evaluation.results import EvalResult


def mlflow_name(key: str) -> str:
    """MLflow metric names allow no ``@``: ``minFDE@6`` -> ``minFDE_6``."""
    return key.replace("@", "_").replace("#", "_")


def headline_metrics(metrics: dict) -> dict[str, float]:
    """Flattened metrics for MLflow: ``test/minFDE_6``, ``test/vehicle/minFDE_6``, ``test/2s/minFDE_6``,
    ``test/scene/offroad_rate``, ``test/baseline/ctrv/minFDE_6``, ``test/model/<name>/minFDE_6``."""
    split = metrics["split"]
    out: dict[str, float] = {}

    def put(prefix: str, block: dict) -> None:
        for k, v in block.items():
            if v is not None and not isinstance(v, dict):
                out[mlflow_name(f"{prefix}/{k}")] = float(v)

    put(split, metrics["overall"])
    for c, b in metrics["by_class"].items():
        put(f"{split}/{c}", b)
    for h, b in metrics["by_horizon"].items():
        put(f"{split}/{h}", b)
    put(f"{split}/scene", metrics["scene"])
    put(f"{split}/joint", metrics.get("joint", {}))
    for name, blk in metrics["baselines"].items():
        put(f"{split}/baseline/{name}", blk["overall"])
    for name, blk in list(metrics["models"].items())[1:]:
        put(f"{split}/model/{name}", blk["overall"])
    return out


def log_mlflow(result: EvalResult, cfg: EvalConfig) -> str:
    """Log params, headline metrics and the two files to a new run; returns its id.

    Uses an explicit client, not the fluent API: ``mlflow.set_tracking_uri`` would change the
    process's ``$MLFLOW_TRACKING_URI`` for every later step (e.g. make an export register itself).
    A stop signal waits for the end of the logging (``forecast.pipeline.signals.deferred``).
    """
    from forecast.pipeline.signals import deferred

    with deferred():
        return _log_mlflow(result, cfg)


def _log_mlflow(result: EvalResult, cfg: EvalConfig) -> str:
    import warnings

    from mlflow import MlflowClient
    from mlflow.entities import Metric, Param

    from forecast.tracking_uri import tracking_uri

    warnings.filterwarnings("ignore", ".*MLflow Model Registry.*")
    client = MlflowClient(tracking_uri=tracking_uri(cfg.mlflow.tracking_uri))
    exp = client.get_experiment_by_name(cfg.mlflow.experiment)
    exp_id = exp.experiment_id if exp else client.create_experiment(cfg.mlflow.experiment)
    m = result.metrics
    run_name = cfg.mlflow.run_name or f"eval-{'+'.join(result.model_names)}-{cfg.split}"
    run = client.create_run(exp_id, run_name=run_name[:250])
    rid = run.info.run_id
    try:
        params = {
            "models": ",".join(m["config"]["models"])[:500], "split": cfg.split, "store": m["store"][:500],
            "num_samples": m["num_samples"], "t0_stride": cfg.t0_stride, "max_samples": cfg.max_samples,
            "seed": cfg.seed, "history_steps": m["features"]["history_steps"],
            "future_steps": m["features"]["future_steps"], "dt": m["features"]["dt"],
        }
        now = int(time.time() * 1000)
        client.log_batch(rid, metrics=[Metric(k, float(v), now, 0) for k, v in headline_metrics(m).items()],
                         params=[Param(k, str(v)) for k, v in params.items()])
        assert result.out_dir is not None
        client.log_artifact(rid, str(result.out_dir / "metrics.json"))
        client.log_artifact(rid, str(result.out_dir / "report.html"))
        client.set_terminated(rid, "FINISHED")
    except Exception:
        client.set_terminated(rid, "FAILED")
        raise
    return rid
