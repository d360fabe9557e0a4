"""Phase-stepping CT: darks, reference series and projection series over the angular range.

Acquisition order (the same as ``sim.scan.simulate_scan``): ``darks`` dark frames with the shutter
closed, a reference series (sample out) at the start, the projection series angle by angle with a
reference series after every ``reference_every`` angles, and one at the end (never two in a row).
Every series is an atomic, re-takeable unit (``plans.series``). The start document carries the
standard metadata plus the geometry (preset JSON) and the schedule, so that the documents alone
describe the scan (DESIGN §3.3).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from bluesky import plan_stubs as bps
from bluesky import preprocessors as bpp
from bluesky.utils import MsgGenerator

from beamline.config import Preset, Schedule, acquisition_order
from devices.interferometer import Interferometer
from plans.attempts import SeriesAttempts
from plans.series import (
    Grating,
    NextProjection,
    Stepping,
    _check_detectors,
    _restoring,
    check_count,
    check_positive,
    check_stepping,
    dark_series,
    phase_stepping_series,
    reference_series,
    series_positions_um,
    stepping_axis,
)


def frames_planned(schedule: Schedule) -> int:
    """Number of frames of an undisturbed scan with ``schedule``."""
    series = len(acquisition_order(schedule.angles, schedule.reference_every))
    return schedule.darks + series * schedule.steps


def stepping_period_um(preset: Preset, grating: Grating) -> float:
    """Pitch [um] of the stepped grating: G2 (analyser) or G0 (source grating, Talbot-Lau)."""
    geometry = preset.geometry
    if grating == "g2":
        return geometry.g2_pitch_m * 1e6
    if grating == "g0":
        if geometry.g0_pitch_m is None:
            raise ValueError("grating='g0' needs a geometry with g0_pitch_m (Talbot-Lau)")
        return geometry.g0_pitch_m * 1e6
    raise ValueError(f"grating must be 'g2' or 'g0', got {grating!r}")


def build_schedule(
    base: Schedule,
    *,
    steps: int | None = None,
    periods: int | None = None,
    angles: int | None = None,
    angular_range_deg: float | None = None,
    reference_every: int | None = None,
    darks: int | None = None,
) -> Schedule:
    """``base`` with the given fields replaced; ValueError naming the argument when invalid."""
    values = base.model_dump()
    if steps is not None:
        values["steps"] = check_count("steps", steps, 3)
    if periods is not None:
        values["periods"] = check_count("periods", periods, 1)
    if angles is not None:
        values["angles"] = check_count("angles", angles, 1)
    if darks is not None:
        values["darks"] = check_count("darks", darks, 0)
    if reference_every is not None:
        values["reference_every"] = check_count("reference_every", reference_every, 1)
    if angular_range_deg is not None:
        rng = check_positive("angular_range_deg", angular_range_deg)
        if rng > 360.0:
            raise ValueError(f"angular_range_deg must be <= 360, got {angular_range_deg!r}")
        values["angular_range_deg"] = rng
    if values["reference_every"] > values["angles"]:
        raise ValueError(
            f"reference_every={values['reference_every']} is larger than the scan "
            f"(angles={values['angles']})"
        )
    if values["periods"] > 1 and math.gcd(values["steps"], values["periods"]) != 1:
        raise ValueError(
            f"steps={values['steps']} and periods={values['periods']} must be coprime "
            "(phases repeat)"
        )
    return Schedule.model_validate(values)


def set_exposure(detectors: Sequence[Any], exposure_s: float) -> MsgGenerator[None]:
    """Set the exposure [s] of every detector that has an areaDetector ``cam.acquire_time``."""
    group = "exposure"
    for det in detectors:
        cam = getattr(det, "cam", None)
        if cam is not None and hasattr(cam, "acquire_time"):
            yield from bps.abs_set(cam.acquire_time, exposure_s, group=group)
    yield from bps.wait(group)


def _standard_md(
    plan_name: str,
    plan_args: dict[str, Any],
    detectors: Sequence[Any],
    motors: Sequence[Any],
    dimension: Any,
    md: dict[str, Any] | None,
) -> dict[str, Any]:
    out: dict[str, Any] = {
        "plan_name": plan_name,
        "plan_args": plan_args,
        "detectors": [d.name for d in detectors],
        "motors": [m.name for m in motors],
        "hints": {"dimensions": [([dimension.name], "primary")]},
    }
    out.update(md or {})
    return out


def phase_stepping_ct(
    ifm: Interferometer,
    detectors: Sequence[Any],
    *,
    preset: Preset,
    exposure_s: float | None = None,
    steps: int | None = None,
    periods: int | None = None,
    angles: int | None = None,
    angular_range_deg: float | None = None,
    reference_every: int | None = None,
    darks: int | None = None,
    start_um: float | None = None,
    start_deg: float = 0.0,
    grating: Grating = "g2",
    backlash_um: float | None = None,
    stepping: Stepping | None = None,
    md: dict[str, Any] | None = None,
) -> MsgGenerator[Any]:
    """A phase-stepping CT scan in one run.

    Parameters
    ----------
    ifm, detectors
        Interferometer device and detector(s).
    preset
        Instrument and default schedule (``beamline.config.Preset``); its JSON goes into the start
        document (``preset_json``) with the effective ``schedule``.
    exposure_s
        Exposure per frame [s] (default: the preset detector's).
    steps, periods, angles, angular_range_deg, reference_every, darks
        Override the preset's schedule (phase steps M >= 3 over ``periods`` grating periods;
        projection angles over ``angular_range_deg`` [deg] from ``start_deg``, end excluded; a
        reference series every N angles; dark frames at the start, 0 for none).
    start_um
        First step position of the stepped grating [um] (default: where it is now).
    grating
        ``"g2"`` (analyser piezo) or ``"g0"`` (source grating).
    backlash_um
        Approach distance below the first step [um] (default one step).
    stepping
        ``"hardware"`` (default for G2): each series is one camera acquisition of M frames, the
        step sequencer moving the G2 piezo after each exposure; ``"software"`` (default for G0):
        move and trigger once per step (also for detectors other than one area detector and
        beamlines without a sequencer). See :func:`plans.series.phase_stepping_series`.
    md
        Extra start-document metadata.

    The shutter and the sample position are restored at the end, whatever happens.
    """
    dets = _check_detectors(detectors)
    if not dets:
        raise ValueError("detectors must name at least one detector")
    schedule = build_schedule(
        preset.schedule,
        steps=steps,
        periods=periods,
        angles=angles,
        angular_range_deg=angular_range_deg,
        reference_every=reference_every,
        darks=darks,
    )
    exposure = check_positive(
        "exposure_s", preset.detector.exposure_s if exposure_s is None else exposure_s
    )
    if not math.isfinite(float(start_deg)):
        raise ValueError(f"start_deg must be finite, got {start_deg!r}")
    period_um = stepping_period_um(preset, grating)
    if start_um is not None:
        series_positions_um(
            steps=schedule.steps, periods=schedule.periods, period_um=period_um, start_um=start_um
        )
    if backlash_um is not None and not (math.isfinite(backlash_um) and backlash_um >= 0):
        raise ValueError(f"backlash_um must be >= 0, got {backlash_um!r}")
    if md is not None and not isinstance(md, dict):
        raise ValueError(f"md must be a dict or None, got {type(md).__name__}")
    mode: Stepping = stepping or ("hardware" if grating == "g2" else "software")
    check_stepping(mode, grating, dets)
    axis = stepping_axis(ifm, grating)
    if mode == "hardware":
        try:
            ifm.sequencer.wait_for_connection(timeout=2.0)
        except TimeoutError as exc:
            raise ValueError(
                f"stepping='hardware': the step sequencer does not answer ({exc}); "
                "use stepping='software'"
            ) from None
    order = acquisition_order(schedule.angles, schedule.reference_every)
    angles_deg = [start_deg + a for a in schedule.angles_deg()]
    total = frames_planned(schedule)

    def scan() -> MsgGenerator[Any]:
        start = start_um
        if start is None:
            now = yield from bps.rd(axis.user_setpoint, default_value=None)
            start = float(now) if now is not None else 0.0
        plan_args = {
            "detectors": [d.name for d in dets],
            "preset": preset.name,
            "exposure_s": exposure,
            "schedule": schedule.model_dump(),
            "start_um": start,
            "start_deg": float(start_deg),
            "grating": grating,
            "backlash_um": backlash_um,
            "stepping": mode,
        }
        run_md = _standard_md(
            "phase_stepping_ct", plan_args, dets, [axis, ifm.rotation, ifm.sample.x],
            ifm.rotation, None,
        )  # fmt: skip
        run_md.update(
            {
                "preset_json": preset.model_dump_json(),
                "geometry": preset.geometry.model_dump(mode="json"),
                "schedule": schedule.model_dump(mode="json"),
                "exposure_s": exposure,
                "grating": grating,
                "stepping": mode,
                "period_um": period_um,
                "start_um": start,
                "angles_deg": angles_deg,
                "acquisition_order": [list(k) for k in order],
                "frames_total": total,
                "num_points": total,
                "streams": {"projection": "primary", "reference": "reference", "dark": "dark"},
            }
        )
        run_md.update(md or {})
        uid = yield from bps.open_run(md=run_md)
        scan_uid = uid if isinstance(uid, str) else None
        attempts = SeriesAttempts(ifm.tags.attempt)
        common: dict[str, Any] = {
            "steps": schedule.steps,
            "periods": schedule.periods,
            "period_um": period_um,
            "start_um": start,
            "grating": grating,
            "backlash_um": backlash_um,
            "attempts": attempts,
            "scan_uid": scan_uid,
            "stepping": mode,
        }
        yield from set_exposure(dets, exposure)
        if schedule.darks:
            yield from dark_series(
                ifm, dets, frames=schedule.darks, attempts=attempts, scan_uid=scan_uid
            )
        yield from bps.mv(ifm.shutter, "open")
        for n, (kind, index) in enumerate(order):
            if kind == "reference":
                yield from reference_series(ifm, dets, series_index=index, **common)
                continue
            after = order[n + 1] if n + 1 < len(order) else None
            following = None
            if after is not None and after[0] == "projection":
                following = NextProjection(after[1], angles_deg[after[1]])
            yield from phase_stepping_series(
                ifm, dets, frame_type="projection", angle_index=index,
                rotation_deg=angles_deg[index], next_projection=following, **common,
            )  # fmt: skip
        yield from bps.close_run()
        return uid

    def restore_shutter(state: Any) -> str:
        return "open" if str(state) == "Open" else "close"

    staged = bpp.stage_wrapper(scan(), dets)
    with_sample = _restoring(staged, ifm.sample.x.user_setpoint, ifm.sample, float)
    return _restoring(with_sample, ifm.shutter.state, ifm.shutter, restore_shutter)
