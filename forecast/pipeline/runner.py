"""Run the steps of a pipeline: content hashes, skip what is done, commit atomically, one run at a time.

Layout of ``work_dir``::

    work_dir/
      .lock                    flock'ed by the running pipeline; holds its pid
      latest.json              each step's output directory and status, rewritten atomically
      gate.json                the last promotion-gate decision
      <step>/<hash>/           a finished step's outputs, with _SUCCESS.json (what ran, on what, how long)
      <step>/<hash>.partial/   a resumable step in progress (simulate, ingest, train); a rerun continues it
      <step>/.tmp-<hash>-<pid> a non-resumable step in progress; removed by the next run if left behind

``hash`` = sha256 (first 16 hex digits) of the step's name, resolved settings (``Step.spec()``), its input steps' hashes,
the forecast version and the source of the code it runs (``Step.code``: its entry modules and every
``forecast`` module they import, :mod:`forecast.pipeline.code`), so an edited model makes train,
evaluate and export stale. ``_SUCCESS.json`` keeps each file's sha256, and ``forecast pipeline
status`` compares them (and the settings) with the last finished output to say why a step is stale. A directory ``<hash>/`` only ever appears by a rename of a finished
working directory, so a reader (or a killed run) never sees half an output; a step whose
``<hash>/_SUCCESS.json`` exists is skipped.

Extra DDP processes (Lightning re-executes the command line for ranks > 0; SLURM and torchrun
start one per rank) call :func:`run_worker`: they wait for the train step's inputs, join its
training in the same ``.partial`` directory, and touch nothing else.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import forecast
from forecast.data.atomic import sha256_text, write_json_atomic
from forecast.pipeline.code import code_files, files_hash
from forecast.pipeline.gate import Check, GateConfig, GateDecision, RegisteredModel, decide
from forecast.pipeline.signals import StopRequested, check_stop, deferred, stop_requested
from forecast.pipeline.steps import Step, StepContext, StepResult
from forecast.pipeline.tracking import NullTracker, Tracker
from forecast.pipeline.workdir import (
    SUCCESS,
    check_work_dir,
    clean_stale,
    commit,
    read_json,
    read_latest,
    verify_outputs,
    work_dir_lock,
)

HASH_CHARS = 16


# ----------------------------------------------------------------------------------------------
# hashing and planning
# ----------------------------------------------------------------------------------------------


def step_hash(name: str, spec: dict, input_hashes: dict[str, str], version: str = forecast.__version__,
              code: str = "") -> str:
    """What decides a step's output, hashed: its settings, its inputs' hashes, the code version and source.

    ``code`` is :func:`forecast.pipeline.code.files_hash` of the files the step runs ("" for none).

    The first 16 hex digits of the sha256 (64 bits): short enough for a folder name, and a
    collision among one pipeline's versions is not a practical concern.
    """
    payload = {"step": name, "spec": spec, "inputs": input_hashes, "version": version, "code": code}
    return sha256_text(json.dumps(payload, sort_keys=True, default=str))[:HASH_CHARS]


@dataclass
class PlannedStep:
    step: Step
    hash: str
    input_hashes: dict[str, str]
    final: Path  # work_dir/<step>/<hash>
    code_files: dict[str, str] = field(default_factory=dict)  # source file -> sha256, of the code the step runs

    @property
    def name(self) -> str:
        return self.step.name

    @property
    def done(self) -> bool:
        return (self.final / SUCCESS).exists()

    @property
    def partial(self) -> Path:
        return self.final.with_name(f"{self.hash}.partial")

    def tmp(self, pid: int | None = None) -> Path:
        return self.final.with_name(f".tmp-{self.hash}-{pid or os.getpid()}")


def plan(steps: list[Step], work_dir: Path) -> list[PlannedStep]:
    """Hash every step in order; a step's inputs must come earlier in ``steps``."""
    hashes: dict[str, str] = {}
    out = []
    for step in steps:
        missing = [i for i in step.inputs if i not in hashes]
        if missing:
            raise ValueError(f"step {step.name!r} needs step(s) {missing} before it")
        inputs = {i: hashes[i] for i in step.inputs}
        files = code_files(tuple(getattr(step, "code", ())))
        h = step_hash(step.name, step.spec(), inputs, code=files_hash(files))
        hashes[step.name] = h
        out.append(PlannedStep(step, h, inputs, Path(work_dir) / step.name / h, files))
    return out


