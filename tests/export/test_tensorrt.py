"""The GPU path: every operator of the exported graph is one TensorRT's ONNX parser supports; profiles."""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from forecast.export.tensorrt import (
    check_operators,
    lower_for_tensorrt,
    main,
    optimization_profiles,
    read_supported_operators,
)


def test_every_operator_of_the_exported_graph_is_supported_by_tensorrt(exported, capsys):
    supported = read_supported_operators()
    assert {"Conv", "GRU", "MatMul", "Softmax"} <= supported and "LayerNormalization" not in supported
    proto = onnx.load(str(exported / "bundle" / "model.onnx"))
    rows = check_operators(proto, supported)
    assert len(rows) > 10
    assert [name for name, _, ok in rows if not ok] == []
    assert main([str(exported / "bundle")]) == 0
    assert "0 unsupported" in capsys.readouterr().out
    m = json.loads((exported / "bundle" / "bundle.json").read_text())
    assert sorted(m["tensorrt"]["operators"]) == sorted(name for name, _, _ in rows)


def test_an_unsupported_operator_is_reported(tmp_path, capsys):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])
    graph = helper.make_graph([helper.make_node("Hardmax", ["x"], ["y"])], "g", [x], [y])
    path = tmp_path / "m.onnx"
    onnx.save(helper.make_model(graph), str(path))
    assert main([str(path)]) == 1
    assert "Hardmax" in capsys.readouterr().out


def test_lowering_keeps_the_numbers():
    rng = np.random.default_rng(0)
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 8])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 8])
    scale = numpy_helper.from_array(rng.normal(size=8).astype(np.float32), "scale")
    bias = numpy_helper.from_array(rng.normal(size=8).astype(np.float32), "bias")
    like = numpy_helper.from_array(np.zeros(1, np.float32), "like")
    nodes = [helper.make_node("LayerNormalization", ["x", "scale", "bias"], ["ln"], epsilon=1e-5, axis=-1),
             helper.make_node("CastLike", ["ln", "like"], ["y"])]
    model = helper.make_model(helper.make_graph(nodes, "g", [x], [y], [scale, bias, like]),
                              opset_imports=[helper.make_opsetid("", 20)])
    feed = {"x": rng.normal(size=(5, 8)).astype(np.float32)}
    ref = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feed)[0]
    lowered = lower_for_tensorrt(model)
    onnx.checker.check_model(lowered, full_check=True)
    ops = {n.op_type for n in lowered.graph.node}
    assert "LayerNormalization" not in ops and "CastLike" not in ops and "Cast" in ops
    out = ort.InferenceSession(lowered.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feed)[0]
    np.testing.assert_allclose(out, ref, atol=1e-5)


def test_profiles_span_the_agent_axis(exported):
    m = json.loads((exported / "bundle" / "bundle.json").read_text())
    (profile,) = m["tensorrt"]["profiles"]
    assert (profile["min_agents"], profile["opt_agents"], profile["max_agents"]) == (1, 64, 256)
    assert profile["max_shapes"]["raster"] == [1, 256, 9, 16, 16] and profile["min_shapes"]["hist"] == [1, 1, 8, 7]
    assert "--optShapes=hist:1x64x8x7" in profile["trtexec"]
    assert optimization_profiles(m["inputs"], 32)["opt_agents"] == 32
    with pytest.raises(KeyError):
        optimization_profiles([{"shape": [1, "A"]}], 8)  # an input without a name
