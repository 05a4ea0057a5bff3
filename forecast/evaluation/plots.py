"""Pictures of an evaluation (matplotlib, Agg backend): each function returns PNG bytes.

* :func:`horizon_plot`: minADE@6 / minFDE@6 against the horizon, per class, models vs baselines.
* :func:`class_bars`: per-class bars of the headline metrics, models vs baselines.
* :func:`reliability_plot`: calibration reliability diagram of the mode probabilities.
* :func:`scene_plot`: one agent's case in the world frame: map layers, history, ground truth, the K
  predicted futures (line alpha/width by probability, probability written at each endpoint), the
  constant-velocity baseline, and the other agents at t0 with their recent tracks.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.patches import Patch, PathPatch  # noqa: E402
from matplotlib.path import Path as MplPath  # noqa: E402

CLASSES = ("vehicle", "pedestrian", "cyclist")
CLASS_STYLE = {  # AgentType value -> (label, colour, marker)
    0: ("vehicle", "#1f77b4", "s"),
    1: ("pedestrian", "#2ca02c", "o"),
    2: ("cyclist", "#ff7f0e", "^"),
    3: ("other", "#7f7f7f", "D"),
}
MODE_COLOURS = ("#d62728", "#9467bd", "#e377c2", "#8c564b", "#bcbd22", "#17becf", "#ff7f0e", "#1f77b4")
MAP_STYLE = {  # layer -> (face, edge, hatch, zorder, legend label)
    "drivable_area": ("#e4e4e4", "none", None, 0, "drivable area"),
    "sidewalk": ("#efe3cf", "#d8c6a5", None, 1, "sidewalk"),
    "walking_area": ("#efe3cf", "#d8c6a5", None, 1, None),
    "lane": ("none", "#b5b5b5", None, 2, "lane"),
    "crosswalk": ("#fffbe0", "#c9b200", "////", 3, "crosswalk"),
}


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=fig.dpi, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def _series(metrics: dict) -> list[tuple[str, dict, bool]]:
    """(name, block, is_baseline) of the models then the baselines (a baseline given as a model is listed once)."""
    out = [(n, b, False) for n, b in metrics["models"].items()]
    out += [(n, b, True) for n, b in metrics["baselines"].items() if n not in metrics["models"]]
    return out


def _style(i: int, base: bool) -> dict:
    """Line/bar style of series ``i``: models in strong colours, baselines grey."""
    if base:
        return {"color": ("#7f7f7f", "#b0b0b0")[i % 2]}
    return {"color": MODE_COLOURS[i % len(MODE_COLOURS)]}


def horizon_plot(curves: dict[str, dict[str, dict[str, tuple[np.ndarray, np.ndarray]]]], baselines: set[str],
                 counts: dict[str, int], keys: tuple[str, ...] = ("minADE@6", "minFDE@6")) -> bytes:
    """Metric against horizon, one column per group (all, vehicle, ...), one row per metric.

    ``curves[name][group][key] = (seconds [S], values [S])``; ``baselines`` are drawn dashed and grey.
    """
    groups = list(next(iter(curves.values())))
    fig, axes = plt.subplots(len(keys), len(groups), figsize=(3.4 * len(groups), 2.8 * len(keys)), dpi=100,
                             squeeze=False)
    nb = nm = 0
    for name, per_group in curves.items():
        base = name in baselines
        style = _style(nb if base else nm, base)
        nb, nm = (nb + 1, nm) if base else (nb, nm + 1)
        for r, key in enumerate(keys):
            for c, group in enumerate(groups):
                xs, ys = per_group[group][key]
                axes[r, c].plot(xs, ys, ls="--" if base else "-", lw=1.3 if base else 2.0,
                                label=name + (" (baseline)" if base else ""), **style)
    for r, key in enumerate(keys):
        for c, group in enumerate(groups):
            ax = axes[r, c]
            ax.set_title(f"{group} (n={counts.get(group, 0)})", fontsize=10)
            ax.set_xlabel("horizon (s)")
            ax.set_ylabel(f"{key} (m)")
            ax.set_xlim(left=0)
            ax.set_ylim(bottom=0)
            ax.grid(alpha=0.3)
    axes[0, 0].legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    return _png(fig)


def class_bars(metrics: dict, keys: tuple[str, ...] = ("minADE@6", "minFDE@6", "MR@6", "brier-minFDE@6")) -> bytes:
    """Grouped bars: per class (and all), one bar per model and baseline, one panel per metric."""
    groups = ("all", *CLASSES)
    series = _series(metrics)
    fig, axes = plt.subplots(1, len(keys), figsize=(3.6 * len(keys), 3.2), dpi=100, squeeze=False)
    width = 0.8 / max(1, len(series))
    for j, key in enumerate(keys):
        ax = axes[0, j]
        nb = nm = 0
        for i, (name, blk, base) in enumerate(series):
            vals = [blk["overall"][key] if g == "all" else blk["by_class"][g][key] for g in groups]
            vals = [np.nan if v is None else v for v in vals]
            style = _style(nb if base else nm, base)
            nb, nm = (nb + 1, nm) if base else (nb, nm + 1)
            ax.bar(np.arange(len(groups)) + (i - (len(series) - 1) / 2) * width, vals, width,
                   hatch="//" if base else None, edgecolor="white", label=name + (" (baseline)" if base else ""), **style)
        ax.set_xticks(np.arange(len(groups)), groups, fontsize=8)
        ax.set_title(key, fontsize=10)
        ax.grid(axis="y", alpha=0.3)
    axes[0, 0].legend(fontsize=7)
    fig.tight_layout()
    return _png(fig)


def reliability_plot(curves: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]],
                     ece: dict[str, float | None]) -> bytes:
    """Reliability diagram: mean predicted probability vs how often that mode was the best (minFDE) mode."""
    fig, (ax, axh) = plt.subplots(1, 2, figsize=(9, 3.8), dpi=100, gridspec_kw={"width_ratios": [1.3, 1]})
    ax.plot([0, 1], [0, 1], color="#999999", ls=":", lw=1, label="perfectly calibrated")
    for i, (name, (centres, mean_p, freq, counts)) in enumerate(curves.items()):
        colour = MODE_COLOURS[i % 8]
        ok = counts > 0
        e = ece.get(name)
        ax.plot(mean_p[ok], freq[ok], marker="o", color=colour, label=f"{name} (ECE {e:.3f})" if e is not None else name)
        axh.bar(centres + (i - (len(curves) - 1) / 2) * (0.8 / len(curves) / len(centres)), counts,
                width=0.8 / len(curves) / len(centres), color=colour, label=name)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("predicted mode probability (bin mean)")
    ax.set_ylabel("frequency the mode is the best one")
    ax.set_title("reliability", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper left")
    axh.set_yscale("log")
    axh.set_ylim(bottom=0.5)
    axh.set_xlabel("predicted mode probability")
    axh.set_ylabel("(agent, mode) pairs")
    axh.set_title("how many per bin", fontsize=10)
    fig.tight_layout()
    return _png(fig)


# --------------------------------------------------------------------------------------------------
# scene pictures
# --------------------------------------------------------------------------------------------------


@dataclass
class SceneCase:
    """Everything one scene picture shows, in the world frame (metres)."""

    title: str
    agent_type: int
    history: np.ndarray  # [H, 2] observed positions up to and including t0
    gt: np.ndarray  # [T, 2] ground-truth future
    futures: np.ndarray  # [K, T, 2] predicted futures
    prob: np.ndarray  # [K]
    layers: dict | None = None  # map layers (shapely), None without a map
    baseline: np.ndarray | None = None  # [T, 2] constant-velocity prediction
    others_xy: np.ndarray = field(default_factory=lambda: np.zeros((0, 2)))  # [M, 2] other agents at t0
    others_type: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # [M]
    others_tail: list[np.ndarray] = field(default_factory=list)  # M x [h, 2] their recent observed positions
    subtitle: str = ""
    baseline_label: str = "constant velocity"  # legend of the dotted ``baseline`` line


def _polygon_path(poly, dx: float, dy: float) -> MplPath | None:
    from shapely.geometry.polygon import orient

    verts, codes = [], []
    for part in getattr(poly, "geoms", [poly]):
        if part.geom_type != "Polygon" or part.is_empty:
            continue
        part = orient(part, sign=1.0)  # exterior CCW, holes CW: holes stay empty under nonzero filling
        for ring in (part.exterior, *part.interiors):
            xy = np.asarray(ring.coords)[:, :2] - (dx, dy)
            verts += xy.tolist()
            codes += [MplPath.MOVETO] + [MplPath.LINETO] * (len(xy) - 2) + [MplPath.CLOSEPOLY]
    return MplPath(verts, codes) if verts else None


def _draw_map(ax, layers: dict, window, dx: float, dy: float) -> list:
    import shapely

    handles = []
    for layer, (face, edge, hatch, z, label) in MAP_STYLE.items():
        geoms = [g for g in layers.get(layer, []) if g is not None and not g.is_empty]
        drawn = False
        for g in geoms:
            if not g.intersects(window):
                continue
            clipped = shapely.clip_by_rect(g, *window.bounds)
            if clipped.is_empty:
                continue
            path = _polygon_path(clipped, dx, dy)
            if path is None:
                continue
            ax.add_patch(PathPatch(path, facecolor=face, edgecolor=edge, hatch=hatch, lw=0.6, zorder=z))
            drawn = True
        if drawn and label:
            handles.append(Patch(facecolor=face if face != "none" else "white", edgecolor=edge if edge != "none" else face,
                                 hatch=hatch, label=label))
    for g in layers.get("lane_centerline", []):
        if g.intersects(window):
            c = shapely.clip_by_rect(g, *window.bounds)
            for part in getattr(c, "geoms", [c]):
                if part.geom_type == "LineString" and not part.is_empty:
                    xy = np.asarray(part.coords)[:, :2] - (dx, dy)
                    ax.plot(xy[:, 0], xy[:, 1], color="#cfcfcf", lw=0.5, ls=(0, (4, 4)), zorder=2)
    return handles


def scene_plot(case: SceneCase, size_in: float = 7.0, min_extent: float = 30.0) -> bytes:
    """A readable picture of one agent's case; coordinates relative to the agent's position at t0."""
    import shapely

    origin = case.history[-1]
    dx, dy = float(origin[0]), float(origin[1])
    pts = [case.history, case.gt, case.futures.reshape(-1, 2)]
    if case.baseline is not None:
        pts.append(case.baseline)
    allp = np.concatenate([p for p in pts if len(p)])
    allp = allp[np.isfinite(allp).all(1)]
    lo, hi = allp.min(0), allp.max(0)
    centre = (lo + hi) / 2
    half = max(min_extent / 2, float((hi - lo).max()) / 2 + 6.0)
    window = shapely.box(centre[0] - half, centre[1] - half, centre[0] + half, centre[1] + half)

    fig, ax = plt.subplots(figsize=(size_in, size_in), dpi=110)
    ax.set_facecolor("white")
    handles = _draw_map(ax, case.layers, window, dx, dy) if case.layers else []

    # other agents at t0 (and their last observed positions)
    shown: set[int] = set()
    for xy, t, tail in zip(case.others_xy, case.others_type, case.others_tail, strict=False):
        if not window.contains(shapely.Point(xy)):
            continue
        shown.add(int(t))
        label, colour, marker = CLASS_STYLE.get(int(t), CLASS_STYLE[3])
        if len(tail) > 1:
            ax.plot(tail[:, 0] - dx, tail[:, 1] - dy, color=colour, lw=1.0, alpha=0.45, zorder=4)
        ax.scatter([xy[0] - dx], [xy[1] - dy], s=28, marker=marker, color=colour, edgecolor="black", lw=0.4,
                   alpha=0.8, zorder=5)
    for t in sorted(shown):
        label, colour, marker = CLASS_STYLE.get(t, CLASS_STYLE[3])
        handles.append(plt.Line2D([], [], ls="none", marker=marker, color=colour, markeredgecolor="black",
                                  label=f"other {label} at t0"))

    # predicted futures: alpha and width grow with the probability; probability at the endpoint
    order = np.argsort(case.prob)  # most likely drawn last (on top)
    pmax = float(case.prob.max()) if len(case.prob) else 1.0
    # labels of endpoints that nearly coincide are stacked, most likely on top, so none hides another
    label_offset: dict[int, int] = {}
    placed: list[np.ndarray] = []
    for k in order[::-1]:
        end = case.futures[k, -1]
        label_offset[int(k)] = sum(bool(np.hypot(*(end - q)) < 0.06 * half) for q in placed)
        placed.append(end)
    for k in order:
        p = float(case.prob[k])
        f = np.vstack([origin, case.futures[k]])  # drawn from the agent's position at t0
        colour = MODE_COLOURS[k % len(MODE_COLOURS)]
        alpha = 0.25 + 0.75 * (p / pmax if pmax > 0 else 0)
        ax.plot(f[:, 0] - dx, f[:, 1] - dy, color=colour, lw=0.8 + 4.0 * p, alpha=alpha, zorder=7,
                solid_capstyle="round")
        ax.scatter([f[-1, 0] - dx], [f[-1, 1] - dy], s=14 + 40 * p, color=colour, alpha=alpha, zorder=8)
        ax.annotate(f"{p:.2f}", (f[-1, 0] - dx, f[-1, 1] - dy), xytext=(5, 4 - 11 * label_offset[int(k)]),
                    textcoords="offset points",
                    fontsize=8, color=colour, fontweight="bold" if p == pmax else "normal", zorder=9,
                    bbox={"boxstyle": "round,pad=0.1", "fc": "white", "ec": "none", "alpha": 0.7})
    handles.append(plt.Line2D([], [], color=MODE_COLOURS[0], lw=3, label="predicted modes (width/opacity = prob.)"))
    if case.baseline is not None:
        b = np.vstack([origin, case.baseline])
        ax.plot(b[:, 0] - dx, b[:, 1] - dy, color="#555555", lw=1.2, ls=":", zorder=6)
        handles.append(plt.Line2D([], [], color="#555555", lw=1.2, ls=":", label=case.baseline_label))

    # the agent: history, ground truth
    h = case.history
    label, colour, marker = CLASS_STYLE.get(int(case.agent_type), CLASS_STYLE[3])
    ax.plot(h[:, 0] - dx, h[:, 1] - dy, color="black", lw=2.0, marker=".", ms=4, zorder=10)
    g = np.vstack([origin, case.gt])
    ax.plot(g[:, 0] - dx, g[:, 1] - dy, color="#00a000", lw=2.2, ls="--", zorder=10)
    ax.scatter([case.gt[-1, 0] - dx], [case.gt[-1, 1] - dy], s=70, marker="X", color="#00a000", edgecolor="black",
               lw=0.6, zorder=11)
    ax.scatter([0], [0], s=90, marker=marker, color="black", edgecolor="white", lw=1.0, zorder=11)
    handles += [
        plt.Line2D([], [], color="black", lw=2, marker=".", label=f"{label}: history"),
        plt.Line2D([], [], color="#00a000", lw=2.2, ls="--", marker="X", label="ground truth"),
    ]

    ax.set_xlim(centre[0] - half - dx, centre[0] + half - dx)
    ax.set_ylim(centre[1] - half - dy, centre[1] + half - dy)
    ax.set_aspect("equal")
    ax.set_xlabel("x (m, world axes, from the agent at t0)")
    ax.set_ylabel("y (m)")
    ax.set_title(case.title + ("\n" + case.subtitle if case.subtitle else ""), fontsize=9)
    ax.legend(handles=handles, fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)
    return _png(fig)
