"""Offline evaluation on the tiny SUMO store: metrics.json, report.html, slices, CLI, MLflow, model.pt."""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict

import numpy as np
import pytest
import shapely

from forecast import metrics as M
from forecast.evaluation import slices as S
from forecast.evaluation.evaluate import BASELINES, CLASSES, METRIC_NAMES, EvalConfig, evaluate
from forecast.features.config import FeatureConfig, RasterConfig
from forecast.model.baselines import constant_velocity

# the tiny store has 5 s scenarios: 1 s of history, 2 s of future
FEATURES = FeatureConfig(history_steps=10, future_steps=20, dt=0.1, max_agents=16,
                         raster=RasterConfig(size=16, resolution=2.0, ahead=4.0))
BLOCK_KEYS = {"n", *METRIC_NAMES}
MODEL_KEYS = {"num_agents", "num_modes", "overall", "by_class", "by_horizon", "by_class_horizon", "scene", "joint",
              "slices"}


def _cfg(**kw) -> EvalConfig:
    kw = {"num_worst": 1, "num_random": 1, **kw}
    cfg = EvalConfig(**kw)
    cfg.mlflow.enabled = False
    return cfg


@pytest.fixture(scope="module")
def cv_run(sumo_store, tmp_path_factory):
    out = tmp_path_factory.mktemp("eval_cv")
    result = evaluate(sumo_store, ["constant_velocity"], _cfg(), out_dir=out, features=FEATURES, progress=False)
    return result, out


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    """An untrained WorldModel (3 modes) saved as model.pt with the test FeatureConfig."""
    import torch

    from forecast.features.config import HIST_FEATURES
    from forecast.model.checkpoint import save_model
    from forecast.model.config import ModelConfig
    from forecast.model.world_model import WorldModel

    torch.manual_seed(0)
    cfg = ModelConfig(hidden=16, modes=3, heads=2, interaction_layers=1, raster_width=8, future_steps=FEATURES.future_steps,
                      dt=FEATURES.dt, raster_channels=len(FEATURES.raster.channels), history_features=len(HIST_FEATURES))
    path = tmp_path_factory.mktemp("tiny_model") / "tiny" / "model.pt"
    path.parent.mkdir(parents=True)
    save_model(path, WorldModel(cfg, pose_scale=FEATURES.scene_scale).eval(), FEATURES, {"run_id": None})
    return path


CONVENTION_KEYS = {"minADE@6-av2", "MR@6-waymo3s", "FDE-least-risk"}  # overall and by_class only (aggregate.convention_metrics)


def _check_block(block: dict, extra: frozenset | set = frozenset()) -> None:
    assert set(block) == BLOCK_KEYS | set(extra)
    assert isinstance(block["n"], int)
    for k in METRIC_NAMES:
        assert block[k] is None or np.isfinite(block[k])


def test_metrics_json_layout(cv_run):
    result, out = cv_run
    m = json.loads((out / "metrics.json").read_text())
    assert m == json.loads(json.dumps(result.metrics))
    assert m["model"] == "constant_velocity" and m["split"] == "test"
    assert MODEL_KEYS <= set(m)
    assert set(m["num_agents"]) == set(CLASSES)
    _check_block(m["overall"], CONVENTION_KEYS)
    # one mode: the AV2 leaderboard's minADE is the plain one; Waymo's 3 s miss needs a 3 s future (2 s here)
    assert m["overall"]["minADE@6-av2"] == pytest.approx(m["overall"]["minADE@6"])
    assert m["overall"]["FDE-least-risk"] == pytest.approx(m["overall"]["minFDE@1"])  # one mode: it is the top one
    assert m["overall"]["MR@6-waymo3s"] is None
    assert set(m["by_class"]) == set(CLASSES)
    for c in CLASSES:
        _check_block(m["by_class"][c], CONVENTION_KEYS)
        assert list(m["by_class_horizon"][c]) == ["1s", "2s"]
    assert list(m["by_horizon"]) == ["1s", "2s"]  # 3 s is longer than the 2 s future: left out
    for blk in m["by_horizon"].values():
        _check_block(blk)
    assert {"offroad_rate", "overlap_rate", "calibration_ece"} <= set(m["scene"])
    assert m["scene"]["calibration_ece"] == pytest.approx(0.0)  # one mode with probability 1
    assert m["scene"]["offroad_rate_gt"] == pytest.approx(0.0)  # SUMO vehicles stay on the road
    assert set(m["baselines"]) == set(BASELINES)
    for b in BASELINES:
        assert set(m["baselines"][b]) == MODEL_KEYS
    assert list(m["models"]) == ["constant_velocity"]
    assert m["baselines"]["constant_velocity"]["overall"] == m["overall"]
    assert m["features"]["future_steps"] == 20


