"""Keep freed memory in the reconstructor process, so that the next scan's buffers reuse it.

Every large NumPy array (above glibc's mmap threshold, at most 32 MiB) is a fresh ``mmap`` that
``free`` hands back to the kernel. Touching such memory for the first time is slow where the
host backs guest pages lazily (a VM: 0.25-0.45 GB/s here, against 3-4 GB/s for memory the process
reuses; ``benchmarks/bench_stream.py``, ``first_touch_gb_per_s``). A reconstructor is a
long-running service that allocates the same volumes and sinograms scan after scan, so it is
better off keeping what it freed: glibc then serves those arrays from its heap, which it does
not trim below ``TRIM_THRESHOLD_BYTES``.

The cost is that the process's resident memory stays at its peak between scans (what a buffer
pool would also keep). Only the service entry points call this (``talbot recon``,
``talbot reconstruct``); library callers keep the default allocator.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

#: glibc ``mallopt`` parameters (malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
#: glibc returns the top of its heap to the kernel only beyond this much free memory (the
#: largest value ``mallopt`` takes: an int).
TRIM_THRESHOLD_BYTES = 2**31 - 1


def keep_freed_memory() -> bool:
    """Make glibc serve large allocations from its heap and keep freed memory for reuse.

    Returns True when the allocator was set, False where it is not glibc (macOS, musl), in which
    case nothing changes. Allocations in threads other than the main one above 64 MiB still map
    fresh memory (glibc's per-thread heaps are at most that large).
    """
    if not sys.platform.startswith("linux"):
        return False
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    return bool(mallopt(_M_MMAP_MAX, 0)) and bool(mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES))
