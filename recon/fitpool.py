"""Buffers for the per-series fits a streaming reconstructor keeps, reused from scan to scan.

A reconstructor keeps one fit (``a0`` float32 + ``c1`` complex64: 12 B per pixel) per projection
and per reference series until the scan's volume is made: 1.2 bytes for every streamed byte of a
5-step scan, 9 GB for a 2048^2 x 180-angle scan. Writing memory the process has not touched
before is the slowest part of keeping up with the stream (a fit into new memory takes ~43 ms at
2048^2 on the 2-core benchmark machine, into reused memory ~12 ms; ``benchmarks/bench_stream.py``),
and whether ``free`` keeps freed memory for the next ``malloc`` depends on the allocator, its
thresholds and the thread. The pool makes reuse explicit: a scan's fits go back to the pool when
the next scan starts, and that scan's fits are written into them.

The pool holds buffers of one frame shape; a scan of another shape empties it. It never holds
more than the previous scan kept (the memory a reconstructor process holds between scans).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
from numpy.typing import NDArray

from recon.retrieval import StepFit


def written(shape: tuple[int, ...], dtype: type[np.generic] = np.float32) -> NDArray[Any]:
    """A new array whose memory has been written once (zeros), so that the process owns its
    pages before it needs them."""
    a = np.empty(shape, dtype)
    a.fill(0)
    return a


class FitPool:
    """Free ``StepFit`` buffers of one (rows, columns) shape."""

    def __init__(self) -> None:
        self._shape: tuple[int, int] | None = None
        self._free: dict[int, StepFit] = {}  # by id: a fit given twice is kept once

    @property
    def free(self) -> int:
        """Buffers ready for reuse."""
        return len(self._free)

    def use_shape(self, shape: tuple[int, int]) -> None:
        """Serve fits of ``shape`` (rows, columns) from now on; drops buffers of another shape."""
        shape = (int(shape[0]), int(shape[1]))
        if shape[0] < 1 or shape[1] < 1:
            raise ValueError(f"shape must be (rows, columns) >= 1, got {shape!r}")
        if shape != self._shape:
            self._free.clear()
            self._shape = shape

    def take(self) -> StepFit:
        """A fit buffer of the current shape (contents undefined): a freed one, else new."""
        if self._shape is None:
            raise RuntimeError("FitPool.take() before use_shape()")
        if self._free:
            return self._free.popitem()[1]
        return StepFit(np.empty(self._shape, np.float32), np.empty(self._shape, np.complex64))

    def _written(self) -> StepFit:
        assert self._shape is not None
        return StepFit(written(self._shape, np.float32), written(self._shape, np.complex64))

    def reserve(self, count: int) -> None:
        """Make and write buffers until ``count`` are free (memory touched now, at a service's
        start, instead of during a scan)."""
        if self._shape is None:
            raise RuntimeError("FitPool.reserve() before use_shape()")
        while len(self._free) < count:
            fit = self._written()
            self._free[id(fit)] = fit

    def give(self, fits: Iterable[StepFit]) -> None:
        """Return fits nothing else uses any more; fits of another shape, or not owning their
        memory (views), are left to the garbage collector."""
        for fit in fits:
            a0, c1 = fit.a0, fit.c1
            if (
                a0.shape == self._shape
                and a0.dtype == np.float32
                and c1.dtype == np.complex64
                and a0.base is None
                and c1.base is None
            ):
                self._free[id(fit)] = fit
