"""Offline scenario evaluation: ``forecast evaluate`` (see :mod:`forecast.evaluation.evaluate`).

Modules: ``results`` (the result types), ``config``, ``predictors``, ``collect`` (the loop), ``aggregate``
(metric blocks), ``slices``, ``by_tag`` (per scenario tag), ``compare`` (champion vs challenger), ``suite_run``,
``evaluate`` (the driver), ``report``, ``report_scenarios`` and ``plots``, ``tracking`` (MLflow), ``terminal``.

Names are imported lazily so that ``forecast --help`` (which registers the subcommand) stays fast.
"""

from __future__ import annotations

__all__ = ["BASELINES", "EvalConfig", "EvalResult", "evaluate", "format_table"]


def __getattr__(name: str):
    if name in __all__:
        from forecast.evaluation import evaluate as _evaluate

        return getattr(_evaluate, name)
    raise AttributeError(f"module 'forecast.evaluation' has no attribute {name!r}")
