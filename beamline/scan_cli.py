"""``talbot scan ct`` and ``talbot align ...``: the pieces ``beamline.cli`` wires in.

``add_scan_parser(subparsers)`` / ``add_align_parser(subparsers)`` add the sub-commands;
``run_scan(args)`` / ``run_align(args)`` run them and return the exit status. Ctrl-C is the
RunEngine's: one press pauses at the next checkpoint (the start of a series), two press pause at
once; the scan is then stopped cleanly (the run is closed with what was acquired, the sample and
shutter restored) unless ``--resume-on-pause`` is given.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

PROFILE_HELP = "built-in profile (tiny, full) or a TOML profile file (default tiny)"


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--profile", default=None, help=PROFILE_HELP)
    parser.add_argument("--data-dir", default="data", help="scan files and documents (./data)")
    parser.add_argument("--exposure", type=float, default=None, help="exposure per frame [s]")
    parser.add_argument("--steps", type=int, default=None, help="phase steps per series (>= 3)")
    parser.add_argument("--periods", type=int, default=None, help="grating periods stepped")
    parser.add_argument("--start-um", type=float, default=None, help="first step [um]")
    parser.add_argument("--tiled", default=None, help="also write to this Tiled server URI")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def add_scan_parser(subparsers: Any) -> argparse.ArgumentParser:
    """``talbot scan ct``: a phase-stepping CT scan."""
    scan = subparsers.add_parser("scan", help="run a phase-stepping CT scan")
    kinds = scan.add_subparsers(dest="scan_kind", required=True)
    ct = kinds.add_parser(
        "ct",
        help="darks, references and projections over the angular range",
        description="Phase-stepping CT: darks, a reference series (sample out) at the start, "
        "every N angles and at the end, projections over the range. Ctrl-C pauses at the "
        "next series and stops cleanly; data acquired so far is kept.",
    )
    _common(ct)
    ct.add_argument("--calibration-steps", type=int, default=None,
                    help="phase steps of the calibration series, reference series 0, which "
                    "measures the stepping curve's shape once per scan (more than --steps, "
                    "<= 256; 0: none; default: the profile's plan)")  # fmt: skip
    ct.add_argument("--angles", type=int, default=None, help="projection angles (>= 1)")
    ct.add_argument("--range", dest="angular_range_deg", type=float, default=None,
                    help="angular range [deg] (default 180)")  # fmt: skip
    ct.add_argument("--reference-every", type=int, default=None, help="reference every N angles")
    ct.add_argument("--darks", type=int, default=None, help="dark frames at the start (0: none)")
    ct.add_argument("--grating", choices=("g2", "g0"), default=None,
                    help="grating to step (default: the profile's plan, else g2)")  # fmt: skip
    ct.add_argument("--stepping", choices=("hardware", "software"), default=None,
                    help="hardware: one camera acquisition per series, the step sequencer moves "
                    "the G2 piezo after each exposure (default for g2); software: move and "
                    "trigger at every step (default for g0)")  # fmt: skip
    ct.add_argument("--resume-on-pause", action="store_true",
                    help="after Ctrl-C, resume instead of stopping")  # fmt: skip
    return scan


def add_align_parser(subparsers: Any) -> argparse.ArgumentParser:
    """``talbot align visibility|roll|distance|center``."""
    align = subparsers.add_parser("align", help="alignment scans of the interferometer")
    kinds = align.add_subparsers(dest="align_kind", required=True)
    for name, text in (
        ("visibility", "visibility, mean and phase maps from a reference series"),
        ("roll", "moire period versus G2 roll; reports the best roll"),
        ("distance", "visibility versus G2 z (Talbot distance); reports the best z"),
        ("center", "rotation-centre offset from projections at 0 and 180 deg"),
    ):
        sub = kinds.add_parser(name, help=text, description=text)
        _common(sub)
        if name in ("roll", "distance"):
            unit = "mrad" if name == "roll" else "mm"
            sub.add_argument("positions", type=float, nargs="+", help=f"positions [{unit}]")
    return align


def _session(args: argparse.Namespace) -> Any:
    from beamline.session import make_session

    return make_session(
        args.profile, args.data_dir, progress_bar=not args.no_progress, tiled_uri=args.tiled
    )


def _run(session: Any, plan: Any, resume: bool = False) -> tuple[str, ...]:
    from bluesky.utils import RunEngineInterrupted  # here: every `talbot` command imports this

    RE = session.RE
    try:
        return tuple(RE(plan))
    except RunEngineInterrupted:
        if resume:
            print("paused: resuming", file=sys.stderr)
            return tuple(RE.resume())
        print("paused: stopping cleanly (the data acquired so far is kept)", file=sys.stderr)
        return tuple(RE.stop())


#: The option of ``talbot scan ct`` that sets each ScanPlan field.
OPTION_OF = {
    "exposure_s": "--exposure", "steps": "--steps", "periods": "--periods",
    "calibration_steps": "--calibration-steps", "angles": "--angles",
    "angular_range_deg": "--range",
    "reference_every": "--reference-every", "darks": "--darks", "grating": "--grating",
    "stepping": "--stepping", "start_um": "--start-um",
}  # fmt: skip


def _plan_error(exc: Exception) -> str:
    """The error line of a refused plan, naming the option that sets the field."""
    text = str(exc)
    field = text.split(":", 1)[0].split("=", 1)[0].split(" ", 1)[0]
    option = OPTION_OF.get(field)
    return f"error: {option}: {text}" if option else f"error: {text}"


def run_scan(args: argparse.Namespace) -> int:
    """Run ``talbot scan ct``; 0 on success, 2 on bad arguments, 1 on a failed scan."""
    from contracts.profile import ConfigError, resolve_profile
    from plans.ct import resolve_scan_plan, stepping_period_um

    overrides = {
        "exposure_s": args.exposure, "steps": args.steps, "periods": args.periods,
        "calibration_steps": args.calibration_steps, "angles": args.angles,
        "angular_range_deg": args.angular_range_deg,
        "reference_every": args.reference_every, "darks": args.darks,
        "grating": args.grating, "stepping": args.stepping,
    }  # fmt: skip
    try:  # the profile and the plan are checked before anything connects or moves
        profile = resolve_profile(args.profile)
        scan_plan = resolve_scan_plan(profile.plan, **overrides)
        stepping_period_um(profile.instrument.geometry, scan_plan.grating)
    except (ConfigError, ValueError) as exc:
        print(_plan_error(exc), file=sys.stderr)
        return 2
    try:
        session = _session(args)
    except (ConfigError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        try:
            plan = session.ct(start_um=args.start_um, **overrides)
        except ValueError as exc:
            print(_plan_error(exc), file=sys.stderr)
            return 2
        uids = _run(session, plan, args.resume_on_pause)
        for uid in uids:
            print(f"run {uid}: documents in {session.data_dir / 'documents'}")
        return 0
    finally:
        session.close()


def run_align(args: argparse.Namespace) -> int:
    """Run ``talbot align ...``, print the result; 0 / 2 (bad arguments) / 1."""
    import numpy as np

    from beamline.documents import read_run
    from contracts.profile import ConfigError
    from contracts.scanfile import read_scan
    from plans import alignment as align_plans
    from recon import alignment

    try:
        session = _session(args)
    except (ConfigError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        defaults = session.profile.plan
        geometry = session.profile.instrument.geometry
        period_um = geometry.g2_pitch_m * 1e6
        kw: dict[str, Any] = {
            "steps": args.steps or (defaults.steps if defaults else 5), "period_um": period_um,
            "exposure_s": args.exposure or (defaults.exposure_s if defaults else 0.05),
            "periods": args.periods or 1, "start_um": args.start_um,
        }  # fmt: skip
        ifm, dets = session.ifm, session.detectors
        kind = args.align_kind
        try:
            if kind == "visibility":
                plan = align_plans.visibility_scan(ifm, dets, **kw)
            elif kind == "roll":
                plan = align_plans.g2_roll_scan(ifm, dets, rolls_mrad=args.positions, **kw)
            elif kind == "distance":
                plan = align_plans.talbot_distance_scan(ifm, dets, z_mm=args.positions, **kw)
            else:
                plan = align_plans.center_check_scan(ifm, dets, **kw)
        except ValueError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        (uid,) = _run(session, plan)
        run = read_run(session.data_dir, uid)
        scan = read_scan(run.file_paths()[0])
        period_m = geometry.g2_pitch_m
        if kind == "visibility":
            maps = alignment.visibility_maps(scan.frames, scan.table, period_m)
            out = maps.save(session.data_dir / f"visibility_{uid[:8]}.npz")
            print(f"median visibility {float(np.median(maps.visibility)):.3f}; maps in {out}")
        elif kind == "roll":
            r = alignment.roll_scan_result(scan.frames, scan.table, period_m, args.positions)
            print(f"best G2 roll {r.best:.4f} mrad; moire periods [px]: {r.values.round(1)}")
        elif kind == "distance":
            r = alignment.distance_scan_result(scan.frames, scan.table, period_m, args.positions)
            print(f"best G2 z {r.best:.4f} mm; visibilities: {r.values.round(4)}")
        else:
            c = alignment.center_check_result(scan.frames, scan.table, period_m)
            print(f"rotation centre offset {c:+.2f} px from the detector centre")
        return 0
    finally:
        session.close()
