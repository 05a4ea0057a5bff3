"""SIGTERM and SIGINT during a pipeline run: recorded always, acted on where the run can stop cleanly.

A scheduler's SIGTERM (exit 143) or a Ctrl-C (exit 130) must stop the run at whatever point it
arrives, and must never let a half-done step commit. Raising from the handler alone is not enough:
when the signal lands inside library cleanup (SQLAlchemy's ``__del__`` during garbage collection,
an ``except BaseException: pass``), Python prints "Exception ignored in ..." and drops the
exception, and the step then finished and committed with exit 0. So:

* the handler records the signal first, then raises :class:`StopRequested` at once, unless the
  main thread is inside a :meth:`StopSignals.deferred` section (tracking calls, commits, the
  ``latest.json`` write), where the raise waits for the section's end, or inside the tracking
  store's own code (MLflow, SQLAlchemy, SQLite: :func:`inside_store_call`), where it is only
  recorded: a stop raised while SQLite runs a statement leaves that connection holding its lock,
  and every later MLflow write of the process fails "database is locked";
* the work loops check the record where stopping is clean: Lightning's batch ends
  (:class:`StopOnSignal`, in every training run), after each step returns and before it commits,
  after each in-process CLI call, when a plain CLI command returns or fails; a dropped or held-back
  stop is therefore raised at the next such point. Long work with MLflow's frames on the stack (a
  slow artifact upload, or ``mlflow.autolog`` wrapping a whole ``fit``) postpones the stop that far.

``StopRequested`` is a ``BaseException``: an ``except Exception`` in a step or a library lets it
through, as it does ``KeyboardInterrupt``.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

HANDLED = (signal.SIGTERM, signal.SIGINT)
# Top-level packages whose frames on the stack mean a tracking-store call is under way.
STORE_PACKAGES = frozenset({"mlflow", "sqlalchemy", "alembic", "sqlite3"})


def inside_store_call(frame) -> bool:
    """Whether ``frame`` or a frame below it runs code of the tracking store (:data:`STORE_PACKAGES`).

    Checked at the handler rather than at each call site: every MLflow call is covered, those of
    libraries (Lightning's logger) and of code written later included.
    """
    while frame is not None:
        if str(frame.f_globals.get("__name__", "")).partition(".")[0] in STORE_PACKAGES:
            return True
        frame = frame.f_back
    return False


class StopRequested(BaseException):
    """The run was asked to stop by ``signum``; the process exits ``128 + signum`` (143 SIGTERM, 130 SIGINT)."""

    def __init__(self, signum: int):
        self.signum = int(signum)
        super().__init__(f"stopped by {signal.Signals(self.signum).name}")

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


class StopSignals:
    """Install the handlers for SIGTERM and SIGINT for the ``with`` block; restore the old ones after."""

    def __init__(self) -> None:
        self.received: int | None = None
        self._raised = False  # whether the handler has raised the stop once
        self._deferred = 0
        self._previous: dict[int, object] = {}

    def __enter__(self) -> StopSignals:
        global _current
        if threading.current_thread() is threading.main_thread():  # signal.signal works there only
            for s in HANDLED:
                self._previous[s] = signal.signal(s, self._handle)
        _current = self
        return self

    def __exit__(self, *exc) -> None:
        global _current
        for s, h in self._previous.items():
            signal.signal(s, h)
        _current = None

    def _handle(self, signum: int, frame) -> None:
        if self.received is None:
            self.received = signum
        # Raised once by the handler; later signals are left to the check points, unless the first one was held
        # back (a second Ctrl-C outside the store then stops at once instead of waiting for a batch end).
        if not self._raised and self._deferred == 0 and not inside_store_call(frame):
            self._raised = True
            raise StopRequested(self.received)

    def check(self) -> None:
        """Raise StopRequested if a signal came (also when its first raise was swallowed by a library)."""
        if self.received is not None:
            raise StopRequested(self.received)

    @contextmanager
    def deferred(self) -> Iterator[None]:
        """A section that a signal must not cut in two; the stop is raised when it ends."""
        self._deferred += 1
        try:
            yield
        finally:
            self._deferred -= 1
        if self._deferred == 0:
            self.check()


_current: StopSignals | None = None


def running() -> bool:
    """Whether a StopSignals block is active in this process (its handlers own SIGTERM and SIGINT)."""
    return _current is not None


def check_stop() -> None:
    """For work loops: raise StopRequested if the running pipeline was asked to stop (no-op outside one)."""
    if _current is not None:
        _current.check()


def stop_requested() -> int | None:
    """The signal that asked the running pipeline to stop, or None."""
    return _current.received if _current is not None else None


@contextmanager
def deferred() -> Iterator[None]:
    """:meth:`StopSignals.deferred` of the running command (a plain block outside one).

    The handler already holds a stop back inside MLflow's own code; a section still earns its place
    where several calls must land together (a run's metrics and its artifacts, a commit and its
    record) or where long work follows, so that the stop comes when the section ends rather than at
    the next check point.
    """
    if _current is None:
        yield
        return
    with _current.deferred():
        yield


def lightning_callback():
    """A Lightning callback that stops training at the next batch end once a signal came."""
    from lightning.pytorch.callbacks import Callback

    class StopOnSignal(Callback):
        def on_train_batch_end(self, *args, **kwargs) -> None:
            check_stop()

        def on_validation_batch_end(self, *args, **kwargs) -> None:
            check_stop()

    return StopOnSignal()
