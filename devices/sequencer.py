"""Hardware-timed phase stepping: the step sequencer and the frames of one sequenced acquisition.

The sequencer (``PVNames.sequencer``, ``docs/pvs.md``) steps the G2 piezo at the end of every
exposure of one armed camera acquisition and latches the piezo encoder at the start of every
exposure. A series then costs one arming and one ``Acquire`` instead of M moves and M triggers.

:class:`SequencedFrames` turns such an acquisition back into one bluesky reading per frame, with
the same data keys a software-stepped series reads (detector image, stepped-axis readback and
setpoint, rotation, sample, ring current, tags), so the documents of both kinds of series look
alike: per frame, the image reference, the encoder reading latched for that frame, the commanded
position and the step index; the rest as read once, at the acquisition's first frame. Each
frame's reading is ready as soon as the frame is in the file, so its event is saved while the
next frame exposes.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
from ophyd import Component as Cpt
from ophyd import Device, EpicsSignal, EpicsSignalRO
from ophyd.status import Status, StatusBase

from devices.detector import FrameLost, TalbotDetector
from devices.signals import SettingSignal

log = logging.getLogger(__name__)


class StepSequencer(Device):
    """Hardware phase-step sequencer (G2 piezo steps once per frame)."""

    step_size = Cpt(SettingSignal, "StepSize", kind="config")
    num_steps = Cpt(EpicsSignal, "NumSteps", put_complete=True, kind="omitted")
    armed = Cpt(EpicsSignalRO, "Armed_RBV", kind="omitted")
    step_counter = Cpt(EpicsSignalRO, "StepCounter_RBV", kind="omitted", auto_monitor=True)
    positions = Cpt(EpicsSignalRO, "Positions_RBV", kind="omitted", auto_monitor=True)
    num_captured = Cpt(EpicsSignalRO, "NumCaptured_RBV", kind="omitted", auto_monitor=True)
    message = Cpt(EpicsSignalRO, "Message_RBV", string=True, kind="omitted", auto_monitor=True)
    #: 1: an armed acquisition's first exposure waits IOC-side for the piezo, rotation and
    #: sample moves to end (the motion controllers' in-position outputs gating the trigger)
    gate_motion = Cpt(SettingSignal, "GateMotion", kind="config")


class SequencedAcquisition:
    """Triggerable: one camera acquisition of ``cam.num_images`` frames, none referenced yet
    (``trigger`` starts it; the status finishes when the last frame is written). ``frames``,
    when given, learns of the acquisition so that its per-frame statuses end with it."""

    #: How long ``pause`` waits for a stopped acquisition to end [s].
    STOP_TIMEOUT_S = 10.0

    def __init__(self, detector: TalbotDetector, frames: SequencedFrames | None = None) -> None:
        self.detector = detector
        self.frames = frames
        self.name = f"{detector.name}_sequence"
        self.parent = None
        self._status: StatusBase | None = None

    def trigger(self) -> StatusBase:
        """Start the acquisition."""
        status = self.detector.acquire()
        self._status = status
        if self.frames is not None:
            self.frames.acquisition_started(status)
        return status

    def pause(self) -> None:
        """The RunEngine pauses or suspends the plan (it calls this on every object the run
        used): stop the acquisition in progress and wait for its end. The take it interrupted is
        rewound and re-taken, and its arming of the sequencer is refused while the camera
        acquires; the stopped take's frames stay in the file under the old attempt."""
        status = self._status
        if status is None or status.done:
            return
        self.detector.cam.acquire.put(0, wait=True, timeout=self.STOP_TIMEOUT_S)
        try:
            status.wait(timeout=self.STOP_TIMEOUT_S)
        except Exception:  # the take is re-taken whatever became of its status
            log.warning("%s: the stopped acquisition did not end cleanly", self.name)

    def resume(self) -> None:
        """Nothing to restore: the re-take starts a new acquisition."""


