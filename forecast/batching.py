"""Predictions in batches: a model that predicts several samples per forward pass gets them so.

The evaluation loop (``forecast.evaluation.collect``) and the world-model card's probes ask many
questions (the card several of one scene: with and without a cause, free and with a plan, full and
degraded history). One forward pass per question costs the learned model its per-call overhead each
time (on the demo's CPU a batch of 16 took about a third of the time of 16 single calls), so the
questions are asked ``BATCH`` at a time. Results come back in the order
asked, and equal the single calls up to float rounding (padding changes matrix shapes, not what the
real agents see).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from forecast.features.sample import Sample

BATCH = 16  # questions per forward pass of a batching predictor: ~3 x faster than one by one on a CPU

Prediction = tuple[np.ndarray, np.ndarray]  # traj [A, K, T_f, 2], prob [A, K]


@dataclass
class Question:
    """One prediction to make: a sample, and optionally a plan (the action) for some of its agents."""

    sample: Sample
    plan: np.ndarray | None = None  # [A, T_f, 2] agent frame
    plan_mask: np.ndarray | None = None  # [A] bool: the agents that follow ``plan``


def batch_call(predictor: Any) -> Callable[[list[Question]], list[Prediction]]:
    """``predictor``: an object with ``predict(sample, plan=None, plan_mask=None)`` and optionally
    ``predict_batch(samples)`` (taking ``plans=`` and ``plan_masks=`` too, where it can follow plans),
    or such a ``predict`` callable itself. Returns a function answering a list of questions in order:
    in one ``predict_batch`` call where it can, else one ``predict`` call per question."""
    single = getattr(predictor, "predict", predictor)
    batched = getattr(predictor, "predict_batch", None)

    if batched is None and not callable(single):
        raise TypeError(f"{type(predictor).__name__} is neither a predict callable nor has a predict method")

    def one_by_one(qs: list[Question]) -> list[Prediction]:
        if not callable(single):  # a predict_batch without plans, and no predict to follow the plans with
            raise TypeError(f"{type(predictor).__name__}.predict_batch takes no plans and it has no predict method")
        return [single(q.sample) if q.plan is None else single(q.sample, plan=q.plan, plan_mask=q.plan_mask)
                for q in qs]

    if batched is None:
        return one_by_one
    takes_plans = _takes_plans(batched)

    def many(qs: list[Question]) -> list[Prediction]:
        if all(q.plan is None for q in qs):
            return batched([q.sample for q in qs])
        if not takes_plans:  # a batch that cannot carry plans: the plans go through predict
            return one_by_one(qs)
        return batched([q.sample for q in qs], plans=[q.plan for q in qs], plan_masks=[q.plan_mask for q in qs])
    return many


def batches(predictor: Any) -> bool:
    """Whether ``predictor`` predicts several samples per call (``predict_batch``)."""
    return getattr(predictor, "predict_batch", None) is not None


def _takes_plans(fn: Callable) -> bool:
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):  # no signature to read (a builtin): assume the plain form
        return False
    return {"plans", "plan_masks"} <= set(params) or any(p.kind is p.VAR_KEYWORD for p in params.values())


def predict_stream(predictor: Any, questions: Iterable[tuple[Any, Question]],
                   batch_size: int = BATCH) -> Iterator[tuple[Any, Prediction]]:
    """(key, question) pairs -> (key, (traj, prob)) in the same order, ``batch_size`` questions per call
    to a predictor that batches (``predict_batch``), one at a time to one that does not.

    Lazy both ways: the questions are drawn as needed and at most ``batch_size`` are held (one for a
    predictor that does not batch), so a caller that builds its samples on the fly keeps its memory
    bounded."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    many = batch_call(predictor)
    size = batch_size if batches(predictor) else 1
    pending: list[tuple[Any, Question]] = []
    for item in questions:
        pending.append(item)
        if len(pending) == size:
            yield from _answer(many, pending)
            pending = []
    if pending:
        yield from _answer(many, pending)


def _answer(many: Callable[[list[Question]], list[Prediction]],
            pending: list[tuple[Any, Question]]) -> Iterator[tuple[Any, Prediction]]:
    out = many([q for _, q in pending])
    if len(out) != len(pending):
        raise RuntimeError(f"a batched predictor answered {len(out)} of {len(pending)} questions")
    yield from ((key, o) for (key, _), o in zip(pending, out, strict=True))
