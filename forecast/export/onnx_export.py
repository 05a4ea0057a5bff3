"""WorldModel -> ONNX (torch.export / dynamo exporter), the fp16 variant, and torch-vs-onnxruntime parity.

The graph takes one scene (batch dim fixed to 1) with a dynamic agent count (1..``max_agents``);
the rollout is a Python loop and is unrolled into the graph. The legacy TorchScript exporter is
not used: with ``dynamic_axes`` it baked the export-time agent count into a Reshape of the
attention layers (see /work/shared/NOTES.md).
"""

from __future__ import annotations

import subprocess
import sys
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import onnx
import torch

from forecast.data.schema import AgentType
from forecast.data.types import PHYSICAL_TYPES
from forecast.export.tensorrt import lower_for_tensorrt
from forecast.features.config import FeatureConfig
from forecast.features.raster import MapRaster, rasterize_map_layers
from forecast.features.sample import Sample, build_sample
from forecast.features.tracks import AgentTracks
from forecast.model.batch import MODEL_INPUT_NAMES, MODEL_OUTPUT_NAMES, collate
from forecast.model.world_model import WorldModel

MAX_AGENTS = 256
PARITY_AGENT_COUNTS = (1, 7, 64, 256)
# Max abs position difference, metres. int8 is no parity claim: a guard against a broken graph; its
# accuracy cost is measured on data (bench/latency.py --store).
TOLERANCE_M = {"fp32": 1e-3, "fp16": 5e-2, "int8": 0.5}
# Ops kept in float32 in the fp16 variant. onnxruntime 1.32 (CPU, ORT_ENABLE_ALL) crashes with a
# segmentation fault while creating a session for this graph when its Transpose nodes are fp16.
FP16_KEEP_FP32 = ["Transpose"]
SLOW_REWRITE_RULES = {"SlicesSplit"}


class ExportError(RuntimeError):
    """The model could not be exported (or the exported file is invalid)."""


class ParityError(RuntimeError):
    """onnxruntime and torch disagree by more than the tolerance."""


# --- synthetic scenes (for export examples and parity checks) -----------------------------------------


def synthetic_tracks(num_agents: int, cfg: FeatureConfig, seed: int = 0, extra_steps: int = 0,
                     extent: float = 60.0) -> tuple[AgentTracks, int]:
    """A random but seeded scene in which every agent is present at ``t0`` (returned with the tracks).

    Agents move with smooth random speeds and turn rates; some start late (shorter history),
    some have a gap, some have unknown heading (NaN), types are mixed.
    """
    rng = np.random.default_rng(seed)
    t = cfg.history_steps + cfg.future_steps + extra_steps
    t0 = cfg.history_steps - 1 + extra_steps
    a = num_agents
    types = rng.choice([int(x) for x in PHYSICAL_TYPES], size=a, p=[0.55, 0.25, 0.15, 0.05]).astype(np.int64)
    speed0 = np.where(types == AgentType.PEDESTRIAN, 1.4, np.where(types == AgentType.CYCLIST, 4.5, 9.0))
    speed = np.abs(speed0[:, None] * (0.6 + 0.8 * rng.random((a, 1))) + 0.3 * rng.standard_normal((a, t)).cumsum(1)
                   * np.sqrt(cfg.dt))
    turn = (0.2 * rng.standard_normal((a, 1)) + 0.05 * rng.standard_normal((a, t)).cumsum(1) * np.sqrt(cfg.dt))
    heading = rng.uniform(-np.pi, np.pi, (a, 1)) + np.cumsum(turn * cfg.dt, axis=1)
    step = np.stack([np.cos(heading), np.sin(heading)], -1) * (speed * cfg.dt)[..., None]
    xy = rng.uniform(-extent, extent, (a, 1, 2)) + np.cumsum(step, axis=1)
    xy -= xy[:, t0 : t0 + 1] - rng.uniform(-extent, extent, (a, 1, 2))  # spread agents over the area at t0
    present = np.ones((a, t), bool)
    late = rng.random(a) < 0.2
    present[late, : rng.integers(1, max(2, cfg.history_steps - 2))] = False
    gap = rng.random(a) < 0.1
    if cfg.history_steps > 4:
        present[gap, t0 - 3 : t0 - 1] = False
    present[:, t0] = True
    head = np.where(rng.random((a, 1)) < 0.3, np.nan, heading)
    xy = np.where(present[..., None], xy, np.nan)
    ids = np.array([f"agent{i}" for i in range(a)])
    return AgentTracks(xy, head, present, types, cfg.dt, ids), t0


