"""``keep_freed_memory``: a freed large array stays in the process for the next one (probed in
child processes: the allocator setting is process-wide)."""

from __future__ import annotations

import subprocess
import sys

import pytest

# Allocates and fills 200 MB, frees it, and prints the resident set before and after the free.
PROBE = """
import os, sys
import numpy as np
from recon.allocator import keep_freed_memory
if sys.argv[1] == "keep":
    assert keep_freed_memory()
def rss_mb():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
a = np.ones(200 * 2**20 // 8)
held = rss_mb()
del a
print(held, rss_mb())
"""


def _rss_after_free(mode: str) -> tuple[float, float]:
    out = subprocess.run(
        [sys.executable, "-c", PROBE, mode], capture_output=True, text=True, check=True
    ).stdout
    held, freed = (float(x) for x in out.split())
    return held, freed


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_freed_memory_stays_in_the_process_only_when_asked() -> None:
    held, freed = _rss_after_free("default")
    assert held - freed > 150  # the default allocator unmaps a freed 200 MB array
    held, freed = _rss_after_free("keep")
    assert held - freed < 10  # kept for the next allocation
