"""The GPU path: what a TensorRT engine needs from the exported graph.

* ``lower_for_tensorrt``: rewrites the two operators of our graph that TensorRT's ONNX parser
  (docs/tensorrt_operators.md) does not list, ``CastLike`` and ``LayerNormalization``, into
  ones it does (``Cast``; ``ReduceMean``/``Sub``/``Pow``/``Add``/``Sqrt``/``Div``/``Mul``). onnxruntime fuses
  the decomposed layer norm back (its LayerNormFusion), so the CPU path loses nothing.
* ``graph_operators`` / ``check_operators``: every operator of a graph against that list.
* ``optimization_profiles``: min / typical / max shapes of every input over the agent axis, as
  ``trtexec --minShapes/--optShapes/--maxShapes`` and the TensorRT execution provider take them.

``python -m forecast.export.tensorrt MODEL.onnx|BUNDLE_DIR`` prints the operator table and exits 1
when an operator is not supported.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections import Counter
from pathlib import Path

import onnx
from onnx import helper, numpy_helper

DEFAULT_OPERATORS_DOC = Path(__file__).resolve().parents[2] / "docs" / "tensorrt_operators.md"
TYPICAL_AGENTS = 64


def graph_operators(proto: onnx.ModelProto) -> Counter:
    """``Counter`` of ``(domain, op_type)`` over the main graph and every subgraph."""
    out: Counter = Counter()

    def walk(graph: onnx.GraphProto) -> None:
        for node in graph.node:
            out[(node.domain or "ai.onnx", node.op_type)] += 1
            for attr in node.attribute:
                if attr.type == onnx.AttributeProto.GRAPH:
                    walk(attr.g)
                for g in attr.graphs:
                    walk(g)

    walk(proto.graph)
    return out


def read_supported_operators(doc: str | Path = DEFAULT_OPERATORS_DOC) -> set[str]:
    """Operator names marked supported (``| Name | Y |``) in the markdown table of ``doc``."""
    names = set()
    for line in Path(doc).read_text().splitlines():
        m = re.match(r"^\|\s*([A-Za-z][A-Za-z0-9]*)\s*\|\s*Y\b", line)
        if m:
            names.add(m.group(1))
    if not names:
        raise ValueError(f"{doc}: no supported operators found (expected rows like '| Conv | Y |')")
    return names


def check_operators(proto: onnx.ModelProto, supported: set[str]) -> list[tuple[str, int, bool]]:
    """Rows ``(operator, count, supported)`` sorted by name; non-default domains are never supported."""
    rows = []
    for (domain, op), n in sorted(graph_operators(proto).items(), key=lambda kv: kv[0][1]):
        name = op if domain == "ai.onnx" else f"{domain}.{op}"
        rows.append((name, n, domain == "ai.onnx" and op in supported))
    return rows


def optimization_profiles(inputs: list[dict], max_agents: int, typical: int = TYPICAL_AGENTS) -> dict:
    """TensorRT optimisation profile over the agent axis ``A`` from the bundle's input spec."""
    typical = min(typical, max_agents)

    def shapes(a: int) -> dict[str, list[int]]:
        return {i["name"]: [a if d == "A" else int(d) for d in i["shape"]] for i in inputs}

    def flag(s: dict[str, list[int]]) -> str:
        return ",".join(f"{k}:{'x'.join(map(str, v))}" for k, v in s.items())

    lo, mid, hi = shapes(1), shapes(typical), shapes(max_agents)
    return {
        "axis": "A (agents)", "min_agents": 1, "opt_agents": typical, "max_agents": max_agents,
        "min_shapes": lo, "opt_shapes": mid, "max_shapes": hi,
        "trtexec": f"--minShapes={flag(lo)} --optShapes={flag(mid)} --maxShapes={flag(hi)}",
    }


# --- lowering -----------------------------------------------------------------------------------------


def lower_for_tensorrt(proto: onnx.ModelProto) -> onnx.ModelProto:
    """In place: ``CastLike`` -> ``Cast`` and ``LayerNormalization`` -> primitive operators."""
    types = _elem_types(proto)
    nodes: list[onnx.NodeProto] = []
    for node in proto.graph.node:
        if node.domain in ("", "ai.onnx") and node.op_type == "CastLike":
            to = types.get(node.input[1])
            if to is None:
                raise ValueError(f"CastLike {node.name}: the type of {node.input[1]!r} is unknown")
            nodes.append(helper.make_node("Cast", [node.input[0]], list(node.output), name=node.name, to=to))
        elif node.domain in ("", "ai.onnx") and node.op_type == "LayerNormalization":
            nodes += _layer_norm_nodes(proto, node)
        else:
            nodes.append(node)
    del proto.graph.node[:]
    proto.graph.node.extend(nodes)
    return proto


