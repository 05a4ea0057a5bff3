"""A split evaluated in shards and merged gives the metrics of one run (issue: real-dataset scale)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from forecast.cli import main
from forecast.evaluation.evaluate import evaluate
from forecast.evaluation.shard import evaluate_part, merge_parts
from tests.evaluation.test_evaluate import FEATURES, _cfg, tiny_model  # noqa: F401 - a fixture


def _shard_cfg():
    cfg = _cfg(features=FEATURES)
    cfg.world_model.enabled = False
    return cfg


def test_shards_merge_to_one_run(sumo_store, tiny_model, tmp_path):  # noqa: F811
    models = [str(tiny_model), "constant_velocity"]
    one = evaluate(sumo_store, models, _shard_cfg(), out_dir=tmp_path / "one", progress=False)
    parts = [evaluate_part(sumo_store, models, _shard_cfg(), (i, 3), tmp_path / "parts", progress=False)
             for i in range(3)]
    sizes = [json.loads(str(np.load(p)["meta"]))["scenarios"] for p in parts]
    assert sum(sizes) == one.metrics["num_scenarios"] and max(sizes) < sum(sizes)  # each part did a share
    merged = merge_parts(list(reversed(parts)), tmp_path / "merged", _shard_cfg(), progress=False)
    assert json.dumps(merged.metrics, sort_keys=True) == json.dumps(one.metrics, sort_keys=True)
    np.testing.assert_array_equal(merged.agents.sample, one.agents.sample)
    for name, out in one.outputs.items():
        np.testing.assert_array_equal(merged.outputs[name].pred, out.pred)
    assert (tmp_path / "merged" / "report.html").is_file()


def test_merge_refuses_missing_or_mismatched_parts(sumo_store, tmp_path):
    cfg = _shard_cfg()
    p0 = evaluate_part(sumo_store, ["constant_velocity"], cfg, (0, 2), tmp_path / "a", progress=False)
    with pytest.raises(ValueError, match="cover shards"):
        merge_parts([p0], progress=False)
    other = _shard_cfg()
    other.t0_stride = 5
    p1 = evaluate_part(sumo_store, ["constant_velocity"], other, (1, 2), tmp_path / "b", progress=False)
    with pytest.raises(ValueError, match="differs"):
        merge_parts([p0, p1], progress=False)
    capped = _shard_cfg()
    capped.max_samples = 5
    with pytest.raises(ValueError, match="max-samples"):
        evaluate_part(sumo_store, ["constant_velocity"], capped, (0, 2), tmp_path / "c", progress=False)


def test_cli_shard_and_merge(sumo_store, tmp_path, capsys):
    config = tmp_path / "eval.yaml"
    config.write_text(json.dumps({"world_model": {"enabled": False}, "num_worst": 1, "num_random": 1,
                                  "features": {"history_steps": 10, "future_steps": 20, "max_agents": 16,
                                               "raster": {"size": 16, "resolution": 2.0, "ahead": 4.0}}}))
    common = ["--quiet", "evaluate", "--config", str(config), "--no-mlflow"]
    for i in range(2):
        assert main([*common, "--model", "constant_velocity", "--store", str(sumo_store.path), "--shard", f"{i}/2",
                     "--out", str(tmp_path / "parts")]) == 0
    parts = sorted(str(p) for p in (tmp_path / "parts").glob("part-*.npz"))
    assert len(parts) == 2
    # what the parts already decided is not asked again: a --model here was silently ignored
    assert main([*common, "--merge", *parts, "--model", "ctrv", "--out", str(tmp_path / "m2")]) == 2
    assert "--model belong(s) to the runs that wrote them" in capsys.readouterr().err
    assert main([*common, "--merge", *parts, "--split", "test", "--t0-stride", "5", "--seed", "9",
                 "--out", str(tmp_path / "m3")]) == 2
    assert "--split, --t0-stride, --seed belong(s)" in capsys.readouterr().err
    assert main([*common, "--merge", *parts, "--out", str(tmp_path / "merged")]) == 0
    merged = json.loads((tmp_path / "merged" / "metrics.json").read_text())
    one = evaluate(sumo_store, ["constant_velocity"], _shard_cfg(), progress=False).metrics
    for key in ("overall", "by_class", "by_horizon", "scene", "slices", "baselines", "num_samples"):
        assert merged[key] == json.loads(json.dumps(one[key])), key
