"""The fault suite's harness: a case tries one bad input or fault and says how the code took it.

Outcomes (the columns of the table):

* ``ok``: a fault the code must absorb (a valid but unusual input, a signal, a kill) and did, correctly;
* ``clear error``: the documented error type or exit code, and a message naming the file, row or field;
* ``quarantined``: the bad rows went to quarantine with their file, row, field and reason, the rest to the store;
* ``unclear error``: refused, but with the wrong exit code or a message that does not say where;
* ``traceback``: an undocumented exception escaped (a crash);
* ``silently wrong``: accepted, and the result is wrong;
* ``data lost``: valid rows or agents missing from the result.

``tests/faults/test_faults.py`` runs the fast cases in CI; ``bench/faults.py`` runs all of them and prints the table.
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

OK, CLEAR, QUARANTINED, UNCLEAR, TRACEBACK, WRONG, LOST = (
    "ok", "clear error", "quarantined", "unclear error", "traceback", "silently wrong", "data lost")
KINDS = (OK, CLEAR, QUARANTINED, UNCLEAR, TRACEBACK, WRONG, LOST)
GOOD = {OK, CLEAR, QUARANTINED}
AREAS = ("ingest", "store", "runtime", "evaluate", "export", "pipeline")


@dataclass
class Result:
    kind: str
    detail: str = ""


@dataclass
class Env:
    """What cases may read (never write: copy first) and a fresh folder of their own."""

    tmp: Path
    bundle: Path | None = None  # a tiny exported bundle
    model: Path | None = None  # its model.pt
    sumo_runs: Path | None = None  # tiny SUMO runs, <split>/<network>/
    store: Path | None = None  # those runs ingested (5 s scenarios)
    shared: dict = field(default_factory=dict)  # per-session cache (baselines)

    def readonly(self) -> Path:
        """A folder nothing may be written to."""
        if os.geteuid() != 0:
            ro = self.tmp / "ro"
            ro.mkdir(exist_ok=True)
            ro.chmod(0o555)
            return ro
        return Path("/sys/kernel")  # root ignores file modes; sysfs refuses even root

    def copy(self, src: Path, name: str | None = None) -> Path:
        dst = self.tmp / (name or src.name)
        if src.is_dir():
            shutil.copytree(src, dst)
        else:
            shutil.copy2(src, dst)
        return dst


@dataclass
class Case:
    area: str
    name: str
    run: Callable[[Env], Result]
    owner: str = "reliab"  # whose fix the case needs (the items are shared among helpers)
    long: bool = False  # bench/faults.py only (subprocesses, whole pipelines)
    needs: tuple[str, ...] = ()  # Env fields it reads: bundle, model, sumo_runs, store

    @property
    def id(self) -> str:
        return f"{self.area}/{self.name}"


def run_case(case: Case, env: Env) -> Result:
    try:
        res = case.run(env)
    except Exception as exc:  # the harness's own check crashed: report it as what it is
        return Result(TRACEBACK, f"{type(exc).__name__}: {exc} | {traceback.format_exc(limit=-3)[-600:]}")
    return res


# --- ways to judge a call ---------------------------------------------------------------------------


def expect_raise(fn: Callable[[], object], types: type | tuple[type, ...], *mentions: str) -> Result:
    """A clear error is one of ``types`` whose message contains every one of ``mentions``."""
    try:
        fn()
    except types as exc:
        msg = str(exc)
        missing = [m for m in mentions if m not in msg]
        if missing:
            return Result(UNCLEAR, f"{type(exc).__name__}: {msg[:200]} (does not mention {missing})")
        return Result(CLEAR, f"{type(exc).__name__}: {msg[:200]}")
    except Exception as exc:
        return Result(TRACEBACK, f"{type(exc).__name__}: {str(exc)[:300]}")
    return Result(WRONG, "accepted without a word")


def expect_ok(fn: Callable[[], object], check: Callable[[object], str | None] | None = None) -> Result:
    """The call must succeed, and ``check(result)`` return None (else the problem)."""
    try:
        out = fn()
    except Exception as exc:
        return Result(TRACEBACK, f"{type(exc).__name__}: {str(exc)[:300]}")
    problem = check(out) if check else None
    return Result(WRONG, problem) if problem else Result(OK)


def run_cli(argv: list[str]) -> tuple[int | None, str, str]:
    """``forecast`` in this process: (exit code or None if it raised, stdout, stderr incl. any traceback)."""
    from forecast.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            rc: int | None = main(argv)
        except SystemExit as exc:  # argparse
            rc = exc.code if isinstance(exc.code, int) else 2
        except Exception:
            traceback.print_exc(file=err)
            rc = None
    return rc, out.getvalue(), err.getvalue()


def expect_cli(argv: list[str], code: int, *mentions: str) -> Result:
    """Exit ``code`` with every one of ``mentions`` in the output, and no traceback."""
    rc, out, err = run_cli(argv)
    return judge_exit(rc, out + err, code, mentions)


def judge_exit(rc: int | None, text: str, code: int, mentions=()) -> Result:
    tail = text.strip().splitlines()[-1][:240] if text.strip() else ""
    if rc is None or "Traceback (most recent call last)" in text:
        where = text[text.find("Traceback"):][-400:] if "Traceback" in text else tail
        return Result(TRACEBACK, where)
    if rc == 0 and code != 0:
        return Result(WRONG, f"exit 0: {tail}")
    if rc != code:
        return Result(UNCLEAR, f"exit {rc}, documented {code}: {tail}")
    missing = [m for m in mentions if m not in text]
    if missing:
        return Result(UNCLEAR, f"exit {rc} but the message does not mention {missing}: {tail}")
    return Result(CLEAR if code else OK, f"exit {rc}: {tail}")


# --- the table -------------------------------------------------------------------------------------


def table(results: list[tuple[Case, Result]]) -> str:
    head = f"{'area':<10}{'tried':>7}" + "".join(f"{k:>16}" for k in KINDS)
    lines = [head]
    for area in (*AREAS, "total"):
        rows = [r for c, r in results if area in ("total", c.area)]
        if not rows:
            continue
        lines.append(f"{area:<10}{len(rows):>7}" + "".join(f"{sum(r.kind == k for r in rows):>16}" for k in KINDS))
    bad = [(c, r) for c, r in results if r.kind not in GOOD]
    if bad:
        lines.append("")
        lines.append("not handled (owner: case: outcome: detail)")
        lines += [f"  {c.owner}: {c.id}: {r.kind}: {r.detail[:300]}" for c, r in bad]
    return "\n".join(lines)


def counts(results: list[tuple[Case, Result]]) -> dict:
    out: dict = {"tried": len(results)}
    for area in AREAS:
        rows = [r for c, r in results if c.area == area]
        out[area] = {"tried": len(rows), **{k: sum(r.kind == k for r in rows) for k in KINDS}}
    out["total"] = {k: sum(r.kind == k for _, r in results) for k in KINDS}
    out["not_handled"] = [{"case": c.id, "owner": c.owner, "kind": r.kind, "detail": r.detail[:500]}
                          for c, r in results if r.kind not in GOOD]
    return out
