"""Phase-stepping CT: darks, reference series and projection series over the angular range.

The acquisition order is the scan plan's (``contracts.scanplan.ScanPlan.order``): dark frames
with the shutter closed, a reference series (sample out) at the start, the projection series
angle by angle with a reference series after every ``reference_every`` angles, and one at the
end. Every series is an atomic, re-takeable unit (``plans.series``) of ``steps`` phase steps,
except the calibration series: with ``calibration_steps`` > 0 reference series 0 takes that many
steps over the same periods (``ScanPlan.series_steps``), once per scan, and with
``stepping="hardware"`` in one camera acquisition like any other series. The plan publishes the
ScanPlan it runs in its start document (``scan_plan``) and in the ``TAG:ScanPlan`` PV, from
which the file writer records it, with the instrument (``instrument``), so that the documents
and the file alone describe the scan.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from bluesky import plan_stubs as bps
from bluesky import preprocessors as bpp
from bluesky.utils import MsgGenerator, RunEngineControlException
from ophyd import EpicsMotor
from pydantic import ValidationError

from contracts.base import first_error
from contracts.instrument import Geometry, Instrument
from contracts.scanplan import Grating, ScanPlan, Stepping
from devices.interferometer import Interferometer
from plans.attempts import SeriesAttempts
from plans.checks import (
    check_backlash,
    check_detectors,
    check_stepping,
)
from plans.hardware import HardwareStepping
from plans.restore import restoring_decorator, shutter_command
from plans.series import (
    NextProjection,
    dark_series,
    first_step_um,
    phase_stepping_series,
    reference_series,
    series_positions_um,
    stepping_axis,
)


def stepping_period_um(geometry: Geometry, grating: Grating) -> float:
    """Pitch [um] of the stepped grating: G2 (analyser) or G0 (source grating, Talbot-Lau)."""
    if grating == "g2":
        return geometry.g2_pitch_m * 1e6
    if grating == "g0":
        if geometry.g0_pitch_m is None:
            raise ValueError("grating='g0' needs a geometry with g0_pitch_m (Talbot-Lau)")
        return geometry.g0_pitch_m * 1e6
    raise ValueError(f"grating must be 'g2' or 'g0', got {grating!r}")


def resolve_scan_plan(base: ScanPlan | None, **overrides: Any) -> ScanPlan:
    """``base`` with every override that is not None; without a base every required field
    must be given. ``grating="g0"`` without ``stepping`` steps in software. ValueError naming
    the argument when the result is not a valid plan."""
    values: dict[str, Any] = {} if base is None else base.model_dump()
    values.update({name: value for name, value in overrides.items() if value is not None})
    if overrides.get("grating") == "g0" and overrides.get("stepping") is None:
        values["stepping"] = "software"
    try:  # strict: True is not 1, "8" is not 8
        return ScanPlan.model_validate(values, strict=True)
    except ValidationError as exc:
        field, reason = first_error(exc)
        raise ValueError(f"{field or 'plan'}: {reason}") from None


def set_exposure(detectors: Sequence[Any], exposure_s: float) -> MsgGenerator[None]:
    """Set the exposure [s] of every detector that has an areaDetector ``cam.acquire_time``."""
    group = "exposure"
    for det in detectors:
        cam = getattr(det, "cam", None)
        if cam is not None and hasattr(cam, "acquire_time"):
            yield from bps.abs_set(cam.acquire_time, exposure_s, group=group)
    yield from bps.wait(group)


def run_with_uid(
    body: Callable[[str | None], MsgGenerator[None]], md: dict[str, Any]
) -> MsgGenerator[str | None]:
    """``bluesky.preprocessors.run_wrapper`` for a body that needs its run's uid: the frames
    are tagged with it from the first one, and run_wrapper does not hand it to what it wraps.
    Closes the run as run_wrapper does (``fail`` with the reason, or the control exception's
    status). Returns the uid."""
    uid = yield from bps.open_run(md=md)
    scan_uid = uid if isinstance(uid, str) else None

    def except_plan(exc: BaseException) -> MsgGenerator[None]:
        if isinstance(exc, RunEngineControlException):
            yield from bps.close_run(exit_status=getattr(exc, "exit_status", "abort"))
        else:
            yield from bps.close_run(exit_status="fail", reason=str(exc))

    yield from bpp.contingency_wrapper(
        body(scan_uid), except_plan=except_plan, else_plan=bps.close_run
    )
    return scan_uid


@dataclass(frozen=True)
class _CtScan:
    """The checked arguments of one :func:`phase_stepping_ct`."""

    ifm: Interferometer
    dets: tuple[Any, ...]
    axis: EpicsMotor
    instrument: Instrument
    plan: ScanPlan
    start_um: float | None
    backlash_um: float | None
    md: dict[str, Any] | None

    @property
    def period_um(self) -> float:
        return stepping_period_um(self.instrument.geometry, self.plan.grating)


def _checked_ct(
    ifm: Interferometer,
    dets: Sequence[Any],
    instrument: Instrument,
    plan: ScanPlan,
    start_um: float | None,
    backlash_um: float | None,
    md: dict[str, Any] | None,
) -> _CtScan:
    """The arguments of :func:`phase_stepping_ct` after its scan plan, checked in this order."""
    period_um = stepping_period_um(instrument.geometry, plan.grating)
    if start_um is not None:
        for steps in sorted({plan.series_steps(key) for key in plan.order()}):
            series_positions_um(
                steps=steps, periods=plan.periods, period_um=period_um, start_um=start_um
            )
    check_backlash(backlash_um)
    if md is not None and not isinstance(md, dict):
        raise ValueError(f"md must be a dict or None, got {type(md).__name__}")
    check_stepping(plan.stepping, plan.grating, dets)
    axis = stepping_axis(ifm, plan.grating)
    if plan.stepping == "hardware":
        try:
            ifm.sequencer.wait_for_connection(timeout=2.0)
        except TimeoutError as exc:
            raise ValueError(
                f"stepping='hardware': the step sequencer does not answer ({exc}); "
                "use stepping='software'"
            ) from None
    return _CtScan(ifm, tuple(dets), axis, instrument, plan, start_um, backlash_um, md)


def _ct_metadata(ct: _CtScan, start_um: float) -> dict[str, Any]:
    """The start document's metadata: the standard keys, the instrument and the scan plan."""
    ifm, plan = ct.ifm, ct.plan
    total = plan.frames_planned()
    out: dict[str, Any] = {
        "plan_name": "phase_stepping_ct",
        "plan_args": {
            "detectors": [d.name for d in ct.dets],
            "scan_plan": plan.model_dump(mode="json"),
            "start_um": start_um,
            "backlash_um": ct.backlash_um,
        },
        "detectors": [d.name for d in ct.dets],
        "motors": [m.name for m in (ct.axis, ifm.rotation, ifm.sample.x)],
        "hints": {"dimensions": [([ifm.rotation.name], "primary")]},
        "instrument": ct.instrument.model_dump(mode="json"),
        "scan_plan": plan.model_dump(mode="json"),
        "period_um": ct.period_um,
        "start_um": start_um,
        "angles_deg": plan.angles_deg(),
        "acquisition_order": [list(k) for k in plan.order()],
        "frames_total": total,
        "num_points": total,
        "streams": {"projection": "primary", "reference": "reference", "dark": "dark"},
    }
    out.update(ct.md or {})
    return out


