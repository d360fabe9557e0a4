"""``talbot import``: a Data Exchange or NXtomo phase-stepping scan as a raw scan file.

Wiring (``beamline/cli.py``)::

    import_cli.add_parser(sub)                 # in build_parser()
    if args.command == "import":               # in main(), before a profile is loaded
        return import_cli.cmd_import(args)

The mapping is ``contracts.importing``; the rules are in ``docs/data-format.md``, "Importing
Data Exchange and NXtomo files". Exit statuses: ``beamline.exitcodes``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from beamline import exitcodes
from beamline.argtypes import positive_int

if TYPE_CHECKING:
    from contracts.importing import ImportResult

PROG = "talbot import"


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``import`` to the ``talbot`` sub-parsers."""
    ip = sub.add_parser(
        "import",
        help="convert a Data Exchange or NXtomo phase-stepping scan into a raw scan file",
        description="Read a grating-interferometry scan from a Data Exchange file (/exchange) "
        "or an NXtomo file frame by frame and write it as a Talbot raw scan file (--out) that "
        "`talbot reconstruct` reconstructs. The instrument comes from --profile, with the "
        "file's frame size and the energy and pixel size it records (docs/data-format.md, "
        "'Importing Data Exchange and NXtomo files').",
    )
    ip.add_argument("src", type=Path, help="Data Exchange or NXtomo file (HDF5)")
    ip.add_argument("--out", type=Path, required=True, help="raw scan file to write")
    ip.add_argument(
        "--profile", required=True,
        help="built-in profile (tiny, full) or a TOML profile file: the instrument",
    )  # fmt: skip
    ip.add_argument(
        "--steps", type=positive_int, default=None,
        help="phase steps per series: needed for a 3-D (interleaved) /exchange/data that does "
        "not record them; a check otherwise",
    )  # fmt: skip
    ip.add_argument(
        "--periods", type=positive_int, default=None,
        help="grating periods the steps cover (default: as recorded or as the G2 positions "
        "show, else 1); equidistant steps over them when the file has no G2 positions",
    )  # fmt: skip
    ip.add_argument(
        "--reference-every", type=positive_int, default=None,
        help="Data Exchange: a reference series was taken after every N angles (default: the "
        "series of /exchange/data_white spread evenly, the first at the start, the last at "
        "the end); NXtomo: a check",
    )  # fmt: skip
    ip.add_argument("--force", action="store_true", help="replace an existing --out file")


def _fail(message: str) -> int:
    print(f"{PROG}: {message}", file=sys.stderr)
    return exitcodes.USAGE


def cmd_import(args: argparse.Namespace) -> int:
    """``talbot import``: 0 when the file is written, 2 on bad input (one line on stderr)."""
    from contracts.importing import ImportOptions, SourceError, import_scan
    from contracts.profile import ConfigError, resolve_profile

    src: Path = args.src
    if not src.is_file():
        return _fail(f"src: {src} does not exist")
    if args.out.is_dir():
        return _fail(f"--out: {args.out} is a directory")
    if args.out.exists() and not args.force:
        return _fail(f"--out: {args.out} exists (--force replaces it)")
    try:
        profile = resolve_profile(args.profile)
    except ConfigError as exc:
        return _fail(f"--profile: {exc}")
    plan = profile.plan
    options = ImportOptions(
        steps=args.steps,
        periods=args.periods,
        reference_every=args.reference_every,
        exposure_s=plan.exposure_s if plan is not None else 1.0,
        stepping=plan.stepping if plan is not None else "software",
    )
    try:
        result = import_scan(src, args.out, profile.instrument, options, force=args.force)
    except SourceError as exc:
        return _fail(f"{src}: {exc}")
    except FileExistsError as exc:
        return _fail(f"--out: {exc}")
    except OSError as exc:
        print(f"{PROG}: writing {args.out} failed: {exc}", file=sys.stderr)
        return exitcodes.FAILED
    _report(result, profile.name)
    return exitcodes.OK


def _report(result: ImportResult, profile: str) -> None:
    """One line: what was read, what was written; the geometry taken from the file."""
    m, plan = result.mapping, result.mapping.plan
    references = int(result.mapping.rows["series_index"].max()) + 1
    calibration = f" (series 0: {plan.calibration_steps} steps)" if plan.calibration_steps else ""
    geometry = ", ".join(f"{k} {v:g} from {p}" for k, (v, p) in m.geometry.items())
    print(
        f"{m.kind}: {plan.angles} angles x {plan.steps} steps, {references} reference series"
        f"{calibration} every {plan.reference_every} angles, {plan.darks} darks -> "
        f"{result.out} ({result.frames} frames, {m.shape[0]}x{m.shape[1]} {m.dtype}); "
        f"instrument {profile!r}" + (f", {geometry}" if geometry else "")
    )
    for note in m.notes:
        print(f"{PROG}: note: {note}", file=sys.stderr)
