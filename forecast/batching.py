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
    ``predict_batch(samples, plans=None, plan_masks=None)``, or such a ``predict`` callable itself.
    Returns a function answering a list of questions in order."""
    batched = getattr(predictor, "predict_batch", None)
    if batched is not None:
        def many(qs: list[Question]) -> list[Prediction]:
            if all(q.plan is None for q in qs):
                return batched([q.sample for q in qs])
            return batched([q.sample for q in qs], plans=[q.plan for q in qs], plan_masks=[q.plan_mask for q in qs])
        return many
    single = getattr(predictor, "predict", predictor)
    if not callable(single):
        raise TypeError(f"{type(predictor).__name__} is neither a predict callable nor has a predict method")

    def one_by_one(qs: list[Question]) -> list[Prediction]:
        return [single(q.sample) if q.plan is None else single(q.sample, plan=q.plan, plan_mask=q.plan_mask)
                for q in qs]
    return one_by_one


def predict_stream(predictor: Any, questions: Iterable[tuple[Any, Question]],
                   batch_size: int = BATCH) -> Iterator[tuple[Any, Prediction]]:
    """(key, question) pairs -> (key, (traj, prob)) in the same order, ``batch_size`` questions per call.

    Lazy both ways: the questions are drawn as needed and at most ``batch_size`` are held, so a
    caller that builds its samples on the fly keeps its memory bounded."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    many = batch_call(predictor)
    pending: list[tuple[Any, Question]] = []
    for item in questions:
        pending.append(item)
        if len(pending) == batch_size:
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