def synthetic_map_layers(extent: float = 80.0) -> dict:
    """A small grid of roads (drivable area, lanes, centre lines, crosswalks, sidewalks)."""
    import shapely

    layers: dict[str, list] = {"drivable_area": [], "lane": [], "lane_centerline": [], "crosswalk": [], "sidewalk": []}
    for c in np.arange(-extent, extent + 1, 40.0):
        for horizontal in (True, False):
            line = shapely.LineString([(-extent, c), (extent, c)] if horizontal else [(c, -extent), (c, extent)])
            layers["drivable_area"].append(line.buffer(7.0, cap_style="flat"))
            layers["lane_centerline"].append(line)
            layers["lane"] += [line.offset_curve(3.5), line.offset_curve(-3.5)]
            layers["sidewalk"] += [line.offset_curve(9.0).buffer(1.5), line.offset_curve(-9.0).buffer(1.5)]
    for c in np.arange(-extent, extent + 1, 40.0):
        layers["crosswalk"].append(shapely.box(c - 9.0, c - 9.0, c - 7.0, c + 9.0))
    return layers


def synthetic_sample(num_agents: int, cfg: FeatureConfig, seed: int = 0,
                     map_raster: MapRaster | None = None) -> tuple[Sample, AgentTracks, int]:
    """``build_sample`` (the training and runtime code path) on a synthetic scene."""
    tracks, t0 = synthetic_tracks(num_agents, cfg, seed)
    return build_sample(tracks, t0, cfg, map_raster, with_future=False), tracks, t0


def sample_inputs(sample: Sample, future_steps: int, plan_agent: int | None = None) -> tuple[torch.Tensor, ...]:
    """Model inputs of one sample (B=1), optionally with agent ``plan_agent`` following a straight plan."""
    batch = collate([sample], future_steps)
    if plan_agent is not None:
        v = sample.hist[plan_agent, -1, 2:4].astype(np.float64)
        steps = np.arange(1, future_steps + 1)[:, None]
        batch.plan[0, plan_agent] = torch.as_tensor(v[None] * steps * 0.1 * 0.5 + np.array([0.0, 0.05]) * steps,
                                                    dtype=torch.float32)
        batch.plan_mask[0, plan_agent] = True
    return batch.model_inputs()


# --- export -----------------------------------------------------------------------------------------


def export_onnx(model: WorldModel, features: FeatureConfig, path: Path, opset: int | None = None,
                max_agents: int = MAX_AGENTS) -> Path:
    """Export ``model`` to ``path`` (one self-contained .onnx file) and check it with ``onnx.checker``."""
    model = model.eval()
    sample, _, _ = synthetic_sample(7, features, seed=0)
    args = sample_inputs(sample, model.cfg.future_steps, plan_agent=0)
    agents = torch.export.Dim("agents", min=1, max=max_agents)
    dynamic_shapes = tuple({1: agents} for _ in MODEL_INPUT_NAMES)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    kwargs = {} if opset is None else {"opset_version": opset}
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            program = torch.onnx.export(model, args, dynamo=True, dynamic_shapes=dynamic_shapes,
                                        input_names=list(MODEL_INPUT_NAMES), output_names=list(MODEL_OUTPUT_NAMES),
                                        external_data=False, verbose=False, optimize=False, **kwargs)
    except Exception as exc:  # the exporter raises many types; say where it failed
        raise ExportError(f"torch.onnx.export (dynamo) failed: {type(exc).__name__}: {exc}") from exc
    optimize_graph(program.model)
    program.save(str(path), external_data=False)
    proto = lower_for_tensorrt(onnx.load(str(path)))  # one graph for onnxruntime and TensorRT
    onnx.save(proto, str(path))
    check_onnx(path)
    return path


def optimize_graph(model) -> None:
    """In place: what ``torch.onnx.export(optimize=True)`` runs (onnxscript's ``optimize_ir``), minus
    the rewrite rules in ``SLOW_REWRITE_RULES``.

    The ``SlicesSplit`` rule is quadratic in the graph size and the unrolled rollout makes the
    graph large: with it, optimising took 24 s for a 12-step tiny model and minutes for the
    30-step quickstart model; without it the same graph (node for node) takes about 4 s.
    """
    from onnx_ir.passes import common
    from onnxscript import optimizer, rewriter

    rules = getattr(rewriter, "_DEFAULT_REWRITE_RULES", None)
    if rules is None:  # another onnxscript: its own optimiser, whatever it costs
        optimizer.optimize_ir(model)
        return
    rules = [r for r in rules if getattr(r, "name", None) not in SLOW_REWRITE_RULES]
    common.InlinePass()(model)
    for _ in range(2):
        optimizer.fold_constants(model)
        rewriter.rewrite(model, rules)
        optimizer.remove_unused_nodes(model)
    for p in (common.LiftConstantsToInitializersPass(lift_all_constants=True, size_limit=0),
              common.LiftSubgraphInitializersToMainGraphPass(), common.DeduplicateInitializersPass(),
              common.CommonSubexpressionEliminationPass(), common.OutputFixPass(), common.NameFixPass()):
        p(model)


