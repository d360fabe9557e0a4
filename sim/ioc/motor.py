"""EPICS motor-record emulation for the simulated beamline.

One :class:`MotorRecord` PV group serves one motor record ``NAME`` with every field of the
EPICS motor record (``NAME.RBV``, ``NAME.DMOV`` ...; caproto's ``MotorFields``) and the behaviour
stock clients rely on (ophyd ``EpicsMotor``, ``caput(wait=True)``):

- a put to ``VAL`` completes (WriteNotify reply) only when the move has ended;
- ``DMOV`` goes 1 -> 0 -> 1 on every put, a zero-length move included; ``MOVN`` is 1 while moving;
- ``RBV`` is updated every ``tick_s`` of simulated motion at ``VELO`` (constant velocity);
- soft limits ``HLM``/``LLM`` are published as the control limits of ``VAL`` (ophyd reads them and
  raises ``LimitError`` client-side); an out-of-limit or non-finite put is rejected with an error,
  ``LVIO=1`` and a WRITE/MAJOR alarm on ``VAL``, and nothing moves;
- ``STOP`` halts the move (``VAL`` := ``RBV``), pending put-completions return;
- hard travel limits: a move past them stops there with ``HLS``/``LLS`` = 1;
- ``SET``/``OFF`` (user = dial + OFF), ``TWV``/``TWF``/``TWR`` tweaks, ``MSTA`` status bits.

Not simulated: acceleration (``ACCL`` is stored only), ``DIR`` = Neg, ``FOFF`` = Frozen, homing
(``HOMF``/``HOMR`` are accepted and do nothing) and retries. Backlash: a move against the sign
of ``BDST`` first goes ``BDST`` beyond the target, then approaches it along that sign (at VELO;
``BVEL``/``BACC`` are not simulated); a move along it goes straight.
"""

from __future__ import annotations

import asyncio
import copy
import math
from dataclasses import dataclass
from typing import Any

from caproto import AlarmSeverity, AlarmStatus
from caproto.server import PVGroup, PvpropertyDouble, pvproperty
from caproto.server.records import MotorFields

#: MSTA bit values (motor record documentation, "MSTA" field).
MSTA_DIRECTION = 1 << 0
MSTA_DONE = 1 << 1
MSTA_PLUS_LS = 1 << 2
MSTA_SLIP_STALL = 1 << 6
MSTA_PRESENT = 1 << 8
MSTA_PROBLEM = 1 << 9
MSTA_MOVING = 1 << 10
MSTA_GAIN_SUPPORT = 1 << 11
MSTA_MINUS_LS = 1 << 13


class MotorLimitError(ValueError):
    """A put asked for a position outside the soft limits (or not a finite number)."""


@dataclass(frozen=True)
class MotorSpec:
    """Static description of one simulated motor (positions in the motor's EGU)."""

    description: str
    egu: str
    low_limit: float
    high_limit: float
    position: float = 0.0
    velocity: float = 1.0
    acceleration_s: float = 0.1
    precision: int = 3
    resolution: float = 1e-4
    hard_margin: float = 1.0
    tick_s: float = 0.01

    def __post_init__(self) -> None:
        if not self.low_limit < self.high_limit:
            raise ValueError(
                f"low_limit={self.low_limit} must be below high_limit={self.high_limit}"
            )
        if not self.low_limit <= self.position <= self.high_limit:
            raise ValueError(f"position={self.position} is outside the soft limits")
        for name in ("velocity", "resolution", "tick_s"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)!r}")
        if self.hard_margin < 0:
            raise ValueError(f"hard_margin must be >= 0, got {self.hard_margin!r}")

    @property
    def hard_low(self) -> float:
        """Low hard (limit-switch) position in dial coordinates."""
        return self.low_limit - self.hard_margin

    @property
    def hard_high(self) -> float:
        """High hard (limit-switch) position in dial coordinates."""
        return self.high_limit + self.hard_margin


def _owner(fields: Any) -> MotorRecord:
    """The :class:`MotorRecord` group that owns a motor-record field group."""
    group = fields.parent.group
    assert isinstance(group, MotorRecord)
    return group


