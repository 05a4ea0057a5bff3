"""SIGTERM and SIGINT are honoured at every point of a run: exit 143 / 130, and nothing half-done is committed."""

from __future__ import annotations

import gc
import json
import os
import signal

import pytest

from forecast.pipeline.runner import RunOptions, plan, run_pipeline
from forecast.pipeline.signals import StopRequested, StopSignals, check_stop
from forecast.pipeline.steps import StepContext, StepResult
from forecast.pipeline.workdir import SUCCESS


class _SignalInCleanup:
    """Sends a signal to this process from ``__del__``, as a library's cleanup might be running when one lands."""

    def __init__(self, signum: int):
        self.signum = signum

    def __del__(self):
        os.kill(os.getpid(), self.signum)  # the handler runs here: its exception is "ignored" by Python


class SwallowingStep:
    """A step during which the signal's exception is dropped by Python (raised inside ``__del__``)."""

    name, inputs, resumable = "export", (), False

    def __init__(self, signum: int):
        self.signum = signum
        self.finished = False

    def spec(self) -> dict:
        return {}

    def run(self, ctx: StepContext) -> StepResult:
        obj = _SignalInCleanup(self.signum)
        del obj
        gc.collect()
        (ctx.out / "bundle.json").write_text("{}")
        self.finished = True  # the step went on to the end: only a check after it can stop the commit
        return StepResult({"bundle": "bundle.json"})


# the handler's exception, raised inside __del__, is reported as unraisable: that is the point of the test
pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")