def test_counts_by_class_sum_to_overall(cv_run):
    result, _ = cv_run
    m = result.metrics
    n = m["overall"]["n"]
    assert n == len(result.agents) > 0
    assert sum(m["num_agents"].values()) == n
    assert all(m["by_class"][c]["n"] == m["num_agents"][c] for c in CLASSES)
    assert all(m["by_horizon"][h]["n"] == n for h in m["by_horizon"])
    for b in BASELINES:
        assert m["baselines"][b]["overall"]["n"] == n  # the very same agents


def test_cv_reproduces_metric_functions(cv_run):
    """The collected arrays are CV on each sample's scored agents; the JSON numbers are the metric functions."""
    result, _ = cv_run
    scenes, ag = result.scenes, result.agents
    pred_hand, gt_hand = [], []
    for k in range(len(scenes)):
        s = scenes.sample(k)
        sel = s.target_mask
        pred_hand.append(constant_velocity(s.hist, FEATURES.future_steps, FEATURES.dt)[sel])
        gt_hand.append(s.future[sel])
    pred_hand, gt_hand = np.concatenate(pred_hand), np.concatenate(gt_hand)
    out = result.outputs["constant_velocity"]
    np.testing.assert_allclose(out.pred[:, 0], pred_hand, atol=1e-5)
    np.testing.assert_allclose(ag.gt, gt_hand)
    assert out.prob.shape == (len(ag), 1) and np.all(out.prob == 1)

    m = result.metrics
    fde = np.linalg.norm(pred_hand[:, -1] - gt_hand[:, -1], axis=-1)
    ade = np.linalg.norm(pred_hand - gt_hand, axis=-1).mean(-1)
    assert m["overall"]["minFDE@6"] == pytest.approx(M.aggregate(M.min_fde(out.pred, ag.gt, out.prob, k=1)))
    assert m["overall"]["minFDE@6"] == pytest.approx(fde.mean(), rel=1e-5)
    assert m["overall"]["minFDE@1"] == pytest.approx(fde.mean(), rel=1e-5)
    assert m["overall"]["minADE@6"] == pytest.approx(ade.mean(), rel=1e-5)
    assert m["overall"]["MR@6"] == pytest.approx((fde > 2.0).mean())
    assert m["overall"]["brier-minFDE@6"] == pytest.approx(fde.mean(), rel=1e-5)  # (1 - 1)^2 = 0
    veh = ag.agent_class == "vehicle"
    assert m["by_class"]["vehicle"]["minFDE@6"] == pytest.approx(fde[veh].mean(), rel=1e-5)
    fde_1s = np.linalg.norm(pred_hand[:, 9] - gt_hand[:, 9], axis=-1)
    assert m["by_horizon"]["1s"]["minFDE@6"] == pytest.approx(fde_1s.mean(), rel=1e-5)
    assert m["by_horizon"]["2s"]["minFDE@6"] == pytest.approx(fde.mean(), rel=1e-5)


def test_slices_partition_the_agents(cv_run):
    result, _ = cv_run
    m = result.metrics
    n = m["overall"]["n"]
    assert set(m["slices"]) == set(S.FAMILIES)
    for family, values in m["slices"].items():
        assert sum(b["n"] for b in values.values()) == n, family
        for b in values.values():
            _check_block(b)
        # the n-weighted mean of the slices is the overall number
        mean = sum(b["n"] * b["minFDE@6"] for b in values.values() if b["n"]) / n
        assert mean == pytest.approx(m["overall"]["minFDE@6"], rel=1e-6), family
    assert set(m["slices"]["class"]) <= set(CLASSES)
    assert set(m["slices"]["speed"]) <= set(S.SPEED_LABELS)
    assert set(m["slices"]["source"]) == {"sumo"}
    assert set(m["slices"]["near_crosswalk"]) == {"yes", "no"}  # the spider net has crossings
    assert "yes" in m["slices"]["in_junction"]


