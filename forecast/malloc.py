"""glibc malloc settings for processes that build samples: freed arrays stay in the heap for the next sample.

glibc serves allocations above a threshold (128 kB at first, then raised to the largest block freed) with
a fresh ``mmap``, and gives the top of its heap back to the kernel once more than twice that is free. A
full-config sample's rasters (1.2 MB) and crops (0.55 MB each) then kept coming back from the kernel as
fresh pages, each faulted in and zeroed 4 kB at a time: about 190 page faults per scene, 0.5 ms of
2.4 ms on a 2-core VM (docs/measurements.md, seventeenth pass). With both thresholds raised, the heap keeps
its freed blocks and the next sample reuses them.
"""

from __future__ import annotations

import ctypes
import platform
import sys

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
# glibc's largest mmap threshold on 64-bit systems (4 x 1 MiB x sizeof(long)): a batch of rasters above it
# still gets its own mapping, which is given back as soon as it is freed.
MMAP_THRESHOLD = 32 << 20
# Free memory the heap keeps at its top before it gives any back: above a loader worker's high-water mark
# (a batch's samples alive at once, ~80 MB at the full config), so the heap settles at that mark.
TRIM_THRESHOLD = 512 << 20


def keep_freed_memory() -> bool:
    """Raise glibc's mmap and trim thresholds in this process (and children forked after). False, and
    nothing changed, where the C library is not glibc (macOS, musl)."""
    if not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc":
        return False
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    # 1 on success; either setting also stops glibc moving the thresholds itself
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) and mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
