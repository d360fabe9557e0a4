"""Motor devices of the interferometer: stock ``ophyd.EpicsMotor`` over EPICS motor records.

Units are those of the records (``beamline.pvnames``, ``docs/pvs.md``): G0 x and the G2 piezo in
um, z stages and sample x in mm, roll in mrad, rotation in deg.
"""

from __future__ import annotations

from typing import Any

from ophyd import Component as Cpt
from ophyd import Device, EpicsMotor, Signal
from ophyd.status import StatusBase


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


class PiezoStepper(EpicsMotor):
    """G2 analyser closed-loop piezo (motor record, um) that steps the phase."""

    period = Cpt(Signal, value=1.0, kind="config")

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


class RotationStage(EpicsMotor):
    """Sample rotation stage (motor record, deg)."""


class GratingStage(Device):
    """G0 source-grating stage: x (stepping axis, um) and z (mm)."""

    x = Cpt(EpicsMotor, "X", kind="normal")
    z = Cpt(EpicsMotor, "Z", kind="config")


class AnalyzerStage(Device):
    """G2 analyser-grating stage: piezo x (phase stepping, um), roll (mrad), z (mm)."""

    x = Cpt(PiezoStepper, "X", kind="hinted")
    roll = Cpt(EpicsMotor, "ROLL", kind="config")
    z = Cpt(EpicsMotor, "Z", kind="config")


class SampleStage(Device):
    """Sample x stage with configured in-beam and out-of-beam positions (mm)."""

    x = Cpt(EpicsMotor, "X", kind="normal")
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
