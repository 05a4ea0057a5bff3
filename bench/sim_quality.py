"""How clean simulated tracks are: one-step jumps before/after our SUMO settings and the centre fix.

Usage: python bench/sim_quality.py [--config configs/data/sumo_demo.yaml] [--json PATH]
Simulates every network of the config twice (cached under bench/results/sim_quality/):
with SUMO's behaviour as the project had it (instant lane changes, stuck vehicles teleported,
4-point walking-area paths) and with ``forecast.sim.sumo.SumoOptions()``. For each class it
counts the steps of 0.1 s in which an agent moves more than its reported speed allows plus
1 m, on SUMO's reported points (front bumpers) and on the centres the adapter stores, how the
validator quarantines what is left, and the jumps left among the rows the store keeps.
Issue 10 item 5: remove the jumps at their source or quarantine them, and say how many remain.
"""

from __future__ import annotations

import argparse
import json
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
from _common import RESULTS, report

from forecast.config import from_dict, load_yaml
from forecast.data.schema import AGENT_TYPE_LABELS
from forecast.data.sources.sumo import SUMO_DT, fcd_to_rows
from forecast.data.validate import validate_rows
from forecast.sim.quality import one_step_jumps
from forecast.sim.sumo import SimConfig, SumoOptions, simulate

SETTINGS = {
    "before (instant lane changes, teleports)": SumoOptions(lanechange_duration_s=0.0, stuck="teleport",
                                                            walkingarea_detail=4),
    "after (SumoOptions defaults)": SumoOptions(),
}
JUMP_REASONS = ("impossible speed implied by consecutive positions",
                "cut off by an impossible jump in the track (its longest jump-free part is kept)")


def measure(run: Path) -> dict[str, Counter]:
    table = pq.read_table(run / "fcd.parquet")
    meta = json.loads((run / "run.json").read_text())
    rows = fcd_to_rows(table, meta.get("vtypes", {}), meta.get("vtype_lengths", {}))
    track, t, speed = rows.track_code, rows.time, rows.speed
    cls = np.array([AGENT_TYPE_LABELS[c] if c >= 0 else "unknown" for c in rows.agent_type])
    front = one_step_jumps(track, t, table["vehicle_x"].to_numpy(), table["vehicle_y"].to_numpy(), speed)
    centre = one_step_jumps(track, t, rows.x, rows.y, speed)
    offset = np.hypot(rows.x - table["vehicle_x"].to_numpy(), rows.y - table["vehicle_y"].to_numpy())
    keep, _, q = validate_rows(rows, SUMO_DT, "sumo", str(run / "fcd.parquet"))
    kept = rows.take(keep)
    left = one_step_jumps(kept.track_code, kept.time, kept.x, kept.y, kept.speed)
    qrow = np.isin(q.reason.astype(str), JUMP_REASONS)
    out = {k: Counter() for k in ("rows", "front", "centre", "quarantined", "left", "offset_sum", "offset_max")}
    for c in np.unique(cls):
        m = cls == c
        out["rows"][c] += int(m.sum())
        out["front"][c] += int(front[m].sum())
        out["centre"][c] += int(centre[m].sum())
        out["quarantined"][c] += int(qrow[np.isin(q.row[qrow], np.flatnonzero(m))].sum()) if qrow.any() else 0
        out["left"][c] += int(left[cls[keep] == c].sum())
        out["offset_sum"][c] += float(offset[m & np.isfinite(offset)].sum())
        out["offset_max"][c] = max(out["offset_max"][c], float(np.nanmax(offset[m])) if m.any() else 0.0)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--config", default="configs/data/sumo_demo.yaml")
    ap.add_argument("--json")
    args = ap.parse_args()
    base = from_dict(SimConfig, load_yaml(args.config))
    rows, extra = [], {"config": args.config, "tolerance_m": 1.0}
    for label, opts in SETTINGS.items():
        cfg = SimConfig(seed=base.seed, duration_s=base.duration_s, warmup_s=base.warmup_s, demand=base.demand,
                        networks=base.networks, sumo=opts)
        t0 = time.perf_counter()
        runs = simulate(cfg, RESULTS / "sim_quality" / ("before" if label.startswith("before") else "after"),
                        progress=False)
        sim_s = time.perf_counter() - t0
        total: dict[str, Counter] = {}
        for run in runs:
            for k, v in measure(run).items():
                total.setdefault(k, Counter())
                for c, n in v.items():
                    total[k][c] = max(total[k][c], n) if k == "offset_max" else total[k][c] + n
        for c in sorted(total["rows"]):
            n = total["rows"][c]
            rows.append({"setting": label, "class": c, "rows": n, "jumps_front": total["front"][c],
                         "jumps_centre": total["centre"][c], "rows_quarantined_for_jumps": total["quarantined"][c],
                         "jumps_left_in_store": total["left"][c],
                         "mean_front_to_centre_m": total["offset_sum"][c] / n, "max_front_to_centre_m": total["offset_max"][c]})
        extra[f"simulate_s[{label}]"] = sim_s
        print(f"{label}: simulated {len(runs)} networks in {sim_s:.1f} s (cached runs are reused)")
    report("sim_quality", rows, extra, args.json)


if __name__ == "__main__":
    main()
