"""glibc keeps a freed sample's memory for the next one once ``keep_freed_memory`` ran."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest

# A loader worker's pattern: batches of 8 samples, each a raster (1.2 MB) and two crops (0.55 MB) written and
# kept until the batch is made, then all freed; prints the minor page faults of 10 batches after a first.
_LOOP = """
import resource, sys
import numpy as np
from forecast.malloc import keep_freed_memory
if sys.argv[1] == "keep":
    assert keep_freed_memory()
def batch():
    samples = [[np.full(n, 1, np.uint8) for n in (1_200_000, 550_000, 550_000)] for _ in range(8)]
    del samples
batch()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):
    batch()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _faults(mode: str) -> int:
    out = subprocess.run([sys.executable, "-c", _LOOP, mode], capture_output=True, text=True, check=True)
    return int(out.stdout)


@pytest.mark.skipif(not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc", reason="glibc only")
def test_freed_sample_memory_is_reused_instead_of_faulted_in_again():
    default, kept = _faults("default"), _faults("keep")
    assert default > 10 * 1000  # the freed batch given back to the kernel: ~4,500 fresh pages per batch
    assert kept < default / 20


def test_elsewhere_nothing_changes(monkeypatch):
    from forecast import malloc

    monkeypatch.setattr(malloc.platform, "libc_ver", lambda: ("musl", "1.2"))
    assert malloc.keep_freed_memory() is False
