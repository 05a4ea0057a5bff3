"""forecast.progress.track: a bar on a terminal, plain lines in a scheduler's log."""

from __future__ import annotations

import itertools

import pytest

from forecast import progress as P


def test_a_log_gets_plain_lines_at_intervals_and_at_the_end(capsys, monkeypatch):
    """Under pytest stderr is no terminal, as in a scheduler's log: no carriage returns, one line per interval."""
    ticks = itertools.count(0.0, 10.0)  # each clock reading 10 s after the last
    seen = list(P.track(range(7), "evaluate", "sample", clock=lambda: next(ticks)))
    assert seen == list(range(7))
    err = capsys.readouterr().err
    assert "\r" not in err
    done = [int(line.split(": ")[1].split("/")[0]) for line in err.splitlines()]
    # the clock moves 10 s a reading and each interval check reads it once or twice: a line every 30 s,
    # not one per item, and the end's line only where the last interval's did not already say 7/7
    assert done == [3, 5, 7]
    assert err.splitlines()[-1].startswith("evaluate: 7/7 samples (100 %), ")
    assert all("samples/s" in line for line in err.splitlines())


def test_a_loop_that_stops_early_says_where(capsys):
    def failing():
        yield from range(3)
        raise RuntimeError("bad row")

    with pytest.raises(RuntimeError):
        for _ in P.track(failing(), "ingest", "unit"):
            pass
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith("ingest: 3 units, ") and line.endswith(", stopped")
    for k in P.track(range(10), "evaluate", "sample"):
        if k == 4:
            break
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith("evaluate: 4/10 samples (40 %), ") and line.endswith(", stopped")


def test_unsized_items_and_disabled_progress(capsys):
    assert list(P.track((c for c in "abc"), "ingest", "unit")) == ["a", "b", "c"]
    assert capsys.readouterr().err.splitlines()[-1].startswith("ingest: 3 units, ")
    assert list(P.track([1, 2], "x", "unit", enabled=False)) == [1, 2]
    assert capsys.readouterr().err == ""


def test_a_terminal_gets_tqdms_bar(capsys, monkeypatch):
    monkeypatch.setattr("sys.stderr.isatty", lambda: True, raising=False)
    assert list(P.track(range(3), "simulate", "network")) == [0, 1, 2]
    err = capsys.readouterr().err
    assert "simulate" in err and "100%|" in err and "\r" in err  # tqdm's bar, redrawn in place
