"""Motor devices of the interferometer: ``ophyd.EpicsMotor`` over EPICS motor records.

Moves complete on the motor record's put-completion (``Motor``), not on the DMOV 1 -> 0 -> 1
edges in monitors: Channel Access servers may drop intermediate monitor updates under flow control
(caproto does, by design), and a few-millisecond piezo step or a zero-length move can then show
the client no DMOV = 0 at all, leaving the move's status pending for ever.

Units are those of the records (``contracts.pvnames``, ``docs/pvs.md``): G0 x and the G2 piezo in
um, z stages and sample x in mm, roll in mrad, rotation in deg.
"""

from __future__ import annotations

import functools
import math
import threading
import time
from typing import Any

from ophyd import Component as Cpt
from ophyd import Device, EpicsMotor, EpicsSignalRO, Signal
from ophyd.status import MoveStatus, StatusBase
from ophyd.status import wait as status_wait
from ophyd.utils.epics_pvs import AlarmSeverity

from devices.signals import SettingSignal


def step_positions(steps: int, periods: int, start: float, period: float) -> list[float]:
    """Phase-step positions: ``start + k * periods * period / steps`` for k = 0..steps-1.

    Units are those of ``start`` and ``period`` (um for the G2 piezo). ``steps`` positions cover
    ``periods`` grating periods, end point excluded (Weitkamp et al., Opt. Express 13, 6296
    (2005)); ``steps`` and ``periods`` must be coprime when ``periods > 1`` or phases repeat.
    """
    if steps < 3:
        raise ValueError(f"steps must be >= 3, got {steps!r}")
    if periods < 1:
        raise ValueError(f"periods must be >= 1, got {periods!r}")
    if periods > 1 and steps % periods == 0:
        raise ValueError(f"steps={steps} over periods={periods} repeats the same phases")
    if not period > 0:
        raise ValueError(f"period must be > 0, got {period!r}")
    return [start + k * periods * period / steps for k in range(steps)]


class Motor(EpicsMotor):
    """EPICS motor record whose moves complete on put-completion of VAL (robust to dropped
    monitors); limits, STOP, readbacks and everything else as stock ``ophyd.EpicsMotor``.

    The move's status is finished directly by the put callback, never through ophyd's
    ``_SUB_REQ_DONE`` subscription: that one is reset after it runs, and when the callback
    thread resets it after the RunEngine has already subscribed the *next* move's status, the
    next move never completes (seen here as an intermittent hang of phase steps).
    """

    _moving: bool
    _started_moving: bool

    retry_deadband = Cpt(EpicsSignalRO, ".RDBD", kind="config", auto_monitor=True)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._pending: MoveStatus | None = None
        self._move_lock = threading.Lock()

    def move(
        self,
        position: float,
        wait: bool = True,
        timeout: float | None = None,
        moved_cb: Any = None,
        **kwargs: Any,
    ) -> MoveStatus:
        """Move to ``position`` (user units); the status finishes when the record's put
        completes (DMOV = 1), failed if a limit switch or a readback alarm ends the move.
        Out-of-limit targets raise ``LimitError`` before anything moves."""
        self.check_value(position)
        status = MoveStatus(
            self,
            position,
            timeout=self._timeout if timeout is None else timeout,
            settle_time=self._settle_time,
        )
        if moved_cb is not None:
            status.add_callback(functools.partial(moved_cb, obj=self))
        with self._move_lock:
            previous, self._pending = self._pending, status
        if previous is not None and not previous.done:
            previous.set_exception(RuntimeError(f"{self.name}: move superseded by a new move"))
        self._started_moving = False

        def completed(*args: Any, **kw: Any) -> None:
            with self._move_lock:
                if self._pending is not status:
                    return  # superseded by a later move or finished by stop()
                self._pending = None
            self._finish(status, self._move_succeeded())

        self.user_setpoint.put(position, use_complete=True, callback=completed)
        if wait:
            status_wait(status)
        return status

    def _finish(self, status: MoveStatus, success: bool) -> None:
        if status.done:
            return
        if success:
            self._run_subs(sub_type=self.SUB_DONE, timestamp=time.time(), value=self.position)
            status.set_finished()
        else:
            status.set_exception(RuntimeError(f"{self.name}: move ended at a limit or in alarm"))

    def stop(self, *, success: bool = False) -> None:
        """STOP the record and finish the pending move now (its put-completion is ignored)."""
        self.motor_stop.put(1, wait=False)
        with self._move_lock:
            pending, self._pending = self._pending, None
        if pending is not None:
            self._finish(pending, success)

    def _move_changed(
        self, timestamp: Any = None, value: Any = None, sub_type: Any = None, **kwargs: Any
    ) -> None:
        # DMOV monitor: track motion and announce its start; the end comes from put-completion
        was_moving = self._moving
        self._moving = value != 1
        if not self._started_moving and not was_moving and self._moving:
            self._started_moving = True
            self._run_subs(sub_type=self.SUB_START, timestamp=timestamp, value=value, **kwargs)

    def _move_succeeded(self) -> bool:
        """Whether the move that just completed reached its target.

        A monitored readback within RDBD of the setpoint means it did (a stale monitor can only
        show a position passed on the way, which a move stopped short at a limit never brings
        near the target), without the two network reads of the limit switches that stock
        ``EpicsMotor`` makes (~2 ms per step).
        Otherwise the limit switches and the readback alarm decide, as in stock ophyd.
        """
        try:
            deadband = float(self.retry_deadband.get())
            error = abs(float(self.user_readback.get()) - float(self.user_setpoint.get()))
        except (TypeError, ValueError):
            error, deadband = math.inf, 0.0
        severity = self.user_readback.alarm_severity
        in_alarm = severity != AlarmSeverity.NO_ALARM and severity > self.tolerated_alarm
        if deadband > 0 and error <= deadband and not in_alarm:
            return True
        if self.direction_of_travel.get() == 0:
            if self.low_limit_switch.get(use_monitor=False) == 1:
                return False
        elif self.high_limit_switch.get(use_monitor=False) == 1:
            return False
        severity = self.user_readback.alarm_severity
        if severity != AlarmSeverity.NO_ALARM and severity > self.tolerated_alarm:
            self.log.error("Motion failed: %s readback alarm severity %s", self.name, severity)
            return False
        return True


