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

import itertools
import logging
import math
import random
import threading
import time
from collections.abc import Hashable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
from ophyd import Component as Cpt
from ophyd import Device, EpicsSignal, EpicsSignalRO
from ophyd.status import AndStatus, Status, StatusBase

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
    # The series queue (one entry): the next series, handed over while the current one runs.
    next_rotation = Cpt(SettingSignal, "Next:Rotation", kind="omitted")
    next_position = Cpt(SettingSignal, "Next:Position", kind="omitted")
    next_frame_type = Cpt(SettingSignal, "Next:FrameType", string=True, kind="omitted")
    next_angle_index = Cpt(SettingSignal, "Next:AngleIndex", kind="omitted")
    next_series_index = Cpt(SettingSignal, "Next:SeriesIndex", kind="omitted")
    next_attempt = Cpt(SettingSignal, "Next:Attempt", kind="omitted")
    next_num_images = Cpt(SettingSignal, "Next:NumImages", kind="omitted")
    queue = Cpt(EpicsSignal, "Queue", put_complete=True, kind="omitted")
    queued = Cpt(EpicsSignalRO, "Queued_RBV", kind="omitted", auto_monitor=True)
    series = Cpt(EpicsSignalRO, "Series_RBV", kind="omitted", auto_monitor=True)
    latched = Cpt(EpicsSignalRO, "Latched_RBV", kind="omitted", auto_monitor=True)
    finished = Cpt(EpicsSignalRO, "Finished_RBV", kind="omitted", auto_monitor=True)


class AttemptCounter(Protocol):
    """Counts the takes of series keys (``plans.attempts.SeriesAttempts``)."""

    def attempt(self, key: Hashable) -> int:
        """The attempt number of the latest take of ``key`` (-1 if never started)."""
        ...

    def started_elsewhere(self, key: Hashable, attempt: int) -> None:
        """A take of ``key`` with ``attempt`` was started outside the plan (by the IOC, from
        its queue) and is abandoned: the plan's next take of ``key`` must count after it."""
        ...


@dataclass(frozen=True)
class SeriesArming:
    """A hardware-stepped series to arm (:meth:`SequencedAcquisition.set`) or to queue
    (``SequencedAcquisition.next_series``): its tags, its step positions [um] and the rotation
    angle [deg] it is taken at (None: wherever the rotation is)."""

    key: tuple[str, int]
    frame_type: str
    angle_index: int
    series_index: int
    positions: tuple[float, ...]
    rotation_deg: float | None
    attempts: AttemptCounter = field(compare=False)


@dataclass(frozen=True)
class _Queued:
    """A series handed to the IOC's queue: its id, attempt and first frame in the file."""

    arming: SeriesArming
    series_id: int
    attempt: int
    first_point: int
    dropped_before: int


