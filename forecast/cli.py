"""``forecast`` command line: one subcommand per pipeline step.

Exit codes (for schedulers): 0 success, 1 failure, 2 usage or bad input,
3 ``--strict`` ingestion with quarantined rows, 4 promotion gate said no, 75 locked by another run,
143 / 130 stopped by SIGTERM / Ctrl-C (a rerun resumes), 141 the reader of stdout went away (| head).
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import signal
import sys
from pathlib import Path

from forecast.cli_args import int_at_least

EXIT_OK, EXIT_FAIL, EXIT_USAGE, EXIT_QUARANTINE, EXIT_GATE, EXIT_LOCKED = 0, 1, 2, 3, 4, 75
# a path the user gave is wrong (read-only, a file where a folder belongs, missing): usage, exit 2
_PATH_ERRNOS = {errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOTDIR, errno.EISDIR, errno.EEXIST, errno.ENOENT}


def _cmd_simulate(args: argparse.Namespace) -> int:
    from forecast.config import apply_overrides, from_dict, load_yaml
    from forecast.sim.sumo import SimConfig, simulate

    cfg = from_dict(SimConfig, apply_overrides(load_yaml(args.config), args.overrides), where=args.config)
    runs = simulate(cfg, Path(args.out), progress=not args.quiet, jobs=args.jobs)
    for r in runs:
        print(r)
    return EXIT_OK


def _adapter(source: str, args: argparse.Namespace):
    if source == "sumo":
        from forecast.data.sources.sumo import SumoAdapter

        return SumoAdapter(scenario_length_s=args.scenario_length)
    if source == "av2":
        from forecast.data.sources.av2 import Av2Adapter

        return Av2Adapter()
    if source == "eth_ucy":
        from forecast.data.sources.eth_ucy import EthUcyAdapter

        return EthUcyAdapter()
    raise ValueError(f"unknown source {source!r}")


def _cmd_ingest(args: argparse.Namespace) -> int:
    from forecast.data.atomic import write_json_atomic
    from forecast.data.ingest import parse_shard, run_ingest
    from forecast.data.store import Store

    shard = parse_shard(args.shard)
    store = Store(args.store)
    summary = run_ingest(_adapter(args.source, args), Path(args.input), store, shard, args.split, not args.quiet,
                         batch_scenarios=args.batch_scenarios)
    out = Path(args.summary) if args.summary else store.path / "_summaries" / f"ingest-{args.source}-shard{shard[0]}of{shard[1]}.json"
    write_json_atomic(summary.to_dict(), out)
    print(summary.table())
    print(f"summary: {out}")
    if args.strict and summary.quarantined_in_shard:
        print(f"--strict: {summary.quarantined_in_shard} rows/files quarantined (see {store.quarantine_dir})", file=sys.stderr)
        return EXIT_QUARANTINE
    return EXIT_OK


def _cmd_store(args: argparse.Namespace) -> int:
    from forecast.data.store import Store

    compact = args.store[0] == "compact" and len(args.store) == 2
    if len(args.store) != 1 and not compact:
        print("usage: forecast store STORE | forecast store compact STORE", file=sys.stderr)
        return EXIT_USAGE
    store = Store(args.store[-1])
    if not store.exists():
        print(f"no store at {store.path}", file=sys.stderr)
        return EXIT_USAGE
    if compact:
        from forecast.data.compact import compact_store

        c = compact_store(store, args.batch_scenarios)
        print(f"compacted {c.units} units ({c.scenarios} scenarios) into {c.batches} batches: "
              f"{c.files_before} -> {c.files_after} Parquet files")
        return EXIT_OK
    s = store.summary()
    if args.json:
        print(json.dumps(s, indent=2))
        return EXIT_OK
    print(f"store {s['path']}  ({s['maps']} maps)")
    print(f"{'source/split':<20}{'scenarios':>10}{'rows':>12}")
    for key in sorted(s["scenarios"]):
        print(f"{key:<20}{s['scenarios'][key]:>10}{s['rows'].get(key, 0):>12}")
    print("agents by type: " + ", ".join(f"{k}={v}" for k, v in sorted(s["agents_by_type"].items())))
    q = store.quarantine_table()
    print(f"quarantined rows: {q.num_rows}")
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="forecast", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    s = sub.add_parser("simulate", help="generate SUMO traffic (networks, demand, 10 Hz FCD) from a data config")
    s.add_argument("--config", required=True, help="configs/data/<name>.yaml")
    s.add_argument("--out", required=True, help="output directory: OUT/<split>/<network>/")
    s.add_argument("--jobs", type=int_at_least(1, "--jobs"), default=None,
                   help="networks simulated side by side (default: one per CPU); the data does not depend on it")
    s.add_argument("overrides", nargs="*", help="dotted overrides, e.g. duration_s=120")
    s.set_defaults(func=_cmd_simulate)

    s = sub.add_parser("ingest", help="validate and write a source into the canonical store (with quarantine)")
    s.add_argument("--source", required=True, choices=["sumo", "av2", "eth_ucy"])
    s.add_argument("input", help="input directory (SUMO runs, AV2 scenarios, or an ETH/UCY <scene>/<split> folder)")
    s.add_argument("--store", required=True, help="store directory")
    s.add_argument("--split", help="split for every unit (default: from run.json or the folder name)")
    s.add_argument("--shard", help="i/N: ingest only this worker's share (independent workers, no coordination)")
    s.add_argument("--strict", action="store_true", help=f"exit {EXIT_QUARANTINE} if anything was quarantined")
    s.add_argument("--summary", help="where to write the JSON summary (default: STORE/_summaries/)")
    s.add_argument("--scenario-length", type=float, default=10.0, help="SUMO: seconds per scenario (default 10)")
    s.add_argument("--batch-scenarios", type=int, default=5000, help="scenarios per batch of Parquet files (forecast.data.ingest.BATCH_SCENARIOS)")
    s.set_defaults(func=_cmd_ingest)

    s = sub.add_parser("store", help="print a summary of a store; `store compact STORE` rewrites an old one as batches")
    s.add_argument("store", nargs="+", metavar="[compact] STORE")
    s.add_argument("--batch-scenarios", type=int, default=5000, help="compact: scenarios per batch file")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=_cmd_store)

    for register in _extra_commands():
        register(sub)
    _quiet_everywhere(p)
    return p


def _quiet_everywhere(parser: argparse.ArgumentParser) -> None:
    """Accept ``--quiet`` after the subcommand too (``forecast evaluate ... --quiet``), not only before it:
    every subparser, nested ones included, gets the flag, with no default of its own so that it never
    undoes a ``--quiet`` given before the subcommand."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in dict.fromkeys(action.choices.values()):  # aliases map to the same parser
                if "--quiet" not in child._option_string_actions:
                    child.add_argument("--quiet", action="store_true", default=argparse.SUPPRESS,
                                       help="no progress bars (as before the subcommand)")
                _quiet_everywhere(child)


