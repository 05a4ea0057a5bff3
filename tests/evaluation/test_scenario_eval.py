"""Per-tag metrics, champion vs challenger and a suite through `forecast evaluate` on the tiny SUMO store."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from forecast.evaluation.evaluate import BASELINES, METRIC_NAMES, EvalConfig, evaluate
from forecast.features.config import FeatureConfig, RasterConfig
from forecast.scenarios.tags import TAGS

FEATURES = FeatureConfig(history_steps=10, future_steps=20, dt=0.1, max_agents=16,
                         raster=RasterConfig(size=16, resolution=2.0, ahead=4.0))


@pytest.fixture(scope="module")
def tag_file(sumo_store, tmp_path_factory):
    from forecast.scenarios.table import tag_store

    return tag_store(sumo_store, splits=["test"], out=tmp_path_factory.mktemp("tags") / "tags.parquet")


@pytest.fixture(scope="module")
def compared(sumo_store, tag_file, tmp_path_factory):
    """ctrv as the challenger, constant velocity as the champion."""
    out = tmp_path_factory.mktemp("eval_cmp")
    cfg = EvalConfig(num_worst=1, num_random=0, tags=str(tag_file), min_tag_count=5)
    cfg.mlflow.enabled = False
    cfg.world_model.enabled = False
    cfg.compare.bootstrap = 200
    cfg.compare.num_regressions = 3
    result = evaluate(sumo_store, ["ctrv"], cfg, out_dir=out, features=FEATURES, progress=False,
                      baseline="constant_velocity")
    return result, out


def test_by_tag_blocks_for_the_model_and_both_baselines(compared):
    result, out = compared
    m = json.loads((out / "metrics.json").read_text())
    keys = {"n", *METRIC_NAMES, "MR@6_1s", "MR@6_2s", "rare"}  # the tiny store has a 2 s future: no 3 s
    for blk in [m, *m["baselines"].values()]:
        assert set(blk["by_tag"]) == set(TAGS)
        for tag, b in blk["by_tag"].items():
            assert set(b) == keys, tag
            assert b["n"] == int(result.scenario_tags[tag].sum())
            assert b["rare"] == (b["n"] < 5)
    assert sum(b["n"] for b in m["by_tag"].values()) > 0
    # the tag's minFDE@6 is the mean over its agents
    tag = max(TAGS, key=lambda t: m["by_tag"][t]["n"])
    mask = result.scenario_tags[tag]
    assert m["by_tag"][tag]["minFDE@6"] == pytest.approx(np.nanmean(result.per_agent["ctrv"]["minFDE@6"][mask]))


def test_comparison_deltas_and_regressions(compared):
    result, _ = compared
    c = result.metrics["comparison"]
    assert c["challenger"] == "ctrv" and c["champion"] == "constant_velocity"
    d = result.per_agent["ctrv"]["minFDE@6"] - result.per_agent["constant_velocity"]["minFDE@6"]
    assert c["overall"]["minFDE@6"]["delta"] == pytest.approx(np.nanmean(d))
    lo, hi = c["overall"]["minFDE@6"]["ci_low"], c["overall"]["minFDE@6"]["ci_high"]
    assert lo <= c["overall"]["minFDE@6"]["delta"] <= hi
    assert set(c["by_tag"]) == set(TAGS) and set(c["by_class"]) == {"vehicle", "pedestrian", "cyclist"}
    regs = c["regressions"]
    assert 0 < len(regs) <= 3
    deltas = [r["delta_minFDE@6"] for r in regs]
    assert deltas == sorted(deltas, reverse=True) and deltas[0] == pytest.approx(np.nanmax(d))
    assert len({(r["scenario_id"], r["t0"]) for r in regs}) == len(regs)


def test_report_has_tag_table_comparison_pictures_and_working_anchors(compared):
    _, out = compared
    page = (out / "report.html").read_text()
    assert 'id="section-by-tag"' in page and 'id="section-comparison"' in page
    assert page.count('<div id="regression-') >= 1 and (out / "plots" / "regression_01.png").is_file()
    targets = set(re.findall(r'href="#([^"]+)"', page))
    ids = set(re.findall(r'id="([^"]+)"', page))
    assert targets and targets <= ids  # every link lands on something in the page
    assert {f"tag-{t}" for t in TAGS} <= ids


def test_gate_reads_per_tag_rules(compared):
    from forecast.pipeline.gate import GateConfig, decide

    m = compared[0].metrics
    worst = max(e["minFDE@6"]["delta"] for e in m["comparison"]["by_tag"].values() if e["n"] >= 1)
    ok = decide(GateConfig(enabled=True, max_tag_regression={"minFDE@6": worst + 0.01}, tag_min_n=1), m)
    assert ok.passed
    bad = decide(GateConfig(enabled=True, max_tag_regression={"minFDE@6": worst - 0.01}, tag_min_n=1), m)
    assert not bad.passed and any("tag" in c.rule and not c.passed for c in bad.checks)
    # absolute per-tag bounds use the dotted path into by_tag
    assert decide(GateConfig(enabled=True, max_metrics={"by_tag.near_miss.MR@6_2s": 1.0}), m).checks[0].passed


def test_without_a_tag_table_by_tag_is_absent(sumo_store, tmp_path):
    cfg = EvalConfig(num_worst=0, num_random=0, max_samples=5)
    cfg.mlflow.enabled = False
    cfg.world_model.enabled = False
    logs: list[str] = []
    r = evaluate(sumo_store, ["constant_velocity"], cfg, features=FEATURES, progress=False, log=logs.append)
    assert "by_tag" not in r.metrics and any("forecast tag" in s for s in logs)
    cfg.tags = str(tmp_path / "missing.parquet")
    with pytest.raises(FileNotFoundError):
        evaluate(sumo_store, ["constant_velocity"], cfg, features=FEATURES, progress=False)


def test_cli_baseline_and_suite(sumo_store, tag_file, tmp_path, capsys):
    from forecast.cli import main
    from forecast.scenarios.suites import Case, Suite, suite_yaml

    info = sumo_store.scenarios(split="test")[0]
    suite = tmp_path / "s.yaml"
    suite.write_text(suite_yaml(Suite("s", 2, [Case("gone", "sumo/none", 19, "x", "slows_down"),
                                               Case("here", info.scenario_id, 19, "nobody", "keeps_crossing")])))
    out = tmp_path / "eval"
    rc = main(["evaluate", "--model", "ctrv", "--baseline", "constant_velocity", "--store", str(sumo_store.path),
               "--out", str(out), "--tags", str(tag_file), "--suite", str(suite), "--no-mlflow", "--max-samples", "20",
               "--features", _features_yaml(tmp_path)])
    assert rc == 0
    text = capsys.readouterr().out
    assert "suite s v2 ctrv: 0 passed, 0 failed, 2 missing" in text
    assert "ctrv vs champion constant_velocity: minFDE@6" in text and "tags clearly worse:" in text
    m = json.loads((out / "metrics.json").read_text())
    assert m["suite"]["summary"]["constant_velocity"]["missing"] == 2 and "comparison" in m
    assert BASELINES[0] in m["baselines"]


def _features_yaml(tmp_path) -> str:
    import yaml

    from forecast.config import to_dict

    p = tmp_path / "features.yaml"
    p.write_text(yaml.safe_dump(to_dict(FEATURES)))
    return str(p)


def test_a_tag_table_of_another_store_state_is_refused(sumo_store, tag_file, tmp_path):
    """A tag table made before the store's data changed would cover only part of the agents, silently."""
    import pyarrow.parquet as pq

    from forecast.scenarios.table import META_KEY

    table = pq.read_table(tag_file)
    meta = json.loads(table.schema.metadata[META_KEY])
    stale = tmp_path / "tags.parquet"
    pq.write_table(table.replace_schema_metadata({META_KEY: json.dumps({**meta, "fingerprint": "0" * 64})}), stale)
    cfg = EvalConfig(num_worst=0, num_random=0, tags=str(stale))
    cfg.mlflow.enabled = False
    cfg.world_model.enabled = False
    with pytest.raises(ValueError, match=r"another state of the store .*rerun `forecast tag --store"):
        evaluate(sumo_store, ["ctrv"], cfg, out_dir=tmp_path / "out", features=FEATURES, progress=False)
