"""The card asks its questions in batches (forecast.batching): the same answers, in the same order,
as one forward pass per question."""

from __future__ import annotations

import numpy as np
import pytest

from forecast.batching import Question, predict_stream
from forecast.features.config import HIST_FEATURES, FeatureConfig, RasterConfig
from forecast.features.dataset import SceneSet, select_scenarios

CFG = FeatureConfig(history_steps=10, future_steps=10, max_agents=8,
                    raster=RasterConfig(size=16, resolution=2.0, ahead=4.0))


class _Recorder:
    """A batching predictor whose answer names its question: the sample's t0 and whether it had a plan."""

    def __init__(self):
        self.calls: list[int] = []

    def predict_batch(self, samples, plans=None, plan_masks=None):
        self.calls.append(len(samples))
        plans = plans if plans is not None else [None] * len(samples)
        return [(np.full((1, 1, 1, 2), s.t0, np.float32), np.full((1, 1), p is not None, np.float32))
                for s, p in zip(samples, plans, strict=True)]


class _FakeSample:
    def __init__(self, t0: int):
        self.t0 = t0


def test_answers_come_back_in_order_and_in_batches():
    rec = _Recorder()
    qs = [(k, Question(_FakeSample(k), np.zeros(1) if k % 3 == 0 else None, np.ones(1, bool) if k % 3 == 0 else None))
          for k in range(37)]
    out = list(predict_stream(rec, iter(qs), batch_size=16))
    assert [k for k, _ in out] == list(range(37))
    assert [int(traj[0, 0, 0, 0]) for _, (traj, _) in out] == list(range(37))  # each answer is its question's
    assert [bool(prob[0, 0]) for _, (_, prob) in out] == [k % 3 == 0 for k in range(37)]  # plans went along
    assert rec.calls == [16, 16, 5]


def test_a_plain_callable_is_asked_one_question_at_a_time():
    asked = []

    def predict(sample, plan=None, plan_mask=None):
        asked.append((sample.t0, plan is not None))
        return np.zeros((1, 1, 1, 2)), np.ones((1, 1))

    qs = [(k, Question(_FakeSample(k), np.zeros(1) if k == 1 else None, np.ones(1, bool) if k == 1 else None))
          for k in range(3)]
    assert [k for k, _ in predict_stream(predict, qs)] == [0, 1, 2]
    assert asked == [(0, False), (1, True), (2, False)]
    with pytest.raises(ValueError, match="batch_size"):
        list(predict_stream(predict, qs, batch_size=0))
    with pytest.raises(TypeError, match="predict"):
        list(predict_stream(object(), qs))


def test_a_batch_without_plan_parameters_sends_its_plans_through_predict():
    """A predict_batch of the plain form (samples only) gets the batches without a plan; a batch that holds
    a plan goes through predict, question by question, plans included."""
    seen = []

    class Plain:
        def predict_batch(self, samples):
            seen.append(("batch", [s.t0 for s in samples]))
            return [(np.zeros((1, 1, 1, 2)), np.zeros((1, 1))) for _ in samples]

        def predict(self, sample, plan=None, plan_mask=None):
            seen.append(("one", sample.t0, plan is not None))
            return np.zeros((1, 1, 1, 2)), np.ones((1, 1))

    qs = [(k, Question(_FakeSample(k), np.zeros(1) if k == 3 else None, np.ones(1, bool) if k == 3 else None))
          for k in range(4)]
    out = list(predict_stream(Plain(), qs, batch_size=2))
    assert [k for k, _ in out] == [0, 1, 2, 3]
    assert seen == [("batch", [0, 1]), ("one", 2, False), ("one", 3, True)]


def test_a_predictor_that_does_not_batch_is_handed_one_question_at_a_time():
    """Nothing is gained by holding questions for a predictor without predict_batch: each sample is asked,
    and can be dropped, before the next is built."""
    built, asked = [], []

    def questions():
        for k in range(5):
            built.append(k)
            yield k, Question(_FakeSample(k))

    def predict(sample):
        asked.append((sample.t0, list(built)))
        return np.zeros((1, 1, 1, 2)), np.ones((1, 1))

    list(predict_stream(predict, questions(), batch_size=16))
    assert asked == [(k, list(range(k + 1))) for k in range(5)]


def test_a_batch_answered_short_is_an_error():
    class Short:
        def predict_batch(self, samples, plans=None, plan_masks=None):
            return []

    with pytest.raises(RuntimeError, match="answered 0 of 2"):
        list(predict_stream(Short(), [(0, Question(_FakeSample(0))), (1, Question(_FakeSample(1)))]))


@pytest.fixture(scope="module")
def headed_model(tmp_path_factory):
    """A small WorldModel whose head is not zero: its forecasts depend on the whole network."""
    import torch

    from forecast.model.checkpoint import save_model
    from forecast.model.config import ModelConfig
    from forecast.model.world_model import WorldModel

    torch.manual_seed(0)
    cfg = ModelConfig(hidden=16, modes=3, heads=2, interaction_layers=1, raster_width=8, future_steps=CFG.future_steps,
                      dt=CFG.dt, raster_channels=len(CFG.raster.channels), history_features=len(HIST_FEATURES))
    model = WorldModel(cfg, pose_scale=CFG.scene_scale).eval()
    torch.nn.init.normal_(model.rollout.head[-1].weight, std=0.05)
    path = tmp_path_factory.mktemp("headed") / "model.pt"
    save_model(path, model, CFG, {"run_id": None})
    return path


def _close(a, b, path="card"):
    if isinstance(a, dict):
        assert set(a) == set(b), path
        for k in a:
            _close(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, float) and np.isnan(a):
        assert np.isnan(b), path
    elif isinstance(a, bool | int | str) or a is None:
        assert a == b, path
    else:
        assert b == pytest.approx(a, rel=1e-5, abs=1e-5), path  # batched vs single: ~5e-7 here


def test_the_card_batched_equals_the_card_one_by_one(sumo_store, headed_model):
    from forecast.model.predictor import TorchPredictor
    from forecast.probes.card import world_model_card

    scenes = SceneSet(sumo_store, select_scenarios(sumo_store, "test"), CFG, t0_stride=5, full_future=True)
    model = TorchPredictor(headed_model)
    calls = []
    batched = model.predict_batch

    def counting(samples, plans=None, plan_masks=None):
        calls.append((len(samples), plans is not None))
        return batched(samples, plans, plan_masks)

    model.predict_batch = counting
    card = world_model_card({"m": model}, scenes, scenes, max_samples=12, max_pairs=6)
    one = world_model_card({"m": TorchPredictor(headed_model).predict}, scenes, scenes, max_samples=12, max_pairs=6)
    assert sum(card["pairs"].values()) >= 4, "the fixture should hold probe pairs"
    assert card["m"]["action_conditioning"]["n"] > 0
    assert max(n for n, _ in calls) > 1 and any(planned for _, planned in calls)  # batches, some with plans
    for part in ("interaction", "action_conditioning", "persistence", "generalisation"):
        _close(one["m"][part], card["m"][part], part)
