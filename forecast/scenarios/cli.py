"""``forecast tag`` (the tag table beside a store) and ``forecast suite build`` (a suite from a store)."""

from __future__ import annotations

import argparse
import sys


def _cmd_tag(args: argparse.Namespace) -> int:
    from forecast.scenarios.table import read_meta, tag_store

    path = tag_store(args.store, splits=args.split or None, out=args.out,
                     log=lambda msg: print(msg, file=sys.stderr), progress=not args.quiet)
    meta = read_meta(path) or {}
    print(f"tags: {path}  ({meta.get('num_scenarios')} scenarios, {meta.get('agent_steps')} agent-steps)")
    for tag, n in sorted((meta.get("counts") or {}).items()):
        print(f"  {tag:<22}{n:>10}")
    return 0


def _cmd_suite_build(args: argparse.Namespace) -> int:
    from pathlib import Path

    from forecast.data.atomic import write_text_atomic
    from forecast.data.store import Store
    from forecast.scenarios.build_suite import build_suite
    from forecast.scenarios.suites import suite_yaml

    store = Store(args.store)
    if not store.exists():
        raise FileNotFoundError(f"no store at {store.path}")
    suite = build_suite(store, args.name, args.version, split=args.split, per_kind=args.per_kind,
                        history_steps=args.history_steps, future_steps=args.future_steps)
    if not suite.cases:
        raise ValueError(f"no case found in split {args.split} of {store.path}")
    write_text_atomic(suite_yaml(suite), Path(args.out))
    kinds: dict[str, int] = {}
    for c in suite.cases:
        kinds[c.expect] = kinds.get(c.expect, 0) + 1
    print(f"suite {suite.name} v{suite.version}: {len(suite.cases)} cases ({kinds}) -> {args.out}")
    return 0


def register(sub) -> None:
    s = sub.add_parser("tag", help="tag every (scenario, t0, agent) of a store: STORE/tags/tags.parquet",
                       description="Scenario tags (pedestrian crossing, braking, cut-in, junction turn, cyclist in "
                                   "lane, stop-and-go, near miss, occluded/new) mined from tracks and map. Labels for "
                                   "evaluation: they look at the future. Idempotent.")
    s.add_argument("--store", required=True)
    s.add_argument("--split", action="append", help="only this split (repeat); default all")
    s.add_argument("--out", help="where to write the table (default STORE/tags/tags.parquet)")
    s.set_defaults(func=_cmd_tag)

    s = sub.add_parser("suite", help="scenario suites: `forecast suite build` mines one from a store")
    ss = s.add_subparsers(dest="suite_command", required=True)
    b = ss.add_parser("build", help="mine a suite (cases with expectations the ground truth meets) from a store")
    b.add_argument("--store", required=True)
    b.add_argument("--name", required=True)
    b.add_argument("--version", type=int, default=1)
    b.add_argument("--out", required=True, help="suite YAML, e.g. configs/suites/NAME.yaml")
    b.add_argument("--split", default="test")
    b.add_argument("--per-kind", type=int, default=6, help="cases per expectation kind")
    b.add_argument("--history-steps", type=int, default=20, help="history the cases need (store steps)")
    b.add_argument("--future-steps", type=int, default=30, help="future the cases need (store steps)")
    b.set_defaults(func=_cmd_suite_build)
