"""The scan plan: schedule checks, acquisition order, angles and frame counts."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from contracts.base import first_error
from contracts.scanplan import ScanPlan, acquisition_order


def _plan(**fields: object) -> ScanPlan:
    base = {"steps": 5, "angles": 10, "reference_every": 5, "exposure_s": 0.05}
    return ScanPlan.model_validate({**base, **fields})


def test_reference_interval_larger_than_the_scan_is_refused() -> None:
    with pytest.raises(ValueError, match="reference_every"):
        _plan(reference_every=11)
    with pytest.raises(ValueError, match="steps"):
        _plan(steps=2)


def test_repeating_phases_and_hardware_stepping_of_g0_are_refused() -> None:
    with pytest.raises(ValueError, match="coprime"):
        _plan(steps=6, periods=3)
    with pytest.raises(ValueError, match="stepping='hardware'"):
        _plan(grating="g0")
    assert _plan(grating="g0", stepping="software").grating == "g0"


def test_angles_exclude_the_end_point_and_start_at_start_deg() -> None:
    p = _plan(angles=4, reference_every=2, start_deg=10.0)
    assert np.allclose(p.angles_deg(), [10, 55, 100, 145])
    assert p.angle_deg(3) == pytest.approx(145.0)


def test_order_puts_references_first_every_n_and_last_never_twice() -> None:
    assert acquisition_order(4, 2) == [
        ("reference", 0), ("projection", 0), ("projection", 1), ("reference", 1),
        ("projection", 2), ("projection", 3), ("reference", 2),
    ]  # fmt: skip
    assert acquisition_order(3, 2)[-2:] == [("projection", 2), ("reference", 2)]


def test_frames_planned_counts_darks_and_every_series() -> None:
    p = _plan(angles=90, reference_every=45, darks=5)
    assert p.frames_planned() == 5 + (90 + 3) * 5


def test_sample_out_default_clears_a_sample_as_wide_as_the_field() -> None:
    assert _plan().sample_out_offset_mm(48e-6) == pytest.approx(0.096)
    assert _plan(sample_out_mm=2.0).sample_out_offset_mm(48e-6) == 2.0


def test_nan_and_unknown_fields_are_refused() -> None:
    with pytest.raises(ValueError, match="exposure_s"):
        _plan(exposure_s=float("nan"))
    with pytest.raises(ValueError, match="phantom"):
        _plan(phantom={})


def test_a_plan_without_calibration_steps_has_no_calibration_series() -> None:
    p = _plan(angles=90, reference_every=45, darks=5)
    assert p.calibration_steps == 0
    assert [p.series_steps(key) for key in p.order()] == [5] * (90 + 3)


def test_the_calibration_series_is_reference_series_0_with_calibration_steps() -> None:
    p = _plan(angles=90, reference_every=45, darks=5, calibration_steps=48)
    assert p.series_steps(("reference", 0)) == 48
    assert p.series_steps(("reference", 1)) == 5
    assert p.series_steps(("reference", 2)) == 5
    assert p.series_steps(("projection", 0)) == 5
    # tiny's schedule: 5 + 3 x 5 + 90 x 5 = 470 frames become 5 + 48 + 2 x 5 + 90 x 5 = 513
    assert p.frames_planned() == 5 + 48 + 2 * 5 + 90 * 5 == 513
    assert p.model_copy(update={"calibration_steps": 0}).frames_planned() == 470


@pytest.mark.parametrize(
    ("fields", "needle"),
    [
        ({"calibration_steps": 5}, "calibration_steps=5 must be at least 2 steps + 5 = 15"),
        ({"calibration_steps": 14}, "calibration_steps=14 must be at least 2 steps + 5 = 15"),
        ({"calibration_steps": 257}, "less than or equal to 256"),
        ({"calibration_steps": -1}, "greater than or equal to 0"),
        ({"calibration_steps": 32, "periods": 2}, "calibration_steps=32 and periods=2 must be"),
        ({"calibration_steps": 33, "periods": 3}, "calibration_steps=33 and periods=3 must be"),
        ({"calibration_steps": 48, "periods": 3}, "calibration_steps=48 and periods=3 must be"),
    ],
)
def test_a_bad_calibration_steps_is_refused_naming_the_field(
    fields: dict[str, object], needle: str
) -> None:
    with pytest.raises(ValidationError) as exc:
        _plan(**fields)
    field, reason = first_error(exc.value)
    assert field == "calibration_steps"
    assert needle in reason


def test_calibration_steps_coprime_with_periods_and_up_to_256_are_accepted() -> None:
    assert _plan(calibration_steps=33, periods=2).series_steps(("reference", 0)) == 33
    assert _plan(calibration_steps=256).frames_planned() == 5 + 256 + 2 * 5 + 10 * 5
    assert _plan(calibration_steps=15).series_steps(("reference", 0)) == 15  # 2 steps + 5
