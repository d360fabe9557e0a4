"""Area detector of the interferometer: stock ophyd areaDetector classes (cam1: + HDF1:).

``TalbotDetector`` = ``SingleTrigger`` + ``DetectorBase`` with an ``AreaDetectorCam`` and an
``HDF5Plugin_V34`` carrying ``FileStoreHDF5IterativeWrite``: every ``trigger()`` takes one frame,
the HDF5 plugin appends it to one file per stage (Stream mode, ``/entry/data/data``) and every
event gets a datum reference to it (resource spec ``AD_HDF5``). The plugin is primed with one
frame (not written) at stage when it has not seen a frame yet, and opens its file at the first
frame (``LazyOpen``), after the plan has written the scan tags.
"""

from __future__ import annotations

import copy
import itertools
import time
from typing import Any

from ophyd import Component as Cpt
from ophyd import DeviceStatus, EpicsSignalRO, Staged
from ophyd.areadetector import DetectorBase, SingleTrigger
from ophyd.areadetector.cam import AreaDetectorCam
from ophyd.areadetector.filestore_mixins import FileStoreHDF5IterativeWrite
from ophyd.areadetector.plugins import HDF5Plugin_V34

#: Where the simulated beamline writes when no path is given (server and client share it).
DEFAULT_WRITE_PATH = "/tmp/talbot-data/%Y/%m/%d/"


class FrameLost(RuntimeError):
    """A triggered frame never reached the file (the file writer dropped it)."""


