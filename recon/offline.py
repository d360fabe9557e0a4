"""Offline reconstruction of a raw scan file (``talbot reconstruct``): the reference result that
a streamed or replayed scan must equal.

A file is *complete* when its writer closed it at the acquisition's end (the end record; a
first-layout file has none), it holds every frame its plan has, and every series is whole. Any
other file (cut short, still being written, aborted) is reconstructed only when ``partial`` is
asked for, and then from its whole series only: a projection series with a step missing is
left out (its angle is not used), never fitted on the steps it has nor filled with zeros; a
reference series with a step missing is left out too. The result carries a
``recon.provenance.Provenance`` saying how many projections went in and why it is partial.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from numpy.typing import NDArray

from contracts.frames import FrameTable, ImageKey
from contracts.scanfile import (
    FileEnd,
    ScanHeader,
    open_scan_file,
    read_end,
    read_frame_table,
    read_header,
    read_scan,
    readable_frames,
)
from contracts.scanplan import ScanPlan
from recon.fitmode import FitMode
from recon.output import write_recon
from recon.pipeline import Projections, Volumes, reconstruct_volumes, retrieve_projections
from recon.provenance import Provenance


@dataclass(frozen=True)
class Completeness:
    """How much of its plan a scan file holds: frames (latest attempts) and whole projection
    series, against the plan; ``reasons`` it is partial (none: complete)."""

    frames_present: int
    frames_planned: int
    projections_used: int
    projections_planned: int
    reasons: tuple[str, ...]

    @property
    def complete(self) -> bool:
        """Every planned series whole, from a file its writer closed at the acquisition's end."""
        return not self.reasons

    @property
    def reason(self) -> str:
        """The reasons in one phrase ("" when complete)."""
        return "; ".join(self.reasons)

    @property
    def cut_short(self) -> bool:
        """Fewer frames than the plan has."""
        return self.frames_present < self.frames_planned

    def refusal(self, path: Path) -> str:
        """The one line that refuses a partial file without ``--partial``."""
        what = "cut short" if self.cut_short else self.reason
        return (
            f"{path} holds {self.frames_present} of {self.frames_planned} planned frames "
            f"({what}): pass --partial to reconstruct what it holds"
        )


class IncompleteScanError(ValueError):
    """A partial scan file, and a partial reconstruction was not asked for."""

    def __init__(self, path: Path, completeness: Completeness) -> None:
        super().__init__(completeness.refusal(path))
        self.completeness = completeness


@dataclass(frozen=True)
class OfflineResult:
    """A reconstructed scan file: volumes, the projections they are from, where they came
    from and whether it is complete, and the files written (none without ``out``)."""

    volumes: Volumes
    projections: Projections
    provenance: Provenance
    files: list[str]


def assess(
    plan: ScanPlan, table: FrameTable, end: FileEnd
) -> tuple[Completeness, NDArray[np.bool_]]:
    """The completeness of a scan file's frames (``table``: its readable rows, ``end``: its end
    record) against ``plan``, and the mask of the frames to reconstruct from: the darks and the
    whole series, latest attempts only."""
    rows = table.rows
    latest = table.latest_attempts()
    keep = latest & (rows["image_key"] == ImageKey.DARK)
    whole: dict[str, int] = {"reference": 0, "projection": 0}
    broken: dict[str, int] = {"reference": 0, "projection": 0}
    kinds: tuple[tuple[ImageKey, Literal["reference", "projection"], str], ...] = (
        (ImageKey.FLAT, "reference", "series_index"),
        (ImageKey.PROJECTION, "projection", "angle_index"),
    )
    for key, kind, field in kinds:
        of_kind = latest & (rows["image_key"] == key)
        taken = np.unique(np.stack([rows[field][of_kind], rows["step_index"][of_kind]]), axis=1)
        series, steps = np.unique(taken[0], return_counts=True)  # distinct steps per series
        planned_steps = [plan.series_steps((kind, int(i))) for i in series.tolist()]
        done = series[steps >= np.asarray(planned_steps, np.int64)]
        keep |= of_kind & np.isin(rows[field], done)
        whole[kind] += int(done.size)
        broken[kind] += int(series.size - done.size)
    present = int(latest.sum())
    planned = plan.frames_planned()
    reasons: list[str] = []
    if present < planned:
        reasons.append(f"cut short: {present} of {planned} planned frames")
    if end.recorded and end.frames_written is None:
        reasons.append("its writer never closed it (still being written, or the writer died)")
    elif end.recorded and not end.complete:
        reasons.append("the acquisition did not end as planned")
    if end.frames_written is not None and len(table) < end.frames_written:
        reasons.append(f"{len(table)} of the {end.frames_written} frames written are readable")
    angles = plan.angles
    if whole["projection"] < angles and present >= planned:  # else: cut short says it
        reasons.append(f"{angles - whole['projection']} of {angles} projections missing or cut")
    if broken["reference"]:
        reasons.append(f"{broken['reference']} reference series cut short, left out")
    completeness = Completeness(present, planned, whole["projection"], angles, tuple(reasons))
    return completeness, keep


