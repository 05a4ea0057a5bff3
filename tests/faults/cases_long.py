"""The long fault cases (bench/faults.py only): a real tiny pipeline in child processes, signalled at several
moments of every step, killed with SIGKILL, run twice at once, and its committed outputs damaged.

They share one finished pipeline (``Env.shared["pipeline"]``, built by :func:`finished_pipeline`); each case
leaves it finished again, so the cases can run in any order.
"""

from __future__ import annotations

import json
import signal
import subprocess
import threading
import time
from pathlib import Path

from tests.faults.harness import LOST, OK, TRACEBACK, UNCLEAR, WRONG, Case, Env, Result

STEPS = ("simulate", "ingest", "train", "evaluate", "export")
# seconds after the step's "[step] running" line
MOMENTS = ((0.3, signal.SIGTERM), (1.0, signal.SIGINT), (2.5, signal.SIGTERM))


def finished_pipeline(env: Env) -> dict:
    """A tiny pipeline run to the end once (MLflow on, SQLite in its folder): {cfg, args, work, hashes}."""
    if "pipeline" not in env.shared:
        from tests.pipeline.conftest import write_tiny_pipeline

        root = env.shared.get("pipeline_root") or env.tmp
        cfg = write_tiny_pipeline(root, list(STEPS))
        args = [str(cfg), "mlflow.enabled=true", f"mlflow.tracking_uri=sqlite:///{root}/mlflow.db",
                'evaluate.args=["--max-samples", "40"]']
        proc = _run(args)
        if proc.returncode != 0:
            raise RuntimeError(f"the tiny pipeline failed ({proc.returncode}): {proc.stderr[-2000:]}")
        latest = json.loads((root / "work" / "latest.json").read_text())
        env.shared["pipeline"] = {"cfg": cfg, "args": args, "work": root / "work",
                                  "hashes": {s: v["hash"] for s, v in latest["steps"].items()}}
    return env.shared["pipeline"]


def _cmd(args: list[str]) -> list[str]:
    from tests.pipeline.conftest import forecast_cmd

    return forecast_cmd("--quiet", "pipeline", "run", *args)


def _run(args: list[str], timeout: float = 900) -> subprocess.CompletedProcess:
    from tests.pipeline.conftest import ROOT, child_env

    return subprocess.run(_cmd(args), cwd=ROOT, env=child_env(), capture_output=True, text=True, timeout=timeout)


class _Child:
    """A pipeline run in a child process whose stderr is read as it comes."""

    def __init__(self, args: list[str]):
        from tests.pipeline.conftest import ROOT, child_env

        self.proc = subprocess.Popen(_cmd(args), cwd=ROOT, env=child_env(), stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, text=True)
        self.err, self.cond = "", threading.Condition()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        for line in self.proc.stderr:
            with self.cond:
                self.err += line
                self.cond.notify_all()

    def wait_for(self, *needles: str, timeout: float = 300) -> bool:
        with self.cond:
            return self.cond.wait_for(lambda: any(n in self.err for n in needles) or self.proc.poll() is not None,
                                      timeout) and any(n in self.err for n in needles)

    def finish(self, timeout: float = 600) -> int:
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rc = self.proc.wait()
        self.reader.join(10)
        return rc


def _success(work: Path, step: str, h: str) -> bytes | None:
    path = work / step / h / "_SUCCESS.json"
    return path.read_bytes() if path.exists() else None


def _signal_case(step: str, delay: float, signum: int) -> Case:
    def run(env: Env) -> Result:
        from forecast.pipeline.workdir import verify_outputs

        p = finished_pipeline(env)
        work, h = p["work"], p["hashes"][step]
        before = _success(work, step, h)
        child = _Child([*p["args"], "--force", step, "--until", step])
        if not child.wait_for(f"[{step}] running", f"[{step}] resuming"):
            child.finish()
            return Result(UNCLEAR, f"the step never started: {child.err[-300:]}")
        time.sleep(delay)
        done_before = f"[{step}] done" in child.err
        sent = child.proc.poll() is None
        if sent:
            child.proc.send_signal(signum)
        rc = child.finish()
        if "Traceback (most recent call last)" in child.err:
            return Result(TRACEBACK, child.err[child.err.find("Traceback"):][-400:])
        problems = verify_outputs(work / step / h)
        if problems:
            return Result(LOST, f"committed output damaged: {problems[:2]}")
        if not sent:
            return Result(OK, f"the step finished before +{delay} s (exit {rc})")
        # 128 + n: the run stopped itself; -n: the signal's default action ended the process (before the
        # handlers were installed or after they were restored), which a scheduler also sees as 128 + n
        allowed = {128 + signum, -signum} | ({0} if done_before else set())
        if rc not in allowed:
            return Result(WRONG, f"exit {rc} after {signal.Signals(signum).name} at +{delay} s (expected "
                                 f"{128 + signum}): {child.err[-300:]}")
        if not done_before and _success(work, step, h) != before:
            return Result(WRONG, "a stopped run replaced the committed output")
        if list((work / step).glob(".tmp-*")):
            return Result(WRONG, "a half-done working directory was left behind")
        return Result(OK, f"exit {rc}, output intact")

    return Case("pipeline", f"signal/{step}_{signal.Signals(signum).name}_at_{delay}s", run, long=True)