class TalbotHDF5Plugin(FileStoreHDF5IterativeWrite, HDF5Plugin_V34):
    """HDF5 file plugin (Stream mode, lazy open, blocking callbacks) with AD_HDF5 datums."""

    #: Frames written to the current file, monitored: a series checks it without a round trip
    #: (the update arrives before the put-completion of ``Acquire``).
    num_captured = Cpt(EpicsSignalRO, "NumCaptured_RBV", auto_monitor=True)
    #: Frames the plugin dropped, monitored: a hardware-timed series tells from it whether the
    #: file's frames still line up with its steps (a drop is published before later frames).
    dropped = Cpt(EpicsSignalRO, "DroppedArrays_RBV", auto_monitor=True, kind="omitted")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Write mode before Capture (apstools #823); open the file at the first frame.
        self.stage_sigs.update([("lazy_open", "Yes")])
        self.stage_sigs.move_to_end("lazy_open", last=False)
        self.stage_sigs.move_to_end("capture")

    def generate_datum(
        self, key: str, timestamp: float, datum_kwargs: dict[str, Any] | None = None
    ) -> Any:
        """As stock (``point_number`` = the next frame of the file), except that an explicit
        ``point_number`` is kept and the automatic numbers continue after it."""
        kwargs = dict(datum_kwargs or {})
        if "point_number" in kwargs:
            self._point_counter = itertools.count(int(kwargs.pop("point_number")))
        return super().generate_datum(key, timestamp, kwargs)

    @property
    def primed(self) -> bool:
        """Whether the plugin has seen a frame (ophyd refuses to stage an unprimed plugin)."""
        return bool(sum(int(v) for v in self.array_size.get()) > 0)


class TalbotDetector(SingleTrigger, DetectorBase):
    """Interferometer camera: one frame per trigger into the scan file, referenced per event."""

    _default_read_attrs = ("hdf5",)

    cam = Cpt(AreaDetectorCam, "cam1:", kind="config")
    hdf5 = Cpt(
        TalbotHDF5Plugin,
        "HDF1:",
        write_path_template=DEFAULT_WRITE_PATH,
        read_path_template=None,
        root="/",
        kind="normal",
    )

    def __init__(self, prefix: str, *, name: str, **kwargs: Any) -> None:
        super().__init__(prefix, name=name, **kwargs)
        self.stage_sigs.update([("cam.num_images", 1), ("cam.trigger_mode", "Internal")])
        self._data_key: dict[str, Any] | None = None  # made at staging (make_data_key)

    def prime(self, timeout_s: float = 10.0) -> None:
        """Take one frame that is not written, so the HDF5 plugin knows the frame size."""
        self.hdf5.capture.set(0).wait(timeout_s)
        self.hdf5.enable.set("Enable").wait(timeout_s)
        self.cam.array_callbacks.set(1).wait(timeout_s)
        self.cam.image_mode.set("Single").wait(timeout_s)
        self.cam.acquire.put(1, wait=True, timeout=timeout_s)
        deadline = time.monotonic() + timeout_s
        while not self.hdf5.primed:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.name}: HDF5 plugin not primed within {timeout_s} s")
            time.sleep(0.01)

    def trigger(self) -> DeviceStatus:
        """Take one frame; the status completes when the put of ``Acquire = 1`` completes,
        which areaDetector does at the end of the acquisition.

        Stock ``SingleTrigger.trigger`` waits for the 1 -> 0 edge of ``Acquire`` in monitors
        instead; Channel Access may drop the intermediate 1 under flow control, and the stock code
        also returns ``self._status``, which the monitor thread clears when a short frame ends
        before ``trigger`` returns. Put-completion has neither problem.

        The status is a plain ``DeviceStatus``: the stock ``ADTriggerStatus`` reads two PVs over
        the network at every trigger (~5 ms) to drive progress bars for multi-image triggers,
        and this trigger always takes one image. The frame is referenced by its index in the file
        (the count of frames written before it); the status fails with :class:`FrameLost` when
        the file writer drops it, so an event never points at another frame.
        """
        point = int(self.hdf5.num_captured.get())  # the frame's index in the file, once written
        status = self._start(written=point + 1)
        self.reference_frame(time.time(), point)
        return status

    def acquire(self) -> DeviceStatus:
        """Start one acquisition of ``cam.num_images`` frames without referencing them in the
        documents (hardware-timed series reference each frame with :meth:`reference_frame`);
        the status finishes when areaDetector completes the put of ``Acquire = 1``."""
        return self._start(written=None)

    def _start(self, written: int | None) -> DeviceStatus:
        """Put ``Acquire = 1``; with ``written``, the status fails with :class:`FrameLost`
        unless the file then holds that many frames (the monitored count is current when the
        put completes: the server sends it first, and pyepics applies both in order)."""
        if self._staged != Staged.yes:
            raise RuntimeError(f"{self.name} is not staged; call stage() before trigger()")
        status = DeviceStatus(self)
        self._status = None  # the stock monitor callback leaves a None status alone

        def acquired(*args: Any, **kwargs: Any) -> None:
            if status.done:
                return
            if written is not None:
                have = int(self.hdf5.num_captured.get())
                if have < written:
                    lost = FrameLost(
                        f"{self.name}: the frame did not reach the file ({have} written)"
                    )
                    status.set_exception(lost)
                    return
            status.set_finished()

        self._acquisition_signal.put(1, use_complete=True, callback=acquired)
        return status

    def reference_frame(self, timestamp: float, point_number: int) -> None:
        """Reference the frame ``point_number`` of the file (its index along
        ``/entry/data/data``) in the next reading."""
        self.generate_datum(self._image_name, timestamp, {"point_number": int(point_number)})

    def generate_datum(
        self, key: str, timestamp: float, datum_kwargs: dict[str, Any] | None = None
    ) -> None:
        """Reference this trigger's frame in the file plugin's resource.

        The stock method reads every file plugin's ``EnableCallbacks`` over the network at each
        trigger (~4 ms while the put of ``Acquire`` is pending); our one file plugin enables
        itself in its ``stage_sigs``, so while staged it is enabled and the read is skipped.
        """
        if self.hdf5._staged == Staged.yes:
            self.hdf5.generate_datum(key, timestamp, datum_kwargs or {})
        else:
            super().generate_datum(key, timestamp, datum_kwargs)

    def stage(self) -> list[Any]:
        """Prime the file plugin if needed, stage as stock ophyd does, then make the image's data
        key once for the whole staging (see :meth:`make_data_key`)."""
        if not self.hdf5.primed:
            self.prime()
        staged: list[Any] = super().stage()
        self._data_key = super().make_data_key()
        return staged

    def unstage(self) -> list[Any]:
        """Unstage as stock ophyd does; the next staging makes the data key afresh."""
        self._data_key = None
        unstaged: list[Any] = super().unstage()
        return unstaged

    def make_data_key(self) -> dict[str, Any]:
        """The image's data key. While staged, the frame size does not change, so the key made
        at staging is returned: the stock one reads the frame size over the network (~0.1 s
        under a scan's load), and every event stream of a run describes the detector when its
        first event is made, between two frames."""
        if self._data_key is not None and self._staged == Staged.yes:
            return copy.deepcopy(self._data_key)
        made: dict[str, Any] = super().make_data_key()
        return made
