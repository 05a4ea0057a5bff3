"""Reading the raster CNN's feature map at points of the agent's frame (where a mode is, where it ends).

The raster encoder pools its map away into one vector per agent; a mode's path needs to know what lies
under it (a lane, a sidewalk, a stop line), as goal-scoring predictors (TNT, DenseTNT) read map
features at their candidate targets. The map is the CNN's intermediate feature map of the agent's own
raster, which is drawn in the agent's frame (``forecast.features.raster``: pixel (col, row) is the
point ``u = ahead + (c - row) r`` ahead and ``v = (c - col) r`` to the left, c = (S - 1) / 2), so a
point of the agent's frame maps to ``grid_sample``'s normalised (x, y) by one affine map.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F


def grid_affine(size: int, resolution: float, ahead: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(matrix [2, 2], offset [2]) with ``grid = point @ matrix + offset``: agent-frame metres (u, v) ->
    ``grid_sample``'s (x, y) in [-1, 1] (``align_corners=False``: -1 and 1 are the raster's outer edges).

    x = (2 col + 1) / S - 1 = -2 v / (r S) and y = (2 row + 1) / S - 1 = -2 (u - ahead) / (r S).
    A stride-2 feature map of the raster covers the same square, so the same grid reads it."""
    s = -2.0 / (resolution * size)
    return torch.tensor([[0.0, s], [s, 0.0]]), torch.tensor([0.0, -s * ahead])


def lookup(fmap: torch.Tensor, points: torch.Tensor, matrix: torch.Tensor, offset: torch.Tensor) -> torch.Tensor:
    """fmap [B * A, C, H, W] (rows (b, a)), points [B, A, M, 2] (each agent's frame, m) -> [B, A, M, C].

    Bilinear; a point off the raster reads zeros."""
    b, a, m, _ = points.shape
    grid = (points @ matrix + offset).reshape(b * a, m, 1, 2)
    out = F.grid_sample(fmap, grid, mode="bilinear", padding_mode="zeros", align_corners=False)  # [B * A, C, M, 1]
    return out.reshape(b, a, -1, m).transpose(2, 3)
