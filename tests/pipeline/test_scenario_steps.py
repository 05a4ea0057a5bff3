"""The scenario steps of the pipeline: tag and champion feed evaluate; the shipped quickstart wires them."""

from __future__ import annotations

import pytest

from forecast.pipeline.config import load_pipeline
from forecast.pipeline.steps import ChampionStep, EvaluateStep, TagStep, build_steps
from forecast.scenarios.tags import TAGS


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


@pytest.mark.slow  # a tiny pipeline: ingest, tag, two tiny trainings, evaluate (a minute on 2 cores)
def test_tiny_pipeline_tags_trains_a_champion_and_compares(sumo_runs, tmp_path, monkeypatch):
    import json

    from forecast.cli import main
    from forecast.scenarios.suites import Case, Suite, suite_yaml
    from tests.pipeline.conftest import ROOT, write_tiny_pipeline

    monkeypatch.chdir(ROOT)
    suite = tmp_path / "suite.yaml"
    suite.write_text(suite_yaml(Suite("tiny", 1, [Case("gone", "sumo/none", 19, "x", "slows_down")])))
    cfg = write_tiny_pipeline(tmp_path, ["ingest", "tag", "train", "champion", "evaluate"], ingest_input=sumo_runs)
    args = [str(cfg), 'evaluate.args=["--max-samples", "30"]', "evaluate.overrides.world_model.enabled=false",
            f"evaluate.suite={suite}"]
    assert main(["--quiet", "pipeline", "run", *args]) == 0
    work = tmp_path / "work"
    (tags,) = (work / "tag").glob("*/tags.parquet")
    (metrics_file,) = (work / "evaluate").glob("*/metrics.json")
    m = json.loads(metrics_file.read_text())
    assert set(m["by_tag"]) == set(TAGS)
    assert m["comparison"]["champion"].startswith("champion:") and "by_tag" in m["comparison"]
    assert m["suite"]["summary"][m["model"]] == {"passed": 0, "failed": 0, "missing": 1}
    (champion,) = (work / "champion").glob("*/model.pt")
    (trained,) = (work / "train").glob("*/model.pt")
    assert champion.read_bytes() != trained.read_bytes()  # another seed: another model
    assert main(["--quiet", "pipeline", "run", *args]) == 0  # a second run skips everything
