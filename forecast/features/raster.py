"""Bird's-eye rasters: the map is drawn once per map (OpenCV); per scene, the map window and the
agents' recent motion are laid on one world-aligned grid, and each agent's raster is an affine crop of it
(linear in the number of agents).

Pixel convention of an agent raster ``[C, S, S]``: the agent heads up the image (row decreasing);
its left is to the left (column decreasing); the raster centre lies ``ahead`` metres in front.
"""

from __future__ import annotations

import functools
import threading
from dataclasses import dataclass

import cv2
import numpy as np
import shapely

from forecast.data.types import AgentType
from forecast.features.config import MAP_CHANNELS, MOTION_CHANNELS, SIGNAL_CHANNELS, RasterConfig

_SHIFT = 2  # sub-pixel bits for cv2 drawing
LAYER_TO_CHANNEL = {
    "drivable_area": "drivable_area",
    "lane": "lane",
    "lane_centerline": "lane_centerline",
    "crosswalk": "crosswalk",
    "sidewalk": "sidewalk",
    "walking_area": "sidewalk",
}
# A closed signal is drawn as a bar this far either side of its stop-line point, across its heading:
# about the width of a two-lane approach with its bike lane, and of a crossing.
SIGNAL_HALF_WIDTH_M = 3.5


@dataclass(frozen=True)
class MapRaster:
    """A world-aligned raster of one map: ``image [H, W, C]`` uint8, pixel (col, row) centre at
    world ``(x0 + col * resolution, y0 + row * resolution)``."""

    image: np.ndarray
    x0: float
    y0: float
    resolution: float

    @functools.cached_property
    def split(self) -> tuple[np.ndarray, np.ndarray]:
        """The image as ``[H, W, 4]`` and ``[H, W]`` contiguous arrays (fast warps), made once per map."""
        return np.ascontiguousarray(self.image[..., :4]), np.ascontiguousarray(self.image[..., 4])


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
    return _agent_affines(origin[None], np.array([heading]), cfg, m.x0, m.y0, m.resolution)[0]


def _agent_affines(origins: np.ndarray, headings: np.ndarray, cfg: RasterConfig, x0: float, y0: float,
                   resolution: float) -> np.ndarray:
    """``[A, 2, 3]`` affines from agent-raster pixels to the pixels of a world-aligned grid at (x0, y0)."""
    r, c = cfg.resolution, (cfg.size - 1) / 2.0
    ch, sh = np.cos(headings), np.sin(headings)
    # agent pixel (col, row) -> local metres: u = ahead + (c - row) r, v = (c - col) r; then rotate, shift, scale
    out = np.empty((len(origins), 2, 3))
    out[:, 0, 0] = sh * r / resolution
    out[:, 0, 1] = -ch * r / resolution
    out[:, 0, 2] = (ch * (cfg.ahead + c * r) - sh * c * r + origins[:, 0] - x0) / resolution
    out[:, 1, 0] = -ch * r / resolution
    out[:, 1, 1] = -sh * r / resolution
    out[:, 1, 2] = (sh * (cfg.ahead + c * r) + ch * c * r + origins[:, 1] - y0) / resolution
    return out


def footprint_radius(cfg: RasterConfig) -> float:
    """Metres from an agent to the farthest point its raster can sample (corner, plus a pixel of interpolation)."""
    half = cfg.size * cfg.resolution / 2.0
    return abs(cfg.ahead) + half * np.sqrt(2.0) + 2.0 * cfg.resolution


# Motion windows larger than this (pixels) are split into tiles, so a scene spread over kilometres
# costs memory in proportion to its agents, not to its area.
MAX_WINDOW_PIXELS = 2048 * 2048
_TILE_PIXELS = 512
# (flags, borderMode, borderValue), passed by position: a warp of a 48-px crop costs ~8 us, and keyword
# arguments added ~0.5 us to each of the two per agent
_WARP = (cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, cv2.BORDER_CONSTANT, 0)