def downstream(planned: list[PlannedStep], names: set[str]) -> set[str]:
    """``names`` and every step that reads one of them, directly or not."""
    out = set(names)
    for p in planned:
        if any(i in out for i in p.step.inputs):
            out.add(p.name)
    return out


def git_revision() -> str:
    """``git rev-parse HEAD`` of the current directory (with ``-dirty`` if files changed), else "unknown"."""
    try:
        rev = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10, check=True)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                               text=True, timeout=10).stdout.strip()
        return rev.stdout.strip() + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


# ----------------------------------------------------------------------------------------------
# the run
# ----------------------------------------------------------------------------------------------


@dataclass
class StepOutcome:
    name: str
    hash: str
    status: str  # ran | skipped | blocked (by the gate) | failed | stopped (by a signal)
    path: Path | None = None
    duration_s: float = 0.0
    result: StepResult | None = None


@dataclass
class PipelineResult:
    status: str  # ok | gate_failed | failed | stopped
    outcomes: list[StepOutcome] = field(default_factory=list)
    gate: GateDecision | None = None
    error: str | None = None
    exit_code: int | None = None  # a failed step's own code (e.g. 3: ingest.strict quarantined something)

    def path(self, step: str) -> Path | None:
        return next((o.path for o in self.outcomes if o.name == step), None)

    @property
    def all_skipped(self) -> bool:
        return bool(self.outcomes) and all(o.status == "skipped" for o in self.outcomes)


@dataclass
class RunOptions:
    name: str = "pipeline"
    force: set[str] = field(default_factory=set)  # rerun these steps and everything downstream of them
    progress: bool = True
    gate: GateConfig = field(default_factory=GateConfig)
    gate_after: str = "evaluate"  # the gate reads this step's metrics.json and blocks every later step
    champion: Callable[[], RegisteredModel | None] | None = None  # the registered model, for must_beat_registered
    params: dict = field(default_factory=dict)  # logged on the MLflow parent run
    log: Callable[[str], None] = field(default=lambda msg: print(msg, file=sys.stderr))


def run_pipeline(steps: list[Step], work_dir: str | Path, opts: RunOptions | None = None,
                 tracker: Tracker | None = None) -> PipelineResult:
    """Run ``steps`` in order under ``work_dir``'s lock; raise PipelineLocked if another run holds it."""
    opts = opts or RunOptions()
    tracker = tracker or NullTracker()
    work_dir = Path(work_dir)
    planned = plan(steps, work_dir)
    unknown = opts.force - {p.name for p in planned}
    if unknown:
        raise ValueError(f"--force {sorted(unknown)}: not a step of this pipeline ({[p.name for p in planned]})")
    forced = downstream(planned, opts.force)
    check_work_dir(work_dir)
    previous = read_latest(work_dir)
    with work_dir_lock(work_dir):
        if previous.get("status") == "died":
            opts.log(f"previous run: {previous.get('note')}")
        for p in clean_stale(work_dir):
            opts.log(f"removed the leftover {p} of an earlier run")
        return _Run(planned, work_dir, opts, tracker, forced).go()


