"""Hardware phase-step sequencer: the G2 piezo steps on the camera's end-of-exposure signal.

At a beamline, hardware-timed phase stepping wires the camera's exposure output to the piezo
controller's trigger input (directly or through a PandA / Zebra box): the controller takes one
step at the end of every exposure, and its on-target output gates the camera's next exposure.
The control system arms the sequence once per series instead of moving and triggering once per
step, which removes the per-step round trips.

PVs (prefix ``PVNames.sequencer``, default ``TALBOT:SEQ:``):

- ``StepSize`` [um]: the distance added to the piezo setpoint at each step (finite, |s| <= 100).
- ``NumSteps``: a put of n >= 1 arms the sequencer for the next acquisition: at most n steps,
  one after each exposure that another frame follows; 0 disarms. Refused while the camera
  acquires. The sequencer disarms itself when that acquisition ends.
- ``Armed_RBV``: 1 from the arming put to the end of the next acquisition.
- ``StepCounter_RBV``: steps taken since arming. The camera tags every frame of an armed
  acquisition with step index ``TAG:StepIndex + StepCounter_RBV`` (at the beamline, a CALC
  record feeding the NDAttribute).
- ``Positions_RBV`` (waveform, ``MAX_FRAMES``) and ``NumCaptured_RBV``: the piezo encoder
  reading [um] latched at the start of each exposure of the armed acquisition, the same value
  the frame carries in the scan file. Both are published as each exposure starts (the count
  after the waveform), so a client sees frame i's reading before that frame reaches the file;
  the arming put resets the count to 0.
- ``Message_RBV``: why a step was refused (a target outside the piezo's soft limits); the
  remaining frames are then taken where the piezo is.
- ``GateMotion`` (0/1): with 1, the first exposure of an armed acquisition waits until the piezo,
  the rotation and the sample stage have ended their moves (at the beamline, the motion
  controllers' in-position outputs gating the camera trigger). A plan can then start the
  acquisition without waiting for those moves itself.

The series queue (one entry) arms and starts whole series, so that a plan can hand over the
next series while the current one is being acquired and no Channel Access round trip separates
two series (the control system's part of a series then overlaps the exposures of the one
before). At a beamline this is the sequencing logic of a PandA or a soft IOC next to the motion
controllers:

- ``Next:Rotation`` [deg] (NaN: the rotation stays), ``Next:Position`` [um] (the piezo's first
  step, reached through the record's backlash ``BDST``), ``Next:FrameType``,
  ``Next:AngleIndex``, ``Next:SeriesIndex``, ``Next:Attempt`` (the scan tags of its frames) and
  ``Next:NumImages`` (its frames; ``StepSize`` between two of them): the next series.
- ``Queue``: a put of an id >= 1 queues the ``Next:`` values under that id (refused when a series
  is already queued or a target is outside the soft limits); 0 cancels. When the running
  acquisition ends, or at once when the camera is idle, the IOC writes the queued tags to the
  ``TAG:`` PVs, arms itself for ``NumImages - 1`` steps with the in-position gate on, and starts
  a camera acquisition of ``NumImages`` frames; the rotation and piezo moves start as soon as
  the current acquisition's last exposure has ended (during its readout). An aborted
  acquisition (``Acquire = 0``) cancels the queue instead.
- ``Queued_RBV``: the id queued (0: none). ``Series_RBV``: the id of the series that the camera
  acquires or acquired last (0 after an arming by ``NumSteps``).
- ``Latched_RBV``: ``[Series_RBV, n, encoder readings of frames 0..n-1]`` of the current armed
  acquisition, published with each reading; ``Finished_RBV``: the same for the last armed
  acquisition, published when it has ended (its frames written). Each is one PV, so a client
  whose monitors are coalesced or reordered (Channel Access flow control) still gets readings
  that belong together, and the end of a series cannot be confused with another's.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from caproto import ChannelType
from caproto.server import PVGroup, pvproperty

from contracts.frames import CA_STRING_MAX, FRAME_TYPES, INT32_MAX
from sim.ioc.motor import MotorLimitError, MotorRecord
from sim.ioc.tags import ScanTagsGroup

#: Frames one armed acquisition can capture positions for.
MAX_FRAMES = 256

#: Largest step the sequencer accepts [um] (the piezo's whole travel).
MAX_STEP_UM = 100.0


@dataclass(frozen=True)
class QueuedSeries:
    """A series handed over through ``Queue`` (tags, targets [deg, um], frames)."""

    series_id: int
    rotation_deg: float
    position_um: float
    frame_type: str
    angle_index: int
    series_index: int
    attempt: int
    num_images: int


class StepSequencerGroup(PVGroup):
    """Steps ``axis`` (the G2 piezo record) by ``StepSize`` after each exposure while armed."""

    step_size = pvproperty(
        name="StepSize", value=0.0, dtype=ChannelType.DOUBLE, precision=4, units="um",
        doc="step added to the piezo setpoint after each exposure [um]",
    )  # fmt: skip
    num_steps = pvproperty(
        name="NumSteps", value=0, dtype=ChannelType.LONG,
        lower_ctrl_limit=0, upper_ctrl_limit=MAX_FRAMES - 1,
        doc="put n >= 1: arm for at most n steps in the next acquisition; 0: disarm",
    )  # fmt: skip
    armed = pvproperty(
        name="Armed_RBV", value=0, dtype=ChannelType.LONG, read_only=True,
        doc="1 while armed (until the end of the next acquisition)",
    )  # fmt: skip
    step_counter = pvproperty(
        name="StepCounter_RBV", value=0, dtype=ChannelType.LONG, read_only=True,
        doc="steps taken since arming (added to TAG:StepIndex in the frames' tags)",
    )  # fmt: skip
    positions = pvproperty(
        name="Positions_RBV", value=[0.0] * MAX_FRAMES, dtype=ChannelType.DOUBLE,
        max_length=MAX_FRAMES, read_only=True, precision=4, units="um",
        doc="piezo encoder [um] at the start of each exposure of the last armed acquisition",
    )  # fmt: skip
    num_captured = pvproperty(
        name="NumCaptured_RBV", value=0, dtype=ChannelType.LONG, read_only=True,
        doc="number of valid entries in Positions_RBV",
    )  # fmt: skip
    message = pvproperty(
        name="Message_RBV", value="", dtype=ChannelType.STRING, read_only=True,
        doc="why the last step was refused (empty when none was)",
    )  # fmt: skip
    gate_motion = pvproperty(
        name="GateMotion", value=0, dtype=ChannelType.LONG,
        lower_ctrl_limit=0, upper_ctrl_limit=1,
        doc="1: an armed acquisition's first exposure waits for the gated motors' moves to end",
    )  # fmt: skip

    next_rotation = pvproperty(
        name="Next:Rotation", value=0.0, dtype=ChannelType.DOUBLE, precision=4, units="deg",
        doc="rotation angle of the next queued series [deg] (NaN: the rotation stays)",
    )  # fmt: skip
    next_position = pvproperty(
        name="Next:Position", value=0.0, dtype=ChannelType.DOUBLE, precision=4, units="um",
        doc="first step of the next queued series [um] (approached through BDST)",
    )  # fmt: skip
    next_frame_type = pvproperty(
        name="Next:FrameType", value="projection", dtype=ChannelType.ENUM,
        enum_strings=FRAME_TYPES, record="mbbo",
        doc="frame-type tag of the next queued series",
    )  # fmt: skip
    next_angle_index = pvproperty(
        name="Next:AngleIndex", value=-1, dtype=ChannelType.LONG,
        lower_ctrl_limit=-1, upper_ctrl_limit=INT32_MAX,
        doc="angle-index tag of the next queued series",
    )  # fmt: skip
    next_series_index = pvproperty(
        name="Next:SeriesIndex", value=-1, dtype=ChannelType.LONG,
        lower_ctrl_limit=-1, upper_ctrl_limit=INT32_MAX,
        doc="series-index tag of the next queued series",
    )  # fmt: skip
    next_attempt = pvproperty(
        name="Next:Attempt", value=0, dtype=ChannelType.LONG,
        lower_ctrl_limit=0, upper_ctrl_limit=INT32_MAX,
        doc="attempt tag of the next queued series",
    )  # fmt: skip
    next_num_images = pvproperty(
        name="Next:NumImages", value=1, dtype=ChannelType.LONG,
        lower_ctrl_limit=1, upper_ctrl_limit=MAX_FRAMES,
        doc="frames of the next queued series (one step after each but the last)",
    )  # fmt: skip
    queue = pvproperty(
        name="Queue", value=0, dtype=ChannelType.LONG,
        lower_ctrl_limit=0, upper_ctrl_limit=INT32_MAX,
        doc="put an id >= 1: queue the Next: series under it; 0: cancel the queued series",
    )  # fmt: skip
    queued = pvproperty(
        name="Queued_RBV", value=0, dtype=ChannelType.LONG, read_only=True,
        doc="id of the queued series (0: none)",
    )  # fmt: skip
    series = pvproperty(
        name="Series_RBV", value=0, dtype=ChannelType.LONG, read_only=True,
        doc="id of the queued series acquired now or last (0 after an arming by NumSteps)",
    )  # fmt: skip
    latched = pvproperty(
        name="Latched_RBV", value=[0.0] * (MAX_FRAMES + 2), dtype=ChannelType.DOUBLE,
        max_length=MAX_FRAMES + 2, read_only=True, precision=4,
        doc="[Series_RBV, n, encoder of frames 0..n-1 (um)] of the current acquisition",
    )  # fmt: skip
    finished = pvproperty(
        name="Finished_RBV", value=[0.0] * (MAX_FRAMES + 2), dtype=ChannelType.DOUBLE,
        max_length=MAX_FRAMES + 2, read_only=True, precision=4,
        doc="Latched_RBV of the last armed acquisition, written when it has ended",
    )  # fmt: skip

    def __init__(
        self,
        prefix: str,
        *,
        axis: MotorRecord,
        gated: tuple[MotorRecord, ...] = (),
        rotation: MotorRecord | None = None,
        tags: ScanTagsGroup | None = None,
        **kwargs: Any,
    ) -> None:
        self.axis = axis
        self.gated = (axis, *gated)
        self.rotation = rotation
        self.tags = tags
        #: set by the camera: starts an acquisition of n frames of the queued series
        self.start_camera: Callable[[int], Awaitable[None]] | None = None
        #: set by the camera: whether it is idle (no acquisition running or ending)
        self.camera_idle: Callable[[], bool] | None = None
        self._queued: QueuedSeries | None = None
        self._series_id = 0  # the queued series of the current acquisition (0: none)
        self._moved = 0  # the queued series whose moves have been started
        self._finishing: set[asyncio.Task[None]] = set()  # Finished_RBV after the last write
        self.acquiring = False  # set by the camera for the length of an acquisition
        self._limit = 0  # steps armed for the next acquisition (0: not armed)
        self._active = False  # armed when the current acquisition started
        self._counter = 0
        self._captured: list[float] = []
        self._pending_move = 0  # request id of the step in flight
        super().__init__(prefix, **kwargs)

    @step_size.putter  # type: ignore[no-redef]
    async def step_size(self, instance: Any, value: float) -> float:
        if not (math.isfinite(value) and abs(value) <= MAX_STEP_UM):
            raise ValueError(f"StepSize must be finite and within +/-{MAX_STEP_UM} um, got {value}")
        return value

    @gate_motion.putter  # type: ignore[no-redef]
    async def gate_motion(self, instance: Any, value: int) -> int:
        if value not in (0, 1):
            raise ValueError(f"GateMotion must be 0 or 1, got {value}")
        return value

    @num_steps.putter  # type: ignore[no-redef]
    async def num_steps(self, instance: Any, value: int) -> int:
        if self.acquiring:
            raise ValueError("NumSteps cannot change while the camera acquires")
        if not 0 <= value < MAX_FRAMES:
            raise ValueError(f"NumSteps must be in 0..{MAX_FRAMES - 1}, got {value}")
        if self._series_id:
            self._series_id = 0
            await self.series.write(0)
        await self._arm(int(value))
        return value

    async def _arm(self, limit: int) -> None:
        """Arm for ``limit`` steps in the next acquisition (0: disarm)."""
        self._limit = limit
        self._counter = 0
        if self._limit > 0:
            self._captured = []
            await self.num_captured.write(0)
            await self.latched.write(self._combined())
        await self.armed.write(int(self._limit > 0))
        await self.step_counter.write(0)
        await self.message.write("")

    @queue.putter  # type: ignore[no-redef]
    async def queue(self, instance: Any, value: int) -> int:
        if value == 0:
            await self.cancel()
            return 0
        if value < 0:
            raise ValueError(f"Queue takes a series id >= 1 (0 cancels), got {value}")
        if self._queued is not None:
            raise ValueError(f"series {self._queued.series_id} is already queued; put 0 first")
        frames = int(self.next_num_images.value)
        if not 1 <= frames <= MAX_FRAMES:
            raise ValueError(f"Next:NumImages must be in 1..{MAX_FRAMES}, got {frames}")
        if self.rotation is None or self.tags is None or self.start_camera is None:
            raise ValueError("this sequencer has no rotation, tags or camera to queue series on")
        spec = QueuedSeries(
            series_id=int(value),
            rotation_deg=float(self.next_rotation.value),
            position_um=float(self.next_position.value),
            frame_type=str(self.next_frame_type.value),
            angle_index=int(self.next_angle_index.value),
            series_index=int(self.next_series_index.value),
            attempt=int(self.next_attempt.value),
            num_images=int(self.next_num_images.value),
        )
        last_um = spec.position_um + (spec.num_images - 1) * float(self.step_size.value)
        checks = [(self.axis, spec.position_um), (self.axis, last_um)]
        if not math.isnan(spec.rotation_deg):
            checks.append((self.rotation, spec.rotation_deg))
        for record, target in checks:
            try:
                await record.check_target(target)
            except MotorLimitError as exc:
                raise ValueError(f"Queue refused: {exc}") from None
        self._queued = spec
        await self.queued.write(spec.series_id)
        if not self.acquiring and (self.camera_idle is None or self.camera_idle()):
            await self.start_queued()  # else the acquisition ending now starts it
        return value

    async def cancel(self) -> None:
        """Forget the queued series (if any)."""
        if self._queued is not None:
            self._queued = None
            await self.queued.write(0)

    async def start_queued(self) -> None:
        """Start the queued series, if any (the camera is idle)."""
        spec = await self._prepare_queued()
        if spec is not None and self.start_camera is not None:
            await self.start_camera(spec.num_images)

    async def _move_queued(self, spec: QueuedSeries | None) -> None:
        """Start series ``spec``'s rotation and first-step moves (once per series)."""
        if spec is None or self._moved == spec.series_id:
            return
        assert self.rotation is not None
        self._moved = spec.series_id
        moves = [(self.axis, spec.position_um)]
        if not math.isnan(spec.rotation_deg):
            moves.append((self.rotation, spec.rotation_deg))
        for record, target in moves:
            await record.motor.write(target, verify_value=False)
            await record.request_move(target)

    async def _prepare_queued(self) -> QueuedSeries | None:
        """Take the queued series, if any: tags, moves and arming (the camera starts it)."""
        spec = self._queued
        if spec is None or self.start_camera is None:
            return None
        assert self.rotation is not None
        assert self.tags is not None
        self._queued = None
        await self.queued.write(0)
        tags = self.tags
        await tags.frame_type.write(spec.frame_type)
        await tags.angle_index.write(spec.angle_index)
        await tags.series_index.write(spec.series_index)
        await tags.step_index.write(0)
        await tags.attempt.write(spec.attempt)
        await self._move_queued(spec)
        self._series_id = spec.series_id
        await self.series.write(spec.series_id)
        await self._arm(spec.num_images - 1)
        return spec

    # -- called by the camera ----------------------------------------------------------------
    def begin(self) -> None:
        """An acquisition starts: the arming (if any) applies to it."""
        self.acquiring = True
        self._active = self._limit > 0
        self._captured = []

    def step_offset(self) -> int:
        """Steps taken so far in this acquisition (0 when not armed)."""
        return self._counter if self._active else 0

    def latch(self, encoder_um: float) -> None:
        """An exposure starts with the piezo encoder reading ``encoder_um``."""
        if self._active and len(self._captured) < MAX_FRAMES:
            self._captured.append(encoder_um)

    async def publish_latched(self) -> None:
        """Publish the readings latched so far in this acquisition (after each ``latch``)."""
        if self._active:
            values = self._captured + [0.0] * (MAX_FRAMES - len(self._captured))
            await self.positions.write(values)
            await self.num_captured.write(len(self._captured))
            await self.latched.write(self._combined())

    def _combined(self) -> list[float]:
        """[series id, n, the n latched readings], padded to the waveform's length."""
        head = [float(self._series_id), float(len(self._captured)), *self._captured]
        return head + [0.0] * (MAX_FRAMES + 2 - len(head))

    async def exposure_ended(self, more_frames: bool) -> None:
        """Take the next step if armed, another frame follows and steps remain. After the last
        exposure, start the queued series' moves (the sample may move during the readout)."""
        if not more_frames:
            await self._move_queued(self._queued)
        if not (self._active and more_frames and self._counter < self._limit):
            return
        target = float(self.axis.motor.value) + float(self.step_size.value)
        try:
            await self.axis.check_target(target)
        except MotorLimitError:
            self._active = False
            await self.message.write(f"step to {target:.6g} outside soft limits"[:CA_STRING_MAX])
            return
        await self.axis.motor.write(target, verify_value=False)
        self._pending_move = await self.axis.request_move(target)
        self._counter += 1
        await self.step_counter.write(self._counter)

    async def in_position(self) -> None:
        """With ``GateMotion`` = 1 in an armed acquisition, and always in a queued series: return
        once every gated motor has ended the moves requested so far (gates the first exposure)."""
        if self._active and (self.gate_motion.value or self._series_id):
            for motor in self.gated:
                await motor.wait_in_position(motor.requested_id)

    async def on_target(self) -> None:
        """Return once the last step has settled (gates the next exposure)."""
        if self._pending_move:
            await self.axis.wait_in_position(self._pending_move)
            self._pending_move = 0

    async def chain(self, writing: asyncio.Task[None] | None) -> QueuedSeries | None:
        """The camera exposed every frame of its acquisition and goes on into the queued series,
        if any: the current series' ``Finished_RBV`` is published once ``writing`` (its last
        frame's delivery to the file) is done, and the queued series is armed and begun. None
        when nothing is queued (the acquisition then ends)."""
        if self._queued is None or self.start_camera is None:
            return None
        if self._active:
            task = asyncio.create_task(self._finish_after(writing, self._combined()))
            self._finishing.add(task)
            task.add_done_callback(self._finishing.discard)
        self._active = False
        spec = await self._prepare_queued()
        self.begin()
        return spec

    async def _finish_after(self, writing: asyncio.Task[None] | None, latched: list[float]) -> None:
        if writing is not None:
            await asyncio.gather(writing, return_exceptions=True)
        await self.finished.write(latched)

    async def end(self, *, aborted: bool) -> QueuedSeries | None:
        """The acquisition ended: disarm (the latched readings are already published). Then
        cancel the queued series when ``aborted``, else take it: the series to start next (its
        tags, moves and arming done; the camera starts it once it is idle), or None."""
        self._limit = 0
        self.acquiring = False
        await self.armed.write(0)
        was_active = self._active
        self._active = False
        if was_active:
            await self.finished.write(self._combined())
        if aborted:
            await self.cancel()
            return None
        return await self._prepare_queued()
