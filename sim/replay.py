"""Replay a recorded scan file through the frame stream (``talbot replay``).

Publishes ``scan-start`` (the file's recorded instrument and scan plan), every frame in file order
with its row as the frame number (superseded re-takes included: consumers resolve attempts), then
``scan-end``. ``rate_hz`` paces the frames (None: as fast as the consumer takes them; the PUSH
socket's back-pressure throttles the replay, nothing is dropped).
"""

from __future__ import annotations

import time
from pathlib import Path

import h5py

from contracts.messages import ScanEnd
from contracts.scanfile import DATA_PATH, read_frame_table, read_header
from contracts.sockets import FramePublisher


def replay(
    path: str | Path,
    publisher: FramePublisher,
    *,
    rate_hz: float | None = None,
    first: int = 0,
    count: int | None = None,
) -> ScanEnd:
    """Publish the scan file at ``path`` through ``publisher``; returns the ``scan-end`` sent.

    ``first``/``count`` replay a part of the frames (frame numbers stay the file rows; the
    scan-end then says ``first + count`` frames were sent).
    """
    if rate_hz is not None and not rate_hz > 0:
        raise ValueError(f"rate_hz must be > 0 frames per second, got {rate_hz!r}")
    if first < 0:
        raise ValueError(f"first must be >= 0, got {first!r}")
    with h5py.File(path, "r", libver="latest", swmr=True) as f:
        header = read_header(f)
        table = read_frame_table(f)
        data = f[DATA_PATH]
        n = min(len(table), int(data.shape[0]))
        stop = n if count is None else min(n, first + count)
        publisher.start_scan(
            header.scan_uid, header.instrument, header.plan, dtype=header.dtype, frames_planned=n
        )
        t0 = time.monotonic()
        for i in range(first, stop):
            if rate_hz is not None:
                wait = t0 + (i - first) / rate_hz - time.monotonic()
                if wait > 0:
                    time.sleep(wait)
            publisher.publish(data[i], table.rows[i], frame_number=i)
        publisher.next_frame = stop
        return publisher.end_scan()
