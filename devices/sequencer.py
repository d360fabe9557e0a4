"""Hardware-timed phase stepping: the step sequencer and the frames of one sequenced acquisition.

The sequencer (``PVNames.sequencer``, ``docs/pvs.md``) steps the G2 piezo at the end of every
exposure of one armed camera acquisition and latches the piezo encoder at the start of every
exposure. A series then costs one arming and one ``Acquire`` instead of M moves and M triggers.

:class:`SequencedFrames` turns such an acquisition back into one bluesky reading per frame, with
the same data keys a software-stepped series reads (detector image, stepped-axis readback and
setpoint, rotation, sample, ring current, tags), so the documents of both kinds of series look
alike: per frame, the image reference, the encoder reading latched for that frame, the commanded
position and the step index; the rest as read once after the acquisition.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
from ophyd import Component as Cpt
from ophyd import Device, EpicsSignal, EpicsSignalRO
from ophyd.status import Status, StatusBase

from devices.detector import TalbotDetector


class StepSequencer(Device):
    """Hardware phase-step sequencer (G2 piezo steps once per frame)."""

    step_size = Cpt(EpicsSignal, "StepSize", put_complete=True, kind="config")
    num_steps = Cpt(EpicsSignal, "NumSteps", put_complete=True, kind="omitted")
    armed = Cpt(EpicsSignalRO, "Armed_RBV", kind="omitted")
    step_counter = Cpt(EpicsSignalRO, "StepCounter_RBV", kind="omitted")
    positions = Cpt(EpicsSignalRO, "Positions_RBV", kind="omitted", auto_monitor=True)
    num_captured = Cpt(EpicsSignalRO, "NumCaptured_RBV", kind="omitted", auto_monitor=True)
    message = Cpt(EpicsSignalRO, "Message_RBV", string=True, kind="omitted", auto_monitor=True)


class SequencedAcquisition:
    """Triggerable: one camera acquisition of ``cam.num_images`` frames, none referenced yet
    (``trigger`` starts it; the status finishes when the last frame is written)."""

    def __init__(self, detector: TalbotDetector) -> None:
        self.detector = detector
        self.name = f"{detector.name}_sequence"
        self.parent = None

    def trigger(self) -> StatusBase:
        """Start the acquisition."""
        return self.detector.acquire()


class SequencedFrames:
    """The frames of the last sequenced acquisition, one reading per ``trigger()``.

    ``set(positions)`` gives the commanded step positions [axis units] of the next acquisition
    (and forgets the frames of the previous one); its frames are the next ones of the detector's
    file. :meth:`lost` says how many of them never reached the file. Each ``trigger()`` then
    makes the next frame current: it references that frame of the file (by its index) and takes
    its values. ``read()``
    returns the current frame's reading under the data keys of a software-stepped frame.

    Parameters
    ----------
    detector
        The camera whose acquisition was sequenced.
    sequencer
        The sequencer that latched the encoder readings.
    axis
        The stepped motor (its readback and setpoint keys get the per-frame values).
    step_tag
        The step-index tag signal (its key gets the per-frame step index).
    others
        Devices read once per acquisition (rotation, sample, beam, tags) for the other keys.
    """

    def __init__(
        self,
        detector: TalbotDetector,
        sequencer: StepSequencer,
        axis: Any,
        step_tag: Any,
        others: Sequence[Any],
    ) -> None:
        self.detector = detector
        self.sequencer = sequencer
        self.axis = axis
        self.step_tag = step_tag
        self.others = list(others)
        self.name = f"{detector.name}_frames"
        self.parent = None
        self._positions: list[float] = []
        self._next = 0
        self._fixed: dict[str, dict[str, Any]] = {}
        self._encoder: np.ndarray = np.zeros(0)
        self._step0 = 0
        self._first_point = 0
        self._current: dict[str, dict[str, Any]] = {}

    # -- bluesky: Movable ----------------------------------------------------------------------
    def set(self, positions: Sequence[float]) -> StatusBase:
        """Commanded positions of the next sequenced acquisition (one per frame)."""
        values = [float(p) for p in positions]
        if not values:
            raise ValueError(f"{self.name}: positions must name at least one frame")
        self._positions = values
        self._next = 0
        self._current = {}
        # the frames of the acquisition follow the ones the file holds now (read when the set
        # is executed, so a re-take after a rewind counts the interrupted take's frames too)
        self._first_point = int(self.detector.hdf5.num_captured.get())
        status = Status(obj=self)
        status.set_finished()
        return status

    def lost(self) -> int:
        """Frames of the acquisition that did not reach the file (0 when all are written)."""
        written = int(self.detector.hdf5.num_captured.get()) - self._first_point
        return max(len(self._positions) - written, 0)

    # -- bluesky: Triggerable ------------------------------------------------------------------
    def trigger(self) -> StatusBase:
        """Make the next frame of the acquisition current."""
        status = Status(obj=self)
        try:
            self._advance()
        except Exception as exc:
            status.set_exception(exc)
        else:
            status.set_finished()
        return status

    def _advance(self) -> None:
        i = self._next
        if i >= len(self._positions):
            raise RuntimeError(f"{self.name}: all {len(self._positions)} frames already read")
        if i == 0:
            self._load()
        now = time.time()
        self.detector.reference_frame(now, self._first_point + i)
        reading = dict(self._fixed)
        reading.update(self.detector.read())
        setpoint_key = self.axis.user_setpoint.name
        reading[self.axis.name] = {"value": float(self._encoder[i]), "timestamp": now}
        reading[setpoint_key] = {"value": self._positions[i], "timestamp": now}
        reading[self.step_tag.name] = {"value": self._step0 + i, "timestamp": now}
        self._current = reading
        self._next = i + 1

    def _load(self) -> None:
        """After the acquisition: the latched encoder readings and the other devices' values."""
        n = len(self._positions)
        seq = self.sequencer
        captured = int(seq.num_captured.get())
        message = str(seq.message.get() or "")
        if message:
            raise RuntimeError(f"{seq.name}: a step was refused: {message}")
        if captured != n:
            raise RuntimeError(
                f"{seq.name}: latched {captured} encoder readings for {n} frames "
                "(the acquisition did not run armed to its end)"
            )
        self._encoder = np.asarray(seq.positions.get(), dtype=float)[:n]
        fixed: dict[str, dict[str, Any]] = {}
        for device in self.others:
            fixed.update(device.read())
        self._step0 = int(fixed[self.step_tag.name]["value"])
        self._fixed = fixed

    # -- bluesky: Readable ---------------------------------------------------------------------
    def read(self) -> dict[str, dict[str, Any]]:
        """The current frame's reading (after a ``trigger``)."""
        if not self._current:
            raise RuntimeError(f"{self.name}: trigger() before read()")
        return dict(self._current)

    def describe(self) -> dict[str, dict[str, Any]]:
        """Data keys: the detector's and those of every device read (as a software series)."""
        keys: dict[str, dict[str, Any]] = {}
        for device in self.others:
            keys.update(device.describe())
        keys.update(self.detector.describe())
        readback = dict(keys[self.axis.name])
        readback["source"] = f"PV:{self.sequencer.positions.pvname}"
        keys[self.axis.name] = readback
        return keys

    def read_configuration(self) -> dict[str, dict[str, Any]]:
        """The detector's configuration."""
        return dict(self.detector.read_configuration())

    def describe_configuration(self) -> dict[str, dict[str, Any]]:
        """The detector's configuration keys."""
        return dict(self.detector.describe_configuration())

    def collect_asset_docs(self) -> Iterator[tuple[str, dict[str, Any]]]:
        """The detector file's resource and the frames' datums."""
        yield from self.detector.collect_asset_docs()
