"""Publishes every frame the simulated detector writes on the frame stream.

The scan file is written first; then the frame goes to a bounded queue that a worker thread drains
into a ``contracts.sockets.FramePublisher`` (ZeroMQ sockets are not thread-safe, so the socket lives
in that thread only). The IOC's event loop never waits on a slow or absent consumer: when the queue
is full, or no consumer is connected, the frame is not published (counted in ``dropped``); the
reconstructor recovers it from the scan file, which stays the source of truth: every scan-start
names it (``raw_file``), and a consumer that connects mid-scan is sent it.
"""

from __future__ import annotations

import logging
import queue
import threading
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from contracts.scanfile import ScanHeader
from contracts.sockets import FramePublisher, StreamTimeout
from sim.ioc.filewriter import WrittenFrame

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Frame:
    header: ScanHeader
    frame: NDArray[np.generic]
    row: dict[str, Any]
    number: int
    path: str  # the scan file's absolute path


class FrameStreamHook:
    """A detector frame hook (and capture-end hook) that publishes on a PUSH socket it binds."""

    def __init__(
        self,
        endpoint: str,
        shape: tuple[int, int],
        *,
        queue_frames: int = 64,
        send_timeout_s: float = 10.0,
        allow_remote: bool = False,
    ) -> None:
        if queue_frames < 1:
            raise ValueError(f"queue_frames must be >= 1, got {queue_frames}")
        self.dropped = 0
        self.published = 0
        self._unheard = ""  # the scan whose frames found no consumer (said once)
        self._queue: queue.Queue[_Frame | str | None] = queue.Queue(maxsize=queue_frames)
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self.endpoint = ""
        rows, cols = shape
        self._thread = threading.Thread(
            target=self._run,
            args=(endpoint, rows * cols * 2, send_timeout_s, allow_remote),
            name="frame-stream",
            daemon=True,
        )
        self._thread.start()
        self._ready.wait()
        if self._error is not None:
            raise self._error

    # -- called from the IOC's event loop (never blocks) -------------------------------------
    def on_frame(self, written: WrittenFrame) -> None:
        """Queue a written frame for publication."""
        event = written.event
        item = _Frame(
            written.header,
            event.frame,
            dict(written.row),
            written.frame_number,
            str(written.path.resolve()),
        )
        try:
            self._queue.put_nowait(item)
        except queue.Full:
            self.dropped += 1
            log.warning("frame %d not published: stream queue full", written.frame_number)

    def on_capture_end(self) -> None:
        """Queue the end of the current scan (the scan file was closed)."""
        try:
            self._queue.put_nowait("end")
        except queue.Full:
            log.warning("scan-end not published: stream queue full")

    def close(self) -> None:
        """Send what is queued (scan-end included), then close the socket."""
        self._queue.put("end")
        self._queue.put(None)
        self._thread.join(timeout=30)

    # -- worker thread -----------------------------------------------------------------------
    def _run(self, endpoint: str, frame_bytes: int, timeout_s: float, allow_remote: bool) -> None:
        try:
            pub = FramePublisher(
                endpoint,
                frame_bytes=frame_bytes,
                send_timeout_s=timeout_s,
                allow_remote=allow_remote,
                wait_for_consumers=False,  # the frames are in the scan file
            )
        except BaseException as exc:  # reported to the constructor
            self._error = exc
            self._ready.set()
            return
        self.endpoint = pub.endpoint
        self._ready.set()
        try:
            while True:
                item = self._queue.get()
                if item is None:
                    break
                try:
                    self._send(pub, item)
                except StreamTimeout as exc:
                    self.dropped += 1
                    log.warning("frame stream: %s", exc)
        finally:
            pub.close(linger_s=2)

    def _send(self, pub: FramePublisher, item: _Frame | str) -> None:
        if isinstance(item, str):  # "end"
            if pub.scan is not None:
                pub.end_scan()
            return
        header = item.header
        if pub.scan is None or pub.scan.scan_uid != header.scan_uid:
            if pub.scan is not None:
                pub.end_scan()
            pub.start_scan(
                header.scan_uid,
                header.instrument,
                header.plan,
                first_frame=item.number,
                frames_planned=None if header.plan is None else header.plan.frames_planned(),
                raw_file=item.path,
            )
        if pub.publish(item.frame, item.row, frame_number=item.number):
            self.published += 1
            self._unheard = ""
        else:
            self.dropped += 1
            if pub.consumers == 0 and self._unheard != header.scan_uid:
                self._unheard = header.scan_uid  # said once per scan, not once per frame
                log.warning(
                    "no consumer on %s: frames of scan %s go to the scan file only (a "
                    "reconstructor that connects catches up from it)",
                    pub.endpoint,
                    header.scan_uid,
                )
