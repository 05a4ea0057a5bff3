"""The safety engineer's part of ``report.html``: per-tag table, champion vs challenger with the most
regressed scenes drawn, suite results, and the case lists every number links to (in-page anchors).

Anchors: ``#tag-<tag>`` (a tag's cases), ``#regression-<rank>`` (a regressed scene's picture),
``#suite-case-<id>`` (a suite case), ``#section-by-tag``, ``#section-comparison``, ``#section-suite``.
"""

from __future__ import annotations

import base64
import dataclasses
import html

import numpy as np

from forecast.evaluation import plots as P
from forecast.evaluation.config import EvalConfig
from forecast.evaluation.results import METRIC_NAMES, EvalResult
from forecast.features.frames import to_world

HORIZON_MISS = ("MR@6_1s", "MR@6_2s", "MR@6_3s")
MAX_CASES_LISTED = 40  # per tag; the list says how many more there are


def _e(x: object) -> str:
    return html.escape(str(x), quote=True)


def _f(v, digits: int = 3) -> str:
    return "&ndash;" if v is None else f"{v:.{digits}f}"


def _anchor(text: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_" else "-" for ch in str(text))


def _link(target: str, text: str) -> str:
    return f'<a href="#{_anchor(target)}">{text}</a>'


def contents_html(metrics: dict) -> str:
    """Links to the safety sections present in this report."""
    links = [("section-by-tag", "per-tag metrics")]
    if metrics.get("comparison"):
        links.append(("section-comparison", "champion vs challenger"))
    if metrics.get("suite"):
        links.append(("section-suite", "scenario suite"))
    if metrics.get("by_tag"):
        links.append(("section-tag-cases", "cases by tag"))
    return '<div class="muted">Jump to: ' + " &middot; ".join(_link(a, _e(t)) for a, t in links) + "</div>"


def by_tag_html(result: EvalResult) -> str:
    """One row per (tag, predictor): n, the metrics and the miss rate at 1/2/3 s; every cell links to the tag's cases."""
    m = result.metrics
    if "by_tag" not in m:
        return ('<h2 id="section-by-tag">Per scenario tag</h2><div class="muted">No tag table: run '
                "<code>forecast tag --store STORE</code> once, then evaluate again.</div>")
    rows = [(n, b) for n, b in m["models"].items()]
    if "champion" in m:
        rows.append((m["champion"]["name"] + " (champion)", m["champion"]))
    rows += [(f"{n} (baseline)", b) for n, b in m["baselines"].items() if n not in m["models"]]
    miss = [k for k in HORIZON_MISS if k in next(iter(m["by_tag"].values()))]
    head = "".join(f"<th>{_e(h)}</th>" for h in ["tag", "model", "n", *METRIC_NAMES, *miss])
    body = []
    for tag, blk0 in m["by_tag"].items():
        rare = ' <span class="muted">(rare: read as anecdotes)</span>' if blk0["rare"] else ""
        for j, (name, b) in enumerate(rows):
            blk = b["by_tag"][tag]
            first = f'<td class="l" rowspan="{len(rows)}">{_link("tag-" + tag, _e(tag))}{rare}</td>' if j == 0 else ""
            cells = [_link("tag-" + tag, _f(blk[k])) for k in (*METRIC_NAMES, *miss)]
            cls = ' class="base"' if "(baseline)" in name else ""
            body.append(f"<tr{cls}>{first}<td class='l'>{_e(name)}</td><td>{_link('tag-' + tag, str(blk['n']))}</td>"
                        + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    note = ('<div class="muted">Tags describe what happens around the agent in [t0 &minus; 1 s, t0 + 3 s] (they look '
            "at the future: labels for evaluation, never model inputs); an agent can carry several. MR@6_Hs: miss rate "
            "of the best of 6 modes at horizon H. Rare: fewer agents than the configured minimum. Each number links "
            "to the tag's cases.</div>")
    return f'<h2 id="section-by-tag">Per scenario tag</h2><table><tr>{head}</tr>{"".join(body)}</table>{note}'


def tag_cases_html(result: EvalResult) -> str:
    """Per tag, the list of its cases (scenario, t0, agent, class, minFDE@6 of each model)."""
    if not result.scenario_tags:
        return ""
    ag = result.agents
    names = list(result.model_names) + ([result.champion] if result.champion else [])
    names = list(dict.fromkeys([*names, "constant_velocity"]))
    parts = ['<h2 id="section-tag-cases">Cases by tag</h2>']
    for tag, mask in result.scenario_tags.items():
        rows = np.flatnonzero(mask)
        parts.append(f'<h3 id="{_anchor("tag-" + tag)}">{_e(tag)} ({len(rows)} agents)</h3>')
        if len(rows) == 0:
            parts.append('<div class="muted">no case in this evaluation</div>')
            continue
        order = rows[np.argsort(-np.nan_to_num(result.per_agent[names[0]]["minFDE@6"][rows], nan=-1), kind="stable")]
        head = "".join(f"<th>{_e(h)}</th>" for h in ["scenario", "t0 (store step)", "agent", "class",
                                                   *[f"minFDE@6 {n}" for n in names]])
        body = []
        for i in order[:MAX_CASES_LISTED]:
            tid = result.track_id[i] if result.track_id is not None else ag.row[i]
            t0 = result.store_t0[i] if result.store_t0 is not None else ag.t0[i]
            body.append(f"<tr><td class='l'>{_e(ag.scenario_id[i])}</td><td>{int(t0)}</td><td class='l'>{_e(tid)}</td>"
                        f"<td class='l'>{_e(ag.agent_class[i])}</td>"
                        + "".join(f"<td>{_f(float(result.per_agent[n]['minFDE@6'][i]))}</td>" for n in names) + "</tr>")
        more = (f'<div class="muted">worst {MAX_CASES_LISTED} of {len(rows)} shown (by minFDE@6 of {_e(names[0])})</div>'
                if len(rows) > MAX_CASES_LISTED else "")
        parts.append(f"<table><tr>{head}</tr>{''.join(body)}</table>{more}")
    return "\n".join(parts)


def _delta_cell(d: dict | None, tag: str | None) -> str:
    if not d or d.get("delta") is None:
        return "&ndash;"
    worse = d["ci_low"] is not None and d["ci_low"] > 0
    better = d["ci_high"] is not None and d["ci_high"] < 0
    style = ' style="color:#b00020;font-weight:bold"' if worse else (' style="color:#007a1f"' if better else "")
    text = f'<span{style}>{d["delta"]:+.3f}</span> [{_f(d["ci_low"])}, {_f(d["ci_high"])}]'
    return _link("tag-" + tag, text) if tag else text


def comparison_html(result: EvalResult, cfg: EvalConfig, layers: dict[str, dict], keep, make_case) -> str:
    """Deltas (challenger - champion) overall, by class and by tag with intervals; the most regressed scenes drawn."""
    c = result.metrics.get("comparison")
    if not c:
        return ""
    if c.get("skipped"):
        return f'<h2 id="section-comparison">Champion vs challenger</h2><div class="muted">{_e(c["skipped"])}.</div>'
    keys = ("minFDE@6", "minADE@6", "MR@6", "minFDE@1")
    parts = [f'<h2 id="section-comparison">Champion vs challenger: {_e(c["challenger"])} vs {_e(c["champion"])}</h2>',
             f'<div class="muted">Champion: {_e(c.get("champion_spec"))}. Delta = challenger &minus; champion on the '
             f"same agents (positive: the challenger is worse), with the {100 * c['level']:.0f}% bootstrap interval "
             f"over scenarios ({c['bootstrap']} resamples). Red: worse with the whole interval above 0; green: better. "
             f"{c['num_worse_scenes']} of {c['num_scenes']} scenes got worse in minFDE@6 (mean over their agents).</div>"]
    head = "".join(f"<th>{_e(h)}</th>" for h in ["group", "n", "scenarios", *keys])
    rows = [f"<tr><td class='l'>overall</td><td>{c['overall']['n']}</td><td>{c['overall']['n_scenarios']}</td>"
            + "".join(f"<td>{_delta_cell(c['overall'][k], None)}</td>" for k in keys) + "</tr>"]
    for family in ("by_class", "by_tag"):
        for g, e in c.get(family, {}).items():
            tag = g if family == "by_tag" else None
            label = _link("tag-" + g, _e(g)) if tag else _e(g)
            rows.append(f"<tr><td class='l'>{family[3:]}: {label}</td><td>{e['n']}</td><td>{e['n_scenarios']}</td>"
                        + "".join(f"<td>{_delta_cell(e[k], tag)}</td>" for k in keys) + "</tr>")
    parts.append(f"<table><tr>{head}</tr>{''.join(rows)}</table>")
    parts.append("<h3>Most regressed scenes</h3>")
    if not c["regressions"]:
        parts.append('<div class="muted">No scene got worse.</div>')
        return "\n".join(parts)
    head = "".join(f"<th>{_e(h)}</th>" for h in ["rank", "scenario", "agent", "t0 (store step)", "challenger minFDE@6",
                                               "champion minFDE@6", "delta", "tags"])
    rows = []
    for r in c["regressions"]:
        target = "regression-" + str(r["rank"])
        delta = "{:+.3f}".format(r["delta_minFDE@6"])
        tags = ", ".join(_link("tag-" + t, _e(t)) for t in r["tags"])
        rows.append(f"<tr><td>{_link(target, str(r['rank']))}</td><td class='l'>{_e(r['scenario_id'])}</td>"
                    f"<td class='l'>{_e(r.get('track_id', ''))}</td><td>{r['t0']}</td>"
                    f"<td>{_f(r['challenger_minFDE@6'])}</td><td>{_f(r['champion_minFDE@6'])}</td>"
                    f"<td>{_link(target, delta)}</td><td class='l'>{tags}</td></tr>")
    parts.append(f"<table><tr>{head}</tr>{''.join(rows)}</table>")
    parts.append('<div class="grid">')
    for r in c["regressions"]:
        png = P.scene_plot(regression_case(result, r["row"], layers, r["rank"], make_case))
        img = _img(keep("regression_{:02d}.png".format(r["rank"]), png), "regression {}".format(r["rank"]))
        parts.append('<div id="{}">{}</div>'.format(_anchor("regression-" + str(r["rank"])), img))
    parts.append("</div>")
    parts.append('<div class="muted">Coloured: the challenger\'s modes; dotted grey: the champion\'s most likely '
                 "future; green dashed: what happened.</div>")
    return "\n".join(parts)


def regression_case(result: EvalResult, row: int, layers: dict[str, dict], rank: int, make_case) -> P.SceneCase:
    """The challenger's scene picture of ``row`` (``make_case``: report's picture builder) with the champion's most
    likely future as the dotted line."""
    ch, cp = result.model_names[0], result.champion
    assert cp is not None
    case = make_case(result, ch, row, layers, f"regression #{rank}")
    out = result.outputs[cp]
    ag = result.agents
    best = out.pred[row, int(np.argmax(out.prob[row]))].astype(np.float64)
    champ = to_world(best[None], ag.origin[row][None], ag.heading[row][None])[0]
    d = result.per_agent[ch]["minFDE@6"][row] - result.per_agent[cp]["minFDE@6"][row]
    return dataclasses.replace(case, baseline=champ, baseline_label=f"{cp} (champion, most likely)",
                               title=case.title + f" | +{d:.2f} m vs champion")


def _img(png: bytes, alt: str) -> str:
    return f'<img src="data:image/png;base64,{base64.b64encode(png).decode("ascii")}" alt="{_e(alt)}">'


def suite_html(metrics: dict) -> str:
    """Pass/fail per case and model; the summary counts link to the case table."""
    s = metrics.get("suite")
    if not s:
        return ""
    summary = "; ".join(
        _e(n) + ": " + _link("suite-cases", "{passed} passed, {failed} failed, {missing} missing".format(**v))
        for n, v in s["summary"].items())
    head = "".join(f"<th>{_e(h)}</th>" for h in ["case", "scenario", "t0", "agent", "expect", *s["models"], "why"])
    rows = []
    for c in s["cases"]:
        cells = []
        for n in s["models"]:
            r = c["results"][n]
            colour = {"pass": "#007a1f", "fail": "#b00020", "missing": "#777"}[r["status"]]
            cells.append(f'<td class="l" title="{_e(r["reason"])}"><b style="color:{colour}">{r["status"]}</b> '
                         f'<span class="muted">{_e(r["reason"])}</span></td>')
        rows.append(f'<tr id="{_anchor("suite-case-" + c["id"])}"><td class="l">{_e(c["id"])}</td>'
                    f"<td class='l'>{_e(c['scenario_id'])}</td><td>{c['t0']}</td><td class='l'>{_e(c['track_id'])}</td>"
                    f"<td class='l'>{_e(c['expect'])}</td>{''.join(cells)}<td class='l muted'>{_e(c['why'])}</td></tr>")
    return (f'<h2 id="section-suite">Scenario suite {_e(s["name"])} v{s["version"]}</h2>'
            f'<div class="muted">{_e(s.get("description", ""))} ({_e(s["file"])}). {summary}. A missing case '
            "(scenario, agent or future not in this store) never passes.</div>"
            f'<table id="suite-cases"><tr>{head}</tr>{"".join(rows)}</table>')
