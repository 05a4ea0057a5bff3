"""The table ``forecast evaluate`` prints: models and baselines, overall and per class, scene metrics."""

from __future__ import annotations

from forecast.evaluation.results import CLASSES


def _fmt(v: float | None, width: int = 10) -> str:
    return f"{'-':>{width}}" if v is None else f"{v:>{width}.3f}"


def format_table(metrics: dict) -> str:
    """Terminal table: rows model(s) and baselines; columns minADE@6, minFDE@6, MR@6, minFDE@1, brier; per class."""
    cols = ("minADE@6", "minFDE@6", "MR@6", "minFDE@1", "brier-minFDE@6")
    heads = ("minADE@6", "minFDE@6", "MR@6", "minFDE@1", "brier")
    rows = [(n, b) for n, b in metrics["models"].items()]
    rows += [(f"{n} (baseline)", b) for n, b in metrics["baselines"].items() if n not in metrics["models"]]
    width = max(24, *(len(n) + 4 for n, _ in rows))
    lines = [f"{'':<{width}}{'n':>7}" + "".join(f"{h:>10}" for h in heads)]
    for group in ("overall", *CLASSES):
        lines.append(group)
        for name, blk in rows:
            b = blk["overall"] if group == "overall" else blk["by_class"][group]
            lines.append(f"  {name:<{width - 2}}{b['n']:>7}" + "".join(_fmt(b[c]) for c in cols))
    scene = [(n, b["scene"]) for n, b in rows]
    lines.append("scene")
    lines.append(f"  {'':<{width - 2}}{'':>7}{'offroad':>10}{'overlap':>10}{'ECE':>10}")
    for name, sc in scene:
        lines.append(f"  {name:<{width - 2}}{'':>7}" + _fmt(sc["offroad_rate"]) + _fmt(sc["overlap_rate"])
                     + _fmt(sc["calibration_ece"]))
    return "\n".join(lines)