class SequencedAcquisition:
    """The camera acquisitions of hardware-stepped series, one per series, through the IOC's
    series queue (``StepSequencer.queue``; bluesky Movable and Triggerable).

    ``set(SeriesArming)`` hands a series to the queue while the camera is idle, so the IOC starts
    it at once: tags, image count, sequencer arming with the in-position gate, rotation and
    first-step moves, ``Acquire``. ``next_series.set(SeriesArming)``, while a series is
    acquired, queues the one after it, which the IOC starts as soon as the current acquisition
    ends; when that series is ``set`` in its turn, it is adopted and nothing is put. So no
    Channel Access round trip separates two series. ``trigger()`` returns a status that
    finishes when the IOC reports the series' acquisition ended (``Finished_RBV``).

    The choice is made when the message is executed, so a rewind that replays a series after a
    suspension hands it over again: :meth:`pause` (the RunEngine calls it on every object of the
    run when it pauses or suspends) cancels the queue and stops the acquisition in progress, and
    a series is only adopted when the IOC says that it started the queued series and its attempt
    is the one the series' take has. ``frames`` learns of every acquisition so that its
    per-frame readings follow it.

    Without ``set`` (a sequencer armed by hand through ``NumSteps``), ``trigger()`` puts
    ``Acquire = 1`` and its status finishes when that put completes.
    """

    #: How long ``pause`` waits for a stopped acquisition to end [s].
    STOP_TIMEOUT_S = 10.0

    def __init__(
        self,
        detector: TalbotDetector,
        frames: SequencedFrames | None = None,
    ) -> None:
        self.detector = detector
        self.frames = frames
        self.name = f"{detector.name}_sequence"
        self.parent = None
        self.next_series = _NextSeries(self)
        self._lock = threading.Lock()
        self._status: StatusBase | None = None
        self._current = 0  # id of the series that the next trigger follows (0: Acquire = 1)
        self._queued: _Queued | None = None
        # ids of series: a random start, so that an id left in the IOC by an earlier session is
        # not taken for this session's; ``_issued`` orders this session's ids
        self._ids = itertools.count(random.randrange(1, 2**30))
        self._issued: set[int] = set()

    # -- bluesky: Movable --------------------------------------------------------------------
    def set(self, arming: SeriesArming) -> StatusBase:
        """Start ``arming`` (or adopt it from the IOC's queue); the status finishes when the IOC
        has started it."""
        frames = self._frames()
        with self._lock:
            queued, self._queued = self._queued, None
        self._current = 0
        if queued is not None and self._started(queued, arming):
            frames.expect(arming.positions, queued.first_point, queued.dropped_before,
                          queued.series_id)  # fmt: skip
            self._current = queued.series_id
            return _finished(self)
        if queued is not None:  # a re-take of the series before: the queued one must not run
            self._abandon(queued)
        hdf5 = self.detector.hdf5
        series_id = self._new_id()
        # the camera is idle: the series' frames follow the ones the file holds now
        frames.expect(
            arming.positions,
            int(hdf5.num_captured.get(use_monitor=False)),
            int(hdf5.dropped.get(use_monitor=False)),
            series_id,
        )
        self._current = series_id
        return self._submit(arming, series_id, arming.attempts.attempt(arming.key))

    def _started(self, queued: _Queued, arming: SeriesArming) -> bool:
        """Whether the IOC started ``queued`` and it is ``arming``'s current take."""
        if queued.arming != arming or queued.attempt != arming.attempts.attempt(arming.key):
            return False
        series = self._frames().sequencer.series
        return bool(int(series.get(use_monitor=False)) == queued.series_id)

    def _new_id(self) -> int:
        series_id = next(self._ids)
        self._issued.add(series_id)
        return series_id

    def _submit(self, arming: SeriesArming, series_id: int, attempt: int) -> StatusBase:
        """Put the ``Next:`` PVs, then ``Queue = series_id``; the status of the last put."""
        seq = self._frames().sequencer
        positions = arming.positions
        rotation = math.nan if arming.rotation_deg is None else arming.rotation_deg
        puts = [
            seq.step_size.set(positions[1] - positions[0]),
            seq.next_rotation.set(rotation),
            seq.next_position.set(positions[0]),
            seq.next_frame_type.set(arming.frame_type),
            seq.next_angle_index.set(arming.angle_index),
            seq.next_series_index.set(arming.series_index),
            seq.next_attempt.set(attempt),
            seq.next_num_images.set(len(positions)),
        ]
        result = Status(obj=self)

        def queued_in_ioc(status: StatusBase) -> None:
            if status.success:
                result.set_finished()
            else:
                result.set_exception(_why(status))

        def held(status: StatusBase) -> None:
            if not status.success:
                result.set_exception(_why(status))
                return
            try:
                seq.queue.set(series_id).add_callback(queued_in_ioc)
            except Exception as exc:
                result.set_exception(exc)

        _all(puts).add_callback(held)
        return result

    # -- bluesky: Triggerable ----------------------------------------------------------------
    def trigger(self) -> StatusBase:
        """Follow the acquisition of the series set last (or, without one, put ``Acquire = 1``);
        the status finishes once its last frame is written."""
        if self._current:
            # a refused put completes like an accepted one: the IOC must say it started it
            started = int(self._frames().sequencer.series.get(use_monitor=False))
            if started != self._current:
                failed = Status(obj=self)
                failed.set_exception(
                    RuntimeError(
                        f"{self.name}: the IOC did not start series {self._current} (Series_RBV "
                        f"is {started}): it refused the Queue put; check the Next: targets "
                        "against the soft limits"
                    )
                )
                return failed
            status = self._ended(self._current)
        else:
            status = self.detector.acquire()
        self._status = status
        if self.frames is not None:
            self.frames.acquisition_started(status)
        return status

    def _ended(self, series_id: int) -> StatusBase:
        """A status that finishes when ``Finished_RBV`` names series ``series_id``, or a later
        series of this session (its own update may have been coalesced away)."""
        finished = self._frames().sequencer.finished
        status = Status(obj=self)
        issued = self._issued

        def check(*args: Any, value: Any = None, **kwargs: Any) -> None:
            data = np.asarray(finished.get() if value is None else value, dtype=float).ravel()
            if data.size == 0 or status.done:
                return
            last = int(data[0])
            if last == series_id or (last in issued and last > series_id):
                finished.clear_sub(check)
                status.set_finished()

        finished.subscribe(check, run=True)
        return status

    # -- the queue -----------------------------------------------------------------------------
    def queue(self, arming: SeriesArming) -> StatusBase:
        """Queue ``arming`` in the IOC, to start when the current series ends
        (``next_series.set``). The status always finishes: a series the IOC refuses is handed
        over as usual when its turn comes (logged)."""
        frames = self._frames()
        queued = _Queued(
            arming=arming,
            series_id=self._new_id(),
            attempt=arming.attempts.attempt(arming.key) + 1,
            first_point=frames.first_point + len(frames.positions),
            dropped_before=frames.dropped_before,
        )
        with self._lock:
            self._queued = queued
        result = Status(obj=self.next_series)

        def submitted(status: StatusBase) -> None:
            if not status.success:
                log.warning("%s: series %s not queued (%s); it is started in its turn",
                            self.name, arming.key, _why(status))  # fmt: skip
                with self._lock:
                    if self._queued is queued:
                        self._queued = None
            result.set_finished()

        self._submit(arming, queued.series_id, queued.attempt).add_callback(submitted)
        return result

    # -- pause / stop ------------------------------------------------------------------------
    def pause(self) -> None:
        """The RunEngine pauses or suspends the plan: cancel the queued series and stop the
        acquisition in progress, waiting for its end. The take it interrupted is rewound and
        handed over again; the stopped take's frames stay in the file under the old attempt."""
        with self._lock:
            queued, self._queued = self._queued, None
        self._current = 0
        status = self._status
        self._abandon(queued)
        if status is not None and not status.done:
            try:
                status.wait(timeout=self.STOP_TIMEOUT_S)
            except Exception:  # the take is re-taken whatever became of its status
                log.warning("%s: the stopped acquisition did not end cleanly", self.name)

    def resume(self) -> None:
        """Nothing to restore: the re-take hands its series over again."""

    def stop(self, *, success: bool = False) -> None:
        """The run ends or is stopped: nothing queued or acquired may outlive it."""
        self.pause()

    def _abandon(self, queued: _Queued | None) -> None:
        """Cancel the IOC's queued series and stop the camera if it acquires. When the IOC had
        already started ``queued`` (not adopted by its plan yet), frames with its attempt may be
        in the file: its plan's next take must count after that attempt."""
        if self.frames is not None:
            seq = self.frames.sequencer
            seq.queue.put(0, wait=True, timeout=self.STOP_TIMEOUT_S)  # it cannot start after this
            if queued is not None and int(seq.series.get(use_monitor=False)) == queued.series_id:
                queued.arming.attempts.started_elsewhere(queued.arming.key, queued.attempt)
        acquire = self.detector.cam.acquire
        if int(acquire.get(use_monitor=False)) == 0:
            return
        acquire.put(0, wait=True, timeout=self.STOP_TIMEOUT_S)
        deadline = time.monotonic() + self.STOP_TIMEOUT_S
        while int(acquire.get(use_monitor=False)) != 0:
            if time.monotonic() > deadline:
                log.warning("%s: the camera still acquires after Acquire = 0", self.name)
                return
            time.sleep(0.005)

    def _frames(self) -> SequencedFrames:
        if self.frames is None:
            raise RuntimeError(f"{self.name}: arming a series needs its SequencedFrames")
        return self.frames


