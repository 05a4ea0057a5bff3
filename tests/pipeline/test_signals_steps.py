"""Each real pipeline step signalled at several moments: exit 143 (SIGTERM) / 130 (SIGINT), the committed
output untouched, nothing half-done left, and a rerun that finds everything intact.

In-process (``forecast.cli.main``) to keep the imports paid once; the signal comes from a thread, as
from a scheduler, and Python runs the handler in the main thread wherever it is.
"""

from __future__ import annotations

import io
import json
import os
import signal
import sys
import threading
import time

import pytest

from forecast.cli import main
from forecast.pipeline.workdir import verify_outputs
from tests.pipeline.conftest import write_tiny_pipeline

STEPS = ["simulate", "ingest", "train", "evaluate", "export"]
# seconds after the step's "[step] running" line; the first moment of each is "at once"
MOMENTS = {"simulate": [(0.0, signal.SIGTERM), (1.5, signal.SIGINT)],
           "ingest": [(0.0, signal.SIGINT), (0.15, signal.SIGTERM)],
           "train": [(0.0, signal.SIGTERM), (0.6, signal.SIGTERM)],
           "evaluate": [(0.3, signal.SIGTERM), (3.0, signal.SIGINT)],
           "export": [(0.5, signal.SIGTERM), (4.0, signal.SIGTERM)]}


class _Tee(io.TextIOBase):
    """stderr that also tells a waiting thread when a line appeared."""

    def __init__(self, inner):
        self.inner, self.text, self.cond = inner, "", threading.Condition()

    def write(self, s: str) -> int:
        with self.cond:
            self.text += s
            self.cond.notify_all()
        return self.inner.write(s)

    def flush(self) -> None:
        self.inner.flush()

    def wait_for(self, *needles: str, timeout: float = 300.0) -> bool:
        with self.cond:
            return self.cond.wait_for(lambda: any(n in self.text for n in needles), timeout)


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("signals")
    cfg = write_tiny_pipeline(tmp, STEPS)
    args = [str(cfg), "mlflow.enabled=true", f"mlflow.tracking_uri=sqlite:///{tmp}/mlflow.db",
            'evaluate.args=["--max-samples", "40"]']
    assert main(["--quiet", "pipeline", "run", *args]) == 0
    latest = json.loads((tmp / "work" / "latest.json").read_text())
    return tmp / "work", args, {s: v["hash"] for s, v in latest["steps"].items()}


@pytest.fixture
def safe_signals():
    """A signal that lands after the run returned must not end the test session."""
    previous = {s: signal.signal(s, lambda *a: None) for s in (signal.SIGTERM, signal.SIGINT)}
    yield
    for s, h in previous.items():
        signal.signal(s, h)


@pytest.mark.parametrize("step", STEPS)
def test_signal_during_step(pipeline, step, safe_signals, monkeypatch):
    work, args, hashes = pipeline
    final = work / step / hashes[step]
    before = (final / "_SUCCESS.json").read_bytes()
    stopped = 0
    for delay, signum in MOMENTS[step]:
        tee = _Tee(sys.stderr)
        monkeypatch.setattr(sys, "stderr", tee)
        finished, sent = threading.Event(), {}

        def signal_later(delay=delay, signum=signum, tee=tee, finished=finished, sent=sent):
            if not tee.wait_for(f"[{step}] running", f"[{step}] resuming"):
                return
            time.sleep(delay)
            if not finished.is_set():
                sent["at"] = delay
                os.kill(os.getpid(), signum)

        watcher = threading.Thread(target=signal_later, daemon=True)
        watcher.start()
        rc = main(["--quiet", "pipeline", "run", *args, "--force", step, "--until", step])
        finished.set()
        watcher.join(timeout=30)
        monkeypatch.setattr(sys, "stderr", tee.inner)
        where = f"{step} at +{delay} s with {signal.Signals(signum).name}"
        if not sent:  # the step finished before the moment came: a normal run
            assert rc == 0, where
            continue
        assert rc == 128 + signum, f"{where}: exit {rc}\n{tee.text[-2000:]}"
        assert f"stopped by signal {signum}" in tee.text, where
        latest = json.loads((work / "latest.json").read_text())
        assert latest["status"] == "stopped", where  # as the exit code says, also when the signal came late
        # The step either ended stopped, its earlier output untouched, or committed in full before the
        # signal (then the signal landed after the commit, in the run's last writes): never half of each.
        if latest["steps"][step]["status"] == "stopped":
            stopped += 1
            assert (final / "_SUCCESS.json").read_bytes() == before, f"{where}: a stopped run replaced the output"
        else:
            assert latest["steps"][step]["status"] == "ran", where
            assert not verify_outputs(final), f"{where}: a committed output that is not what was written"
        assert not list((work / step).glob(".tmp-*")), f"{where}: a half-done directory was left behind"
        assert not list((work / step).glob(".trash-*")), where
        before = (final / "_SUCCESS.json").read_bytes()
    assert stopped >= 1, f"no moment of {step} fell inside the step"
    assert main(["--quiet", "pipeline", "run", *args, "--until", step]) == 0  # intact: skipped or resumed
