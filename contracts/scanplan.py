"""The scan plan: what a phase-stepping CT plan was asked to do.

The plan publishes the ScanPlan it runs in its start document; the scan file and the stream's
``scan-start`` carry the same one. Angles in degrees, times in seconds.

Acquisition order (:meth:`ScanPlan.order`): ``darks`` dark frames (shutter closed), a reference
series (sample out) at the start, the projection series angle by angle with a reference series
after every ``reference_every`` angles, and one at the end (never two in a row). Projection angle
index ``i`` is at ``start_deg + i * angular_range_deg / angles`` (end point excluded).

A series is ``steps`` equidistant phase steps over ``periods`` grating periods, except the
calibration series: with ``calibration_steps`` > 0, reference series 0 (the first one, sample
out) takes ``calibration_steps`` steps over the same ``periods`` periods, once per scan, so that
the reconstruction can measure the shape of the stepping curve (its harmonics) and correct the
``steps``-step series with it (:meth:`ScanPlan.series_steps`). ``calibration_steps`` 0 (the
default, also for plans written without the field): no calibration series.
"""

from __future__ import annotations

import math
from typing import Literal

from pydantic import Field, model_validator

from contracts.base import Frozen

#: One entry of the acquisition order: ("reference", series index) or ("projection", angle index).
SeriesKey = tuple[Literal["reference", "projection"], int]

#: ``"hardware"``: one camera acquisition of M frames per series, the step sequencer moving the
#: G2 piezo after each exposure; ``"software"``: move, tag and trigger once per step.
Stepping = Literal["hardware", "software"]

#: The stepped grating: the G2 analyser piezo or the G0 source grating (Talbot-Lau).
Grating = Literal["g2", "g0"]

#: Most phase steps of a calibration series (the step sequencer captures up to 256 frames).
MAX_CALIBRATION_STEPS = 256

#: The calibration series, when the plan has one: the first reference series.
CALIBRATION_SERIES: SeriesKey = ("reference", 0)


def min_calibration_steps(steps: int) -> int:
    """The fewest steps of a calibration series for series of ``steps`` steps: 2 steps + 5, so
    that the harmonics steps + 1 that fold onto their first harmonic are resolved (the
    reconstruction fits (N - 1) // 2 - 1 harmonics of N steps, ``recon.curve``)."""
    return 2 * steps + 5


def acquisition_order(angles: int, reference_every: int) -> list[SeriesKey]:
    """Series in acquisition order: a reference series at the start, after every
    ``reference_every`` angles and at the end (never two in a row)."""
    for name, value in (("angles", angles), ("reference_every", reference_every)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    if reference_every > angles:
        raise ValueError(f"reference_every={reference_every} is larger than angles={angles}")
    order: list[SeriesKey] = [("reference", 0)]
    n_ref = 1
    for i in range(angles):
        order.append(("projection", i))
        if (i + 1) % reference_every == 0:
            order.append(("reference", n_ref))
            n_ref += 1
    if order[-1][0] != "reference":
        order.append(("reference", n_ref))
    return order


class ScanPlan(Frozen):
    """Schedule, exposure and stepping of a phase-stepping CT scan."""

    steps: int = Field(ge=3, le=256, description="phase steps M per series")
    periods: int = Field(default=1, ge=1, le=64, description="grating periods the M steps cover")
    calibration_steps: int = Field(
        default=0,
        ge=0,
        le=MAX_CALIBRATION_STEPS,
        description="phase steps of the calibration series, reference series 0 (over the same "
        "periods): 0 = none, else 2 steps + 5 <= calibration_steps <= 256, coprime with "
        "periods; it measures the stepping curve's shape once per scan",
    )
    angles: int = Field(ge=1, le=100_000, description="number of projection angles")
    angular_range_deg: float = Field(default=180.0, gt=0, le=360.0, description="[deg]")
    start_deg: float = Field(
        default=0.0, ge=-3600.0, le=3600.0, description="angle of projection 0 [deg]"
    )
    reference_every: int = Field(ge=1, description="a reference series every N angles")
    darks: int = Field(default=5, ge=0, le=10_000, description="dark frames at the start")
    exposure_s: float = Field(gt=0, le=3600.0, description="exposure per frame [s]")
    stepping: Stepping = Field(default="hardware", description="how a series is stepped")
    grating: Grating = Field(default="g2", description="the stepped grating")
    sample_out_mm: float | None = Field(
        default=None,
        gt=0,
        le=1000.0,
        description="sample x travel out of the beam for reference series [mm]; None: twice "
        "the field-of-view width",
    )

    @model_validator(mode="after")
    def _check(self) -> ScanPlan:
        if self.reference_every > self.angles:
            raise ValueError(
                f"reference_every={self.reference_every} is larger than angles={self.angles}"
            )
        if self.periods > 1 and math.gcd(self.steps, self.periods) != 1:
            raise ValueError(
                f"steps={self.steps} and periods={self.periods} must be coprime (phases repeat)"
            )
        cal = self.calibration_steps
        if cal and cal < min_calibration_steps(self.steps):
            raise ValueError(
                f"calibration_steps={cal} must be at least 2 steps + 5 = "
                f"{min_calibration_steps(self.steps)}, to resolve the harmonics that fold onto "
                f"the first harmonic of {self.steps} steps (0: no calibration series)"
            )
        if cal and self.periods > 1 and math.gcd(cal, self.periods) != 1:
            raise ValueError(
                f"calibration_steps={cal} and periods={self.periods} must be coprime "
                "(phases repeat)"
            )
        if self.stepping == "hardware" and self.grating != "g2":
            raise ValueError("stepping='hardware' steps the G2 piezo only; use 'software' for g0")
        return self

    def order(self) -> list[SeriesKey]:
        """The series in acquisition order (darks not included)."""
        return acquisition_order(self.angles, self.reference_every)

    def angle_deg(self, index: int) -> float:
        """The rotation angle [deg] of projection ``index``."""
        return self.start_deg + index * self.angular_range_deg / self.angles

    def angles_deg(self) -> list[float]:
        """Every projection angle [deg], in angle-index order."""
        return [self.angle_deg(i) for i in range(self.angles)]

    def series_steps(self, key: SeriesKey) -> int:
        """Phase steps of a series: ``calibration_steps`` for reference series 0 when the plan
        has a calibration series, else ``steps``."""
        if self.calibration_steps and tuple(key) == CALIBRATION_SERIES:
            return self.calibration_steps
        return self.steps

    def frames_planned(self) -> int:
        """Frames of an undisturbed scan: darks plus each series' steps (M, or
        ``calibration_steps`` for the calibration series)."""
        return self.darks + sum(self.series_steps(key) for key in self.order())

    def sample_out_offset_mm(self, field_width_m: float) -> float:
        """How far [mm] the sample stage moves in x for a reference series: ``sample_out_mm``,
        or twice the field-of-view width, which clears any sample no wider than the field."""
        if self.sample_out_mm is not None:
            return self.sample_out_mm
        if not field_width_m > 0:
            raise ValueError(f"field_width_m must be > 0, got {field_width_m!r}")
        return 2.0 * field_width_m * 1e3
