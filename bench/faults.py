"""The whole fault suite: the CI cases of tests/faults plus the long ones (signals at several moments of every
step, kill -9, two runs at once, damaged committed outputs of a real tiny pipeline). Prints the table.

Usage: python bench/faults.py [--quick] [--only SUBSTRING] [--json PATH] [--keep DIR]
Goal (issue 15): >= 250 faults tried; 0 tracebacks, 0 silently wrong, 0 rows or agents lost.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from _common import RESULTS, machine  # noqa: E402

from tests.faults import cases_cli, cases_ingest, cases_long, cases_runtime, cases_store  # noqa: E402
from tests.faults.harness import Env, counts, run_case, table  # noqa: E402


def build_fixtures(root: Path) -> dict:
    """The tiny SUMO runs, their store and an exported tiny bundle, as tests/conftest.py builds them."""
    import torch

    import forecast
    from forecast.cli import main
    from forecast.data.ingest import run_ingest
    from forecast.data.sources.sumo import SumoAdapter
    from forecast.data.store import Store
    from forecast.model.checkpoint import save_model
    from forecast.model.world_model import WorldModel
    from forecast.sim.sumo import simulate
    from tests.conftest import TINY_SIM, tiny_features_and_model

    runs = root / "sim"
    simulate(TINY_SIM, runs, progress=False)
    store = Store(root / "store")
    run_ingest(SumoAdapter(scenario_length_s=5.0), runs, store, progress=False)
    features, model_cfg = tiny_features_and_model()
    torch.manual_seed(0)
    model = WorldModel(model_cfg, features.scene_scale).eval()
    torch.nn.init.normal_(model.rollout.head[-1].weight, std=0.05)
    exported = root / "exported"
    save_model(exported / "model.pt", model, features, {"run_id": "run-tiny", "version": forecast.__version__})
    rc = main(["--quiet", "export", "--model", str(exported / "model.pt"), "--out", str(exported / "bundle")])
    if rc != 0:
        raise RuntimeError("exporting the tiny model failed")
    return {"sumo_runs": runs, "store": store.path, "bundle": exported / "bundle", "model": exported / "model.pt"}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="only the CI cases (no child processes)")
    ap.add_argument("--only", help="only cases whose id contains this")
    ap.add_argument("--json", default=str(RESULTS / "faults.json"))
    ap.add_argument("--keep", help="work in this folder and keep it (default: a temporary one, removed)")
    args = ap.parse_args()

    cases = cases_runtime.cases() + cases_ingest.cases() + cases_store.cases() + cases_cli.cases()
    if not args.quick:
        cases += cases_long.cases()
    if args.only:
        cases = [c for c in cases if args.only in c.id]
    root = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="forecast-faults-"))
    root.mkdir(parents=True, exist_ok=True)
    try:
        return _run_cases(cases, root, args)
    finally:  # also when a case crashes the bench: the temporary folder holds stores and models
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)


def _run_cases(cases: list, root: Path, args) -> int:
    t0 = time.perf_counter()
    fixtures = build_fixtures(root / "fixtures")
    shared: dict = {"pipeline_root": root / "pipeline"}
    (root / "pipeline").mkdir(exist_ok=True)
    results = []
    for i, case in enumerate(cases):
        tmp = root / "cases" / f"{i:04d}"
        tmp.mkdir(parents=True)
        started = time.perf_counter()
        res = run_case(case, Env(tmp, shared=shared, **fixtures))
        results.append((case, res))
        print(f"[{i + 1}/{len(cases)}] {case.id}: {res.kind} ({time.perf_counter() - started:.1f} s)", flush=True)
        shutil.rmtree(tmp, ignore_errors=True)
    print()
    print(table(results))
    out = {"bench": "faults", "machine": machine(), "seconds": round(time.perf_counter() - t0, 1),
           "quick": args.quick, **counts(results)}
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(out, indent=2))
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