def _series(ct: _CtScan, common: dict[str, Any]) -> MsgGenerator[None]:
    """Every reference and projection series, in the plan's order."""
    ifm, plan = ct.ifm, ct.plan
    order = plan.order()
    for n, (kind, index) in enumerate(order):
        if kind == "reference":
            steps = plan.series_steps((kind, index))  # the calibration series: more steps
            yield from reference_series(
                ifm, ct.dets, series_index=index, **{**common, "steps": steps}
            )
            continue
        after = order[n + 1] if n + 1 < len(order) else None
        following = None
        if after is not None and after[0] == "projection":
            following = NextProjection(after[1], plan.angle_deg(after[1]))
        yield from phase_stepping_series(
            ifm, ct.dets, frame_type="projection", angle_index=index,
            rotation_deg=plan.angle_deg(index), next_projection=following, **common,
        )  # fmt: skip


def _publish_plan(ct: _CtScan) -> MsgGenerator[None]:
    """The scan plan to the ``TAG:ScanPlan`` PV, the sample-out position for the references."""
    ifm, plan = ct.ifm, ct.plan
    out_mm = plan.sample_out_offset_mm(ct.instrument.field_of_view_m[1])
    in_mm = yield from bps.rd(ifm.sample.in_position, default_value=0.0)
    yield from bps.mv(
        ifm.tags.scan_plan, plan.model_dump_json(), ifm.sample.out_position, in_mm + out_mm
    )


