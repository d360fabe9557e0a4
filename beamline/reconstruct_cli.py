"""``talbot reconstruct``: offline reconstruction of a recorded scan file (``recon.offline``).

Its parser is added by ``beamline.stream_cli.add_parsers``; the exit statuses are
``beamline.exitcodes``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

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
        description="Offline reconstruction (recon.pipeline) of a raw scan file into --out.",
    )
    rr.add_argument("file", type=Path, help="raw scan file (HDF5)")
    rr.add_argument("--out", type=Path, required=True, help="output directory (created)")
    rr.add_argument("--center", type=float, default=None, help="rotation centre offset [px]")
    rr.add_argument("--rings", action="store_true", help="stripe (ring) suppression")
    add_fit_option(rr)


def _warn_if_incomplete(path: Path, planned: int, end: Any, f: Any) -> None:
    """Say on stderr when the file's end record or its frames do not make a complete scan."""
    from contracts.scanfile import END_GROUP, read_frame_table

    latest = int((~read_frame_table(f).superseded).sum())
    if END_GROUP in f:  # files of the first layout have no end record
        if end.frames_written is None:
            print(
                f"talbot reconstruct: warning: {path} is still being written or was cut short "
                "(its writer has not closed it)",
                file=sys.stderr,
            )
        elif not end.complete:
            print(
                f"talbot reconstruct: warning: the acquisition of {path} did not end as planned",
                file=sys.stderr,
            )
    if latest < planned:
        print(
            f"talbot reconstruct: warning: {path} holds {latest} of the {planned} frames its "
            "plan has: the volume is from a partial scan",
            file=sys.stderr,
        )


def cmd_reconstruct(args: argparse.Namespace) -> int:
    """``talbot reconstruct``."""
    if not args.file.exists():
        print(f"talbot reconstruct: file: {args.file} does not exist", file=sys.stderr)
        return 2
    import h5py

    from contracts.scanfile import read_end, read_header
    from recon.allocator import keep_freed_memory
    from recon.offline import reconstruct_file

    try:
        with h5py.File(args.file, "r", libver="latest", swmr=True) as f:
            plan = read_header(f).plan
            if plan is not None:
                _warn_if_incomplete(args.file, plan.frames_planned(), read_end(f), f)
    except (OSError, ValueError) as exc:
        print(f"talbot reconstruct: file: {exc}", file=sys.stderr)
        return 2
    if plan is None:
        print(
            f"talbot reconstruct: file: {args.file} is not a phase-stepping CT scan (no scan plan "
            "recorded: an alignment scan or a stock plan)",
            file=sys.stderr,
        )
        return 2
    keep_freed_memory()  # temporaries reuse each other's memory (recon/allocator.py)
    try:
        volumes, files = reconstruct_file(
            args.file, args.out, center_offset_px=args.center, rings=args.rings, fit=args.fit
        )
    except ValueError as exc:
        print(f"talbot reconstruct: the reconstruction failed: {exc}", file=sys.stderr)
        return 1
    report_fit("talbot reconstruct", volumes.fit)
    print(
        f"volume {volumes.delta.shape} (z, y, x), centre {volumes.center_offset_px:+.2f} px; "
        f"wrote {', '.join(files)} in {args.out}"
    )
    return 0


def report_fit(command: str, fit: Any) -> None:
    """The stepping-curve fit that ran (one line) and its warnings, on stderr."""
    if fit is None:
        return
    print(f"{command}: {fit.describe()}", file=sys.stderr)
    for text in fit.warnings:
        print(f"{command}: warning: {text}", file=sys.stderr)
