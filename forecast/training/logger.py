"""Lightning's MLflow logger with every call to the tracking store shielded from a stop signal.

A SIGTERM that lands while SQLite runs one of the logger's statements leaves that connection holding
its lock: the rest of the process then fails "database is locked" on every MLflow write, the pipeline's
record of the stop included (seen when a stop came during ``log_metrics``). Inside these calls the
signal is recorded only; training stops at the next batch end (``forecast.pipeline.signals``).
"""

from __future__ import annotations

from lightning.pytorch.loggers import MLFlowLogger

from forecast.pipeline.signals import deferred


class ShieldedMLFlowLogger(MLFlowLogger):
    """``MLFlowLogger`` whose store calls run in ``deferred(raise_at_end=False)`` sections."""

    @property
    def experiment(self):
        with deferred(raise_at_end=False):  # the first access creates the experiment and the run
            return super().experiment

    def log_hyperparams(self, params) -> None:
        with deferred(raise_at_end=False):
            super().log_hyperparams(params)

    def log_metrics(self, metrics, step=None) -> None:
        with deferred(raise_at_end=False):
            super().log_metrics(metrics, step)

    def finalize(self, status: str = "success") -> None:
        with deferred(raise_at_end=False):  # also called from Lightning's handling of the stop itself
            super().finalize(status)

    def after_save_checkpoint(self, checkpoint_callback) -> None:
        with deferred(raise_at_end=False):
            super().after_save_checkpoint(checkpoint_callback)
