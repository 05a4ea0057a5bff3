"""The bench scripts' own tools: what they record about the machine, and the onnxruntime operator profile."""

from __future__ import annotations

import numpy as np
from onnx import TensorProto, helper

from tests.conftest import bench_module


def test_machine_names_the_cpu_and_its_vector_width(monkeypatch):
    info = bench_module(monkeypatch, "_common").machine()
    assert info["cpu"]["name"]
    assert info["cpu"]["vector"] in {"avx512f", "avx2", "avx", "sse4_2", "asimd", "none"}


def _softmax_concat() -> bytes:
    """y = concat(x, softmax(x)): two kernels a call that onnxruntime has no fusion for."""
    graph = helper.make_graph(
        [helper.make_node("Softmax", ["x"], ["s"], axis=-1), helper.make_node("Concat", ["x", "s"], ["y"], axis=-1)],
        "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [64, 256])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [64, 512])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model.SerializeToString()


def test_ort_op_profile_counts_each_operator_once_per_call(monkeypatch):
    latency = bench_module(monkeypatch, "latency")
    rows = latency.ort_op_profile(_softmax_concat(), {"x": np.ones((64, 256), np.float32)}, runs=5, warmup=2)
    assert {r["op"]: r["kernels_per_call"] for r in rows} == {"Softmax": 1.0, "Concat": 1.0}
    assert all(r["ms_per_call"] > 0.0 for r in rows)
    assert rows[0]["ms_per_call"] >= rows[1]["ms_per_call"]  # the costliest first
