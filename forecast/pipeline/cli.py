"""``forecast pipeline run|status|gc CONFIG``: the scheduled batch pipeline (what cron or Airflow calls).

Exit codes of ``run`` (``forecast.cli``): 0 every step done or skipped (also a failed gate with
``gate.fail_on_gate: false``); 1 a step failed (rerun to resume); 2 bad config or usage; 3
``ingest.strict`` and rows or files were quarantined; 4 the
promotion gate said no (``fail_on_gate: true``); 75 another run holds the work_dir lock;
143 stopped by SIGTERM, 130 by Ctrl-C (rerun to resume).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

SIGTERM_EXIT = 143
SIGINT_EXIT = 130


def _split_rest(args: argparse.Namespace) -> None:
    """``CONFIG --force train a=b``: argparse leaves everything after CONFIG to us; pick the flags out."""
    overrides, rest = [], list(args.overrides)
    while rest:
        token = rest.pop(0)
        if token == "--force" and rest:
            args.force = [*(args.force or []), rest.pop(0)]
        elif token.startswith("--force="):
            args.force = [*(args.force or []), token.split("=", 1)[1]]
        elif token == "--until" and rest and hasattr(args, "until"):
            args.until = rest.pop(0)
        elif token.startswith("--until=") and hasattr(args, "until"):
            args.until = token.split("=", 1)[1]
        elif token == "--quiet":  # as before the subcommand (forecast --quiet pipeline run ...)
            args.quiet = True
        elif token == "--json" and hasattr(args, "json"):
            args.json = True
        elif token == "--dry-run" and hasattr(args, "dry_run"):
            args.dry_run = True
        elif token.startswith("--keep") and hasattr(args, "keep"):
            value = token.split("=", 1)[1] if "=" in token else (rest.pop(0) if rest else "")
            try:
                args.keep = int(value)
            except ValueError:
                raise ValueError(f"--keep takes a whole number, got {value!r}") from None
        elif token.startswith("-"):
            raise ValueError(f"unknown option {token!r} (options: --force STEP; overrides look like key.sub=value)")
        else:
            overrides.append(token)
    args.overrides = overrides


def _load(args: argparse.Namespace):
    from forecast.pipeline.config import load_pipeline

    _split_rest(args)
    return load_pipeline(args.config, args.overrides)


def _registry(loaded):
    cfg = loaded.config
    if "register" not in cfg.steps and not (cfg.gate.enabled and cfg.gate.must_beat_registered):
        return None
    from forecast.pipeline.registry import MlflowRegistry
    from forecast.tracking_uri import tracking_uri

    return MlflowRegistry(tracking_uri(cfg.mlflow.tracking_uri), cfg.mlflow.experiment)


def _cmd_run(args: argparse.Namespace) -> int:
    from forecast.cli import EXIT_LOCKED
    from forecast.config import to_dict
    from forecast.pipeline.runner import (
        RunOptions,
            flatten,
        run_pipeline,
        run_worker,
    )
    from forecast.pipeline.signals import StopRequested, StopSignals
    from forecast.pipeline.steps import build_steps
    from forecast.pipeline.tracking import MlflowTracker, NullTracker
    from forecast.pipeline.workdir import PipelineLocked
    from forecast.training.ranks import ddp_rank_from_env

    loaded = _load(args)
    cfg = loaded.config
    if not cfg.steps:
        raise ValueError(f"{args.config}: 'steps' is empty: nothing to run")
    quiet = getattr(args, "quiet", False)
    force = set(args.force or [])
    if "all" in force:
        force = (force - {"all"}) | {cfg.steps[0]}
    if args.until:
        if args.until not in cfg.steps:
            raise ValueError(f"--until {args.until!r}: not a step of this pipeline ({cfg.steps})")
        cfg.steps = cfg.steps[: cfg.steps.index(args.until) + 1]
    rank = ddp_rank_from_env()
    registry = _registry(loaded) if rank == 0 else None
    steps = build_steps(loaded, registry)
    if rank > 0:  # an extra DDP process re-running this command: join the train step only
        return run_worker(steps, Path(cfg.work_dir), rank, force, progress=False)

    tracker = NullTracker()
    if cfg.mlflow.enabled:
        from forecast.tracking_uri import tracking_uri

        tracker = MlflowTracker(tracking_uri(cfg.mlflow.tracking_uri), cfg.mlflow.experiment)
    params = {**flatten(to_dict(cfg)), "config_file": args.config, "overrides": " ".join(args.overrides) or "-",
              "force": ",".join(sorted(force)) or "-"}
    opts = RunOptions(name=cfg.name, force=force, progress=not quiet, gate=cfg.gate, params=params,
                      champion=(lambda: registry.champion(cfg.register.model_name, cfg.register.alias))
                      if registry else None)
    with StopSignals() as stop:
        try:
            result = run_pipeline(steps, cfg.work_dir, opts, tracker)
            stop.check()  # a signal that came during the last writes still means "stopped"
        except PipelineLocked as exc:
            print(f"forecast pipeline: {exc}; exiting {EXIT_LOCKED}", file=sys.stderr)
            return EXIT_LOCKED
        except (StopRequested, KeyboardInterrupt, SystemExit) as exc:
            signum = exc.signum if isinstance(exc, StopRequested) else stop.received
            if signum is None and isinstance(exc, SystemExit):
                raise
            code = 128 + signum if signum is not None else SIGINT_EXIT
            why = f"signal {signum}" if signum is not None else "Ctrl-C"
            print(f"forecast pipeline: stopped by {why}; nothing half-done was committed; rerun the same command "
                  f"to resume; exiting {code}", file=sys.stderr)
            return code

    _print_summary(result, cfg)
    if result.status == "failed":
        print(f"forecast pipeline: {result.error}; rerun the same command to resume", file=sys.stderr)
    elif result.status == "gate_failed":
        code = exit_code(result, cfg.gate)
        print(f"gate failed: later steps (export, register) skipped; exiting {code}", file=sys.stderr)
    return exit_code(result, cfg.gate)


def exit_code(result, gate) -> int:
    """What a scheduler sees: 0 ok, 1 a step failed, 4 the gate said no (unless ``gate.fail_on_gate`` is off)."""
    from forecast.cli import EXIT_FAIL, EXIT_GATE, EXIT_OK

    if result.status == "failed":
        return result.exit_code if isinstance(result.exit_code, int) and result.exit_code > 0 else EXIT_FAIL
    if result.status == "gate_failed" and gate.fail_on_gate:
        return EXIT_GATE
    return EXIT_OK


def _print_summary(result, cfg) -> None:
    print(f"pipeline {cfg.name}  (work_dir {cfg.work_dir})")
    for o in result.outcomes:
        took = f"{o.duration_s:8.1f} s" if o.status == "ran" else " " * 10
        print(f"  {o.name:<10}{o.status:<9}{took}  {o.path or '-'}")
    if result.all_skipped:
        print(f"nothing to do: all {len(result.outcomes)} steps are up to date (skipped)")
    if result.gate is not None:
        print(f"gate: {'passed' if result.gate.passed else 'FAILED'}  ({Path(cfg.work_dir) / 'gate.json'})")
        for reason in result.gate.reasons:
            print(f"  {reason}")
    evaluate, export = result.path("evaluate"), result.path("export")
    if evaluate is not None:
        print(f"report: {evaluate / 'report.html'}")
    if export is not None:  # with the digest a deployment pins (Predictor(bundle, bundle_sha256=...))
        from forecast.data.atomic import sha256_file

        manifest = export / "bundle" / "bundle.json"
        digest = f"  (bundle.json sha256 {sha256_file(manifest)})" if manifest.exists() else ""
        print(f"bundle: {export / 'bundle'}{digest}")
    registered = result.path("register")
    if registered is not None and (registered / "registered.json").exists():
        info = json.loads((registered / "registered.json").read_text())
        print(f"registered: {info['model_name']} version {info['version']} (alias {info['alias']})")
    print(f"latest: {Path(cfg.work_dir) / 'latest.json'}")


def _cmd_status(args: argparse.Namespace) -> int:
    from forecast.pipeline.runner import step_states
    from forecast.pipeline.steps import build_steps
    from forecast.pipeline.workdir import lock_holder, read_latest

    loaded = _load(args)
    cfg = loaded.config
    work_dir = Path(cfg.work_dir)
    states = step_states(build_steps(loaded), work_dir)
    holder = lock_holder(work_dir)
    gate = json.loads((work_dir / "gate.json").read_text()) if (work_dir / "gate.json").exists() else None
    latest = read_latest(work_dir)
    last = {k: latest.get(k) for k in ("status", "started", "updated", "pid", "host", "error", "note")} if latest else None
    if args.json:
        print(json.dumps({"pipeline": cfg.name, "work_dir": str(work_dir), "steps": states, "locked_by": holder,
                          "gate": gate, "last_run": last}, indent=2))
        return 0
    print(f"pipeline {cfg.name}  (work_dir {work_dir})")
    if last:
        print(f"  last run: {last['status']} (started {last['started']}, updated {last['updated']})"
              + (f": {last['note']}" if last.get("note") else ""))
    if holder:
        print(f"  running now: pid {holder.get('pid')} on {holder.get('host')} since {holder.get('started')}")
    for s in states:
        print(f"  {s['step']:<10}{s['state']:<9}{s['hash']}  {s['partial'] if s['state'] == 'partial' else s['path']}")
        for reason in s.get("why", []):  # stale (or partial): what changed since its last finished output
            print(f"  {'':<19}{reason}")
    if gate:
        # gate.json is the last decision made; a later run with the gate off (or stopped before it) leaves it
        # (both times are this host's local time, as latest.json and gate.json record them)
        earlier = bool(last and last.get("started") and gate.get("decided") and gate["decided"] < last["started"])
        note = ": from an earlier run, " + ("the run now going has not gated yet" if last["status"] == "running"
                                            else "the last run did not gate") if earlier else ""
        print(f"gate ({gate.get('decided')}{note}): {'passed' if gate['passed'] else 'FAILED'}")
        for reason in gate.get("reasons", []):
            print(f"  {reason}")
    return 0


def _cmd_gc(args: argparse.Namespace) -> int:
    from forecast.cli import EXIT_LOCKED
    from forecast.pipeline.gc import collect_garbage
    from forecast.pipeline.steps import build_steps
    from forecast.pipeline.workdir import PipelineLocked

    loaded = _load(args)
    cfg = loaded.config
    try:
        removed = collect_garbage(build_steps(loaded), Path(cfg.work_dir), args.keep, args.dry_run)
    except PipelineLocked as exc:
        print(f"forecast pipeline gc: {exc}; exiting {EXIT_LOCKED}", file=sys.stderr)
        return EXIT_LOCKED
    verb = "would remove" if args.dry_run else "removed"
    for r in removed:
        print(f"  {verb} {r.path}  ({r.bytes / 1e6:.1f} MB: {r.why})")
    total = sum(r.bytes for r in removed) / 1e6
    print(f"pipeline {cfg.name}: {verb} {len(removed)} folder(s), {total:.1f} MB (work_dir {cfg.work_dir})")
    return 0


def register(sub) -> None:
    p = sub.add_parser("pipeline", help="scheduled batch pipeline: simulate, ingest, train, evaluate, gate, export",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    psub = p.add_subparsers(dest="pipeline_command", required=True, metavar="ACTION")
    r = psub.add_parser("run", help="run every step that is not up to date (resumes a killed run)")
    r.add_argument("config", help="configs/pipeline/<name>.yaml")
    r.add_argument("--force", action="append", metavar="STEP",
                   help="rerun STEP (and every step after it that reads it) even if up to date; 'all' for everything")
    r.add_argument("--until", metavar="STEP", help="stop after STEP (one scheduler task per step: earlier steps skip)")
    r.add_argument("overrides", nargs=argparse.REMAINDER,
                   help="dotted overrides, e.g. work_dir=/tmp/x train.overrides.optim.max_epochs=1")
    r.set_defaults(func=_cmd_run)
    s = psub.add_parser("status", help="show each step's hash and state (done, partial, stale, pending), why it is stale, and the last gate")
    s.add_argument("config", help="configs/pipeline/<name>.yaml")
    s.add_argument("--json", action="store_true")
    s.add_argument("overrides", nargs=argparse.REMAINDER, help="the same overrides as the run")
    s.set_defaults(func=_cmd_status)
    g = psub.add_parser("gc", help="remove step outputs that neither the current plan nor the last run uses, "
                                   "keeping the newest --keep others per step")
    g.add_argument("config", help="configs/pipeline/<name>.yaml")
    g.add_argument("--keep", type=int, default=1, help="older finished outputs kept per step (default 1)")
    g.add_argument("--dry-run", action="store_true", help="list what would be removed, remove nothing")
    g.add_argument("overrides", nargs=argparse.REMAINDER, help="the same overrides as the run")
    g.set_defaults(func=_cmd_gc)