class _Scratch(threading.local):
    """``rasterize_agents``' working arrays, reused from call to call (one set per thread), grown to the
    largest scene seen and never shrunk (at 48 px, 128 agents: 3.5 MB).

    A fresh array of a megabyte or more per call costs a page fault per 4 KB page at its first write,
    and glibc hands freed memory at the top of its heap back to the kernel, so a loop of calls can pay
    those faults at every call: on the 2-core dev VM they doubled the preprocessing at 64 and 128 agents
    (docs/measurements.md, nineteenth pass)."""

    def __init__(self) -> None:
        self.buffers: dict[str, np.ndarray] = {}

    def array(self, key: str, shape: tuple[int, ...]) -> np.ndarray:
        """A C-contiguous uint8 array of ``shape`` (uninitialised), the start of the buffer ``key``."""
        n = int(np.prod(shape))
        buf = self.buffers.get(key)
        if buf is None or buf.size < n:
            buf = self.buffers[key] = np.empty(n, np.uint8)
        return buf[:n].reshape(shape)


_SCRATCH = _Scratch()


def rasterize_agents(m: MapRaster | None, hist_xy: np.ndarray, hist_valid: np.ndarray, agent_type: np.ndarray,
                     origins: np.ndarray, headings: np.ndarray, cfg: RasterConfig) -> np.ndarray:
    """Every agent's raster ``[A, C, S, S]`` uint8 (map, motion, then signal channels), linear in A.

    The map is drawn once per map; the recent motion of every included agent (by type, brighter
    is more recent) is drawn once per scene, world-aligned, in a window around the agents. Each
    agent's raster is then an affine crop of both, so an agent's own history shows in its raster
    like everyone else's. hist_xy: [A, T_h, 2] world positions up to t0 (only history is drawn);
    hist_valid: [A, T_h]; agent_type: [A]; origins: [A, 2] world metres; headings: [A] radians.

    Two 4-channel warps per agent (OpenCV's fast path): the map's first four channels, and a
    window holding the map's fifth channel with the three motion channels (the motion is drawn on
    the map's grid, so the two line up pixel for pixel). Closed traffic signals (agents of type
    ``TRAFFIC_SIGNAL`` present at t0) are bars across their stop lines in a last channel, drawn
    straight into each agent's raster that can see one (one OpenCV call per such agent: a few short
    segments cost less than another warp of the whole raster). A signal's own raster is empty.
    """
    a, s = len(origins), cfg.size
    n_head = 4
    if len(MAP_CHANNELS) != n_head + 1 or len(MOTION_CHANNELS) != 3 or len(SIGNAL_CHANNELS) != 1:
        raise AssertionError("the warp layout assumes 5 map, 3 motion and 1 signal channel")
    out = np.empty((a, len(MAP_CHANNELS) + len(MOTION_CHANNELS) + len(SIGNAL_CHANNELS), s, s), np.uint8)
    if a == 0:
        return out
    signals = np.flatnonzero((np.asarray(agent_type) == AgentType.TRAFFIC_SIGNAL) & hist_valid[:, -1])
    aligned = len(origins) == len(hist_xy)
    if len(signals) and not aligned:
        raise ValueError("closed traffic signals are drawn at their own t0 pose (origins, headings): crop every "
                         f"agent's raster when the scene has one (got {len(origins)} origins for {len(hist_xy)} agents)")
    # A signal's own raster stays empty: it is context whose place the model has from its pose, and its
    # crops were a fifth of the warps of a signalised scene (the loader's budget, issue 12).
    drawn = np.flatnonzero(np.asarray(agent_type) != AgentType.TRAFFIC_SIGNAL) if aligned else np.arange(a)
    head_crops = _SCRATCH.array("head", (a, s, s, n_head))
    blank = np.setdiff1d(np.arange(a), drawn)
    head_crops[blank] = 0
    if m is not None:
        head, tail = m.split
        affines = _agent_affines(origins, headings, cfg, m.x0, m.y0, m.resolution)
        for i in drawn.tolist():
            cv2.warpAffine(head, affines[i], (s, s), head_crops[i], *_WARP)
    else:
        head_crops[:] = 0
        tail = None
    # The motion grid: the map's (drawn at the rasters' resolution by the runtime and the data sets),
    # else one at the rasters' resolution anchored at the world origin.
    gx, gy, res = (m.x0, m.y0, m.resolution) if m is not None else (0.0, 0.0, cfg.resolution)
    rad = footprint_radius(cfg) / res + 1.0
    col = (origins[:, 0] - gx) / res
    row = (origins[:, 1] - gy) / res
    lo_c, hi_c = np.floor(col - rad).astype(np.int64), np.ceil(col + rad).astype(np.int64) + 1
    lo_r, hi_r = np.floor(row - rad).astype(np.int64), np.ceil(row + rad).astype(np.int64) + 1
    if not len(drawn):
        groups = []
    elif (hi_c[drawn].max() - lo_c[drawn].min()) * (hi_r[drawn].max() - lo_r[drawn].min()) <= MAX_WINDOW_PIXELS:
        groups = [drawn]
    else:
        _, inverse = np.unique(np.stack([col, row], 1)[drawn] // _TILE_PIXELS, axis=0, return_inverse=True)
        inverse = inverse.ravel()
        groups = [drawn[inverse == g] for g in range(inverse.max() + 1)]
    pts = _motion_points(hist_xy, hist_valid, agent_type, gx, gy, res)
    tail_crops = _SCRATCH.array("tail", (a, s, s, 4))
    tail_crops[blank] = 0
    for g in groups:
        c0, c1, r0, r1 = lo_c[g].min(), hi_c[g].max(), lo_r[g].min(), hi_r[g].max()
        window = _tail_and_motion_window(tail, pts, c0, c1, r0, r1)
        affines = _agent_affines(origins[g], headings[g], cfg, gx + c0 * res, gy + r0 * res, res)
        for k, i in enumerate(g.tolist()):
            cv2.warpAffine(window, affines[k], (s, s), tail_crops[i], *_WARP)
    # Interleaved [S, S, 4] crops to channel planes: OpenCV's split of all agents at once (as one
    # [A * S, S, 4] image) into four contiguous planes, then one copy of whole [S, S] planes into place.
    # numpy's transposing copy of uint8 with 4 channels innermost was a fifth of the loader's time at
    # the full config, and a split per agent cost 5 us of call overhead each (0.70 against 0.27 ms for
    # 128 agents of 48 px, one thread).
    planes = _SCRATCH.array("planes", (4, a * s, s))
    for crops, c0 in ((head_crops, 0), (tail_crops, n_head)):
        cv2.split(crops.reshape(a * s, s, 4), list(planes))
        out[:, c0 : c0 + 4] = planes.reshape(4, a, s, s).transpose(1, 0, 2, 3)
    out[:, n_head + 4] = 0
    if len(signals) and len(drawn):
        _draw_signals(out[:, n_head + 4], drawn, origins, headings, origins[signals], headings[signals], cfg)
    return out


def _draw_signals(out: np.ndarray, agents: np.ndarray, origins: np.ndarray, headings: np.ndarray,
                  sig_xy: np.ndarray, sig_heading: np.ndarray, cfg: RasterConfig) -> None:
    """Draw into ``out [A, S, S]`` (each agent's signal channel, zeros), for the agents ``agents``, a bar
    ``2 * SIGNAL_HALF_WIDTH_M`` long across each closed signal's heading through its stop-line point (sig_xy
    [N, 2] world metres, sig_heading [N]), about 1 m thick, in the frames of the agents at ``origins [A, 2]``,
    ``headings [A]``."""
    r, c = cfg.resolution, (cfg.size - 1) / 2.0
    across = np.stack([-np.sin(sig_heading), np.cos(sig_heading)], 1) * SIGNAL_HALF_WIDTH_M
    ends = np.stack([sig_xy - across, sig_xy + across], 1)  # [N, 2 ends, 2]
    o, h = origins[agents], headings[agents]
    near = np.hypot(*(sig_xy[None] - o[:, None]).transpose(2, 0, 1)) < footprint_radius(cfg) + SIGNAL_HALF_WIDTH_M
    d = ends[None] - o[:, None, None]  # [n_agents, N, 2, 2]
    ch, sh = np.cos(h)[:, None, None], np.sin(h)[:, None, None]
    u = d[..., 0] * ch + d[..., 1] * sh  # ahead, metres
    v = -d[..., 0] * sh + d[..., 1] * ch  # to the left
    # the inverse of _agent_affines' pixel -> metres: u = ahead + (c - row) r, v = (c - col) r
    px = np.round(np.stack([c - v / r, c - (u - cfg.ahead) / r], -1) * (1 << _SHIFT)).astype(np.int32)
    thick = max(1, int(round(1.0 / r)))
    for k in np.flatnonzero(near.any(1)):
        cv2.polylines(out[agents[k]], px[k, near[k]], False, 255, thick, cv2.LINE_8, _SHIFT)


def crop_map(m: MapRaster | None, origins: np.ndarray, headings: np.ndarray, cfg: RasterConfig) -> np.ndarray:
    """Per-agent map crops ``[A, C_map, S, S]`` uint8; zeros when there is no map."""
    out = np.empty((len(origins), len(MAP_CHANNELS), cfg.size, cfg.size), np.uint8)
    _crop_map_into(m, origins, headings, cfg, out)
    return out


def _crop_map_into(m: MapRaster | None, origins: np.ndarray, headings: np.ndarray, cfg: RasterConfig,
                   out: np.ndarray) -> None:
    """Write the map crops into ``out [A, C_map, S, S]``. OpenCV's warp has fast paths for 1, 3 and 4
    channels only, so the map's channels are warped as four plus one."""
    if m is None or len(origins) == 0:
        out[:] = 0
        return
    s = cfg.size
    head, tail = m.split
    affines = _agent_affines(origins, headings, cfg, m.x0, m.y0, m.resolution)
    crops = np.empty((len(origins), s, s, head.shape[2]), np.uint8)
    for i in range(len(origins)):
        cv2.warpAffine(head, affines[i], (s, s), crops[i], *_WARP)
        cv2.warpAffine(tail, affines[i], (s, s), out[i, -1], *_WARP)
    out[:, : head.shape[2]] = crops.transpose(0, 3, 1, 2)


def _motion_points(hist_xy: np.ndarray, hist_valid: np.ndarray, agent_type: np.ndarray, gx: float, gy: float,
                   res: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """History points on the grid: (col, row, channel, intensity) of every valid step of a drawn type."""
    a, t_h, _ = hist_xy.shape
    channel_of = np.array([MOTION_CHANNELS.index(n) if n in MOTION_CHANNELS else -1
                           for n in (t.label for t in AgentType)])
    channel = np.broadcast_to(channel_of[agent_type][:, None], (a, t_h))
    intensity = np.broadcast_to(np.linspace(255 / t_h, 255, t_h).astype(np.uint8)[None], (a, t_h))
    ok = hist_valid & (channel >= 0)
    xy = hist_xy[ok]
    col = np.rint((xy[:, 0] - gx) / res).astype(np.int64)
    row = np.rint((xy[:, 1] - gy) / res).astype(np.int64)
    return col, row, channel[ok], intensity[ok]


def _tail_and_motion_window(tail: np.ndarray | None, pts, c0: int, c1: int, r0: int, r1: int) -> np.ndarray:
    """Grid pixels [r0, r1) x [c0, c1): ``[h, w, 4]`` uint8, the map's last channel (``tail [H, W]``,
    zeros outside it or without a map) then the motion channels (brightest point wins)."""
    h, w = int(r1 - r0), int(c1 - c0)
    window = np.zeros((h, w, 4), np.uint8)
    if tail is not None:
        ra, rb = max(r0, 0), min(r1, tail.shape[0])
        ca, cb = max(c0, 0), min(c1, tail.shape[1])
        if ra < rb and ca < cb:
            window[ra - r0 : rb - r0, ca - c0 : cb - c0, 0] = tail[ra:rb, ca:cb]
    col, row, channel, intensity = pts
    inside = (col >= c0) & (col < c1) & (row >= r0) & (row < r1)
    flat = ((row[inside] - r0) * w + (col[inside] - c0)) * 4 + 1 + channel[inside]
    np.maximum.at(window.reshape(-1), flat, intensity[inside])
    return window
