"""Alignment scans of the interferometer (pure bluesky; the analysis is ``recon.alignment``).

- :func:`visibility_scan`: darks and one reference series -> mean, visibility and phase maps;
- :func:`g2_roll_scan`: a reference series at each G2 roll -> moire period versus roll;
- :func:`talbot_distance_scan`: a reference series at each G2 z -> visibility versus distance;
- :func:`center_check_scan`: a reference series and projection series at theta and theta + 180
  deg -> rotation-centre offset from two opposite projections.

Each opens one run whose start document names the scanned motor, its positions (``positions``),
the stepping (``steps``, ``periods``, ``period_um``, ``start_um``) and ``alignment`` (the kind).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from typing import Any

from bluesky import plan_stubs as bps
from bluesky import preprocessors as bpp
from bluesky.utils import MsgGenerator

from contracts.scanplan import Grating
from devices.interferometer import Interferometer
from plans.attempts import SeriesAttempts
from plans.checks import check_count, check_detectors, check_positive
from plans.ct import run_with_uid, set_exposure
from plans.restore import restoring_wrapper, shutter_command
from plans.series import (
    dark_series,
    first_step_um,
    phase_stepping_series,
    reference_series,
    series_positions_um,
    stepping_axis,
)


def _check_positions(name: str, values: Sequence[float], minimum: int) -> list[float]:
    out = [float(v) for v in values]
    if len(out) < minimum:
        raise ValueError(f"{name} needs at least {minimum} positions, got {len(out)}")
    if not all(math.isfinite(v) for v in out):
        raise ValueError(f"{name} must be finite, got {values!r}")
    if len(set(out)) != len(out):
        raise ValueError(f"{name} must not repeat a position, got {values!r}")
    return out


class _Stepping:
    """Validated stepping arguments shared by the alignment plans."""

    def __init__(
        self,
        ifm: Interferometer,
        detectors: Sequence[Any],
        *,
        steps: int,
        periods: int,
        period_um: float,
        start_um: float | None,
        exposure_s: float,
        darks: int,
        grating: Grating,
    ) -> None:
        self.dets = check_detectors(detectors, required=True)
        self.steps = check_count("steps", steps, 3)
        self.periods = check_count("periods", periods, 1)
        self.period_um = check_positive("period_um", period_um)
        self.exposure_s = check_positive("exposure_s", exposure_s)
        self.darks = check_count("darks", darks, 0)
        self.axis = stepping_axis(ifm, grating)
        self.grating = grating
        self.start_um = start_um
        series_positions_um(
            steps=steps, periods=periods, period_um=period_um, start_um=start_um or 0.0
        )
        self.ifm = ifm

    def md(self, kind: str, motor: Any, positions: list[float] | None) -> dict[str, Any]:
        dim = motor if motor is not None else self.axis
        return {
            "plan_name": f"{kind}_scan",
            "plan_args": {
                "detectors": [d.name for d in self.dets],
                "steps": self.steps,
                "periods": self.periods,
                "period_um": self.period_um,
                "exposure_s": self.exposure_s,
                "darks": self.darks,
                "grating": self.grating,
                "positions": positions,
            },
            "detectors": [d.name for d in self.dets],
            "motors": [m.name for m in (motor, self.axis) if m is not None],
            "hints": {"dimensions": [([dim.name], "reference")]},
            "alignment": kind,
            "scanned_motor": None if motor is None else motor.name,
            "positions": positions,
            "steps": self.steps,
            "periods": self.periods,
            "period_um": self.period_um,
            "exposure_s": self.exposure_s,
            "grating": self.grating,
        }

    def run(
        self,
        kind: str,
        motor: Any,
        positions: list[float] | None,
        body: Callable[[dict[str, Any]], MsgGenerator[None]],
        md: dict[str, Any] | None,
    ) -> MsgGenerator[Any]:
        """The alignment scan ``kind`` in one run, the detectors staged: ``body(common)`` runs
        after the darks, with the shutter open (``common``: the series' keyword arguments).
        The scanned ``motor`` (None: none), then the shutter, are restored after, whatever
        happens."""
        ifm = self.ifm
        plan = bpp.stage_wrapper(self._scan(kind, motor, positions, body, md), self.dets)
        if motor is not None:
            plan = restoring_wrapper(plan, motor.user_setpoint, motor, float)
        return restoring_wrapper(plan, ifm.shutter.state, ifm.shutter, shutter_command)

    def _scan(
        self,
        kind: str,
        motor: Any,
        positions: list[float] | None,
        body: Callable[[dict[str, Any]], MsgGenerator[None]],
        md: dict[str, Any] | None,
    ) -> MsgGenerator[str | None]:
        """The run (its uid tags the frames, see ``run_with_uid``); returns the uid."""
        start = yield from first_step_um(self.axis, self.start_um)
        run_md = self.md(kind, motor, positions)
        run_md["start_um"] = start
        run_md["plan_args"]["start_um"] = start
        run_md.update(md or {})
        return (yield from run_with_uid(functools.partial(self._body, start, body), run_md))

    def _body(
        self,
        start_um: float,
        body: Callable[[dict[str, Any]], MsgGenerator[None]],
        scan_uid: str | None,
    ) -> MsgGenerator[None]:
        """The exposure, the darks, the shutter open, then ``body``."""
        ifm = self.ifm
        attempts = SeriesAttempts(ifm.tags.attempt)
        common = {
            "steps": self.steps,
            "periods": self.periods,
            "period_um": self.period_um,
            "start_um": start_um,
            "grating": self.grating,
            "attempts": attempts,
            "scan_uid": scan_uid,
        }
        yield from set_exposure(self.dets, self.exposure_s)
        if self.darks:
            yield from dark_series(
                ifm, self.dets, frames=self.darks, attempts=attempts, scan_uid=scan_uid
            )
        yield from bps.mv(ifm.shutter, "open")
        yield from body(common)


def visibility_scan(
    ifm: Interferometer,
    detectors: Sequence[Any],
    *,
    steps: int,
    period_um: float,
    exposure_s: float,
    periods: int = 1,
    start_um: float | None = None,
    darks: int = 5,
    grating: Grating = "g2",
    md: dict[str, Any] | None = None,
) -> MsgGenerator[Any]:
    """Darks and one reference series (sample out): the data of the visibility map.

    ``steps`` >= 3 over ``periods`` periods of ``period_um`` [um] from ``start_um`` [um] (default:
    where the grating is), ``exposure_s`` [s] per frame, ``darks`` dark frames (0 for none).
    """
    s = _Stepping(
        ifm, detectors, steps=steps, periods=periods, period_um=period_um, start_um=start_um,
        exposure_s=exposure_s, darks=darks, grating=grating,
    )  # fmt: skip

    def body(common: dict[str, Any]) -> MsgGenerator[None]:
        yield from reference_series(ifm, s.dets, series_index=0, **common)

    return s.run("visibility", None, None, body, md)


def _motor_scan(
    kind: str,
    ifm: Interferometer,
    motor: Any,
    positions: list[float],
    s: _Stepping,
    md: dict[str, Any] | None,
) -> MsgGenerator[Any]:
    def body(common: dict[str, Any]) -> MsgGenerator[None]:
        for i, value in enumerate(positions):
            yield from bps.mv(motor, value)
            yield from reference_series(ifm, s.dets, series_index=i, **common)

    return s.run(kind, motor, positions, body, md)


def g2_roll_scan(
    ifm: Interferometer,
    detectors: Sequence[Any],
    *,
    rolls_mrad: Sequence[float],
    steps: int,
    period_um: float,
    exposure_s: float,
    periods: int = 1,
    start_um: float | None = None,
    darks: int = 0,
    md: dict[str, Any] | None = None,
) -> MsgGenerator[Any]:
    """A reference series at each G2 roll [mrad] (reference series index = roll index).

    The roll goes back to where it was at the end. ``recon.alignment.roll_scan_result`` turns
    the frames into moire period versus roll and the best roll. At least 3 distinct rolls.
    """
    positions = _check_positions("rolls_mrad", rolls_mrad, 3)
    s = _Stepping(
        ifm, detectors, steps=steps, periods=periods, period_um=period_um, start_um=start_um,
        exposure_s=exposure_s, darks=darks, grating="g2",
    )  # fmt: skip
    return _motor_scan("g2_roll", ifm, ifm.g2.roll, positions, s, md)


def talbot_distance_scan(
    ifm: Interferometer,
    detectors: Sequence[Any],
    *,
    z_mm: Sequence[float],
    steps: int,
    period_um: float,
    exposure_s: float,
    periods: int = 1,
    start_um: float | None = None,
    darks: int = 0,
    md: dict[str, Any] | None = None,
) -> MsgGenerator[Any]:
    """A reference series at each G2 z [mm] (the G1-G2 distance); z restored at the end.

    ``recon.alignment.distance_scan_result`` gives visibility versus z and the best z.
    At least 3 distinct positions.
    """
    positions = _check_positions("z_mm", z_mm, 3)
    if min(positions) <= 0:
        raise ValueError(f"z_mm must be > 0 (a G1-G2 distance), got {z_mm!r}")
    s = _Stepping(
        ifm, detectors, steps=steps, periods=periods, period_um=period_um, start_um=start_um,
        exposure_s=exposure_s, darks=darks, grating="g2",
    )  # fmt: skip
    return _motor_scan("talbot_distance", ifm, ifm.g2.z, positions, s, md)


def center_check_scan(
    ifm: Interferometer,
    detectors: Sequence[Any],
    *,
    steps: int,
    period_um: float,
    exposure_s: float,
    angle_deg: float = 0.0,
    periods: int = 1,
    start_um: float | None = None,
    darks: int = 0,
    md: dict[str, Any] | None = None,
) -> MsgGenerator[Any]:
    """A reference series, then projection series at ``angle_deg`` and ``angle_deg + 180`` [deg].

    Angle indices 0 and 1. ``recon.alignment.center_check_result`` gives the rotation-centre
    offset [px] from the two opposite projections.
    """
    if not math.isfinite(float(angle_deg)):
        raise ValueError(f"angle_deg must be finite, got {angle_deg!r}")
    s = _Stepping(
        ifm, detectors, steps=steps, periods=periods, period_um=period_um, start_um=start_um,
        exposure_s=exposure_s, darks=darks, grating="g2",
    )  # fmt: skip
    angles = [float(angle_deg), float(angle_deg) + 180.0]

    def body(common: dict[str, Any]) -> MsgGenerator[None]:
        yield from reference_series(ifm, s.dets, series_index=0, **common)
        for i, angle in enumerate(angles):

            def rotate(group: str, angle: float = angle) -> MsgGenerator[Any]:
                return bps.abs_set(ifm.rotation, angle, group=group)

            yield from phase_stepping_series(
                ifm, s.dets, frame_type="projection", angle_index=i, setup=rotate, **common
            )

    return s.run("center_check", ifm.rotation, angles, body, md)