def test_report_is_self_contained(cv_run):
    _, out = cv_run
    text = (out / "report.html").read_text()
    assert text.startswith("<!DOCTYPE html>")
    assert "http://" not in text and "https://" not in text
    assert not re.search(r"""(src|href)\s*=\s*["']?(?!data:)[a-z]+:""", text)
    assert "<link" not in text and "<script" not in text
    assert text.count('<img src="data:image/png;base64,') >= 3 + 2  # horizon, classes, reliability + 2 cases
    for name in ("minFDE@6", "constant_velocity", "ctrv", "near_crosswalk", "pedestrian"):
        assert name in text
    assert (out / "plots" / "horizon.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_several_models_side_by_side_with_model_pt(sumo_store, tiny_model, tmp_path):
    result = evaluate(sumo_store, [str(tiny_model), "ctrv", "constant_velocity"], _cfg(max_samples=20, num_random=0),
                      out_dir=tmp_path, progress=False)
    m = result.metrics
    assert list(m["models"]) == ["tiny", "ctrv", "constant_velocity"]
    assert m["model"] == "tiny"
    assert m["overall"] == m["models"]["tiny"]["overall"]
    assert m["models"]["ctrv"] == m["baselines"]["ctrv"]
    assert m["features"] == json.loads(json.dumps(asdict(FEATURES)))  # the model's FeatureConfig
    assert m["num_modes"] == 3
    n = m["overall"]["n"]
    assert all(b["overall"]["n"] == n for b in m["models"].values())
    o = result.outputs["tiny"]
    assert o.pred.shape == (n, 3, FEATURES.future_steps, 2)
    np.testing.assert_allclose(o.prob.sum(1), 1.0, atol=1e-5)
    per_fde1 = M.min_fde(o.pred, result.agents.gt, o.prob, k=1)
    assert m["overall"]["minFDE@1"] == pytest.approx(per_fde1.mean(), rel=1e-5)
    assert m["overall"]["minFDE@6"] == pytest.approx(M.min_fde(o.pred, result.agents.gt).mean(), rel=1e-5)
    assert m["overall"]["minFDE@6"] <= m["overall"]["minFDE@1"] + 1e-9
    assert m["scene"]["calibration_ece"] is not None
    text = (tmp_path / "report.html").read_text()
    assert "Cases: tiny" in text and "Cases: ctrv" in text


def test_model_with_another_future_is_refused(sumo_store, tiny_model):
    other = FeatureConfig(history_steps=10, future_steps=10, dt=0.1)
    with pytest.raises(ValueError, match="same future"):
        evaluate(sumo_store, [str(tiny_model)], _cfg(max_samples=5), features=other, progress=False)


def test_cli_acceptance(sumo_store, tmp_path, capsys):
    from forecast.cli import main

    feats = tmp_path / "features.yaml"
    feats.write_text("history_steps: 10\nfuture_steps: 20\ndt: 0.1\nraster: {size: 16, resolution: 2.0}\n")
    out = tmp_path / "out"
    rc = main(["--quiet", "evaluate", "--model", "constant_velocity", "--store", str(sumo_store.path), "--split", "test",
               "--out", str(out), "--features", str(feats), "--max-samples", "30", "--no-mlflow",
               "--config", "configs/eval/default.yaml"])
    assert rc == 0
    stdout = capsys.readouterr().out
    assert "minFDE@6" in stdout and "ctrv (baseline)" in stdout and "pedestrian" in stdout
    m = json.loads((out / "metrics.json").read_text())
    assert m["num_samples"] == 30 and m["features"]["history_steps"] == 10
    assert (out / "report.html").exists()


@pytest.mark.parametrize("model", ["no_such_baseline", "/nonexistent/model.pt"])
def test_cli_unknown_model_is_a_usage_error(sumo_store, tmp_path, capsys, model):
    from forecast.cli import main

    rc = main(["--quiet", "evaluate", "--model", model, "--store", str(sumo_store.path), "--out", str(tmp_path),
               "--no-mlflow"])
    assert rc == 2
    err = capsys.readouterr().err
    assert f"unknown model {model!r}" in err and "constant_velocity" in err
    assert not (tmp_path / "metrics.json").exists()


def test_mlflow_run_has_artifacts(sumo_store, tmp_path):
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    cfg = _cfg(max_samples=20)
    cfg.mlflow.enabled = True
    cfg.mlflow.tracking_uri = uri
    result = evaluate(sumo_store, ["ctrv"], cfg, out_dir=tmp_path / "out", features=FEATURES, progress=False)
    assert result.run_id
    client = MlflowClient(tracking_uri=uri)
    run = client.get_run(result.run_id)
    assert client.get_experiment(run.info.experiment_id).name == "forecast-eval"
    assert {a.path for a in client.list_artifacts(result.run_id)} >= {"metrics.json", "report.html"}
    assert run.data.metrics["test/minFDE_6"] == pytest.approx(result.metrics["overall"]["minFDE@6"])
    assert "test/vehicle/MR_6" in run.data.metrics and "test/baseline/constant_velocity/minFDE_6" in run.data.metrics
    assert run.data.params["split"] == "test"


# -- slices (pure functions) -------------------------------------------------------------------------


def test_speed_buckets():
    labels = S.speed_bucket(np.array([0.0, 0.49, 0.5, 2.99, 3.0, 7.9, 8.0, 30.0]))
    assert labels.tolist() == ["0-0.5", "0-0.5", "0.5-3", "0.5-3", "3-8", "3-8", "8+", "8+"]


def test_junction_and_crosswalk_tags():
    # a cross of two roads: lanes on the arms, a junction square in the middle
    drivable = shapely.box(-20, -4, 20, 4).union(shapely.box(-4, -20, 4, 20))
    lanes = [shapely.box(-20, -4, -4, 4), shapely.box(4, -4, 20, 4), shapely.box(-4, -20, 4, -4), shapely.box(-4, 4, 4, 20)]
    layers = {"drivable_area": [drivable], "lane": lanes, "crosswalk": [shapely.box(-6, -4, -5, 4)]}
    pts = np.array([[0.0, 0.0], [10.0, 0.0], [30.0, 30.0], [-2.0, 1.0]])
    assert S.in_junction(pts, layers, "drivable_minus_lanes").tolist() == [True, False, False, True]
    assert S.near_layer(pts, layers["crosswalk"], 5.0).tolist() == [True, False, False, True]
    # AV2 proxy: overlapping lane polygons
    av2 = {"lane": [shapely.box(-5, -2, 5, 2), shapely.box(-2, -5, 2, 5)]}
    assert S.in_junction(np.array([[0.0, 0.0], [4.0, 0.0]]), av2, "lane_overlap").tolist() == [True, False]
    assert S.junction_method("av2") == "lane_overlap" and S.junction_method("sumo") == "drivable_minus_lanes"
    with pytest.raises(ValueError, match="unknown junction method"):
        S.in_junction(pts, layers, "nope")


def test_tag_agents_without_map_and_partition():
    tags = S.tag_agents(np.array([[0.0, 0.0], [1.0, 1.0]]), np.array([0.1, 9.0]), np.array(["vehicle", "cyclist"]),
                        np.array(["eth_ucy", "eth_ucy"]), np.array(["", ""]), {})
    assert tags["near_crosswalk"].tolist() == ["no_map", "no_map"] and tags["map_id"].tolist() == ["no_map", "no_map"]
    masks = S.slice_masks(tags)
    assert list(masks["speed"]) == ["0-0.5", "8+"]
    for values in masks.values():
        assert np.sum([m for m in values.values()], axis=0).tolist() == [1, 1]


def _stand_still_bundle(path, features: FeatureConfig):
    """A bundle whose graph predicts one mode = the plan input (zeros: standing still), probability 1."""
    import onnx
    from onnx import TensorProto, helper

    from forecast.data.schema import AgentType
    from forecast.model.batch import MODEL_INPUT_NAMES

    shapes = {"hist": (TensorProto.FLOAT, [1, "A", features.history_steps, 7]),
              "hist_mask": (TensorProto.BOOL, [1, "A", features.history_steps]),
              "agent_type": (TensorProto.INT64, [1, "A"]), "pose": (TensorProto.FLOAT, [1, "A", 4]),
              "raster": (TensorProto.UINT8, [1, "A", len(features.raster.channels), features.raster.size, features.raster.size]),
              "agent_mask": (TensorProto.BOOL, [1, "A"]), "plan": (TensorProto.FLOAT, [1, "A", features.future_steps, 2]),
              "plan_mask": (TensorProto.BOOL, [1, "A"])}
    inputs = [helper.make_tensor_value_info(n, *shapes[n]) for n in MODEL_INPUT_NAMES]
    axis = helper.make_tensor("axis", TensorProto.INT64, [1], [2])
    nodes = [helper.make_node("Unsqueeze", ["plan", "axis"], ["traj"]),
             helper.make_node("Identity", ["traj"], ["scale"]),
             helper.make_node("Cast", ["agent_mask"], ["maskf"], to=TensorProto.FLOAT),
             helper.make_node("Unsqueeze", ["maskf", "axis"], ["prob"])]
    outputs = [helper.make_tensor_value_info("traj", TensorProto.FLOAT, None),
               helper.make_tensor_value_info("scale", TensorProto.FLOAT, None),
               helper.make_tensor_value_info("prob", TensorProto.FLOAT, None)]
    graph = helper.make_graph(nodes, "stand_still", inputs, outputs, initializer=[axis])
    path.mkdir(parents=True)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path / "model.onnx"))
    manifest = {  # the fields forecast.runtime.Predictor reads
        "format": "forecast-bundle", "format_version": 1, "max_agents": 256, "models": {"fp32": "model.onnx"},
        "files": {"model.onnx": hashlib.sha256((path / "model.onnx").read_bytes()).hexdigest()},
        "inputs": [{"name": n} for n in MODEL_INPUT_NAMES],
        "sample": {"feature_config": asdict(features), "future_steps": features.future_steps, "modes": 1,
                   "agent_types": {t.label: int(t) for t in AgentType}},
    }
    (path / "bundle.json").write_text(json.dumps(manifest))
    return path


