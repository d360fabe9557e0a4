"""Offline reconstruction of a raw scan file (``talbot reconstruct``): the reference result that
a streamed or replayed scan must equal."""

from __future__ import annotations

from pathlib import Path

from contracts.scanfile import read_scan
from recon.fitmode import FitMode
from recon.output import write_recon
from recon.pipeline import Volumes, reconstruct_volumes, retrieve_projections


def reconstruct_file(
    path: Path,
    out: Path | None = None,
    *,
    center_offset_px: float | None = None,
    rings: bool = False,
    fit: FitMode = "auto",
) -> tuple[Volumes, list[str]]:
    """Read the scan file, retrieve (latest attempts; ``fit``: the stepping-curve fit,
    ``recon.curve``), reconstruct and, with ``out``, write ``recon.h5`` and ``slices.png``.
    Returns the volumes (``Volumes.fit`` says which fit ran) and the names of the files
    written."""
    contents = read_scan(path)
    if contents.header.plan is None:
        raise ValueError(f"{path}: not a phase-stepping CT scan (no scan plan recorded)")
    geometry = contents.header.instrument.geometry
    projections = retrieve_projections(contents.frames, contents.table, geometry, fit=fit)
    volumes = reconstruct_volumes(
        projections, geometry, center_offset_px=center_offset_px, rings=rings
    )
    files = write_recon(out, volumes, projections) if out is not None else []
    return volumes, files
