"""Reading the raster CNN's feature map at points of the agent's frame (where a mode is, where it ends).

The raster encoder pools its map away into one vector per agent; a mode's path needs to know what lies
under it (a lane, a sidewalk, a stop line), as goal-scoring predictors (TNT, DenseTNT) read map
features at their candidate targets. The map is the CNN's intermediate feature map of the agent's own
raster, which is drawn in the agent's frame (``forecast.features.raster``: pixel (col, row) is the
point ``u = ahead + (c - row) r`` ahead and ``v = (c - col) r`` to the left, c = (S - 1) / 2). Each
3 x 3, stride-2, padding-1 convolution centres its output pixel i on input pixel 2 i, so cell j of a
map ``stride`` times coarser is centred on raster pixel ``stride * j``.

The read is bilinear with zeros outside the map, in two forms of the same function. Training (a gradient
wanted) takes a product with tent weights: its backward is a matrix product, deterministic, where
``grid_sample``'s backward has no deterministic CUDA kernel (training runs with ``deterministic: true``).
Inference and the exported graph take ``grid_sample`` (onnxruntime's GridSample, which TensorRT's parser
supports): at 64 agents its kernel reads a rollout's points in 0.14 ms, and the option costs onnxruntime
0.4 ms where the tent weights' many small broadcasting operators made it 1.0 ms (docs/measurements.md,
"Reading the raster's feature map along the rollout"). A test holds the two equal. Either way the
point's cell coordinates are element-wise float32 (a matmul would be rounded by bf16 autocast and
quantised in the int8 graph).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch.nn import functional as F


class CellAffine(NamedTuple):
    """(col, row) of a feature-map cell = (v * scale + col0, u * scale + row0), from agent-frame metres."""

    scale: float
    col0: float
    row0: float


def cell_affine(size: int, resolution: float, ahead: float, stride: int) -> CellAffine:
    """The agent frame -> the cells of a raster of ``size`` px at ``resolution`` m/px centred ``ahead`` m in
    front of the agent, read through a feature map ``stride`` times coarser (1: the raster itself)."""
    c = (size - 1) / 2.0
    return CellAffine(-1.0 / (resolution * stride), c / stride, (c + ahead / resolution) / stride)


def lookup(fmap: torch.Tensor, points: torch.Tensor, at: CellAffine) -> torch.Tensor:
    """fmap [B * A, C, H, W] (rows (b, a)), points [B, A, M, 2] (each agent's frame: u ahead, v left, m)
    -> [B, A, M, C]: agent (b, a)'s own map, bilinear at each of its M points, zero off the map."""
    b, a, m, _ = points.shape
    h, w = fmap.shape[2:]
    if torch.is_grad_enabled() and (fmap.requires_grad or points.requires_grad):
        col = points[..., 1:2] * at.scale + at.col0  # [B, A, M, 1], cells
        row = points[..., 0:1] * at.scale + at.row0
        return _tent_read(fmap, col, row)
    # grid_sample's (x, y) with align_corners=False, where cell j's centre is (2 j + 1) / W - 1, straight
    # from (v, u): three element-wise operators (onnxruntime pays per operator at these sizes)
    gain = torch.tensor([2.0 * at.scale / w, 2.0 * at.scale / h], dtype=points.dtype, device=points.device)
    bias = torch.tensor([(2.0 * at.col0 + 1.0) / w - 1.0, (2.0 * at.row0 + 1.0) / h - 1.0], dtype=points.dtype,
                        device=points.device)
    grid = points.flip(-1) * gain + bias
    out = F.grid_sample(fmap, grid.reshape(b * a, m, 1, 2).to(fmap.dtype), mode="bilinear", padding_mode="zeros",
                        align_corners=False)  # [B * A, C, M, 1]
    return out.reshape(b, a, -1, m).transpose(2, 3)


def _tent_read(fmap: torch.Tensor, col: torch.Tensor, row: torch.Tensor) -> torch.Tensor:
    """``lookup`` as bilinear tent weights [B * A, M, H * W] times the map: col, row [B, A, M, 1] (cells)."""
    b, a, m, _ = col.shape
    h, w = fmap.shape[2:]
    wx = F.relu(1.0 - (col - torch.arange(w, dtype=col.dtype, device=col.device)).abs())  # [B, A, M, W]
    wy = F.relu(1.0 - (row - torch.arange(h, dtype=row.dtype, device=row.device)).abs())  # [B, A, M, H]
    weights = (wy[..., :, None] * wx[..., None, :]).reshape(b * a, m, h * w)
    out = weights.to(fmap.dtype) @ fmap.reshape(b * a, -1, h * w).transpose(1, 2)  # [B * A, M, C]
    return out.reshape(b, a, m, -1)
