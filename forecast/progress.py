"""Progress of long loops: a bar on a terminal, plain lines in a log.

A scheduler's log is a file, not a terminal: there tqdm's carriage-return updates pile into one line
of thousands of characters. So a bar is drawn only when stderr is a terminal (as training does with
Lightning's bar); otherwise a line such as ``evaluate: 1200/4000 samples (30 %), 21.4 samples/s``
is printed at most every :data:`LOG_EVERY_S` seconds, and once at the end.
"""

from __future__ import annotations

import operator
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from typing import TypeVar

from tqdm import tqdm

T = TypeVar("T")
LOG_EVERY_S = 30.0


def track(items: Iterable[T], desc: str, unit: str, enabled: bool = True, total: int | None = None,
          clock: Callable[[], float] = time.monotonic) -> Iterator[T]:
    """Yield ``items`` while reporting progress on stderr (nothing when ``enabled`` is False)."""
    if not enabled:
        yield from items
        return
    if sys.stderr.isatty():
        yield from tqdm(items, desc=desc, unit=unit, total=total, file=sys.stderr)
        return
    n = total if total is not None else operator.length_hint(items, -1)
    n = n if n >= 0 else None
    start = last = clock()
    done, printed = 0, -1

    def line(end: str = "") -> str:
        rate = done / max(clock() - start, 1e-9)
        share = f" ({100 * done / n:.0f} %)" if n else ""
        return f"{desc}: {done}{f'/{n}' if n is not None else ''} {unit}s{share}, {rate:.1f} {unit}s/s{end}"

    finished = False
    try:
        for item in items:
            yield item
            done += 1
            if clock() - last >= LOG_EVERY_S:
                last, printed = clock(), done
                print(line(), file=sys.stderr, flush=True)
        finished = True
    finally:  # also when the loop stops early (an error, a stop signal): the log says where
        if not finished:
            print(line(", stopped"), file=sys.stderr, flush=True)
        elif printed != done:
            print(line(), file=sys.stderr, flush=True)
