"""Bird's-eye rasters: the map is drawn once per map (OpenCV), then cropped per agent with an affine warp.

Pixel convention of an agent raster ``[C, S, S]``: the agent heads up the image (row decreasing);
its left is to the left (column decreasing); the raster centre lies ``ahead`` metres in front.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import shapely

from forecast.features.config import MAP_CHANNELS, MOTION_CHANNELS, RasterConfig
from forecast.features.frames import to_local

_SHIFT = 2  # sub-pixel bits for cv2 drawing
LAYER_TO_CHANNEL = {
    "drivable_area": "drivable_area",
    "lane": "lane",
    "lane_centerline": "lane_centerline",
    "crosswalk": "crosswalk",
    "sidewalk": "sidewalk",
    "walking_area": "sidewalk",
}


@dataclass(frozen=True)
class MapRaster:
    """A world-aligned raster of one map: ``image [H, W, C]`` uint8, pixel (col, row) centre at
    world ``(x0 + col * resolution, y0 + row * resolution)``."""

    image: np.ndarray
    x0: float
    y0: float
    resolution: float


def rasterize_map_layers(layers: dict[str, list[shapely.Geometry]], resolution: float,
                         max_pixels: int = 64_000_000) -> MapRaster:
    """Draw map layers (shapely geometries, metres) into one multi-channel raster, once per map."""
    geoms = [g for layer, gs in layers.items() if layer in LAYER_TO_CHANNEL for g in gs]
    if not geoms:
        raise ValueError(f"map has no drawable layers (got {sorted(layers)}; need any of {sorted(LAYER_TO_CHANNEL)})")
    xmin, ymin, xmax, ymax = shapely.total_bounds(geoms)
    w = int(np.ceil((xmax - xmin) / resolution)) + 2
    h = int(np.ceil((ymax - ymin) / resolution)) + 2
    if w * h > max_pixels:
        raise ValueError(f"map of {xmax - xmin:.0f} x {ymax - ymin:.0f} m is too large to rasterise at {resolution} m/px")
    image = np.zeros((len(MAP_CHANNELS), h, w), np.uint8)
    x0, y0 = xmin - resolution, ymin - resolution

    def px(coords: np.ndarray) -> np.ndarray:
        return np.round((coords[:, :2] - (x0, y0)) / resolution * (1 << _SHIFT)).astype(np.int32)

    for layer, gs in layers.items():
        if layer not in LAYER_TO_CHANNEL:
            continue
        canvas = image[MAP_CHANNELS.index(LAYER_TO_CHANNEL[layer])]
        for g in gs:
            for part in getattr(g, "geoms", [g]):
                if isinstance(part, shapely.Polygon):
                    cv2.fillPoly(canvas, [px(np.asarray(part.exterior.coords))], 255, cv2.LINE_8, _SHIFT)
                    for hole in part.interiors:
                        cv2.fillPoly(canvas, [px(np.asarray(hole.coords))], 0, cv2.LINE_8, _SHIFT)
                elif isinstance(part, shapely.LineString | shapely.LinearRing):
                    cv2.polylines(canvas, [px(np.asarray(part.coords))], False, 255, 1, cv2.LINE_8, _SHIFT)
    return MapRaster(np.ascontiguousarray(image.transpose(1, 2, 0)), float(x0), float(y0), float(resolution))


def agent_to_map_affine(origin: np.ndarray, heading: float, cfg: RasterConfig, m: MapRaster) -> np.ndarray:
    """2x3 affine taking agent-raster pixel (col, row) to map-raster pixel (col, row)."""
    r, c = cfg.resolution, (cfg.size - 1) / 2.0
    # agent pixel -> local metres: u = ahead + (c - row) r, v = (c - col) r
    local = np.array([[0.0, -r, cfg.ahead + c * r], [-r, 0.0, c * r], [0.0, 0.0, 1.0]])
    ch, sh = np.cos(heading), np.sin(heading)
    world = np.array([[ch, -sh, origin[0]], [sh, ch, origin[1]], [0.0, 0.0, 1.0]])
    to_map = np.array([[1 / m.resolution, 0.0, -m.x0 / m.resolution], [0.0, 1 / m.resolution, -m.y0 / m.resolution],
                       [0.0, 0.0, 1.0]])
    return (to_map @ world @ local)[:2]


def crop_map(m: MapRaster | None, origins: np.ndarray, headings: np.ndarray, cfg: RasterConfig) -> np.ndarray:
    """Per-agent map crops ``[A, C_map, S, S]`` uint8; zeros when there is no map."""
    a = len(origins)
    out = np.zeros((a, len(MAP_CHANNELS), cfg.size, cfg.size), np.uint8)
    if m is None:
        return out
    for i in range(a):
        affine = agent_to_map_affine(origins[i], float(headings[i]), cfg, m)
        crop = cv2.warpAffine(m.image, affine, (cfg.size, cfg.size), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                              borderMode=cv2.BORDER_CONSTANT, borderValue=0)
        out[i] = crop.reshape(cfg.size, cfg.size, -1).transpose(2, 0, 1)
    return out


def draw_motion(hist_xy: np.ndarray, hist_valid: np.ndarray, agent_type: np.ndarray, origins: np.ndarray,
                headings: np.ndarray, cfg: RasterConfig) -> np.ndarray:
    """Recent motion of the *other* agents, by type, in each agent's raster: ``[A, 3, S, S]`` uint8.

    hist_xy: [A, T_h, 2] world positions up to t0; hist_valid: [A, T_h]; agent_type: [A].
    Brighter is more recent. Only history (<= t0) is drawn.
    """
    a, t_h, _ = hist_xy.shape
    s, r, c = cfg.size, cfg.resolution, (cfg.size - 1) / 2.0
    out = np.zeros((a, len(MOTION_CHANNELS), s, s), np.uint8)
    if a < 2:
        return out
    pts = np.broadcast_to(hist_xy.reshape(1, a * t_h, 2), (a, a * t_h, 2))
    local = to_local(np.nan_to_num(pts), origins, headings)  # [A_recv, A*T_h, 2]
    row = np.rint(c - (local[..., 0] - cfg.ahead) / r).astype(np.int64)
    col = np.rint(c - local[..., 1] / r).astype(np.int64)
    src = np.repeat(np.arange(a), t_h)
    channel = np.array([MOTION_CHANNELS.index(n) if n in MOTION_CHANNELS else -1
                        for n in ("vehicle", "pedestrian", "cyclist", "other")])[agent_type[src]]
    intensity = np.tile(np.linspace(255 / t_h, 255, t_h), a).astype(np.uint8)
    ok = (row >= 0) & (row < s) & (col >= 0) & (col < s)
    ok &= hist_valid.reshape(1, -1) & (channel >= 0)[None, :] & (src[None, :] != np.arange(a)[:, None])
    recv, k = np.nonzero(ok)
    flat = ((recv * len(MOTION_CHANNELS) + channel[k]) * s + row[recv, k]) * s + col[recv, k]
    np.maximum.at(out.reshape(-1), flat, intensity[k])
    return out