def _extra_commands():
    """Subcommands that live beside the code they drive (train, evaluate, export, ...)."""
    import importlib

    out = []
    for mod in ("forecast.training.cli", "forecast.evaluation.cli", "forecast.export.cli", "forecast.pipeline.cli",
                "forecast.benchmark.cli", "forecast.scenarios.cli"):
        try:
            out.append(importlib.import_module(mod).register)
        except ModuleNotFoundError as exc:
            if exc.name and exc.name.startswith("forecast."):
                continue
            raise
    return out


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit:  # --help and usage errors print, then exit: `forecast --help | head -3` too
        try:
            sys.stdout.flush()
        except BrokenPipeError:
            if _stdout_reader_gone():
                raise SystemExit(_silence_stdout()) from None
            raise
        raise
    from forecast.pipeline.signals import StopRequested, StopSignals, running

    # A pipeline stops at clean points of its own (forecast.pipeline.signals), also in the commands
    # its steps run in this process.
    if args.command == "pipeline" or running():
        return _run(args)

    # A scheduler's SIGTERM ends a plain command with an exception instead of at once, so that its
    # temporary folders (an evaluation's spill, a downloaded champion, an export's staging) are removed.
    try:
        with StopSignals() as stop:
            try:
                code = _run(args)
            except Exception as exc:  # e.g. what a library raised on its way out after the stop came
                if stop.received is not None:
                    raise StopRequested(stop.received) from exc
                raise
            stop.check()  # a stop held back inside an MLflow call, or swallowed by a library's cleanup
            return code
    except StopRequested as exc:
        print(f"forecast {args.command}: {exc}; exiting {exc.exit_code}", file=sys.stderr)
        return exc.exit_code


def _stdout_reader_gone() -> bool:
    """Whether stdout is a pipe whose reader has closed it (poll says POLLERR), as after `... | head -1`."""
    import select

    try:
        poller = select.poll()
        poller.register(sys.stdout.fileno(), select.POLLOUT)
        return any(events & (select.POLLERR | select.POLLHUP) for _, events in poller.poll(0))
    except (AttributeError, OSError, ValueError):  # no poll on this OS, or stdout is not a file (a test's capture)
        return False


def _silence_stdout() -> int:
    """The reader of stdout went away (`forecast store S | head -1`): stop quietly with SIGPIPE's code, as a
    Unix tool does, rather than "error: Broken pipe" and exit 1. stdout goes to /dev/null so that the
    interpreter's last flush does not raise again."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
    return 128 + signal.SIGPIPE


def _run(args: argparse.Namespace) -> int:
    try:
        code = int(args.func(args) or 0)
        sys.stdout.flush()  # a piped stdout is block-buffered: a closed reader shows here, not at exit
        return code
    except BrokenPipeError as exc:
        if not _stdout_reader_gone():  # another pipe (a child process, a socket): an ordinary failure
            print(f"forecast {args.command}: error: {exc}", file=sys.stderr)
            return EXIT_FAIL
        return _silence_stdout()
    except (FileNotFoundError, ValueError, KeyError) as exc:
        print(f"forecast {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as exc:  # a path that cannot be read or written: say which, no traceback
        code = EXIT_USAGE if exc.errno in _PATH_ERRNOS else EXIT_FAIL
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"forecast {args.command}: error: {where}{exc.strerror or exc}", file=sys.stderr)
        return code


if __name__ == "__main__":
    sys.exit(main())
