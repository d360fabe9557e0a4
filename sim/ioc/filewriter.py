"""The simulated areaDetector HDF5 file plugin (``DET:HDF1:``): frames into a real scan file.

Behaviour (the parts stock ophyd ``HDF5Plugin`` + ``FileStoreHDF5`` rely on, docs/data-format.md):

- ``PluginType_RBV`` = ``NDFileHDF5``; ``ArraySize0/1_RBV`` stay 0 until the plugin has received a
  frame with ``EnableCallbacks`` = Enable (an *unprimed* plugin, which ophyd refuses to stage);
- ``FilePath`` put: a trailing ``/`` is added, ``FilePathExists_RBV`` follows;
- ``Capture`` = 1 (``FileWriteMode`` Stream or Capture; Single is refused like areaDetector does):
  the file name is ``FileTemplate % (FilePath, FileName, FileNumber)`` (C format, e.g.
  ``%s%s_%6.6d.h5``) into ``FullFileName_RBV``, ``FileNumber`` += 1 with ``AutoIncrement``,
  missing directories are created when ``CreateDirectory`` = -N allows it, an existing file is
  refused (never overwritten). The file is created at the first frame when ``LazyOpen`` = Yes,
  else at once; its scan uid is ``TAG:ScanUid`` at that moment (the file name when empty).
- each frame is appended through :class:`contracts.scanfile.ScanFileWriter` (SWMR, one frame per
  chunk, flushed per frame) with its tags and readbacks; ``NumCaptured_RBV`` counts them; after
  ``NumCapture`` frames (0 = unlimited) or on ``Capture`` = 0 the file is closed, its end record
  complete; a server shut down mid-capture closes it incomplete.
- ``BlockingCallbacks`` = Yes: the camera waits for the write before its ``Acquire_RBV`` falls;
  No: frames queue and are written in order after it (so a trigger may finish first).
- faults: a dropped frame is counted in ``DroppedArrays_RBV`` and neither written nor
  published; ``FAULT:SlowWriter`` adds its delay to every write.

Every written frame is handed to the callables in :attr:`HDF5FilePlugin.frame_hooks` (the one
place where a written frame and its tags are available, e.g. for the frame stream).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from contracts.frames import TAG_FIELDS
from contracts.scanfile import ScanFileWriter, ScanHeader
from sim.ioc.adcatalog import HDF_TABLE, ADPVs

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FrameEvent:
    """One frame from the camera, with everything the file needs.

    ``tags`` has every ``contracts.frames.TAG_FIELDS`` name except ``timestamp_s`` (the
    writer sets it relative to the file's capture start); ``time_unix`` is the exposure start.
    """

    frame: NDArray[np.generic]
    tags: dict[str, Any]
    frame_type: str
    scan_uid: str
    unique_id: int
    time_unix: float


@dataclass(frozen=True)
class WrittenFrame:
    """A frame that is in the file: what the frame hooks receive."""

    path: Path
    frame_number: int  # index along /entry/data/data
    event: FrameEvent
    row: dict[str, Any]  # the TAG_FIELDS values written, timestamp_s included
    header: ScanHeader  # the file's: scan uid, instrument, scan plan

    @property
    def scan_uid(self) -> str:
        """The file's scan uid."""
        return self.header.scan_uid


FrameHook = Callable[[WrittenFrame], Awaitable[None] | None]
HeaderFactory = Callable[[str], ScanHeader]


class HDF5FilePlugin:
    """The ``HDF1:`` PVs and the file they write (see the module docstring)."""

    def __init__(
        self,
        prefix: str,
        *,
        header_for: HeaderFactory,
        scan_uid: Callable[[], str],
        writer_delay_s: Callable[[], float] = lambda: 0.0,
    ) -> None:
        self.pvs = ADPVs(prefix, HDF_TABLE)
        self.header_for = header_for
        self.scan_uid = scan_uid
        self.writer_delay_s = writer_delay_s
        self.frame_hooks: list[FrameHook] = []
        #: called after a capture's file is closed (end of a scan), e.g. to send scan-end
        self.capture_end_hooks: list[Callable[[], None]] = []
        self._writer: ScanFileWriter | None = None
        self._path: Path | None = None  # file of the current capture (open or pending)
        self._capturing = False
        self._capture_t0 = 0.0
        self._lock = asyncio.Lock()
        self._frame_shape: tuple[int, int] | None = None  # size PVs last published
        self._queue: asyncio.Queue[FrameEvent] | None = None
        self._worker: asyncio.Task[None] | None = None
        self.pvs.on_put("FilePath", self._put_file_path)
        self.pvs.on_put("Capture", self._put_capture)
        self.pvs.on_put("NumCapture", self._put_nonnegative("NumCapture"))
        self.pvs.on_put("FileNumber", self._put_nonnegative("FileNumber"))
        self.pvs.on_put("Compression", self._put_only("Compression", "None"))
        self.pvs.on_put("SWMRMode", self._put_only("SWMRMode", "On"))
        self.pvs.on_put("NumExtraDims", self._put_only("NumExtraDims", 0))

    @property
    def pvdb(self) -> dict[str, Any]:
        """The plugin's PVs."""
        return self.pvs.pvdb

    @property
    def path(self) -> Path | None:
        """The file of the current (or last) capture."""
        return self._path

    # -- put hooks -----------------------------------------------------------------------------
    def _put_nonnegative(self, suffix: str) -> Callable[[Any], Awaitable[None]]:
        async def hook(value: Any) -> None:
            if int(value) < 0:
                raise ValueError(f"{suffix} must be >= 0, got {value!r}")
            await self.pvs[suffix].rbv.write(value)

        return hook

    def _put_only(self, suffix: str, allowed: Any) -> Callable[[Any], Awaitable[None]]:
        async def hook(value: Any) -> None:
            if value != allowed:
                raise ValueError(f"{suffix}: only {allowed!r} is simulated, got {value!r}")
            await self.pvs[suffix].rbv.write(value)

        return hook

    async def _put_file_path(self, value: str) -> str:
        text = str(value)
        if text and not text.endswith("/"):
            text += "/"
        await self.pvs["FilePath"].rbv.write(text)
        await self.pvs["FilePathExists_RBV"].write("Yes" if Path(text).is_dir() else "No")
        return text

    async def _message(self, text: str, *, error: bool) -> None:
        await self.pvs["WriteMessage"].write(text[:255])
        await self.pvs["WriteStatus"].write("Write error" if error else "Write OK")

    async def _put_capture(self, value: Any) -> None:
        start = value in (1, "Capture")
        if start and not self._capturing:
            try:
                await self._start_capture()
            except (OSError, ValueError, TypeError) as exc:
                await self._message(f"Capture refused: {exc}", error=True)
                raise ValueError(f"Capture refused: {exc}") from exc
        elif not start:
            await self.stop_capture()
        await self.pvs["Capture"].rbv.write(1 if self._capturing else 0)

    def _full_file_name(self) -> Path:
        folder = str(self.pvs.value("FilePath"))
        name = str(self.pvs.value("FileName"))
        number = int(self.pvs.value("FileNumber"))
        template = str(self.pvs.value("FileTemplate"))
        if not folder:
            raise ValueError("FilePath is empty")
        if not name:
            raise ValueError("FileName is empty")
        try:
            return Path(template % (folder, name, number))
        except (TypeError, ValueError) as exc:
            raise ValueError(
                f"FileTemplate {template!r} does not take (path, name, number)"
            ) from exc

    def _ensure_folder(self) -> None:
        folder = Path(str(self.pvs.value("FilePath")))
        if folder.is_dir():
            return
        depth = int(self.pvs.value("CreateDirectory"))
        missing = 0
        probe = folder
        while not probe.exists() and probe != probe.parent:
            missing += 1
            probe = probe.parent
        if depth >= 0 or missing > -depth:
            raise ValueError(f"FilePath {folder} does not exist (CreateDirectory={depth})")
        folder.mkdir(parents=True, exist_ok=True)

    async def _start_capture(self) -> None:
        mode = self.pvs.value("FileWriteMode")
        if mode == "Single":
            raise ValueError("capture is not supported in Single mode; use Stream")
        self._ensure_folder()
        await self.pvs["FilePathExists_RBV"].write("Yes")
        path = self._full_file_name()
        if path.exists():
            raise ValueError(f"{path} exists; the writer never overwrites")
        await self.pvs["FullFileName_RBV"].write(str(path))
        if self.pvs.value("AutoIncrement") == "Yes":
            await self.pvs.set("FileNumber", int(self.pvs.value("FileNumber")) + 1)
        await self.pvs["NumCaptured_RBV"].write(0)
        self._path = path
        self._capturing = True
        self._capture_t0 = time.time()
        if self.pvs.value("LazyOpen") != "Yes":
            await self._open(self.scan_uid())
        await self._message(f"capturing to {path}", error=False)

    async def _open(self, scan_uid: str) -> None:
        assert self._path is not None
        header = self.header_for(scan_uid or str(self.pvs.value("FileName")))
        writer = ScanFileWriter(self._path, header)
        await asyncio.to_thread(writer.open)
        self._writer = writer
        await self.pvs["SWMRActive_RBV"].write("Active")

    async def stop_capture(self) -> None:
        """Close the file (if open) and stop capturing."""
        async with self._lock:
            self._capturing = False
            writer, self._writer = self._writer, None
            if writer is not None:
                await asyncio.to_thread(writer.close)
                await self.pvs["SWMRActive_RBV"].write("Off")
                self._run_end_hooks()
        await self.pvs.set("Capture", 0)

    def close_now(self) -> None:
        """Close the file at once (server shutdown); safe to call twice."""
        self._capturing = False
        writer, self._writer = self._writer, None
        if writer is not None:
            writer.close(complete=False)

    # -- frames ----------------------------------------------------------------------------------
    async def receive(self, event: FrameEvent, *, dropped: bool = False) -> None:
        """A frame from the camera (``dropped``: lost on the way, counted, not written)."""
        if self.pvs.value("EnableCallbacks") != "Enable":
            return
        if dropped:
            await pvs_add(self.pvs, "DroppedArrays")
            return
        if self.pvs.value("BlockingCallbacks") == "Yes":
            await self._process(event)
            return
        if self._queue is None:
            self._queue = asyncio.Queue()
            self._worker = asyncio.create_task(self._work())
        self._queue.put_nowait(event)

    async def drain(self) -> None:
        """Wait until queued (non-blocking) frames are processed."""
        if self._queue is not None:
            await self._queue.join()

    async def _work(self) -> None:
        assert self._queue is not None
        while True:
            event = await self._queue.get()
            try:
                await self._process(event)
            finally:
                self._queue.task_done()

    async def _process(self, event: FrameEvent) -> None:
        rows, cols = event.frame.shape
        pvs = self.pvs
        if (rows, cols) != self._frame_shape:  # a caproto write costs ~0.1 ms; sizes rarely change
            await pvs["ArraySize0_RBV"].write(cols)
            await pvs["ArraySize1_RBV"].write(rows)
            await pvs["ArraySizeX_RBV"].write(cols)
            await pvs["ArraySizeY_RBV"].write(rows)
            await pvs["ArraySize_RBV"].write(int(event.frame.nbytes))
            await pvs["NDimensions_RBV"].write(2)
            await pvs["Dimensions_RBV"].write([cols, rows] + [0] * 8)
            self._frame_shape = (rows, cols)
        await pvs["UniqueId_RBV"].write(event.unique_id)
        await pvs["TimeStamp_RBV"].write(event.time_unix)
        await pvs_add(pvs, "ArrayCounter")
        if not self._capturing:
            return
        async with self._lock:
            if not self._capturing:
                return
            await self._write(event)

    async def _write(self, event: FrameEvent) -> None:
        delay = self.writer_delay_s()
        if delay > 0:
            await asyncio.sleep(delay)
        try:
            if self._writer is None:
                await self._open(event.scan_uid)
            writer = self._writer
            assert writer is not None
            assert self._path is not None
            row = dict(event.tags)
            row["timestamp_s"] = event.time_unix - self._capture_t0
            missing = set(TAG_FIELDS) - set(row)
            if missing:
                raise ValueError(f"frame tags lack {sorted(missing)}")
            number = await asyncio.to_thread(writer.append, event.frame, row)
        except (OSError, ValueError, RuntimeError) as exc:
            log.warning("frame %d not written: %s", event.unique_id, exc)
            await self._message(f"frame {event.unique_id} not written: {exc}", error=True)
            await pvs_add(self.pvs, "DroppedArrays")
            return
        captured = number + 1
        await self.pvs["NumCaptured_RBV"].write(captured)
        await self.pvs["SWMRCbCounter_RBV"].write(captured)
        written = WrittenFrame(self._path, number, event, row, writer.header)
        await self._run_hooks(written)
        limit = int(self.pvs.value("NumCapture"))
        if limit > 0 and captured >= limit:
            self._capturing = False
            self._writer = None
            await asyncio.to_thread(writer.close)
            await self.pvs["SWMRActive_RBV"].write("Off")
            self._run_end_hooks()
            await self.pvs.set("Capture", 0)

    def _run_end_hooks(self) -> None:
        for hook in list(self.capture_end_hooks):
            try:
                hook()
            except Exception:  # never stops acquisition
                log.exception("capture-end hook %r failed", hook)

    async def _run_hooks(self, written: WrittenFrame) -> None:
        for hook in list(self.frame_hooks):
            try:
                result = hook(written)
                if inspect.isawaitable(result):
                    await result
            except Exception:  # a consumer's bug must never stop acquisition
                log.exception("frame hook %r failed", hook)


async def pvs_add(pvs: ADPVs, suffix: str, delta: int = 1) -> None:
    """Add ``delta`` to a counter PV and its readback."""
    await pvs.set(suffix, int(pvs.value(suffix)) + delta)