def inspect_file(path: Path) -> tuple[ScanHeader, Completeness | None]:
    """The header of a scan file and its completeness (None: not a phase-stepping CT), read
    without its frames. ScanFileError for a file that cannot be read; ValueError for one
    that is not a scan file."""
    with open_scan_file(path) as f:
        header = read_header(f)
        if header.plan is None:
            return header, None
        table = read_frame_table(f)
        n = readable_frames(f, table)
        end = read_end(f)
    completeness, _ = assess(header.plan, FrameTable(table.rows[:n].copy()), end)
    return header, completeness


def reconstruct_scan(
    path: Path,
    out: Path | None = None,
    *,
    center_offset_px: float | None = None,
    rings: bool = False,
    fit: FitMode = "auto",
    partial: bool = False,
) -> OfflineResult:
    """Read the scan file, retrieve (whole series, latest attempts; ``fit``: the
    stepping-curve fit, ``recon.curve``), reconstruct and, with ``out``, write ``recon.h5``
    (with its provenance) and ``slices.png``. A partial file raises IncompleteScanError unless
    ``partial``; ValueError for a file that is not a phase-stepping CT or that has no whole
    reference or projection series."""
    contents = read_scan(path)
    plan = contents.header.plan
    if plan is None:
        raise ValueError(f"{path}: not a phase-stepping CT scan (no scan plan recorded)")
    completeness, keep = assess(plan, contents.table, contents.end)
    if not completeness.complete and not partial:
        raise IncompleteScanError(path, completeness)
    frames, table = contents.frames, contents.table
    if not keep.all():
        index = np.flatnonzero(keep)
        frames, table = frames[index], FrameTable(table.rows[index].copy())
    if completeness.projections_used == 0:
        raise ValueError(f"{path} holds no whole projection series ({completeness.reason})")
    geometry = contents.header.instrument.geometry
    projections = retrieve_projections(frames, table, geometry, fit=fit)
    volumes = reconstruct_volumes(
        projections, geometry, center_offset_px=center_offset_px, rings=rings
    )
    provenance = Provenance(
        scan_uid=contents.header.scan_uid,
        plan=plan,
        projections_used=completeness.projections_used,
        projections_planned=completeness.projections_planned,
        complete=completeness.complete,
        incomplete_reason=completeness.reason,
        source=str(Path(path).resolve()),
    )
    files = write_recon(out, volumes, projections, provenance) if out is not None else []
    return OfflineResult(volumes, projections, provenance, files)


def reconstruct_file(
    path: Path,
    out: Path | None = None,
    *,
    center_offset_px: float | None = None,
    rings: bool = False,
    fit: FitMode = "auto",
    partial: bool = False,
) -> tuple[Volumes, list[str]]:
    """:func:`reconstruct_scan`'s volumes (``Volumes.fit`` says which fit ran) and the names
    of the files written."""
    result = reconstruct_scan(
        path, out, center_offset_px=center_offset_px, rings=rings, fit=fit, partial=partial
    )
    return result.volumes, result.files
