"""Agent-states per second of SUMO ingestion (parse + validate + build tables), on one core.

Usage: python bench/ingest.py [--duration 300] [--json PATH]
Simulates one network (cached under bench/results/sim), then times each stage on its FCD.
Goal (issue 2): >= 1,000,000 agent-states per second on one core.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

pa.set_cpu_count(1)
pa.set_io_thread_count(1)

from _common import RESULTS, best_of, report  # noqa: E402

from forecast.data.ingest import ParsedUnit, Unit, _build_tables, run_ingest  # noqa: E402
from forecast.data.sources.sumo import SumoAdapter, fcd_to_rows  # noqa: E402
from forecast.data.store import Store  # noqa: E402
from forecast.data.validate import Quarantine, validate_rows  # noqa: E402
from forecast.sim.sumo import DemandConfig, NetworkConfig, SimConfig, simulate  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--duration", type=float, default=300.0)
    ap.add_argument("--json")
    args = ap.parse_args()
    sim = SimConfig(seed=1, duration_s=args.duration, warmup_s=30,
                    demand=DemandConfig(car_period=1.2, bike_period=2.5, ped_period=1.0),
                    networks=[NetworkConfig("bench_grid", "train", "grid", {"grid.number": 4, "grid.length": 120}, 1)])
    run = simulate(sim, RESULTS / "sim", progress=False)[0]
    table = pq.read_table(run / "fcd.parquet")
    meta = __import__("json").loads((run / "run.json").read_text())
    n = table.num_rows
    rows_box = {}

    def parse():
        rows_box["rows"] = fcd_to_rows(table, meta["vtypes"])

    def validate():
        rows_box["v"] = validate_rows(rows_box["rows"], 0.1, "sumo", "fcd.parquet")

    def build():
        keep, ts, _ = rows_box["v"]
        unit = Unit("bench", "sumo", "train", ())
        parsed = ParsedUnit(unit, "fcd.parquet", 0.1, None, n, Quarantine.empty("sumo", ""), "sumo:bench", 100)
        _build_tables(parsed, rows_box["rows"].take(keep), ts)

    t_read = best_of(lambda: pq.read_table(run / "fcd.parquet"))
    t_parse = best_of(parse)
    t_val = best_of(validate)
    t_build = best_of(build)

    def full():
        with tempfile.TemporaryDirectory() as tmp:
            run_ingest(SumoAdapter(10.0), run.parent, Store(Path(tmp) / "s"), progress=False)

    t_full = best_of(full, 2)
    rows = [
        {"stage": "read parquet", "seconds": t_read, "states_per_s": n / t_read},
        {"stage": "parse (fcd -> rows)", "seconds": t_parse, "states_per_s": n / t_parse},
        {"stage": "validate", "seconds": t_val, "states_per_s": n / t_val},
        {"stage": "build tables", "seconds": t_build, "states_per_s": n / t_build},
        {"stage": "tracks path (read+parse+validate+build)", "seconds": t_read + t_parse + t_val + t_build,
         "states_per_s": n / (t_read + t_parse + t_val + t_build)},
        {"stage": "full unit (+ map from .net.xml, writes, manifest)", "seconds": t_full, "states_per_s": n / t_full},
    ]
    print(f"{n:,} agent-states, one core (Arrow and OpenMP limited to one thread)")
    report("ingest", rows, {"agent_states": n, "goal_states_per_s": 1_000_000}, args.json)


if __name__ == "__main__":
    main()