def test_bundle_directory_runs_through_onnxruntime(sumo_store, tmp_path):
    bundle = _stand_still_bundle(tmp_path / "still", FEATURES)
    result = evaluate(sumo_store, [str(bundle)], _cfg(max_samples=15), progress=False)
    m = result.metrics
    assert m["model"] == "still" and m["num_modes"] == 1
    assert m["features"] == json.loads(json.dumps(asdict(FEATURES)))
    gt = result.agents.gt
    assert m["overall"]["minFDE@6"] == pytest.approx(np.linalg.norm(gt[:, -1], axis=-1).mean(), rel=1e-5)
    # a bundle whose files do not match their hashes is refused (a usage error on the command line)
    (bundle / "model.onnx").write_bytes((bundle / "model.onnx").read_bytes() + b"\0")
    with pytest.raises(ValueError, match="sha256"):
        evaluate(sumo_store, [str(bundle)], _cfg(max_samples=5), progress=False)


def test_cli_file_that_is_not_a_model_is_a_usage_error(sumo_store, tmp_path, capsys):
    from forecast.cli import main

    bad = tmp_path / "model.pt"
    bad.write_text("not a checkpoint")
    rc = main(["--quiet", "evaluate", "--model", str(bad), "--store", str(sumo_store.path), "--out", str(tmp_path / "o"),
               "--no-mlflow"])
    assert rc == 2
    err = capsys.readouterr().err
    assert str(bad) in err and "not a readable forecast model.pt" in err  # names the file (forecast.model.checkpoint)


