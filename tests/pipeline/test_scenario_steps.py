"""The scenario steps of the pipeline: tag and champion feed evaluate; the shipped quickstart wires them."""

from __future__ import annotations

from forecast.pipeline.config import load_pipeline
from forecast.pipeline.steps import ChampionStep, EvaluateStep, TagStep, build_steps


def test_quickstart_plans_tag_and_champion_into_evaluate():
    loaded = load_pipeline("configs/pipeline/quickstart.yaml")
    steps = {s.name: s for s in build_steps(loaded)}
    assert isinstance(steps["tag"], TagStep) and isinstance(steps["champion"], ChampionStep)
    assert set(steps["evaluate"].inputs) == {"train", "ingest", "tag", "champion"}
    # the champion is a second training with another seed
    assert loaded.champion.seed != loaded.train.seed
    assert steps["evaluate"].spec()["suite"]  # the suite's cases are part of the evaluate hash


def test_evaluate_without_scenario_steps_keeps_its_inputs():
    e = EvaluateStep({}, with_steps=("simulate", "ingest", "train", "evaluate"))
    assert e.inputs == ("train", "ingest")
    assert "baseline" not in e.spec()
    e = EvaluateStep({}, with_steps=("ingest", "train", "evaluate"), baseline="models:/m@champion")
    assert e.spec()["baseline"] == "models:/m@champion"