class _NextSeries:
    """``SequencedAcquisition.next_series``: ``set(arming)`` queues the series after the
    current one (bluesky Movable)."""

    def __init__(self, acquisition: SequencedAcquisition) -> None:
        self.acquisition = acquisition
        self.name = f"{acquisition.name}_next"
        self.parent = None

    def set(self, arming: SeriesArming) -> StatusBase:
        """Queue ``arming`` in the IOC (see :meth:`SequencedAcquisition.queue`)."""
        return self.acquisition.queue(arming)


def _why(status: StatusBase) -> Any:
    """The exception a failed status carries (or the status)."""
    error = status.exception() if hasattr(status, "exception") else None
    return error if error is not None else RuntimeError(f"{status} failed")


def _finished(obj: Any) -> StatusBase:
    status = Status(obj=obj)
    status.set_finished()
    return status


def _all(statuses: Sequence[StatusBase]) -> StatusBase:
    """One status for all of ``statuses`` (the first when there is one)."""
    result = statuses[0]
    for status in statuses[1:]:
        result = AndStatus(result, status)
    return result


class SequencedFrames:
    """The frames of a sequenced acquisition, one reading per ``trigger()``, as they arrive.

    ``set(positions)`` gives the commanded step positions [axis units] of the next acquisition,
    armed through ``NumSteps`` (and forgets the frames of the previous one); its frames are the
    next ones of the detector's file. :meth:`expect` does the same for a series the IOC starts
    from its queue (``SequencedAcquisition``), with the series id and the file index of its first
    frame. The encoder readings come from ``Latched_RBV`` / ``Finished_RBV``, recorded per series
    id as they arrive. Each ``trigger()`` waits for the next frame: its status finishes once the
    file holds that frame and the reading latched for it has arrived, or once the acquisition
    has ended without it. ``read()`` then returns the frame's reading under the data
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
        self._series_id = 0  # the IOC's Series_RBV while this acquisition's readings are latched
        self._delivered = 0  # frames of the acquisition read so far
        # encoder readings latched so far, per Series_RBV value, recorded as the monitors arrive
        # (in the IOC's order): a reading asked for later may already have been overwritten
        self._latched: dict[int, list[float]] = {}
        self._subscriptions = [
            (signal, signal.subscribe(self._on_latched, run=False))
            for signal in (sequencer.latched, sequencer.finished)
        ]
        self._acquisition: StatusBase | None = None
        self._missing: dict[int, Exception] = {}  # frame -> why it has no reading
        self._fixed: dict[str, dict[str, Any]] = {}
        self._step0 = 0
        self._current_index = -1
        self._current: dict[str, dict[str, Any]] = {}

    #: Series whose latched readings are kept (the current one and a few before).
    KEEP_LATCHED = 4

    def close(self) -> None:
        """Stop following the sequencer's readings (a session makes one per scan); safe twice."""
        for signal, cid in self._subscriptions:
            signal.unsubscribe(cid)
        self._subscriptions = []

    def _on_latched(self, *args: Any, value: Any = None, **kwargs: Any) -> None:
        """``Latched_RBV`` or ``Finished_RBV`` changed: record the series' readings."""
        self.record_latched(value)

    def record_latched(self, value: Any) -> None:
        """Record ``[series id, n, n readings]`` (a ``Latched_RBV`` / ``Finished_RBV`` value)."""
        if value is None:
            return
        data = np.asarray(value, dtype=float).ravel()
        if data.size < 2:
            return
        series, count = int(data[0]), int(data[1])
        readings = [float(v) for v in data[2 : 2 + count]]
        with self._lock:
            if series and len(readings) < len(self._latched.get(series, ())):
                return  # an older update of that series, overtaken (0: a NumSteps arming)
            self._latched.pop(series, None)
            self._latched[series] = readings
            while len(self._latched) > self.KEEP_LATCHED:
                del self._latched[next(iter(self._latched))]

    def _latched_for(self, series_id: int) -> list[float]:
        with self._lock:
            return self._latched.get(series_id, [])

    # -- bluesky: Movable ----------------------------------------------------------------------
    def set(self, positions: Sequence[float]) -> StatusBase:
        """Commanded positions of the next sequenced acquisition (one per frame), armed by a
        ``NumSteps`` put: its frames follow the ones the file holds now (read when the set is
        executed, so a re-take after a rewind counts the interrupted take's frames)."""
        hdf5 = self.detector.hdf5
        self.expect(positions, int(hdf5.num_captured.get()), int(hdf5.dropped.get()), 0)
        return _finished(self)

    def expect(
        self, positions: Sequence[float], first_point: int, dropped_before: int, series_id: int
    ) -> None:
        """The next acquisition is series ``series_id`` (0: one armed through ``NumSteps``); its
        first frame will be frame ``first_point`` of the file, and its encoder readings are those
        published under its id (``Latched_RBV``). Forgets the frames of the previous one."""
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
            self._first_point = first_point
            self._dropped_before = dropped_before
            self._series_id = series_id
            self._delivered = 0

    @property
    def positions(self) -> list[float]:
        """Commanded positions of the current acquisition's frames."""
        return list(self._positions)

    @property
    def first_point(self) -> int:
        """Index in the file of the current acquisition's first frame."""
        return self._first_point

    @property
    def dropped_before(self) -> int:
        """The file writer's dropped-frame count before the current acquisition."""
        return self._dropped_before

    def acquisition_started(self, status: StatusBase) -> None:
        """The acquisition of the positions set last has started (``SequencedAcquisition``)."""
        with self._lock:
            self._acquisition = status

    def lost(self) -> int:
        """Frames of the acquisition read without a reading (lost on the way to the file, or
        never read because an earlier one was): 0 when every frame was read."""
        return len(self._positions) - self._delivered

    # -- bluesky: Triggerable ------------------------------------------------------------------
    def trigger(self) -> StatusBase:
        """Wait for the next frame of the acquisition (see the class docstring)."""
        status = Status(obj=self)
        wait = self._claim_next_frame(status)
        if wait is not None:
            wait.start()
        return status

    def _claim_next_frame(self, status: StatusBase) -> _FrameWait | None:
        """Take the next frame and what its wait needs, under the lock; None (``status``
        failed) when no frame is left to wait for or no acquisition has started."""
        with self._lock:
            i = self._next
            if i >= len(self._positions):
                status.set_exception(
                    RuntimeError(f"{self.name}: all {len(self._positions)} frames already read")
                )
                return None
            if self._acquisition is None:
                status.set_exception(RuntimeError(f"{self.name}: no acquisition started"))
                return None
            self._next = i + 1
            generation, acquisition = self._generation, self._acquisition
            written_needed = self._first_point + i + 1
            dropped_before = self._dropped_before
            series_id = self._series_id
        return _FrameWait(
            self, status, i, generation, acquisition, written_needed, dropped_before, series_id
        )

    def _record_missing(self, generation: int, i: int, missing: Exception | None) -> None:
        """Frame ``i`` of the take ``generation`` is decided: ``missing`` says why it has no
        reading (None: it has one). A status of an older take touches nothing."""
        with self._lock:
            if missing is not None and generation == self._generation:
                self._missing[i] = missing

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
            f"{seq.name}: latched {len(self._latched_for(self._series_id))} encoder readings for "
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
        encoder = self._latched_for(self._series_id)
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
            self._delivered += 1
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