class SimMotorFields(MotorFields):
    """caproto motor-record fields with the putters that drive the simulated motion."""

    stop = copy.copy(MotorFields.stop)
    user_high_limit = copy.copy(MotorFields.user_high_limit)
    user_low_limit = copy.copy(MotorFields.user_low_limit)
    user_offset = copy.copy(MotorFields.user_offset)
    velocity = copy.copy(MotorFields.velocity)
    tweak_motor_forward = copy.copy(MotorFields.tweak_motor_forward)
    tweak_motor_reverse = copy.copy(MotorFields.tweak_motor_reverse)
    stop_pause_move_go = copy.copy(MotorFields.stop_pause_move_go)
    bl_distance = copy.copy(MotorFields.bl_distance)  # BDST

    @bl_distance.putter  # type: ignore[no-redef]
    async def bl_distance(self, instance: Any, value: float) -> float:
        if not math.isfinite(value):
            raise ValueError(f"BDST must be finite, got {value!r}")
        return value

    @stop.putter  # type: ignore[no-redef]
    async def stop(self, instance: Any, value: int) -> int:
        if value:
            await _owner(self).request_stop()
        return 0

    @stop_pause_move_go.putter  # type: ignore[no-redef]
    async def stop_pause_move_go(self, instance: Any, value: str) -> str:
        if value in ("Stop", "Pause"):
            await _owner(self).request_stop()
        return value

    @user_high_limit.putter  # type: ignore[no-redef]
    async def user_high_limit(self, instance: Any, value: float) -> float:
        await _owner(self).set_soft_limits(high=float(value))
        return value

    @user_low_limit.putter  # type: ignore[no-redef]
    async def user_low_limit(self, instance: Any, value: float) -> float:
        await _owner(self).set_soft_limits(low=float(value))
        return value

    @user_offset.putter  # type: ignore[no-redef]
    async def user_offset(self, instance: Any, value: float) -> float:
        if not math.isfinite(value):
            raise ValueError(f"OFF must be finite, got {value!r}")
        await _owner(self).set_offset(float(value))
        return value

    @velocity.putter  # type: ignore[no-redef]
    async def velocity(self, instance: Any, value: float) -> float:
        if not (math.isfinite(value) and value > 0):
            raise ValueError(f"VELO must be > 0, got {value!r}")
        return value

    @tweak_motor_forward.putter  # type: ignore[no-redef]
    async def tweak_motor_forward(self, instance: Any, value: int) -> int:
        if value:
            await _owner(self).tweak(+1)
        return 0

    @tweak_motor_reverse.putter  # type: ignore[no-redef]
    async def tweak_motor_reverse(self, instance: Any, value: int) -> int:
        if value:
            await _owner(self).tweak(-1)
        return 0


class MotorValue(PvpropertyDouble):
    """The motor record's VAL: checks limits first and completes a client put at move end."""

    async def verify_value(self, value: Any) -> Any:
        group = self.group
        assert isinstance(group, MotorRecord)
        await group.check_target(value)
        return await super().verify_value(value)

    async def write_from_dbr(self, *args: Any, **kwargs: Any) -> Any:
        group = self.group
        assert isinstance(group, MotorRecord)
        result = await super().write_from_dbr(*args, **kwargs)
        await group.wait_done(group.requested_id)
        return result  # the reply goes out after the final RBV/DMOV updates (sim.ioc.context)