class SequencedFrames:
    """The frames of a sequenced acquisition, one reading per ``trigger()``, as they arrive.

    ``set(positions)`` gives the commanded step positions [axis units] of the next acquisition
    (and forgets the frames of the previous one); its frames are the next ones of the detector's
    file. Each ``trigger()`` waits for the next frame: its status finishes once the file holds
    that frame and the sequencer has published the encoder reading latched for it, or once the
    acquisition has ended without it. ``read()`` then returns the frame's reading under the data
    keys of a software-stepped frame, referencing the frame by its index in the file, or raises
    :class:`~devices.detector.FrameLost` for a frame that never reached the file. A plan can so
    save each frame's event while the next one exposes. :meth:`lost` counts the missing frames
    once the acquisition is over.

    The statuses always succeed: a status left over from a take that a suspension interrupted
    ends with that take's acquisition, and a failed status would abort the run.

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
        Devices read once per acquisition, at its first frame (rotation, sample, beam, tags),
        for the other keys.
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
        self._lock = threading.Lock()
        self._generation = 0  # bumped by set(): statuses of older takes touch nothing
        self._positions: list[float] = []
        self._next = 0
        self._first_point = 0
        self._dropped_before = 0
        self._acquisition: StatusBase | None = None
        self._missing: dict[int, Exception] = {}  # frame -> why it has no reading
        self._fixed: dict[str, dict[str, Any]] = {}
        self._step0 = 0
        self._current_index = -1
        self._current: dict[str, dict[str, Any]] = {}

    # -- bluesky: Movable ----------------------------------------------------------------------
    def set(self, positions: Sequence[float]) -> StatusBase:
        """Commanded positions of the next sequenced acquisition (one per frame)."""
        values = [float(p) for p in positions]
        if not values:
            raise ValueError(f"{self.name}: positions must name at least one frame")
        with self._lock:
            self._generation += 1
            self._positions = values
            self._next = 0
            self._acquisition = None
            self._missing = {}
            self._fixed = {}
            self._current_index = -1
            self._current = {}
            # the frames of the acquisition follow the ones the file holds now (read when the
            # set is executed, so a re-take after a rewind counts the interrupted take's frames)
            self._first_point = int(self.detector.hdf5.num_captured.get())
            self._dropped_before = int(self.detector.hdf5.dropped.get())
        status = Status(obj=self)
        status.set_finished()
        return status

    def acquisition_started(self, status: StatusBase) -> None:
        """The acquisition of the positions set last has started (``SequencedAcquisition``)."""
        with self._lock:
            self._acquisition = status

    def lost(self) -> int:
        """Frames of the acquisition that did not reach the file (0 when all are written)."""
        written = int(self.detector.hdf5.num_captured.get()) - self._first_point
        return max(len(self._positions) - written, 0)

    # -- bluesky: Triggerable ------------------------------------------------------------------
    def trigger(self) -> StatusBase:
        """Wait for the next frame of the acquisition (see the class docstring)."""
        status = Status(obj=self)
        with self._lock:
            i = self._next
            if i >= len(self._positions):
                status.set_exception(
                    RuntimeError(f"{self.name}: all {len(self._positions)} frames already read")
                )
                return status
            if self._acquisition is None:
                status.set_exception(RuntimeError(f"{self.name}: no acquisition started"))
                return status
            self._next = i + 1
            generation, acquisition = self._generation, self._acquisition
            written_needed = self._first_point + i + 1
            dropped_before = self._dropped_before
        file_count = self.detector.hdf5.num_captured
        dropped = self.detector.hdf5.dropped
        latched_count = self.sequencer.num_captured
        gate = threading.Lock()  # the first callback to decide finishes the status
        decided: list[bool] = []
        subscriptions: list[tuple[Any, int]] = []

        def frame_in() -> bool:
            return int(file_count.get()) >= written_needed and int(latched_count.get()) >= i + 1

        def unsubscribe() -> None:
            for signal, cid in list(subscriptions):
                signal.unsubscribe(cid)

        def finish(missing: Exception | None) -> None:
            with gate:
                if decided:
                    return
                decided.append(True)
            with self._lock:
                if missing is not None and generation == self._generation:
                    self._missing[i] = missing
            unsubscribe()
            status.set_finished()

        def shifted() -> Exception | None:
            """A frame of this acquisition was dropped: file index i is no longer frame i."""
            n_dropped = int(dropped.get()) - dropped_before
            if n_dropped <= 0:
                return None
            return FrameLost(
                f"{self.name}: the file writer dropped {n_dropped} frame(s) of the acquisition; "
                f"frame {i} and later cannot be matched to their file entries"
            )

        def on_count(*args: Any, **kwargs: Any) -> None:
            if frame_in():
                finish(shifted())

        def on_acquired(done: StatusBase) -> None:
            if frame_in():
                finish(shifted())
            else:
                finish(shifted() or self._why_missing(i, written_needed, done))

        for signal in (file_count, latched_count):
            subscriptions.append((signal, signal.subscribe(on_count, run=False)))
        if frame_in():
            finish(shifted())
        else:
            acquisition.add_callback(on_acquired)
        if decided:  # decided while subscribing: drop what finish() could not yet see
            unsubscribe()
        return status

    def _why_missing(self, i: int, written_needed: int, acquisition: StatusBase) -> Exception:
        """Why frame ``i`` has no reading although its acquisition has ended."""
        if not acquisition.success:
            error = acquisition.exception() if hasattr(acquisition, "exception") else None
            return RuntimeError(f"{self.name}: the acquisition failed before frame {i}: {error}")
        have = int(self.detector.hdf5.num_captured.get())
        if have < written_needed:
            return FrameLost(
                f"{self.name}: frame {i} of the acquisition did not reach the file "
                f"({have - self._first_point} of {len(self._positions)} written)"
            )
        seq = self.sequencer
        message = str(seq.message.get() or "")
        if message:  # the sequencer stops latching at a refused step
            return RuntimeError(f"{seq.name}: a step was refused before frame {i}: {message}")
        return RuntimeError(
            f"{seq.name}: latched {int(seq.num_captured.get())} encoder readings for "
            f"{len(self._positions)} frames (the acquisition did not run armed to its end)"
        )

    def _reading(self, i: int) -> dict[str, dict[str, Any]]:
        """Frame ``i``'s reading (its frame is in the file and its encoder value published)."""
        seq = self.sequencer
        message = str(seq.message.get() or "")
        # frame i follows i steps: after a refused step, the frames past the steps taken were
        # taken where the piezo stopped
        if message and i > int(seq.step_counter.get()):
            raise RuntimeError(f"{seq.name}: a step was refused before frame {i}: {message}")
        if not self._fixed:
            fixed: dict[str, dict[str, Any]] = {}
            for device in self.others:
                fixed.update(device.read())
            self._step0 = int(fixed[self.step_tag.name]["value"])
            self._fixed = fixed
        encoder = np.asarray(seq.positions.get(), dtype=float)
        now = time.time()
        self.detector.reference_frame(now, self._first_point + i)
        reading = dict(self._fixed)
        reading.update(self.detector.read())
        setpoint_key = self.axis.user_setpoint.name
        reading[self.axis.name] = {"value": float(encoder[i]), "timestamp": now}
        reading[setpoint_key] = {"value": self._positions[i], "timestamp": now}
        reading[self.step_tag.name] = {"value": self._step0 + i, "timestamp": now}
        return reading

    # -- bluesky: Readable ---------------------------------------------------------------------
    def read(self) -> dict[str, dict[str, Any]]:
        """The reading of the frame the last ``trigger`` waited for; FrameLost (or the error
        that ended the acquisition early) when that frame has none."""
        i = self._next - 1
        if i < 0:
            raise RuntimeError(f"{self.name}: trigger() before read()")
        if i != self._current_index:
            missing = self._missing.get(i)
            if missing is not None:
                raise missing
            self._current = self._reading(i)
            self._current_index = i
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