def _elem_types(proto: onnx.ModelProto) -> dict[str, int]:
    inferred = onnx.shape_inference.infer_shapes(proto)
    types = {t.name: t.data_type for t in proto.graph.initializer}
    for vi in [*inferred.graph.input, *inferred.graph.value_info, *inferred.graph.output]:
        if vi.type.HasField("tensor_type"):
            types[vi.name] = vi.type.tensor_type.elem_type
    for node in proto.graph.node:
        if node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value":
                    types[node.output[0]] = attr.t.data_type
    return types


def _layer_norm_nodes(proto: onnx.ModelProto, node: onnx.NodeProto) -> list[onnx.NodeProto]:
    """y = (x - mean) / sqrt(var + eps) * scale + bias over the last axis (our layers' only use)."""
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    if attrs.get("axis", -1) != -1 or attrs.get("stash_type", 1) != 1 or len(node.output) > 1 and any(node.output[1:]):
        raise ValueError(f"LayerNormalization {node.name}: only axis=-1, float stash and one output are lowered")
    eps = float(attrs.get("epsilon", 1e-5))
    p = f"{node.name or node.output[0]}_lowered"
    axes, eps_name, two = f"{p}_axes", f"{p}_eps", f"{p}_two"
    proto.graph.initializer.extend([numpy_helper.from_array(_np_int64([-1]), axes),
                                    numpy_helper.from_array(_np_float32(eps), eps_name),
                                    numpy_helper.from_array(_np_float32(2.0), two)])
    x = node.input[0]
    out = [
        helper.make_node("ReduceMean", [x, axes], [f"{p}_mean"], keepdims=1),
        helper.make_node("Sub", [x, f"{p}_mean"], [f"{p}_d"]),
        helper.make_node("Pow", [f"{p}_d", two], [f"{p}_d2"]),  # Pow, not Mul: the pattern onnxruntime fuses
        helper.make_node("ReduceMean", [f"{p}_d2", axes], [f"{p}_var"], keepdims=1),
        helper.make_node("Add", [f"{p}_var", eps_name], [f"{p}_ve"]),
        helper.make_node("Sqrt", [f"{p}_ve"], [f"{p}_std"]),
        helper.make_node("Div", [f"{p}_d", f"{p}_std"], [f"{p}_n"]),
    ]
    has_bias = len(node.input) > 2 and node.input[2]
    out.append(helper.make_node("Mul", [f"{p}_n", node.input[1]], [f"{p}_s" if has_bias else node.output[0]]))
    if has_bias:
        out.append(helper.make_node("Add", [f"{p}_s", node.input[2]], [node.output[0]]))
    return out


def _np_int64(v):
    import numpy as np

    return np.asarray(v, dtype=np.int64)


def _np_float32(v):
    import numpy as np

    return np.asarray(v, dtype=np.float32)


# --- command line -------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="List the ONNX operators of an exported graph and check them "
                                             "against TensorRT's ONNX parser (docs/tensorrt_operators.md).")
    ap.add_argument("model", help="model.onnx, or a bundle directory (its fp32 model)")
    ap.add_argument("--supported", default=str(DEFAULT_OPERATORS_DOC), help="markdown table of supported operators")
    args = ap.parse_args(argv)
    path = Path(args.model)
    if path.is_dir():
        import json

        manifest = json.loads((path / "bundle.json").read_text())
        path = path / manifest["models"]["fp32"]
    rows = check_operators(onnx.load(str(path), load_external_data=False), read_supported_operators(args.supported))
    print(f"{'operator':<24}{'count':>6}  TensorRT ONNX parser")
    for name, n, ok in rows:
        print(f"{name:<24}{n:>6}  {'yes' if ok else 'NOT SUPPORTED'}")
    bad = [r[0] for r in rows if not r[2]]
    print(f"{len(rows)} operators, {len(bad)} unsupported{': ' + ', '.join(bad) if bad else ''}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