class PiezoStepper(Motor):
    """G2 analyser closed-loop piezo (motor record, um) that steps the phase."""

    period = Cpt(Signal, value=1.0, kind="config")
    #: motor-record backlash distance [um]: a move against its sign first goes this far beyond
    #: the target, then approaches along it (one put for the approach from one side)
    backlash = Cpt(SettingSignal, ".BDST", kind="config")

    def step_positions(
        self, steps: int, periods: int = 1, start: float | None = None
    ) -> list[float]:
        """Positions [um] of ``steps`` phase steps over ``periods`` G2 periods from ``start``."""
        origin = float(self.user_setpoint.get()) if start is None else float(start)
        positions = step_positions(steps, periods, origin, float(self.period.get()))
        low, high = self.limits
        if low < high and not (low <= min(positions) and max(positions) <= high):
            raise ValueError(
                f"start={origin}: step positions {positions[0]:.4f}..{positions[-1]:.4f} "
                f"leave the soft limits [{low}, {high}]"
            )
        return positions


class RotationStage(Motor):
    """Sample rotation stage (motor record, deg)."""


class GratingStage(Device):
    """G0 source-grating stage: x (stepping axis, um) and z (mm)."""

    x = Cpt(Motor, "X", kind="normal")
    z = Cpt(Motor, "Z", kind="config")


class AnalyzerStage(Device):
    """G2 analyser-grating stage: piezo x (phase stepping, um), roll (mrad), z (mm)."""

    x = Cpt(PiezoStepper, "X", kind="hinted")
    roll = Cpt(Motor, "ROLL", kind="config")
    z = Cpt(Motor, "Z", kind="config")


class SampleStage(Device):
    """Sample x stage with configured in-beam and out-of-beam positions (mm)."""

    x = Cpt(Motor, "X", kind="normal")
    in_position = Cpt(Signal, value=0.0, kind="config")
    out_position = Cpt(Signal, value=10.0, kind="config")

    def set(self, value: Any, **kwargs: Any) -> StatusBase:
        """Move to ``"in"``, ``"out"`` or a position [mm]; returns the motor's move status."""
        if isinstance(value, str):
            where = value.lower()
            if where not in ("in", "out"):
                raise ValueError(f"value must be 'in', 'out' or a position, got {value!r}")
            value = (self.in_position if where == "in" else self.out_position).get()
        return self.x.set(float(value), **kwargs)
