"""``report.html``: one self-contained page (inline CSS, PNGs as base64 data URIs, no external links).

Sections: summary table (models and baselines), per-class tables, metrics by horizon, plots
(horizon curves, per-class bars, reliability diagram), scene pictures of the worst and of random
cases per model, slice tables, and the definitions used.
"""

from __future__ import annotations

import base64
import html
from pathlib import Path

import numpy as np

from forecast import metrics as M
from forecast.evaluation import plots as P
from forecast.evaluation import report_scenarios as RS
from forecast.evaluation.aggregate import calibration_of
from forecast.evaluation.config import EvalConfig
from forecast.evaluation.results import CLASSES, METRIC_NAMES, EvalResult
from forecast.evaluation.spill import read_rows, row_chunks
from forecast.features.frames import to_world

CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:24px auto;max-width:1200px;color:#222;
     padding:0 16px;line-height:1.4}
h1{font-size:1.5em;margin-bottom:4px} h2{font-size:1.2em;margin-top:32px;border-bottom:1px solid #ddd;padding-bottom:4px}
h3{font-size:1.02em;margin:18px 0 6px}
table{border-collapse:collapse;margin:8px 0 16px;font-size:0.86em}
th,td{border:1px solid #ddd;padding:3px 8px;text-align:right;white-space:nowrap}
th{background:#f4f4f4} td.l,th.l{text-align:left}
tr.base td{color:#666;background:#fafafa} td.best{font-weight:bold;background:#eaf5ea}
.meta td{text-align:left} .muted{color:#777;font-size:0.85em}
img{max-width:100%;border:1px solid #eee} .grid{display:grid;grid-template-columns:1fr 1fr;gap:10px}
.note{font-size:0.85em;color:#444;background:#f8f8f8;padding:8px 12px;border-left:3px solid #ccc}
"""


def _e(x: object) -> str:
    return html.escape(str(x), quote=True)


def _f(v: float | None, digits: int = 3) -> str:
    return "&ndash;" if v is None else f"{v:.{digits}f}"


def _img(png: bytes, alt: str) -> str:
    return f'<img src="data:image/png;base64,{base64.b64encode(png).decode("ascii")}" alt="{_e(alt)}">'


def _rows(metrics: dict) -> list[tuple[str, dict, bool]]:
    """(name, block, is_baseline): the models, then the baselines not already given as a model."""
    out = [(n, b, False) for n, b in metrics["models"].items()]
    out += [(n, b, True) for n, b in metrics["baselines"].items() if n not in metrics["models"]]
    return out


def horizon_curves(result: EvalResult, names: list[str], keys: tuple[str, ...] = ("minADE@6", "minFDE@6"),
                   max_points: int = 30) -> dict:
    """``{name: {group: {key: (seconds, values)}}}``: metrics truncated at (up to ``max_points``) steps.

    Means over the agents of each group, summed chunk by chunk (the arrays may be on disk)."""
    unknown = set(keys) - {"minADE@6", "minFDE@6"}
    if unknown:
        raise ValueError(f"horizon curves know minADE@6 and minFDE@6, not {sorted(unknown)}")
    ag = result.agents
    dt = result.scenes.cfg.dt
    t = ag.gt.shape[1]
    steps = np.unique(np.linspace(1, t, min(t, max_points)).round().astype(int))
    groups = {"all": np.ones(len(ag), bool), **{c: ag.agent_class == c for c in CLASSES}}
    out: dict = {}
    for name in names:
        o = result.outputs[name]
        k6 = min(6, o.pred.shape[1])
        total = {(g, key): np.zeros(len(steps)) for g in groups for key in keys}
        count = {(g, key): np.zeros(len(steps)) for g in groups for key in keys}
        for lo, hi in row_chunks(ag.sample):
            pred_c, prob_c = read_rows(o.pred, lo, hi), read_rows(o.prob, lo, hi)
            gt_c, valid_c = read_rows(ag.gt, lo, hi), read_rows(ag.valid, lo, hi)
            ade, fde = M.min_ade_fde_at_horizons(pred_c, gt_c, prob_c, steps, k=k6, valid=valid_c)  # [S, n] each
            for key, values in (("minADE@6", ade), ("minFDE@6", fde)):
                if key not in keys:
                    continue
                for j, v in enumerate(values):
                    for g, mask in groups.items():
                        keep = mask[lo:hi] & ~np.isnan(v)
                        total[g, key][j] += v[keep].sum()
                        count[g, key][j] += keep.sum()
        with np.errstate(invalid="ignore", divide="ignore"):
            out[name] = {g: {key: (steps * dt, np.where(count[g, key] > 0, total[g, key] / count[g, key], np.nan))
                             for key in keys} for g in groups}
    return out


def _table(header: list[str], rows: list[tuple[list[str], bool]], best_cols: dict[int, list[float | None]] | None = None,
           left: int = 1) -> str:
    """rows: (cells, is_baseline). best_cols: column index -> values, the smallest is highlighted."""
    best = {}
    for col, vals in (best_cols or {}).items():
        present = [v for v in vals if v is not None]
        if present:
            best[col] = min(present)
    h = "".join(f'<th class="l">{_e(c)}</th>' if i < left else f"<th>{_e(c)}</th>" for i, c in enumerate(header))
    body = []
    for r, (cells, base) in enumerate(rows):
        tds = []
        for i, c in enumerate(cells):
            cls = "l" if i < left else ""
            if i in best and best_cols is not None and best_cols[i][r] is not None and best_cols[i][r] == best[i]:
                cls += " best"
            tds.append(f'<td class="{cls.strip()}">{c}</td>' if cls.strip() else f"<td>{c}</td>")
        body.append(f'<tr class="base">{"".join(tds)}</tr>' if base else f"<tr>{''.join(tds)}</tr>")
    return f"<table><tr>{h}</tr>{''.join(body)}</table>"


def _block_table(items: list[tuple[str, dict, bool]], extra: list[tuple[str, callable]] | None = None) -> str:
    """Rows: (name, block, is_baseline); columns n + the six metrics (+ extras)."""
    extra = extra or []
    header = ["", "n", *METRIC_NAMES, *[e[0] for e in extra]]
    rows = []
    cols: dict[int, list] = {2 + j: [] for j in range(len(METRIC_NAMES))}
    for name, blk, base in items:
        cells = [_e(name + (" (baseline)" if base else "")), str(blk["n"])]
        for j, key in enumerate(METRIC_NAMES):
            cells.append(_f(blk[key]))
            cols[2 + j].append(blk[key])
        cells += [fn(name) for _, fn in extra]
        rows.append((cells, base))
    return _table(header, rows, cols)


# --------------------------------------------------------------------------------------------------
# scene pictures
# --------------------------------------------------------------------------------------------------


def make_case(result: EvalResult, name: str, i: int, layers: dict[str, dict], why: str) -> P.SceneCase:
    """The SceneCase of row ``i`` of the evaluation for predictor ``name``."""
    ag, out, scenes = result.agents, result.outputs[name], result.scenes
    idx = scenes.index[int(ag.sample[i])]
    tracks = scenes.tracks[idx.scenario]
    t0, th = idx.t0, scenes.cfg.history_steps
    a = int(idx.agents[int(ag.row[i])])
    span = np.arange(max(0, t0 - th + 1), t0 + 1)
    history = tracks.xy[a, span][tracks.present[a, span]]
    o, hd = ag.origin[i][None], ag.heading[i][None]
    gt = to_world(ag.gt[i][None], o, hd)[0][ag.valid[i]]
    futures = to_world(out.pred[i][None].astype(np.float64), o, hd)[0]
    baseline = None
    if name != "constant_velocity" and "constant_velocity" in result.outputs:
        baseline = to_world(result.outputs["constant_velocity"].pred[i, 0][None].astype(np.float64), o, hd)[0]
    here = np.flatnonzero(tracks.present[:, t0])
    here = here[here != a]
    tail_span = np.arange(max(0, t0 - 10), t0 + 1)
    tails = [tracks.xy[j, tail_span][tracks.present[j, tail_span]] for j in here]
    per = result.per_agent[name]
    cv = result.per_agent.get("constant_velocity", {}).get("minFDE@6")
    title = (f"{why}: {name} | {ag.agent_class[i]} at {ag.speed[i]:.1f} m/s | minFDE@6 {per['minFDE@6'][i]:.2f} m"
             + (f" (CV {cv[i]:.2f} m)" if cv is not None and name != "constant_velocity" else ""))
    tags = result.tags
    sub = (f"{ag.scenario_id[i]}  t0={int(ag.t0[i])} ({ag.t0[i] * scenes.cfg.dt:.1f} s)  K={out.pred.shape[1]}"
           + (f"  near crosswalk: {tags['near_crosswalk'][i]}  junction: {tags['in_junction'][i]}" if tags else ""))
    return P.SceneCase(
        title=title, subtitle=sub, agent_type=int(ag.agent_type[i]), history=history, gt=gt, futures=futures,
        prob=out.prob[i].astype(np.float64), layers=layers.get(ag.map_id[i]) if ag.map_id[i] else None,
        baseline=baseline, others_xy=tracks.xy[here, t0], others_type=tracks.agent_type[here], others_tail=tails,
    )


def pick_cases(result: EvalResult, name: str, num_worst: int, num_random: int, seed: int) -> list[tuple[int, str]]:
    """(row, why): the ``num_worst`` highest minFDE@6 rows, then ``num_random`` other random rows."""
    fde = np.nan_to_num(result.per_agent[name]["minFDE@6"], nan=-np.inf)
    order = np.argsort(-fde, kind="stable")
    worst = [int(i) for i in order[:num_worst]]
    rest = np.setdiff1d(np.arange(len(fde)), worst)
    rng = np.random.default_rng(seed)
    rand = [int(i) for i in rng.choice(rest, size=min(num_random, len(rest)), replace=False)] if len(rest) else []
    return [(i, f"worst #{j + 1}") for j, i in enumerate(worst)] + [(i, "random") for i in sorted(rand)]


# --------------------------------------------------------------------------------------------------
# the page
# --------------------------------------------------------------------------------------------------


def world_model_card_html(card: dict) -> str:
    """The world-model card: one row per behaviour, one column per predictor (the model and CV)."""
    names = [k for k in card if k not in ("goals", "pairs")]

    def get(name: str, *path: str):
        v = card[name]
        for p in path:
            v = (v or {}).get(p) if isinstance(v, dict) else None
        return v

    def pct(v) -> str:
        return "&ndash;" if v is None else f"{100 * v:+.1f}%"

    rows: list[tuple[str, callable]] = []
    for probe in ("pedestrian_on_crossing", "lead_vehicle_braking", "cyclist_in_lane", "queued_leader_removed"):
        rows.append((f"{probe}: right direction (n={card['pairs'].get(probe, 0)})",
                     lambda n, p=probe: _f(get(n, "interaction", p, "right_direction"), 2)))
        rows.append((f"{probe}: mean effect on 3 s travel [m]",
                     lambda n, p=probe: _f(get(n, "interaction", p, "mean_effect_m"), 3)))
    rows += [
        ("interaction: mean right direction (chance 0.5)", lambda n: _f(get(n, "interaction", "mean_right_direction"), 2)),
        ("action: others' minFDE with the focal agent's plan", lambda n: pct(get(n, "action_conditioning",
                                                                                "others_minFDE_change"))),
        ("action: minFDE of agents within 20 m of the plan (goal <= -5%)",
         lambda n: pct(get(n, "action_conditioning", "near_minFDE_change"))),
        ("action: their most likely mode's FDE", lambda n: pct(get(n, "action_conditioning", "near_minFDE1_change"))),
        ("action: how far the plan moves their predicted endpoints [m]",
         lambda n: _f(get(n, "action_conditioning", "near_endpoint_shift_m"), 3)),
        ("persistence: minFDE, full history", lambda n: _f(get(n, "persistence", "full", "minFDE"))),
        ("persistence: 20% of frames dropped (goal <= +10%)",
         lambda n: pct(get(n, "persistence", "drop_20", "minFDE_degradation"))),
        ("persistence: 50% of frames dropped", lambda n: pct(get(n, "persistence", "drop_50", "minFDE_degradation"))),
        ("persistence: hidden for 1 s", lambda n: pct(get(n, "persistence", "hidden_1s", "minFDE_degradation"))),
        ("generalisation: val minFDE", lambda n: _f(get(n, "generalisation", "val_minFDE"))),
        ("generalisation: test minFDE", lambda n: _f(get(n, "generalisation", "test_minFDE"))),
        ("generalisation: test / val (goal <= 1.15)", lambda n: _f(get(n, "generalisation", "test_to_val"))),
    ]
    for name in names:
        for m_id, ratio in sorted((get(name, "generalisation", "test_to_val_by_map") or {}).items()):
            rows.append((f"generalisation: {m_id} / val ({name})", lambda n, r=ratio, own=name: _f(r) if n == own else ""))
    table = _table(["behaviour", *names], [([_e(label), *[fn(n) for n in names]], False) for label, fn in rows], left=1)
    note = ('<div class="muted">Probes are paired scenes that differ in one cause (a pedestrian on the crossing, '
            "a braking leader, a cyclist in the lane); the right direction is less predicted travel for the vehicle "
            "when the cause is there; ties (under 1 cm) count half, so a model that ignores other agents scores 0.5. "
            "Action: the focal agent's true future given as the plan; negative is better. Persistence: the same "
            "agents with history frames removed. Generalisation: test maps and network types not seen in training "
            "against the validation split.</div>")
    return "<h2>World-model card</h2>" + table + note


def build_report(result: EvalResult, cfg: EvalConfig, layers: dict[str, dict], plots_dir: Path | None = None) -> str:
    """The HTML text; PNGs are embedded (and also written to ``plots_dir`` when given)."""
    m = result.metrics
    saved: dict[str, bytes] = {}

    def keep(fname: str, png: bytes) -> bytes:
        saved[fname] = png
        return png

    parts: list[str] = []
    models = ", ".join(result.model_names)
    parts.append(f"<h1>Offline evaluation: {_e(models)}</h1>")
    parts.append(f'<div class="muted">split <b>{_e(m["split"])}</b> of store {_e(m["store"])}</div>')
    f = m["features"]
    meta = [
        ("samples / scenarios", f"{m['num_samples']} / {m['num_scenarios']}"),
        ("scored agents", ", ".join(f"{c} {m['num_agents'][c]}" for c in CLASSES) + f" (total {m['overall']['n']})"),
        ("features", f"history {f['history_steps']} steps, future {f['future_steps']} steps at dt {f['dt']:g} s "
                     f"({f['future_steps'] * f['dt']:g} s horizon)"),
        ("sampling", f"t0 stride {cfg.t0_stride}, max samples {cfg.max_samples}, seed {cfg.seed}"),
        ("modes", ", ".join(f"{n}: K={b['num_modes']}" for n, b in m["models"].items())),
    ]
    parts.append('<table class="meta">' + "".join(f"<tr><th class='l'>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in meta)
                 + "</table>")
    parts.append(RS.contents_html(m))

    # summary
    parts.append("<h2>Summary</h2>")
    rows = _rows(m)
    header = ["", "n", *METRIC_NAMES, "off-road", "overlap", "ECE"]
    cells, cols = [], {i: [] for i in range(2, 2 + len(METRIC_NAMES) + 3)}
    for name, blk, base in rows:
        vals = [blk["overall"][k] for k in METRIC_NAMES] + [blk["scene"][k] for k in ("offroad_rate", "overlap_rate",
                                                                                       "calibration_ece")]
        for j, v in enumerate(vals):
            cols[2 + j].append(v)
        cells.append(([_e(name + (" (baseline)" if base else "")), str(blk["overall"]["n"]), *[_f(v) for v in vals]],
                      base))
    parts.append(_table(header, cells, cols))
    sc = m["scene"]
    parts.append(f'<div class="muted">Reference on the ground truth itself: off-road {_f(sc["offroad_rate_gt"])}, '
                 f'overlap {_f(sc["overlap_rate_gt"])} (the floor for these disc sizes). Best value per column in '
                 f'green.</div>')

    parts.append(_probability_section(rows))

    # per class
    parts.append("<h2>Per class</h2>")
    for c in CLASSES:
        parts.append(f"<h3>{_e(c)} (n={m['num_agents'][c]})</h3>")
        parts.append(_block_table([(n, b["by_class"][c], base) for n, b, base in rows]))

    # horizons
    parts.append("<h2>By horizon</h2>")
    for h in m["by_horizon"]:
        parts.append(f"<h3>{_e(h)}</h3>")
        parts.append(_block_table([(n, b["by_horizon"][h], base) for n, b, base in rows]))

    # plots
    parts.append("<h2>Plots</h2>")
    names = [n for n, _, _ in rows]
    counts = {"all": m["overall"]["n"], **m["num_agents"]}
    curves = horizon_curves(result, names)
    parts.append(_img(keep("horizon.png", P.horizon_plot(curves, set(m["baselines"]) - set(m["models"]), counts)),
                      "metrics by horizon"))
    parts.append(_img(keep("classes.png", P.class_bars(m)), "metrics by class"))
    curves, ece = {}, {}
    for name in result.model_names:
        out = result.outputs[name]
        curves[name] = calibration_of(out, result.agents, cfg.calibration_bins)
        ece[name] = m["models"][name]["scene"]["calibration_ece"]
    parts.append(_img(keep("reliability.png", P.reliability_plot(curves, ece)), "reliability diagram"))
    parts.append('<div class="muted">Reliability: every (agent, mode) pair adds its probability; the outcome is whether '
                 "that mode has the smallest endpoint error. Single-mode models sit at (1, 1).</div>")

    # scene pictures
    for name in result.model_names:
        parts.append(f"<h2>Cases: {_e(name)}</h2>")
        parts.append(f'<div class="muted">The {cfg.num_worst} agents with the highest minFDE@6, then {cfg.num_random} '
                     "random ones. Black: history; green dashed: ground truth; coloured: predicted modes (width and "
                     "opacity by probability, probability at the endpoint); dotted grey: constant velocity; markers: "
                     "other agents at t0 with their last second.</div>")
        parts.append('<div class="grid">')
        for j, (i, why) in enumerate(pick_cases(result, name, cfg.num_worst, cfg.num_random, cfg.seed)):
            png = P.scene_plot(make_case(result, name, i, layers, why))
            safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name)
            parts.append(_img(keep(f"case_{safe}_{j:02d}.png", png), f"{why} case of {name}"))
        parts.append("</div>")

    # slices
    parts.append("<h2>Slices</h2>")
    parts.append('<div class="muted">Each family partitions the scored agents (n sums to the total). near_crosswalk: '
                 "within 5 m of a crosswalk at t0. in_junction: SUMO maps, inside the drivable area but in no lane "
                 "polygon; AV2 maps (no junction layer), covered by two or more lane polygons.</div>")
    cv = m["baselines"]["constant_velocity"]["slices"]
    for name in result.model_names:
        parts.append(f"<h3>{_e(name)}</h3>")
        header = ["family", "value", "n", *METRIC_NAMES, "CV minFDE@6"]
        srows = []
        for fam, vals in m["models"][name]["slices"].items():
            for v, blk in vals.items():
                srows.append(([_e(fam), _e(v), str(blk["n"]), *[_f(blk[k]) for k in METRIC_NAMES],
                               _f(cv[fam][v]["minFDE@6"])], False))
        parts.append(_table(header, srows, left=2))

    if m.get("world_model"):
        parts.append(world_model_card_html(m["world_model"]))

    parts.append(RS.by_tag_html(result))
    parts.append(RS.comparison_html(result, cfg, layers, keep, make_case))
    parts.append(RS.suite_html(m))
    parts.append(RS.tag_cases_html(result))

    parts.append("<h2>Definitions</h2>")
    parts.append(
        '<div class="note">Displacements in metres; means over scored agents (each with its whole future). '
        "minADE@k / minFDE@k: smallest average / final displacement error among the k most probable modes (all modes "
        "when a model has fewer than k). MR@6: minFDE@6 above "
        f"{cfg.miss_threshold:g} m. brier-minFDE@6: minFDE@6 + (1 &minus; p)&sup2; of that mode. Off-road: vehicles whose "
        "most likely endpoint is outside the drivable area. Overlap: agents whose most likely future comes closer to "
        "another agent's most likely future (same sample, same step) than the sum of their radii (vehicle 2.0 m, "
        "cyclist 0.8 m, pedestrian 0.3 m). ECE: expected calibration error of the mode probabilities "
        f"({cfg.calibration_bins} bins).</div>")

    if plots_dir is not None:
        plots_dir.mkdir(parents=True, exist_ok=True)
        for old in plots_dir.glob("*.png"):  # an earlier evaluation into the same folder: its cases are not these
            if old.name not in saved:
                old.unlink(missing_ok=True)
        for fname, png in saved.items():
            (plots_dir / fname).write_bytes(png)
    body = "\n".join(parts)
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>evaluation: {_e(models)}</title>'
            f"<style>{CSS}</style></head><body>\n{body}\n</body></html>\n")


def _probability_section(rows: list) -> str:
    """Per class: the most likely mode, brier-minFDE@6 (and its gap to minFDE@6) and the calibration error;
    then the joint (scene-level) metrics of the modes shared by a sample's agents."""
    keys = ("minFDE@1", "least-risk FDE", "brier gap", "ECE")
    header = ["", *(f"{c} {k}" for c in CLASSES for k in keys)]
    cells, cols = [], {i: [] for i in range(1, 1 + len(keys) * len(CLASSES))}
    for name, blk, base in rows:
        vals = []
        for c in CLASSES:
            b = blk["by_class"][c]
            gap = None if b["brier-minFDE@6"] is None or b["minFDE@6"] is None else b["brier-minFDE@6"] - b["minFDE@6"]
            vals += [b["minFDE@1"], b.get("FDE-least-risk"), gap,
                     (blk["scene"].get("calibration_ece_by_class") or {}).get(c)]
        for j, v in enumerate(vals):
            cols[1 + j].append(v)
        cells.append(([_e(name + (" (baseline)" if base else "")), *[_f(v) for v in vals]], base))
    out = ["<h2>Mode probabilities</h2>", _table(header, cells, cols),
           '<div class="muted">minFDE@1: the most likely mode alone. Least-risk FDE: the mode of least expected '
           "endpoint error under the model's own probabilities (the single future to read). "
           "Brier gap: brier-minFDE@6 minus minFDE@6 "
           "((1 - p)^2 of the best mode; 0.69 m for uniform probabilities over 6 modes). ECE: expected calibration "
           "error of the mode probabilities in that class.</div>"]
    jheader = ["", "scenes", "avgMinADE", "avgMinFDE", "actor MR"]
    jcells, jcols = [], {2: [], 3: [], 4: []}
    for name, blk, base in rows:
        j = blk.get("joint") or {}
        vals = [j.get("avgMinADE"), j.get("avgMinFDE"), j.get("actorMR")]
        for i, v in enumerate(vals):
            jcols[2 + i].append(v)
        jcells.append(([_e(name + (" (baseline)" if base else "")), str(j.get("n_scenes", "-")), *[_f(v) for v in vals]],
                       base))
    out += ["<h3>Joint futures (Argoverse 2 multi-agent definitions)</h3>", _table(jheader, jcells, jcols),
            '<div class="muted">Mode k of every scored agent of a sample is one joint future; per sample the mode '
            "with the lowest average FDE is the best world: avgMinADE/avgMinFDE are its average errors (mean over "
            "samples), actor MR the share of agents it misses by more than 2 m.</div>"]
    return "\n".join(out)