@pytest.mark.parametrize("signum, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_signal_swallowed_by_library_cleanup_still_stops_the_run(tmp_path, signum, code):
    step = SwallowingStep(signum)
    opts = RunOptions(name="t", progress=False, log=lambda msg: None)
    with StopSignals() as stop, pytest.raises(StopRequested) as info:
        run_pipeline([step], tmp_path, opts)
    assert step.finished and stop.received == signum and info.value.exit_code == code
    assert not plan([step], tmp_path)[0].done  # ... and the step was not committed
    assert os.listdir(tmp_path / "export") == []
    latest = json.loads((tmp_path / "latest.json").read_text())
    assert latest["status"] == "stopped" and latest["steps"]["export"]["status"] == "stopped"


def test_cli_exits_143_when_the_signal_is_swallowed(tmp_path, monkeypatch, capsys):
    """The case of the issue: before, ``forecast pipeline run`` exited 0 and committed the step."""
    from forecast.cli import main
    from tests.pipeline.conftest import write_tiny_pipeline

    cfg = write_tiny_pipeline(tmp_path, ["simulate"])
    step = SwallowingStep(signal.SIGTERM)
    monkeypatch.setattr("forecast.pipeline.steps.build_steps", lambda loaded, registry=None: [step])
    assert main(["--quiet", "pipeline", "run", str(cfg), "mlflow.enabled=false"]) == 143
    assert "stopped by signal 15" in capsys.readouterr().err
    assert step.finished and not list((tmp_path / "work" / "export").iterdir())  # the stand-in is named export


def test_signal_inside_a_deferred_section_waits_for_its_end():
    done = []
    with StopSignals() as stop, pytest.raises(StopRequested):
        with stop.deferred():
            os.kill(os.getpid(), signal.SIGTERM)
            done.append("rest of the section")
    assert done == ["rest of the section"]
    check_stop()  # outside a run: no-op


def test_handlers_are_restored():
    before = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    with StopSignals():
        assert signal.getsignal(signal.SIGTERM) != before[0]
    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == before


def test_resumable_step_keeps_its_partial_on_stop(tmp_path):
    from tests.pipeline.test_runner import FakeStep

    class Stopping(FakeStep):
        def run(self, ctx):
            (ctx.out / "partial.txt").write_text("half")
            os.kill(os.getpid(), signal.SIGTERM)
            raise AssertionError("not reached: the handler raises")

    steps = [FakeStep("simulate", resumable=True), Stopping("ingest", ("simulate",), resumable=True)]
    with StopSignals(), pytest.raises(StopRequested):
        run_pipeline(steps, tmp_path, RunOptions(name="t", progress=False, log=lambda m: None))
    p = plan(steps, tmp_path)
    assert p[0].done and not p[1].done and (p[1].partial / "partial.txt").read_text() == "half"
    assert not (p[1].partial / SUCCESS).exists()


def test_a_signal_during_the_runs_last_writes_is_recorded_as_stopped(tmp_path):
    from forecast.pipeline.tracking import NullTracker
    from tests.pipeline.test_runner import FakeStep

    class SignalAtFinish(NullTracker):
        def finish(self, status) -> None:  # the run's last writes: latest.json already says how it ended
            os.kill(os.getpid(), signal.SIGTERM)

    steps = [FakeStep("simulate")]
    with StopSignals(), pytest.raises(StopRequested) as info:
        run_pipeline(steps, tmp_path, RunOptions(name="t", progress=False, log=lambda m: None), SignalAtFinish())
    assert info.value.exit_code == 143
    latest = json.loads((tmp_path / "latest.json").read_text())
    assert latest["status"] == "stopped"  # as the exit code says; the step itself had committed in full
    assert latest["steps"]["simulate"]["status"] == "ran" and plan(steps, tmp_path)[0].done


def test_a_signal_during_the_runs_last_writes_marks_the_mlflow_run_killed(tmp_path):
    """The signal lands while MLflow closes the parent run as FINISHED: the run must not stay FINISHED
    when the pipeline exits 143 and latest.json says stopped."""
    from mlflow.tracking import MlflowClient

    from forecast.pipeline.tracking import MlflowTracker
    from tests.pipeline.test_runner import FakeStep

    class SignalAtFinish(MlflowTracker):
        def finish(self, status) -> None:
            super().finish(status)
            if status == "FINISHED":
                os.kill(os.getpid(), signal.SIGTERM)

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracker = SignalAtFinish(uri, "t")
    with StopSignals(), pytest.raises(StopRequested):
        run_pipeline([FakeStep("simulate")], tmp_path / "w", RunOptions(name="t", progress=False, log=lambda m: None),
                     tracker)
    assert json.loads((tmp_path / "w" / "latest.json").read_text())["status"] == "stopped"
    assert MlflowClient(uri).get_run(tracker.parent).info.status == "KILLED"


@pytest.fixture
def signal_inside_sqlite_write():
    """Sends SIGTERM from inside MLflow's first INSERT, as SQLAlchemy hands it to SQLite: the handler then
    runs with MLflow's and SQLAlchemy's frames on the stack. Yields the list of statements it fired in:
    appending ``"armed"`` arms it (after the store is set up, once the handlers are installed)."""
    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    sent: list[str] = []

    def kill_once(conn, cursor, statement, params, context, executemany):
        if sent == ["armed"] and statement.lstrip().upper().startswith("INSERT"):
            sent.append(statement)
            os.kill(os.getpid(), signal.SIGTERM)

    event.listen(Engine, "before_cursor_execute", kill_once)
    try:
        yield sent
    finally:
        event.remove(Engine, "before_cursor_execute", kill_once)


def _mlflow_run(tmp_path):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    return client, client.create_run(client.create_experiment("t")).info.run_id


def test_a_signal_inside_an_mlflow_call_is_held_back_and_the_store_stays_usable(tmp_path, signal_inside_sqlite_write):
    """A stop raised while SQLite ran one of MLflow's statements left the store locked for the rest of the
    process (every later MLflow write failed "database is locked", the stop's own record among them): the
    handler only records a signal that lands inside the store's code, at any call site, and the stop is raised
    at the next check point."""
    client, run_id = _mlflow_run(tmp_path)
    with StopSignals() as stop:
        signal_inside_sqlite_write.append("armed")
        client.log_metric(run_id, "loss", 1.0, step=3)  # the signal lands inside this call
        assert len(signal_inside_sqlite_write) == 2 and stop.received == signal.SIGTERM
        with pytest.raises(StopRequested):
            check_stop()
        client.log_metric(run_id, "loss", 2.0, step=4)  # the store is not left locked
    assert [m.value for m in client.get_metric_history(run_id, "loss")] == [1.0, 2.0]


@pytest.mark.parametrize("ending", ["returns 0", "raises"])
def test_a_plain_command_exits_143_when_its_stop_was_held_back(tmp_path, monkeypatch, signal_inside_sqlite_write,
                                                                 capsys, ending):
    """A command whose last act is an MLflow call (the ETH/UCY benchmark's log, a registry call) does not exit 0;
    nor 1 with a traceback ("failed") when a library raises on its way out: 143, "stopped: rerun"."""
    from forecast.cli import EXIT_OK, main

    client, run_id = _mlflow_run(tmp_path)

    def command(args):
        signal_inside_sqlite_write.append("armed")
        client.log_metric(run_id, "loss", 1.0)
        if ending == "raises":
            raise RuntimeError("connection closed")
        return EXIT_OK

    monkeypatch.setattr("forecast.cli._cmd_store", command)
    assert main(["store", str(tmp_path)]) == 143
    assert len(signal_inside_sqlite_write) == 2 and "stopped by SIGTERM" in capsys.readouterr().err
    assert [m.value for m in client.get_metric_history(run_id, "loss")] == [1.0]


def test_plain_training_stops_at_the_next_batch_end_after_a_held_back_stop(sumo_store, tmp_path,
                                                                           signal_inside_sqlite_write, monkeypatch):
    """Lightning's MLflow logger writes every few steps, so a scheduler's SIGTERM often lands in SQLite and is only
    recorded there; a plain ``forecast train`` (no pipeline around it) must still stop at the next batch end,
    not train to the end and then exit."""
    from forecast.training.train import run_training
    from tests.conftest import tiny_train_config

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    cfg = tiny_train_config(sumo_store.path, tmp_path / "run", **{"optim.max_epochs": 3})
    with StopSignals() as stop, pytest.raises(StopRequested):
        signal_inside_sqlite_write.append("armed")
        run_training(cfg, progress=False)
    assert len(signal_inside_sqlite_write) == 2 and stop.received == signal.SIGTERM
    assert not (tmp_path / "run" / "model.pt").exists()  # stopped during fit, not after it


def test_a_second_signal_after_a_held_back_one_stops_at_once(tmp_path, signal_inside_sqlite_write):
    """A second Ctrl-C outside the store's code is not ignored because the first one was held back."""
    client, run_id = _mlflow_run(tmp_path)
    with StopSignals() as stop:
        signal_inside_sqlite_write.append("armed")
        client.log_metric(run_id, "loss", 1.0)
        assert stop.received == signal.SIGTERM
        with pytest.raises(StopRequested) as info:
            os.kill(os.getpid(), signal.SIGINT)
            raise AssertionError("not reached: the handler raises")
    assert info.value.signum == signal.SIGTERM  # the stop keeps the first signal's code (143)

