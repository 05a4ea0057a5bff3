"""MLflow view of a pipeline run: one parent run, one nested run per step.

Nested runs are made with the client API and the ``mlflow.parentRunId`` tag (what
``mlflow.start_run(nested=True)`` does) instead of the fluent API's run stack: the steps call
``forecast evaluate`` in this process, and it opens its own fluent run, which must not find one
already active.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Protocol

from forecast.pipeline.gate import GateDecision


class Tracker(Protocol):
    def start(self, pipeline: str, params: dict[str, str], tags: dict[str, str]) -> None: ...

    def start_step(self, step: str, step_hash: str) -> str | None: ...

    def end_step(self, step: str, status: str, duration_s: float, metrics: dict[str, float],
                 params: dict[str, str], summary: dict | None = None) -> None: ...

    def step(self, step: str, step_hash: str, status: str, duration_s: float,
             params: dict[str, str] | None = None) -> None: ...

    def gate(self, decision: GateDecision, path: Path) -> None: ...

    def finish(self, status: str) -> None: ...


class NullTracker:
    """Tracking off (tests, ``mlflow.enabled: false``)."""

    def start(self, pipeline, params, tags) -> None:
        pass

    def start_step(self, step, step_hash) -> str | None:
        return None

    def end_step(self, step, status, duration_s, metrics, params, summary=None) -> None:
        pass

    def step(self, step, step_hash, status, duration_s, params=None) -> None:
        pass

    def gate(self, decision, path) -> None:
        pass

    def finish(self, status) -> None:
        pass


class MlflowTracker:
    """Parent run ``<pipeline>`` in ``experiment``; nested runs ``<pipeline>/<step>`` with status and duration."""

    def __init__(self, tracking_uri: str, experiment: str = "forecast-pipeline"):
        import warnings

        from mlflow.tracking import MlflowClient

        warnings.filterwarnings("ignore", ".*MLflow Model Registry.*")
        self.client = MlflowClient(tracking_uri)
        self.tracking_uri, self.experiment = tracking_uri, experiment
        self.parent: str | None = None
        self.steps: dict[str, str] = {}
        self.pipeline = "pipeline"

    @property
    def experiment_id(self) -> str:
        exp = self.client.get_experiment_by_name(self.experiment)
        return exp.experiment_id if exp else self.client.create_experiment(self.experiment)

    def start(self, pipeline: str, params: dict[str, str], tags: dict[str, str]) -> None:
        self.pipeline = pipeline
        run = self.client.create_run(self.experiment_id, run_name=pipeline, tags={"pipeline.name": pipeline, **tags})
        self.parent = run.info.run_id
        self._params(self.parent, params)

    def start_step(self, step: str, step_hash: str) -> str | None:
        if self.parent is None:
            return None
        run = self.client.create_run(self.experiment_id, run_name=f"{self.pipeline}/{step}",
                                     tags={"mlflow.parentRunId": self.parent, "pipeline.step": step,
                                           "pipeline.hash": step_hash})
        self.steps[step] = run.info.run_id
        return run.info.run_id

    def end_step(self, step: str, status: str, duration_s: float, metrics: dict[str, float],
                 params: dict[str, str], summary: dict | None = None) -> None:
        run_id = self.steps.get(step)
        if run_id is None:
            return
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.client.set_tag(run_id, "pipeline.status", status)
        for k, v in (summary or {}).items():  # ids worth a click, e.g. the training run's mlflow_run_id
            if isinstance(v, str | int | float) and not isinstance(v, bool):
                self.client.set_tag(run_id, f"summary.{_metric_name(k)}", str(v)[:5000])
        self._params(run_id, params)
        rows = [Metric("duration_s", float(duration_s), now, 0)]
        rows += [Metric(_metric_name(k), float(v), now, 0) for k, v in metrics.items()]
        for i in range(0, len(rows), 500):
            self.client.log_batch(run_id, metrics=rows[i:i + 500])
        self.client.log_metric(self.parent, f"{step}/duration_s", float(duration_s), timestamp=now)
        self.client.set_tag(self.parent, f"step.{step}", status)
        self.client.set_terminated(run_id, {"failed": "FAILED", "stopped": "KILLED"}.get(status, "FINISHED"))

    def step(self, step: str, step_hash: str, status: str, duration_s: float,
             params: dict[str, str] | None = None) -> None:
        if self.start_step(step, step_hash) is not None:
            self.end_step(step, status, duration_s, {}, params or {})

    def gate(self, decision: GateDecision, path: Path) -> None:
        if self.parent is None:
            return
        self.client.set_tag(self.parent, "gate.passed", str(decision.passed).lower())
        self.client.set_tag(self.parent, "gate.reasons", "\n".join(decision.reasons)[:5000])
        self.client.log_metric(self.parent, "gate/passed", float(decision.passed))
        self.client.log_artifact(self.parent, str(path))

    def finish(self, status: str) -> None:
        if self.parent is not None:
            self.client.set_terminated(self.parent, status)

    def _params(self, run_id: str, params: dict[str, str]) -> None:
        from mlflow.entities import Param

        rows = [Param(_metric_name(k)[:250], str(v)[:6000]) for k, v in sorted(params.items())]
        for i in range(0, len(rows), 100):
            self.client.log_batch(run_id, params=rows[i:i + 100])


def _metric_name(key: str) -> str:
    """MLflow allows letters, digits and ``_ - . / space`` in metric and param names (no ``@``)."""
    return "".join(c if c.isalnum() or c in "_-./ " else "_" for c in key)
