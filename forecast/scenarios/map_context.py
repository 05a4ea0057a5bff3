"""Where points lie on a map: near a layer, how many polygons cover them, inside a junction (pure functions).

Shared by the evaluation's slices and the scenario tagger; it imports nothing of either.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import shapely


def _union(geoms: Sequence | None):
    geoms = [g for g in (geoms or []) if g is not None and not g.is_empty]
    if not geoms:
        return None
    u = shapely.union_all(geoms)
    shapely.prepare(u)
    return u


def near_layer(points: np.ndarray, geoms: Sequence | None, radius: float) -> np.ndarray:
    """``[N]`` bool: points ``[N, 2]`` within ``radius`` metres of any of ``geoms`` (False if none)."""
    p = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    u = _union(geoms)
    if u is None or len(p) == 0:
        return np.zeros(len(p), dtype=bool)
    return np.asarray(shapely.dwithin(u, shapely.points(p), radius), dtype=bool)


def cover_count(points: np.ndarray, polygons: Sequence | None) -> np.ndarray:
    """``[N]`` int: how many of ``polygons`` contain (or touch) each point ``[N, 2]``."""
    p = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    polys = [g for g in (polygons or []) if g is not None and not g.is_empty]
    if not polys or len(p) == 0:
        return np.zeros(len(p), dtype=np.int64)
    tree = shapely.STRtree(polys)
    pairs = tree.query(shapely.points(p), predicate="intersects")  # [2, M]: (point, polygon)
    return np.bincount(pairs[0], minlength=len(p)).astype(np.int64)


def junction_method(source: str) -> str:
    """``lane_overlap`` for AV2 maps (no junction layer), else ``drivable_minus_lanes`` (SUMO)."""
    return "lane_overlap" if source == "av2" else "drivable_minus_lanes"


def in_junction(points: np.ndarray, layers: dict, method: str) -> np.ndarray:
    """``[N]`` bool: points ``[N, 2]`` (world frame) inside a junction of the map ``layers``.

    ``drivable_minus_lanes``: inside the drivable area and inside no lane polygon (SUMO).
    ``lane_overlap``: covered by two or more lane polygons (AV2 proxy, no junction layer).
    """
    p = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    if method == "lane_overlap":
        return cover_count(p, layers.get("lane")) >= 2
    if method == "drivable_minus_lanes":
        drivable = _union(layers.get("drivable_area"))
        if drivable is None or len(p) == 0:
            return np.zeros(len(p), dtype=bool)
        inside = np.asarray(shapely.contains_xy(drivable, p[:, 0], p[:, 1]), dtype=bool)
        return inside & (cover_count(p, layers.get("lane")) == 0)
    raise ValueError(f"unknown junction method {method!r}; known: drivable_minus_lanes, lane_overlap")