def test_joint_metrics_and_class_calibration(cv_run):
    """One mode: the best world is that mode, so avgMinFDE is the mean over samples of their agents' mean FDE."""
    result, _ = cv_run
    m, ag = result.metrics, result.agents
    fde = np.linalg.norm(result.outputs["constant_velocity"].pred[:, 0, -1] - ag.gt[:, -1], axis=-1)
    per_sample = [fde[ag.sample == k].mean() for k in np.unique(ag.sample)]
    assert m["joint"]["n_scenes"] == len(per_sample)
    assert m["joint"]["avgMinFDE"] == pytest.approx(float(np.mean(per_sample)))
    assert m["joint"]["actorMR"] == pytest.approx(m["overall"]["MR@6"])
    assert set(m["scene"]["calibration_ece_by_class"]) == set(CLASSES)
    assert all(v is None or v == pytest.approx(0.0) for v in m["scene"]["calibration_ece_by_class"].values())


def test_rerun_into_the_same_folder_leaves_no_pictures_of_the_last_run(sumo_store, tmp_path):
    stale = tmp_path / "plots" / "case_99_an_agent_of_yesterday.png"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"\x89PNG\r\n\x1a\n")
    evaluate(sumo_store, ["ctrv"], _cfg(max_samples=10, num_random=0), out_dir=tmp_path, progress=False)
    pictures = {p.name for p in (tmp_path / "plots").iterdir()}
    assert "horizon.png" in pictures and stale.name not in pictures