class MotorRecord(PVGroup):
    """One simulated EPICS motor record served at ``prefix`` (fields at ``prefix.FIELD``)."""

    motor = pvproperty(
        name="",
        value=0.0,
        dtype=MotorValue,
        record=SimMotorFields,
        precision=3,
        doc="motor",
    )

    def __init__(self, prefix: str, *, spec: MotorSpec, **kwargs: Any) -> None:
        self.spec = spec
        self.dial = spec.position  # true (actuator) position, dial coordinates
        self.offset = 0.0  # user = dial + offset
        self.requested_id = 0  # id of the latest move request
        self._taken_id = 0  # id the motion loop is working on
        self.completed_id = 0  # id of the latest request whose move has ended
        self._idle = asyncio.Event()
        # the controller's in-position output: set when a move has ended (settled), before the
        # record publishes that (RBV, MSTA, DMOV); hardware gates wait on it, clients on DMOV
        self.arrived_id = 0
        self._arrived = asyncio.Event()
        self._kick = asyncio.Event()
        self._stop_requested = False
        self._direction = 1
        self.travelled = False  # whether the last move left its start position
        self.arrival_time = 0.0  # loop time [s] at which the last move reached its target
        super().__init__(prefix, **kwargs)

    # -- helpers ---------------------------------------------------------------------------
    @property
    def fields(self) -> Any:
        """The caproto field group of the record (``.RBV``, ``.DMOV`` ...)."""
        return self.motor.field_inst

    @property
    def user_position(self) -> float:
        """True position in user coordinates (no encoder noise)."""
        return self.dial + self.offset

    def readback(self) -> float:
        """The encoder reading in user coordinates (subclasses add noise)."""
        return self.user_position

    def deadband(self) -> float:
        """Retry deadband RDBD [EGU]: a readback this close to VAL is in position."""
        return self.spec.resolution

    async def _publish_position(self) -> None:
        rbv = self.readback()
        f = self.fields
        await f.user_readback_value.write(rbv)
        await f.dial_readback_value.write(rbv - self.offset)
        await f.raw_readback_value.write(round((rbv - self.offset) / self.spec.resolution))

    def status_bits(self, *, moving: bool) -> int:
        """Current MSTA value."""
        f = self.fields
        bits = MSTA_DIRECTION if self._direction > 0 else 0
        bits |= MSTA_MOVING if moving else MSTA_DONE
        if f.user_high_limit_switch.value:
            bits |= MSTA_PLUS_LS
        if f.user_low_limit_switch.value:
            bits |= MSTA_MINUS_LS
        return bits

    async def _publish_switches(self) -> None:
        f = self.fields
        eps = 0.5 * self.spec.resolution
        await f.user_high_limit_switch.write(int(self.dial >= self.spec.hard_high - eps))
        await f.user_low_limit_switch.write(int(self.dial <= self.spec.hard_low + eps))

    # -- startup -----------------------------------------------------------------------------
    @motor.startup  # type: ignore[no-redef]
    async def motor(self, instance: Any, async_lib: Any) -> None:
        spec = self.spec
        f = self.fields
        await instance.write_metadata(
            precision=spec.precision,
            units=spec.egu,
            lower_ctrl_limit=spec.low_limit,
            upper_ctrl_limit=spec.high_limit,
            lower_disp_limit=spec.low_limit,
            upper_disp_limit=spec.high_limit,
        )
        for prop in f.pvdb.values():
            if hasattr(prop, "precision"):
                await prop.write_metadata(precision=spec.precision)
        for name in ("user_readback_value", "dial_readback_value", "user_high_limit"):
            await getattr(f, name).write_metadata(units=spec.egu)
        await f.description.write(spec.description)
        await f.engineering_units.write(spec.egu)
        await f.velocity.write(spec.velocity)
        await f.seconds_to_velocity.write(spec.acceleration_s)
        await f.motor_step_size.write(spec.resolution)
        await f.retry_deadband.write(self.deadband())
        await f.max_velocity.write(10 * spec.velocity)
        await f.user_high_limit.write(spec.high_limit)
        await f.user_low_limit.write(spec.low_limit)
        await f.tweak_step_size.write(10 * spec.resolution)
        await f.limit_violation.write(0)
        await instance.write(self.user_position, verify_value=False)
        await self._publish_position()
        await self._publish_switches()
        await f.motor_status.write(self.status_bits(moving=False))
        await self._motion_loop()

    # -- requests (called from putters) ------------------------------------------------------
    async def check_target(self, value: Any) -> None:
        """Reject a non-finite or out-of-limit VAL put: LVIO=1, alarm, no motion."""
        f = self.fields
        try:
            target = float(value)
        except (TypeError, ValueError):
            target = math.nan
        lo, hi = f.user_low_limit.value, f.user_high_limit.value
        if not math.isfinite(target) or (lo < hi and not lo <= target <= hi):
            await f.limit_violation.write(1)
            raise MotorLimitError(
                f"{self.motor.pvname}: target {value!r} outside soft limits [{lo}, {hi}]"
            )
        await f.limit_violation.write(0)

    @motor.putter  # type: ignore[no-redef]
    async def motor(self, instance: Any, value: float) -> float:
        if self.fields.set_use_switch.value == "Set":
            await self.set_offset(float(value) - self.dial)
            await self.fields.user_offset.write(self.offset, verify_value=False)
            return value
        await instance.alarm.write(status=AlarmStatus.NO_ALARM, severity=AlarmSeverity.NO_ALARM)
        await self.request_move(float(value))
        return value

    async def request_move(self, target: float) -> int:
        """Start (or retarget) a move to ``target`` (user units); returns the request id."""
        self.requested_id += 1
        self._target = target
        self._stop_requested = False
        self._idle.clear()
        self._arrived.clear()
        await self.fields.done_moving_to_value.write(0)
        self._kick.set()
        await asyncio.sleep(0)  # the controller starts now, not when the caller next waits
        return self.requested_id

    async def request_stop(self) -> None:
        """Halt the current move (pending put-completions then return)."""
        if self.completed_id < self.requested_id:
            self._stop_requested = True
            self._kick.set()

    async def wait_done(self, request_id: int) -> None:
        """Return once the move with ``request_id`` (or a later one) has ended."""
        while self.completed_id < request_id:
            await self._idle.wait()

    async def wait_in_position(self, request_id: int) -> None:
        """Return once the move with ``request_id`` (or a later one) is in position: the
        controller's in-position output, which a hardware trigger gate follows (the record
        publishes DMOV a little later)."""
        while self.arrived_id < request_id:
            await self._arrived.wait()

    async def tweak(self, sign: int) -> None:
        """Move by +/- TWV and wait for the end of the move."""
        target = self.motor.value + sign * self.fields.tweak_step_size.value
        await self.check_target(target)
        await self.motor.write(target, verify_value=False)
        await self.wait_done(await self.request_move(target))

    async def set_soft_limits(self, *, low: float | None = None, high: float | None = None) -> None:
        """Publish new soft limits as VAL's control limits (and the dial limits)."""
        f = self.fields
        meta: dict[str, float] = {}
        if low is not None:
            meta["lower_ctrl_limit"] = low
            await f.dial_low_limit.write(low - self.offset)
        if high is not None:
            meta["upper_ctrl_limit"] = high
            await f.dial_high_limit.write(high - self.offset)
        await self.motor.write_metadata(**meta)

    async def set_offset(self, offset: float) -> None:
        """Change the user offset (user = dial + OFF) without motion."""
        self.offset = offset
        await self._publish_position()

    # -- motion ------------------------------------------------------------------------------
    async def _motion_loop(self) -> None:
        while True:
            await self._kick.wait()
            await self._execute()

    async def _execute(self) -> None:
        """Run moves until no new request is pending, then mark the motor done."""
        f = self.fields
        stopped = False
        while self._kick.is_set():
            self._kick.clear()
            if self._stop_requested:
                stopped = True
                break
            self._taken_id = self.requested_id
            target_dial = self._target - self.offset
            backlash = float(f.bl_distance.value)
            if backlash != 0.0 and (target_dial - self.dial) * backlash < 0:
                # against the preferred direction: overshoot by BDST, then approach along it
                stopped = await self._travel(target_dial - backlash)
                if stopped:
                    break
                if self._kick.is_set():
                    continue  # retargeted on the way
            stopped = await self._travel(target_dial)
            if stopped:
                break
            if not self._kick.is_set():
                stopped = await self.settle(target_dial)
        self._stop_requested = False
        if stopped:
            self._kick.clear()
            self._taken_id = self.requested_id
        self.arrived_id = self._taken_id
        if self.arrived_id >= self.requested_id:
            self._arrived.set()
            await asyncio.sleep(0)  # what the in-position output gates goes first
            await self.motor.write(self.user_position, verify_value=False)
        await f.motor_is_moving.write(0)
        await self._publish_position()
        await self._publish_switches()
        await f.motor_status.write(self.status_bits(moving=False))
        await f.done_moving_to_value.write(1)
        self.completed_id = self._taken_id
        if self.completed_id >= self.requested_id:
            self._idle.set()

    def _interrupted(self) -> bool:
        return self._kick.is_set() or self._stop_requested

    async def _travel(self, target_dial: float) -> bool:
        """Move the actuator at VELO towards ``target_dial``; True if STOP ended it."""
        spec = self.spec
        f = self.fields
        goal = round(target_dial / spec.resolution) * spec.resolution
        goal = min(max(goal, spec.hard_low), spec.hard_high)
        start = self.dial
        distance = goal - start
        loop = asyncio.get_running_loop()
        if abs(distance) < 0.5 * spec.resolution:
            # Zero-length move: DMOV still blinks (done by the caller); yield once so the
            # 0 is published before the 1.
            self.travelled = False
            self.arrival_time = loop.time()
            await asyncio.sleep(0)
            return False
        self.travelled = True
        self._direction = 1 if distance > 0 else -1
        t0 = loop.time()  # the controller moves from now; the record publishes that meanwhile
        await f.direction_of_travel.write(1 if distance > 0 else 0)
        await f.motor_is_moving.write(1)
        await f.motor_status.write(self.status_bits(moving=True))
        velocity = max(float(f.velocity.value), 1e-12)
        duration = abs(distance) / velocity
        # The motion arrives at t0 + duration whenever the loop notices: the settling that
        # follows counts from then, so the event loop's latency does not lengthen the move.
        self.arrival_time = t0 + duration
        while True:
            elapsed = loop.time() - t0
            if elapsed >= duration:
                self.dial = goal
                break
            self.dial = start + math.copysign(velocity * elapsed, distance)
            await self._publish_position()
            if self._interrupted():
                return self._stop_requested
            await asyncio.sleep(min(spec.tick_s, duration - elapsed))
            if self._interrupted():
                self.dial = start + math.copysign(
                    min(velocity * (loop.time() - t0), abs(distance)), distance
                )
                return self._stop_requested
        await self._publish_position()
        return False

    async def settle(self, target_dial: float) -> bool:
        """After the actuator arrived: wait until in position; True if STOP ended it."""
        return False

    # -- listing -----------------------------------------------------------------------------
    def describe_pvs(self) -> dict[str, str]:
        """PV name -> one-line meaning, for ``--list-pvs`` (the fields with behaviour)."""
        name = self.motor.pvname
        spec = self.spec
        return {
            name: f"motor record: {spec.description} [{spec.egu}]",
            **{f"{name}.{field}": meaning for field, meaning in MOTOR_FIELD_MEANINGS.items()},
        }


