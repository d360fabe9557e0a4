"""``talbot reconstruct``: offline reconstruction of a recorded scan file (``recon.offline``).

Its parser is added by ``beamline.stream_cli.add_parsers``; the exit statuses are
``beamline.exitcodes``.
"""

from __future__ import annotations

import argparse
import sys
import traceback
from pathlib import Path
from typing import Any

from beamline import exitcodes
from recon.fitmode import FIT_MODES


def add_fit_option(parser: argparse.ArgumentParser) -> None:
    """``--fit``, shared by ``recon`` and ``reconstruct``."""
    parser.add_argument(
        "--fit", choices=FIT_MODES, default="auto",
        help="stepping-curve fit: auto (shape-aware when the scan's calibration series "
        "shows harmonics that bias the first-harmonic fit), first-harmonic, shape-aware",
    )  # fmt: skip


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``reconstruct`` to the ``talbot`` sub-parsers."""
    rr = sub.add_parser(
        "reconstruct",
        help="reconstruct a recorded scan file offline",
        description="Offline reconstruction (recon.pipeline) of a raw scan file into --out. "
        "Exit status 0: a complete scan reconstructed; 3: a partial one (cut short, still "
        "being written, aborted), reconstructed with --partial or refused without it; 2: bad "
        "input (a missing, truncated or damaged file, not a CT scan, a bad --out); 1: the "
        "reconstruction failed. Errors are one line; `talbot -v reconstruct` adds the "
        "traceback.",
    )
    rr.add_argument("file", type=Path, help="raw scan file (HDF5)")
    rr.add_argument("--out", type=Path, required=True, help="output directory (created)")
    rr.add_argument("--center", type=float, default=None, help="rotation centre offset [px]")
    rr.add_argument("--rings", action="store_true", help="stripe (ring) suppression")
    rr.add_argument(
        "--partial",
        action="store_true",
        help="reconstruct a file cut short (or still being written) from its whole series; "
        "recon.h5 says it is partial (complete = false) and the exit status is 3",
    )
    add_fit_option(rr)


def cmd_reconstruct(args: argparse.Namespace) -> int:
    """``talbot reconstruct``: every error one line on stderr, its traceback only with the
    global ``-v``; the exit statuses of ``beamline.exitcodes``."""
    verbose = bool(getattr(args, "verbose", False))
    try:
        return _reconstruct(args, verbose)
    except KeyboardInterrupt:
        print("talbot reconstruct: interrupted", file=sys.stderr)
        return exitcodes.INTERRUPTED
    except Exception as exc:  # a failure nothing below foresaw: still one line
        return _fail(exitcodes.FAILED, f"error: {type(exc).__name__}: {_one_line(exc)}", verbose)


def _reconstruct(args: argparse.Namespace, verbose: bool) -> int:
    from contracts.scanfile import ScanFileError
    from recon.allocator import keep_freed_memory
    from recon.offline import IncompleteScanError, inspect_file, reconstruct_scan

    path: Path = args.file
    try:
        _, completeness = inspect_file(path)
    except ValueError as exc:  # ScanFileError included: missing, not HDF5, truncated, damaged
        return _fail(exitcodes.USAGE, f"file: {_one_line(exc)}", verbose)
    if completeness is None:
        return _fail(
            exitcodes.USAGE,
            f"file: {path} is not a phase-stepping CT scan (no scan plan recorded: an "
            "alignment scan or a stock plan)",
            verbose,
        )
    if not completeness.complete and not args.partial:
        return _fail(exitcodes.PARTIAL, completeness.refusal(path), verbose)
    try:
        args.out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        return _fail(exitcodes.USAGE, f"--out: {args.out}: {exc.strerror or exc}", verbose)
    keep_freed_memory()  # temporaries reuse each other's memory (recon/allocator.py)
    try:
        result = reconstruct_scan(
            path,
            args.out,
            center_offset_px=args.center,
            rings=args.rings,
            fit=args.fit,
            partial=args.partial,
        )
    except IncompleteScanError as exc:  # it changed since it was looked at
        return _fail(exitcodes.PARTIAL, str(exc), verbose)
    except ScanFileError as exc:
        return _fail(exitcodes.USAGE, f"file: {_one_line(exc)}", verbose)
    except ValueError as exc:
        return _fail(exitcodes.FAILED, f"the reconstruction failed: {_one_line(exc)}", verbose)
    report_fit("talbot reconstruct", result.volumes.fit)
    report_bad_pixels("talbot reconstruct", result.projections.bad_pixels)
    volumes, provenance = result.volumes, result.provenance
    print(
        f"volume {volumes.delta.shape} (z, y, x), centre {volumes.center_offset_px:+.2f} px, "
        f"{provenance.label}; wrote {', '.join(result.files)} in {args.out}"
    )
    return exitcodes.OK if provenance.complete else exitcodes.PARTIAL


def _fail(code: int, message: str, verbose: bool) -> int:
    """Print ``talbot reconstruct: message`` (one line; with ``verbose``, after the traceback of
    the exception being handled, if any) and return ``code``."""
    if verbose and sys.exc_info()[0] is not None:
        traceback.print_exc()
    print(f"talbot reconstruct: {message}", file=sys.stderr)
    return code


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def report_bad_pixels(command: str, bad: Any) -> None:
    """The detector pixels replaced by their neighbours' median (one warning line, plus one
    per frame with NaN or inf), on stderr; nothing when there are none."""
    if bad is None:
        return
    if bad.count:
        print(f"{command}: warning: {bad.describe()}", file=sys.stderr)
    for note in bad.notes:
        print(f"{command}: warning: {note}", file=sys.stderr)


def report_fit(command: str, fit: Any) -> None:
    """The stepping-curve fit that ran (one line) and its warnings, on stderr."""
    if fit is None:
        return
    print(f"{command}: {fit.describe()}", file=sys.stderr)
    for text in fit.warnings:
        print(f"{command}: warning: {text}", file=sys.stderr)