def _kill9_case(step: str) -> Case:
    def run(env: Env) -> Result:
        from forecast.pipeline.workdir import read_latest, verify_outputs

        p = finished_pipeline(env)
        work, h = p["work"], p["hashes"][step]
        child = _Child([*p["args"], "--force", step, "--until", step])
        if not child.wait_for(f"[{step}] running", f"[{step}] resuming"):
            child.finish()
            return Result(UNCLEAR, f"the step never started: {child.err[-300:]}")
        time.sleep(1.0)
        child.proc.kill()
        child.finish()
        time.sleep(0.5)  # DataLoader workers of a killed trainer let go of the lock
        status = read_latest(work).get("status")
        if status == "running":
            return Result(WRONG, "latest.json still says 'running' after kill -9")
        rerun = _run([*p["args"], "--until", step])
        if rerun.returncode != 0 or "Traceback" in rerun.stderr:
            return Result(TRACEBACK if "Traceback" in rerun.stderr else WRONG,
                          f"rerun exit {rerun.returncode}: {rerun.stderr[-400:]}")
        problems = verify_outputs(work / step / h)
        if problems:
            return Result(LOST, f"after kill -9 and rerun: {problems[:2]}")
        return Result(OK, f"read as {status!r}; the rerun left a verified output")

    return Case("pipeline", f"kill9/{step}", run, long=True)


def _concurrent(env: Env) -> Result:
    """A second run while the first holds the lock: exit 75. The first (a forced rerun of everything) is then
    stopped with SIGTERM, which leaves the committed outputs as they were."""
    p = finished_pipeline(env)
    first = _Child([*p["args"], "--force", "simulate"])
    if not first.wait_for("[simulate] running"):
        first.finish()
        return Result(UNCLEAR, "the first run did not start")
    second = _run(p["args"])
    if first.proc.poll() is None:
        first.proc.send_signal(signal.SIGTERM)
    first.finish()
    if second.returncode != 75:
        return Result(WRONG, f"a second run at the same time exited {second.returncode}: {second.stderr[-300:]}")
    if "locked by another pipeline run" not in second.stderr:
        return Result(UNCLEAR, f"exit 75 without naming the holder: {second.stderr[-300:]}")
    return Result(OK, "exit 75, naming the holder")


def _flip(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


READERS = {"simulate": ("ingest", "train", "evaluate", "export"), "ingest": ("train", "evaluate", "export"),
           "train": ("evaluate", "export"), "evaluate": (), "export": ()}  # what reads a step, directly or not
DAMAGE = {  # step: a glob of the file to damage inside its committed output
    "simulate": "runs/*/*/fcd.parquet", "ingest": "store/tracks/**/*.parquet", "train": "model.pt",
    "evaluate": "metrics.json", "export": "bundle/*.onnx",
}


def _damage_case(step: str, how: str) -> Case:
    def run(env: Env) -> Result:
        from forecast.pipeline.workdir import verify_outputs

        p = finished_pipeline(env)
        work = p["work"]
        final = work / step / p["hashes"][step]
        if how == "flip":
            target = sorted(final.glob(DAMAGE[step]))[0]
            _flip(target)
        elif how == "delete_success":
            target = final / "_SUCCESS.json"
            target.unlink()
        else:
            target = final / "_SUCCESS.json"
            target.write_text("{half")
        rerun = _run(p["args"])
        if rerun.returncode != 0 or "Traceback" in rerun.stderr:
            return Result(TRACEBACK if "Traceback" in rerun.stderr else WRONG,
                          f"rerun exit {rerun.returncode}: {rerun.stderr[-400:]}")
        latest = json.loads((work / "latest.json").read_text())
        if latest["steps"][step]["status"] != "ran":
            return Result(WRONG, f"{target.relative_to(work)} damaged, and the step was {latest['steps'][step]['status']}")
        problems = verify_outputs(final)
        if problems:
            return Result(WRONG, f"after the rerun: {problems[:2]}")
        later = [s for s in READERS[step] if latest["steps"][s]["status"] != "ran"]
        if later:
            return Result(WRONG, f"steps that read the rebuilt {step} were not rerun: {later}")
        return Result(OK, f"{how} {target.name}: {step} and what reads it rebuilt")

    return Case("pipeline", f"damaged/{step}_{how}", run, long=True)


def cases() -> list[Case]:
    out = [_signal_case(s, d, sig) for s in STEPS for d, sig in MOMENTS]
    out += [_kill9_case(s) for s in STEPS]
    out.append(Case("pipeline", "concurrent_run", _concurrent, long=True))
    out += [_damage_case(s, "flip") for s in STEPS]
    out += [_damage_case("train", "delete_success"), _damage_case("evaluate", "garbage_success")]
    return out