#: The motor-record fields with simulated behaviour (all other motor-record fields also exist).
MOTOR_FIELD_MEANINGS: dict[str, str] = {
    "VAL": "user setpoint; put completes at the end of the move",
    "RBV": "user readback (updated during motion)",
    "DMOV": "done moving: 1 -> 0 -> 1 on every put",
    "MOVN": "1 while moving",
    "STOP": "put 1 to halt",
    "SPMG": "Stop/Pause halt the motion (Move/Go: normal)",
    "HLM": "user high soft limit (= VAL upper control limit)",
    "LLM": "user low soft limit (= VAL lower control limit)",
    "HLS": "at high hard limit switch",
    "LLS": "at low hard limit switch",
    "LVIO": "1 after a rejected out-of-limit put",
    "VELO": "velocity [EGU/s]",
    "ACCL": "acceleration time [s] (stored, not simulated)",
    "EGU": "engineering units",
    "PREC": "display precision",
    "DESC": "description",
    "MSTA": "status bits (DIRECTION 1, DONE 2, PLUS_LS 4, MOVING 1024, MINUS_LS 8192 ...)",
    "TDIR": "direction of the last move (1 = positive)",
    "SET": "Use/Set: in Set, a VAL put redefines the position (changes OFF), no motion",
    "OFF": "user offset (user = dial + OFF)",
    "TWV": "tweak step [EGU]",
    "TWF": "put 1 to move +TWV",
    "TWR": "put 1 to move -TWV",
    "MRES": "motor resolution [EGU]",
    "RDBD": "retry deadband [EGU]: a readback this close to VAL is in position",
    "DRBV": "dial readback",
}

__all__ = [
    "MOTOR_FIELD_MEANINGS",
    "MSTA_DONE",
    "MSTA_MOVING",
    "MotorLimitError",
    "MotorRecord",
    "MotorSpec",
    "SimMotorFields",
]