def _ct_body(ct: _CtScan, start_um: float, scan_uid: str | None) -> MsgGenerator[None]:
    """The run's body: publish the plan, darks, then the series (tagged with ``scan_uid``).
    Hardware-stepped series read through one :class:`HardwareStepping` made for the run."""
    ifm, plan = ct.ifm, ct.plan
    attempts = SeriesAttempts(ifm.tags.attempt)
    yield from _publish_plan(ct)
    yield from set_exposure(ct.dets, plan.exposure_s)
    if plan.darks:
        yield from dark_series(
            ifm, ct.dets, frames=plan.darks, attempts=attempts, scan_uid=scan_uid
        )
    yield from bps.mv(ifm.shutter, "open")
    hardware = None
    if plan.stepping == "hardware":
        hardware = HardwareStepping.create(ifm, ct.dets[0], ct.axis)
    # one backlash for every series of the scan (default one step of M, also before the
    # calibration series' smaller steps)
    backlash_um = ct.backlash_um
    if backlash_um is None:
        backlash_um = plan.periods * ct.period_um / plan.steps
    common: dict[str, Any] = {
        "steps": plan.steps, "periods": plan.periods, "period_um": ct.period_um,
        "start_um": start_um, "grating": plan.grating, "backlash_um": backlash_um,
        "attempts": attempts, "scan_uid": scan_uid, "stepping": plan.stepping,
        "hardware": hardware,
    }  # fmt: skip
    try:
        yield from _series(ct, common)
    finally:
        if hardware is not None:
            hardware.release()


def _ct_run(ct: _CtScan) -> MsgGenerator[str | None]:
    """The scan in one run, the detectors staged; the sample, then the shutter, restored after,
    whatever happens."""
    ifm = ct.ifm

    @restoring_decorator(ifm.shutter.state, ifm.shutter, shutter_command)
    @restoring_decorator(ifm.sample.x.user_setpoint, ifm.sample, float)
    @bpp.stage_decorator(ct.dets)
    def scan() -> MsgGenerator[str | None]:
        start = yield from first_step_um(ct.axis, ct.start_um)
        body = functools.partial(_ct_body, ct, start)
        return (yield from run_with_uid(body, _ct_metadata(ct, start)))

    return scan()


def phase_stepping_ct(
    ifm: Interferometer,
    detectors: Sequence[Any],
    *,
    instrument: Instrument,
    plan: ScanPlan | None = None,
    exposure_s: float | None = None,
    steps: int | None = None,
    calibration_steps: int | None = None,
    periods: int | None = None,
    angles: int | None = None,
    angular_range_deg: float | None = None,
    start_deg: float | None = None,
    reference_every: int | None = None,
    darks: int | None = None,
    grating: Grating | None = None,
    stepping: Stepping | None = None,
    sample_out_mm: float | None = None,
    start_um: float | None = None,
    backlash_um: float | None = None,
    md: dict[str, Any] | None = None,
) -> MsgGenerator[str | None]:
    """A phase-stepping CT scan in one run.

    ``instrument`` is the beamline's (``contracts.instrument.Instrument``); ``plan`` the default
    scan plan (a profile's ``[plan]``), which the keyword arguments override: phase steps
    M >= 3 over ``periods`` grating periods; ``calibration_steps`` (0: none) for reference
    series 0, the calibration series; ``angles`` projections over ``angular_range_deg``
    [deg] from ``start_deg``, end excluded; a reference series every ``reference_every``
    angles; ``darks`` dark frames first; ``exposure_s`` per frame; the stepped ``grating``
    (``g2`` piezo, or ``g0``); ``stepping`` ``hardware`` (one camera acquisition per series,
    the IOC's sequencer stepping the piezo) or ``software``; ``sample_out_mm`` for references.
    ``start_um``: first step [um] (default: where the grating is); ``backlash_um``: approach
    from this far below it (default one step); ``md``: extra start metadata. The shutter and
    the sample position are restored at the end, whatever happens. Returns the run's uid.
    """
    dets = check_detectors(detectors, required=True)
    scan_plan = resolve_scan_plan(
        plan, exposure_s=exposure_s, steps=steps, calibration_steps=calibration_steps,
        periods=periods, angles=angles,
        angular_range_deg=angular_range_deg, start_deg=start_deg,
        reference_every=reference_every, darks=darks, grating=grating, stepping=stepping,
        sample_out_mm=sample_out_mm,
    )  # fmt: skip
    return _ct_run(_checked_ct(ifm, dets, instrument, scan_plan, start_um, backlash_um, md))