def check_onnx(path: Path) -> onnx.ModelProto:
    """``onnx.checker.check_model`` plus the input/output names the runtime relies on."""
    proto = onnx.load(str(path))
    try:
        onnx.checker.check_model(proto, full_check=True)
    except Exception as exc:
        raise ExportError(f"onnx.checker rejected {path.name}: {exc}") from exc
    names_in = tuple(i.name for i in proto.graph.input)
    names_out = tuple(o.name for o in proto.graph.output)
    if names_in != MODEL_INPUT_NAMES or names_out != MODEL_OUTPUT_NAMES:
        raise ExportError(f"{path.name}: graph inputs {names_in} / outputs {names_out}, expected "
                          f"{MODEL_INPUT_NAMES} / {MODEL_OUTPUT_NAMES}")
    return proto


def opset_of(path: Path) -> int:
    proto = onnx.load(str(path), load_external_data=False)
    return next(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx"))


def convert_fp16(src: Path, dst: Path) -> Path:
    """fp16 weights and compute with float32 inputs and outputs (``keep_io_types``).

    Uses the converter that ships inside onnxruntime (``onnxruntime.transformers.float16``);
    onnxconverter-common is not required.
    """
    try:
        from onnxruntime.transformers.float16 import DEFAULT_OP_BLOCK_LIST, convert_float_to_float16
    except ImportError as exc:  # pragma: no cover - depends on the onnxruntime build
        raise ExportError(f"fp16 conversion needs onnxruntime.transformers.float16, which is missing: {exc}") from exc
    proto = onnx.load(str(src))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            half = convert_float_to_float16(proto, keep_io_types=True, op_block_list=DEFAULT_OP_BLOCK_LIST + FP16_KEEP_FP32)
    except Exception as exc:
        raise ExportError(f"fp16 conversion of {src.name} failed: {type(exc).__name__}: {exc}") from exc
    _topological_sort(half.graph)  # the converter appends the input/output Casts at the end of the node list
    del half.graph.value_info[:]  # stale float32 annotations of values it made fp16 (the checker re-infers them)
    onnx.save(half, str(dst))
    check_onnx(dst)
    _smoke_load(dst)
    return dst


def quantize_int8(src: Path, dst: Path) -> Path:
    """int8 dynamic quantisation of the weights of MatMul and Gemm (activations quantised at run time).

    Convolutions and the GRU stay float: onnxruntime's integer kernels for them were slower here.
    """
    try:
        from onnxruntime.quantization import QuantType, quantize_dynamic
    except ImportError as exc:  # pragma: no cover - depends on the onnxruntime build
        raise ExportError(f"int8 quantisation needs onnxruntime.quantization, which is missing: {exc}") from exc
    import logging

    quiet = logging.getLogger().level
    logging.getLogger().setLevel(logging.ERROR)  # it advises a pre-processing step we do not need
    try:
        quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul", "Gemm"],
                         extra_options={"MatMulConstBOnly": True})
    except Exception as exc:
        import onnxruntime

        # onnxruntime 1.30's quantiser cannot type some of this graph's MatMuls (and, told a default
        # type, writes MatMulInteger nodes the checker rejects); 1.32 quantises it
        raise ExportError(f"int8 quantisation of {src.name} failed with onnxruntime {onnxruntime.__version__} "
                          f"(tested: 1.32; or export without int8): {type(exc).__name__}: {exc}") from exc
    finally:
        logging.getLogger().setLevel(quiet)
    check_onnx(dst)
    _smoke_load(dst)
    return dst


def save_ort_optimized(src: Path, dst: Path) -> Path:
    """onnxruntime's graph optimisations applied once and saved, so the car's session skips them.

    Saved at ``ORT_ENABLE_EXTENDED`` (every fusion); the last, layout step of ``ORT_ENABLE_ALL`` is
    specific to the CPU it runs on (onnxruntime warns that a graph saved with it only fits the
    machine that saved it), so the runtime still applies it when it loads the file. The file uses
    onnxruntime's contrib operators and is tied to the onnxruntime version recorded in bundle.json.
    """
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    opts.optimized_model_filepath = str(dst)
    try:
        ort.InferenceSession(str(src), opts, providers=["CPUExecutionProvider"])
    except Exception as exc:
        raise ExportError(f"onnxruntime could not optimise {src.name}: {type(exc).__name__}: {exc}") from exc
    return dst