class _Run:
    def __init__(self, planned: list[PlannedStep], work_dir: Path, opts: RunOptions, tracker: Tracker,
                 forced: set[str]):
        self.planned, self.work_dir, self.opts, self.tracker, self.forced = planned, work_dir, opts, tracker, forced
        self.result = PipelineResult("ok")
        self.started = time.strftime("%Y-%m-%dT%H:%M:%S")
        self.git = git_revision()

    def go(self) -> PipelineResult:
        o = self.opts
        status = "FAILED"
        try:
            with deferred():  # MLflow's SQLAlchemy calls and latest.json are not cut in two by a signal
                self.tracker.start(o.name, o.params, {"git.revision": self.git,
                                                      "forecast.version": forecast.__version__,
                                                      "work_dir": str(self.work_dir.resolve())})
                self._write_latest("running")
            blocked = False
            for p in self.planned:
                check_stop()
                if blocked:
                    self._record(StepOutcome(p.name, p.hash, "blocked"))
                    with deferred():
                        self.tracker.step(p.name, p.hash, "blocked", 0.0)
                    continue
                outcome = self._step(p)
                if outcome.status == "failed":
                    self.result.status = "failed"
                    break
                if p.name == o.gate_after and o.gate.enabled:
                    blocked = not self._gate(p).passed
            if blocked and self.result.status == "ok":
                self.result.status = "gate_failed"
            status = "FINISHED" if self.result.status != "failed" else "FAILED"
            return self.result
        except BaseException as exc:  # StopRequested (SIGTERM, SIGINT), KeyboardInterrupt, bugs
            stopped = isinstance(exc, StopRequested | KeyboardInterrupt) or stop_requested() is not None
            status = "KILLED" if stopped or isinstance(exc, SystemExit) else "FAILED"
            self.result.status = "stopped" if stopped else "failed"
            self.result.error = f"{type(exc).__name__}: {exc}"
            raise
        finally:
            self._close(status)

    def _close(self, status: str) -> None:
        """Record the end in latest.json and MLflow; a tracking failure is logged, never raised over the result."""
        stopping = self.result.status == "stopped"
        try:
            with deferred():
                self._write_latest(self.result.status)
                try:
                    self.tracker.finish(status)
                except Exception as exc:  # the outputs are committed; a tracking server's hiccup must not hide that
                    self.opts.log(f"warning: could not close the MLflow run: {type(exc).__name__}: {exc}")
        except StopRequested as exc:
            if not stopping:  # a signal during the last writes: the run still ends as stopped, and says so
                self.result.status, self.result.error = "stopped", f"{type(exc).__name__}: {exc}"
                try:
                    with deferred():  # a second signal must not cut these two in half either
                        try:
                            self._write_latest("stopped")
                        except OSError as err:
                            self.opts.log(f"warning: could not write {self.work_dir / 'latest.json'}: {err}")
                        try:  # MLflow closed the run as it was about to end; it ends as stopped there too
                            self.tracker.finish("KILLED")
                        except Exception as err:  # noqa: BLE001 - the stop goes on whatever the store says
                            self.opts.log(f"warning: could not mark the MLflow run stopped: "
                                          f"{type(err).__name__}: {err}")
                except StopRequested:
                    pass  # the section's end raises the stop again: the one being handled goes on below
                raise
        except OSError as exc:
            self.opts.log(f"warning: could not write {self.work_dir / 'latest.json'}: {exc}")

    def _step(self, p: PlannedStep) -> StepOutcome:
        o = self.opts
        if p.done and p.name not in self.forced:
            problems = verify_outputs(p.final)
            if problems:  # never hand on an output that is not what was committed: rebuild it and what read it
                more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
                o.log(f"[{p.name}] warning: the committed output {p.final} is not what was written: "
                      f"{'; '.join(problems[:3])}{more}; rerunning {p.name} and the steps that read it")
                self.forced |= downstream(self.planned, {p.name})
        if p.done and p.name not in self.forced:
            o.log(f"[{p.name}] up to date: {p.final}")
            with deferred():
                self.tracker.step(p.name, p.hash, "skipped", 0.0, params=flatten(p.step.spec()))
                return self._record(StepOutcome(p.name, p.hash, "skipped", p.final))
        # It runs: what read its earlier output (if any is left) must not be reused, whatever the reason
        # (no _SUCCESS.json, damaged outputs, --force). On a first run there is nothing downstream yet.
        self.forced |= downstream(self.planned, {p.name}) - {p.name}
        if p.step.resumable:
            work = p.partial
            if p.name in self.forced and work.exists():
                shutil.rmtree(work)
            if (work / SUCCESS).exists() and verify_outputs(work):  # not as recorded: finish the step again
                (work / SUCCESS).unlink()
            if (work / SUCCESS).exists():  # killed between its _SUCCESS.json and the rename
                with deferred():
                    commit(work, p.final, json.loads((work / SUCCESS).read_text()))
                    o.log(f"[{p.name}] committed the finished output of an interrupted run: {p.final}")
                    self.tracker.step(p.name, p.hash, "skipped", 0.0)
                    return self._record(StepOutcome(p.name, p.hash, "skipped", p.final))
            resumed = work.exists() and any(work.iterdir())
        else:
            work, resumed = p.tmp(), False
        work.mkdir(parents=True, exist_ok=True)
        t0, started = time.monotonic(), time.strftime("%Y-%m-%dT%H:%M:%S")
        try:  # from the first word about the step on, a stop is recorded as the step's
            o.log(f"[{p.name}] {'resuming' if resumed else 'running'} in {work}")
            with deferred():
                run_id = self.tracker.start_step(p.name, p.hash)
            ctx = StepContext(out=work, inputs={i: self._final(i) for i in p.step.inputs}, hash=p.hash,
                              pipeline=o.name, progress=o.progress, run_id=run_id, log=o.log)
            result = p.step.run(ctx)
            check_stop()  # a signal whose exception a library swallowed: the output is not committed
        except BaseException as exc:
            duration = time.monotonic() - t0
            if not p.step.resumable:
                shutil.rmtree(work, ignore_errors=True)
            signum = exc.signum if isinstance(exc, StopRequested) else stop_requested()
            if signum is not None or not isinstance(exc, Exception):  # stopped: by a signal, Ctrl-C, sys.exit
                o.log(f"[{p.name}] stopped after {duration:.1f} s ({exc}); "
                      + ("rerun to resume" if p.step.resumable else "it reruns from the start next time"))
                self._record(StepOutcome(p.name, p.hash, "stopped", None, duration))
                with deferred():
                    self._quiet_end_step(p, "stopped", duration)
                if signum is not None and not isinstance(exc, StopRequested):
                    raise StopRequested(signum) from exc  # e.g. Lightning turned it into sys.exit(1)
                raise
            o.log(f"[{p.name}] FAILED after {duration:.1f} s: {type(exc).__name__}: {exc}")
            self.result.error = f"step {p.name}: {type(exc).__name__}: {exc}"
            self.result.exit_code = getattr(exc, "exit_code", None)
            with deferred():
                self.tracker.end_step(p.name, "failed", duration, {}, flatten(p.step.spec()))
            return self._record(StepOutcome(p.name, p.hash, "failed", None, duration))
        duration = time.monotonic() - t0
        record = {
            "step": p.name, "hash": p.hash, "inputs": {i: str(self._final(i)) for i in p.step.inputs},
            "input_hashes": p.input_hashes, "spec": p.step.spec(), "outputs": result.outputs,
            "summary": result.summary, "metrics": result.metrics, "forecast_version": forecast.__version__,
            "code_files": p.code_files,
            "git_revision": self.git, "started": started, "duration_s": round(duration, 3), "resumed": resumed,
            "host": socket.gethostname(), "pid": os.getpid(),
        }
        with deferred():  # the rename is atomic; the deferral keeps the log and tracking in step with it
            commit(work, p.final, record)
            o.log(f"[{p.name}] done in {duration:.1f} s: {p.final}")
            self.tracker.end_step(p.name, "ran", duration, result.metrics, flatten(p.step.spec()), result.summary)
            return self._record(StepOutcome(p.name, p.hash, "ran", p.final, duration, result))

    def _quiet_end_step(self, p: PlannedStep, status: str, duration: float) -> None:
        try:
            self.tracker.end_step(p.name, status, duration, {}, flatten(p.step.spec()))
        except Exception as exc:
            self.opts.log(f"warning: could not record step {p.name} in MLflow: {type(exc).__name__}: {exc}")

    def _final(self, name: str) -> Path:
        return next(p.final for p in self.planned if p.name == name)

    def _gate(self, p: PlannedStep) -> GateDecision:
        o = self.opts
        champion = o.champion() if (o.gate.must_beat_registered and o.champion) else None
        try:
            metrics = json.loads((p.final / "metrics.json").read_text())
        except (OSError, ValueError) as exc:
            decision = GateDecision(False, [Check("metrics.json", False, f"cannot read {p.final / 'metrics.json'}: {exc}")])
        else:
            decision = decide(o.gate, metrics, champion, evaluate_hash=p.hash)
        self.result.gate = decision
        with deferred():
            write_json_atomic({**decision.to_dict(), "evaluate": str(p.final), "evaluate_hash": p.hash,
                               "registered": None if champion is None else asdict(champion),
                               "decided": time.strftime("%Y-%m-%dT%H:%M:%S")}, self.work_dir / "gate.json")
            self.tracker.gate(decision, self.work_dir / "gate.json")
        o.log(f"gate: {'PASSED' if decision.passed else 'FAILED'}")
        for reason in decision.reasons:
            o.log(f"  {reason}")
        return decision

    def _record(self, outcome: StepOutcome) -> StepOutcome:
        self.result.outcomes.append(outcome)
        self._write_latest("running")
        return outcome

    def _write_latest(self, status: str) -> None:
        steps = {o.name: {"hash": o.hash, "status": o.status, "path": str(o.path) if o.path else None,
                          "duration_s": round(o.duration_s, 3)} for o in self.result.outcomes}
        write_json_atomic({"pipeline": self.opts.name, "status": status, "started": self.started,
                           "updated": time.strftime("%Y-%m-%dT%H:%M:%S"), "git_revision": self.git,
                           "pid": os.getpid(), "host": socket.gethostname(),
                           "steps": steps, "gate": self.result.gate.to_dict() if self.result.gate else None,
                           "error": self.result.error}, self.work_dir / "latest.json")


