"""The MLflow registry as the gate and the register step use it."""

from __future__ import annotations

from forecast.pipeline.registry import MlflowRegistry


def test_register_then_champion(tmp_path, mlflow_uri):
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    (bundle / "bundle.json").write_text("{}")
    (bundle / "model.onnx").write_bytes(b"onnx")
    reg = MlflowRegistry(mlflow_uri, "test-registry")
    assert reg.champion("m", "champion") is None
    tags = {"pipeline.export_hash": "e1", "pipeline.evaluate_hash": "v1"}
    v1 = reg.register("m", "champion", bundle, {"minFDE@6": 1.25}, tags)
    assert v1 == "1"
    champ = reg.champion("m", "champion")
    assert champ.version == "1" and champ.metrics == {"minFDE@6": 1.25} and champ.evaluate_hash == "v1"
    assert reg.register("m", "champion", bundle, {"minFDE@6": 1.25}, tags) == "1"  # same export: no new version
    v2 = reg.register("m", "champion", bundle, {"minFDE@6": 1.0}, {"pipeline.export_hash": "e2"})
    assert v2 == "2" and reg.champion("m", "champion").metrics["minFDE@6"] == 1.0
    files = {f.path for f in reg.client.list_artifacts(reg.client.get_model_version("m", "2").run_id, "bundle")}
    assert files == {"bundle/bundle.json", "bundle/model.onnx"}