def _smoke_load(path: Path) -> None:
    """Create an onnxruntime CPU session in a child process: a crash there must not take the exporter down."""
    code = ("import sys, onnxruntime as ort; o = ort.SessionOptions(); o.log_severity_level = 3; "
            "ort.InferenceSession(sys.argv[1], o, providers=['CPUExecutionProvider'])")
    res = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, timeout=300)
    if res.returncode != 0:
        raise ExportError(f"onnxruntime cannot load {path.name} (exit code {res.returncode}): "
                          f"{res.stderr.strip()[-2000:] or 'crashed without a message'}")


def _topological_sort(graph: onnx.GraphProto) -> None:
    """Reorder ``graph.node`` so that every node comes after the producers of its inputs (stable)."""
    known = {i.name for i in graph.input} | {i.name for i in graph.initializer} | {""}
    pending = list(graph.node)
    ordered: list[onnx.NodeProto] = []
    while pending:
        rest = []
        for node in pending:
            if all(name in known for name in node.input):
                ordered.append(node)
                known.update(node.output)
            else:
                rest.append(node)
        if len(rest) == len(pending):
            raise ExportError(f"graph has a cycle or a dangling input at node {rest[0].name} ({rest[0].op_type})")
        pending = rest
    del graph.node[:]
    graph.node.extend(ordered)


# --- parity -----------------------------------------------------------------------------------------


@dataclass
class ParityRow:
    variant: str  # fp32 | fp16
    agents: int
    planned: bool
    max_abs_traj_m: float  # max |traj_ort - traj_torch|, metres (agent frame)
    max_abs_prob: float
    max_abs_scale_m: float
    tolerance_m: float

    @property
    def ok(self) -> bool:
        return bool(np.isfinite(self.max_abs_traj_m) and self.max_abs_traj_m <= self.tolerance_m)


def parity_table(rows: list[ParityRow]) -> str:
    lines = [f"{'variant':<24}{'agents':>7}{'plan':>6}{'max|dtraj| m':>14}{'max|dprob|':>12}{'max|dscale| m':>15}"
             f"{'tol m':>9}  ok"]
    for r in rows:
        lines.append(f"{r.variant:<24}{r.agents:>7}{'yes' if r.planned else 'no':>6}{r.max_abs_traj_m:>14.2e}"
                     f"{r.max_abs_prob:>12.2e}{r.max_abs_scale_m:>15.2e}{r.tolerance_m:>9.0e}  {'yes' if r.ok else 'NO'}")
    return "\n".join(lines)


def verify_parity(model: WorldModel, features: FeatureConfig, onnx_paths: dict[str, Path],
                  agent_counts: tuple[int, ...] = PARITY_AGENT_COUNTS, seed: int = 0,
                  raise_on_failure: bool = True) -> list[ParityRow]:
    """Run torch and onnxruntime (CPU) on ``build_sample`` scenes with ``agent_counts`` agents.

    ``onnx_paths`` maps a variant (``fp32``/``fp16``/``int8``, optionally followed by ``.`` and a
    note such as ``.ort`` for the onnxruntime-optimised file; the first part picks the tolerance) to its file. Scenes with more than one
    agent give agent 0 a plan, so the action input is exercised too.
    """
    import onnxruntime as ort

    model = model.eval()
    map_raster = rasterize_map_layers(synthetic_map_layers(), features.raster.resolution)
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    sessions = {v: ort.InferenceSession(str(p), opts, providers=["CPUExecutionProvider"]) for v, p in onnx_paths.items()}
    rows: list[ParityRow] = []
    for i, n in enumerate(agent_counts):
        sample, _, _ = synthetic_sample(n, features, seed=seed + i, map_raster=map_raster)
        planned = n > 1
        args = sample_inputs(sample, model.cfg.future_steps, plan_agent=0 if planned else None)
        with torch.no_grad():
            ref = [t.numpy() for t in model(*args)]
        feed = {name: a.numpy() for name, a in zip(MODEL_INPUT_NAMES, args, strict=True)}
        for variant, sess in sessions.items():
            out = sess.run(list(MODEL_OUTPUT_NAMES), feed)
            d = [float(np.max(np.abs(o.astype(np.float64) - r))) if np.all(np.isfinite(o)) else float("inf")
                 for o, r in zip(out, ref, strict=True)]
            rows.append(ParityRow(variant, n, planned, d[0], d[2], d[1], TOLERANCE_M[variant.split(".")[0]]))
    bad = [r for r in rows if not r.ok]
    if bad and raise_on_failure:
        raise ParityError("onnxruntime differs from torch beyond tolerance:\n" + parity_table(rows))
    return rows


def parity_dicts(rows: list[ParityRow]) -> list[dict]:
    return [asdict(r) | {"ok": r.ok} for r in rows]