def _param_text(v: object) -> str:
    return json.dumps(v) if not isinstance(v, str) else v


def flatten(d: dict, prefix: str = "", encode: Callable[[object], str] = _param_text) -> dict[str, str]:
    """Nested settings -> dotted keys with ``encode``d values (by default MLflow params: strings as they are)."""
    out: dict[str, str] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out.update(flatten(v, f"{key}.", encode))
        else:
            out[key] = encode(v)
    return out


# ----------------------------------------------------------------------------------------------
# extra DDP processes, and the status view
# ----------------------------------------------------------------------------------------------


def run_worker(steps: list[Step], work_dir: str | Path, rank: int, force: set[str] | None = None,
               poll_s: float = 5.0, timeout_s: float = 24 * 3600, progress: bool = False,
               log: Callable[[str], None] | None = None) -> int:
    """Join the train step as DDP rank ``rank``: wait for its inputs, train in its ``.partial`` dir, exit.

    Returns 0 when done (or when there is nothing to join), 1 if the inputs never appeared.
    """
    log = log or (lambda msg: print(msg, file=sys.stderr))
    planned = plan(steps, Path(work_dir))
    train = next((p for p in planned if p.name == "train"), None)
    if train is None or (train.done and "train" not in downstream(planned, force or set())):
        return 0
    deadline = time.monotonic() + timeout_s
    # Rank 0 started within moments of us (torchrun, srun); a run that began before that is an old one.
    since = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(time.time() - 120))
    inputs = [p for p in planned if p.name in train.step.inputs]
    while not all(p.done for p in inputs):
        if time.monotonic() > deadline:
            log(f"rank {rank}: the train step's inputs did not appear within {timeout_s:.0f} s")
            return 1
        latest = read_latest(work_dir)
        if latest.get("status", "running") != "running" and latest.get("started", "") >= since:
            log(f"rank {rank}: the pipeline run ended ({latest['status']}) before the train step's inputs were ready")
            return 1
        time.sleep(poll_s)
    train.partial.mkdir(parents=True, exist_ok=True)
    ctx = StepContext(out=train.partial, inputs={p.name: p.final for p in inputs}, hash=train.hash,
                      progress=progress, rank=rank, log=log)
    train.step.run(ctx)
    return 0


def step_states(steps: list[Step], work_dir: str | Path) -> list[dict]:
    """For each step: its hash, and whether it is done, partly done (resumable), stale or pending.

    Stale: an earlier output of the step exists under another hash; ``why`` lists what changed since
    the most recent one (code files, settings, inputs, version: :func:`forecast.pipeline.stale.why_stale`).
    """
    from forecast.pipeline.stale import latest_record, why_stale

    rows = []
    for p in plan(steps, Path(work_dir)):
        row = {"step": p.name, "hash": p.hash, "path": str(p.final), "partial": str(p.partial), "state": "pending",
               "why": []}
        if p.done:
            rec = read_json(p.final / SUCCESS)
            row.update(state="done", duration_s=rec.get("duration_s"), started=rec.get("started"))
        else:
            if p.partial.exists():
                row.update(state="partial")
            previous = latest_record(Path(work_dir) / p.name, exclude=p.hash)
            if previous is not None:
                why = why_stale(previous, spec=p.step.spec(), input_hashes=p.input_hashes, code_files=p.code_files,
                                version=forecast.__version__)
                row.update(why=why, previous=previous.get("hash"))
                if row["state"] == "pending":
                    row.update(state="stale")
        rows.append(row)
    return rows
