"""The bench scripts' own tools: what they record about the machine, and the onnxruntime operator profile."""

from __future__ import annotations

import numpy as np
from onnx import TensorProto, helper

from tests.conftest import bench_module

ZEN4 = """processor\t: 0
vendor_id\t: AuthenticAMD
cpu family\t: 25
model\t\t: 17
model name\t: AMD EPYC
flags\t\t: fpu sse4_2 avx avx2 avx512f avx512_vnni

processor\t: 1
"""
NEOVERSE = """processor\t: 0
BogoMIPS\t: 243.75
Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics
CPU implementer\t: 0x41
CPU part\t: 0xd0c
"""


def test_cpu_model_reads_x86_and_arm_cpuinfo(monkeypatch):
    common = bench_module(monkeypatch, "_common")
    assert common.cpu_model(ZEN4) == {"name": "AMD EPYC", "family": "25", "model": "17", "vector": "avx512f"}
    assert common.cpu_model(NEOVERSE) == {"name": "ARM implementer 0x41 part 0xd0c", "family": None, "model": None,
                                          "vector": "asimd"}
    assert set(common.cpu_model("")) == {"name", "family", "model", "vector"}  # no /proc: the same keys
    assert set(common.machine()["cpu"]) == {"name", "family", "model", "vector"}


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