class _FrameWait:
    """One ``SequencedFrames.trigger()``: finishes ``status`` once the file holds frame ``i``
    (``written_needed`` frames) and the reading latched for it under ``series_id`` has arrived,
    or once ``acquisition`` has ended without it, recording why for ``read``. File count and
    readings are watched through their monitors; the first callback to decide finishes the
    status and unsubscribes."""

    def __init__(
        self,
        frames: SequencedFrames,
        status: StatusBase,
        i: int,
        generation: int,
        acquisition: StatusBase,
        written_needed: int,
        dropped_before: int,
        series_id: int,
    ) -> None:
        self._frames = frames
        self._status = status
        self._i = i
        self._generation = generation
        self._acquisition = acquisition
        self._written_needed = written_needed
        self._dropped_before = dropped_before
        self._series_id = series_id
        self._file_count = frames.detector.hdf5.num_captured
        self._dropped = frames.detector.hdf5.dropped
        self._gate = threading.Lock()  # the first callback to decide finishes the status
        self._decided = False
        self._subscriptions: list[tuple[Any, int]] = []

    def start(self) -> None:
        """Watch the file count and the latched readings; decide now if the frame is in,
        else when the acquisition ends."""
        seq = self._frames.sequencer
        for signal in (self._file_count, seq.latched, seq.finished):
            # subscribed after the recorder's own (``_on_latched``): a reading is recorded
            # before it is looked for
            self._subscriptions.append((signal, signal.subscribe(self._on_count, run=False)))
        if self._frame_in():
            self._finish(self._shifted())
        else:
            self._acquisition.add_callback(self._on_acquired)
        if self._decided:  # decided while subscribing: drop what _finish() could not yet see
            self._unsubscribe()

    def _frame_in(self) -> bool:
        return (
            int(self._file_count.get()) >= self._written_needed
            and len(self._frames._latched_for(self._series_id)) >= self._i + 1
        )

    def _unsubscribe(self) -> None:
        for signal, cid in list(self._subscriptions):
            signal.unsubscribe(cid)

    def _finish(self, missing: Exception | None) -> None:
        with self._gate:
            if self._decided:
                return
            self._decided = True
        self._frames._record_missing(self._generation, self._i, missing)
        self._unsubscribe()
        self._status.set_finished()

    def _shifted(self) -> Exception | None:
        """A frame of this acquisition was dropped: file index i is no longer frame i."""
        n_dropped = int(self._dropped.get()) - self._dropped_before
        if n_dropped <= 0:
            return None
        return FrameLost(
            f"{self._frames.name}: the file writer dropped {n_dropped} frame(s) of the "
            f"acquisition; frame {self._i} and later cannot be matched to their file entries"
        )

    def _on_count(self, *args: Any, **kwargs: Any) -> None:
        if self._frame_in():
            self._finish(self._shifted())

    def _on_acquired(self, done: StatusBase) -> None:
        if self._frame_in():
            self._finish(self._shifted())
        else:
            # a dropped frame, when there is one, is the cause to report
            self._finish(
                self._shifted() or self._frames._why_missing(self._i, self._written_needed, done)
            )
