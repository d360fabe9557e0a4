"""Hardware phase-step sequencer: the G2 piezo steps on the camera's end-of-exposure signal.

At a beamline, hardware-timed phase stepping wires the camera's exposure output to the piezo
controller's trigger input (directly or through a PandA / Zebra box): the controller takes one
step at the end of every exposure, and its on-target output gates the camera's next exposure.
The control system arms the sequence once per series instead of moving and triggering once per
step, which removes the per-step round trips (DESIGN §3.1).

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
"""

from __future__ import annotations

import math
from typing import Any

from caproto import ChannelType
from caproto.server import PVGroup, pvproperty

from sim.ioc.motor import MotorLimitError, MotorRecord

#: Frames one armed acquisition can capture positions for.
MAX_FRAMES = 256

#: Largest step the sequencer accepts [um] (the piezo's whole travel).
MAX_STEP_UM = 100.0


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

    def __init__(
        self,
        prefix: str,
        *,
        axis: MotorRecord,
        gated: tuple[MotorRecord, ...] = (),
        **kwargs: Any,
    ) -> None:
        self.axis = axis
        self.gated = (axis, *gated)
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
        self._limit = int(value)
        self._counter = 0
        if self._limit > 0:
            await self.num_captured.write(0)
        await self.armed.write(int(self._limit > 0))
        await self.step_counter.write(0)
        await self.message.write("")
        return value

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

    async def exposure_ended(self, more_frames: bool) -> None:
        """Take the next step if armed, another frame follows and steps remain."""
        if not (self._active and more_frames and self._counter < self._limit):
            return
        target = float(self.axis.motor.value) + float(self.step_size.value)
        try:
            await self.axis.check_target(target)
        except MotorLimitError:
            self._active = False
            await self.message.write(f"step to {target:.6g} outside soft limits"[:39])
            return
        await self.axis.motor.write(target, verify_value=False)
        self._pending_move = await self.axis.request_move(target)
        self._counter += 1
        await self.step_counter.write(self._counter)

    async def in_position(self) -> None:
        """With ``GateMotion`` = 1 in an armed acquisition: return once every gated motor has
        ended the moves requested so far (gates the first exposure)."""
        if self._active and self.gate_motion.value:
            for motor in self.gated:
                await motor.wait_done(motor.requested_id)

    async def on_target(self) -> None:
        """Return once the last step has settled (gates the next exposure)."""
        if self._pending_move:
            await self.axis.wait_done(self._pending_move)
            self._pending_move = 0

    async def end(self) -> None:
        """The acquisition ended: disarm (the latched readings are already published)."""
        self._active = False
        self._limit = 0
        self.acquiring = False
        await self.armed.write(0)
