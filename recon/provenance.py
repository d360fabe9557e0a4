"""Where a reconstruction came from, and whether it is complete: the attributes ``recon.h5``
carries (docs/data-format.md) and the words its figures and log lines use for a partial one.

A reconstruction is *complete* only when every series the scan plan has was fitted from a scan
that ended as planned; anything else (an aborted or interrupted scan, frames lost for good, a
file cut short, a stop by signal) is *partial*, and says why in ``incomplete_reason``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Final

import h5py

from contracts.scanplan import ScanPlan

#: Characters kept in a scan directory's name; any other becomes ``_``.
_UNSAFE: Final = re.compile(r"[^A-Za-z0-9._-]")
#: Longest scan directory name (a uid may be 256 characters).
_MAX_NAME: Final = 128


@dataclass(frozen=True)
class Provenance:
    """The scan a reconstruction is of and how much of it went in.

    ``source``: "stream" or the raw file's path. ``scan_time``: when the scan started (ISO 8601,
    UTC) where known, else "". ``reconstructed_at`` is set when the record is made.
    """

    scan_uid: str
    plan: ScanPlan | None
    projections_used: int
    projections_planned: int
    complete: bool
    incomplete_reason: str = ""
    source: str = "stream"
    scan_time: str = ""
    reconstructed_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat())

    def __post_init__(self) -> None:
        if not self.complete and not self.incomplete_reason:
            raise ValueError("incomplete_reason: a partial reconstruction must say why")
        if self.complete and self.projections_used < self.projections_planned:
            raise ValueError(
                f"complete: {self.projections_used} of {self.projections_planned} projections "
                "is not a complete scan"
            )

    def attrs(self) -> dict[str, object]:
        """Root attributes of ``recon.h5``."""
        return {
            "scan_uid": self.scan_uid,
            "scan_plan": "" if self.plan is None else self.plan.model_dump_json(),
            "scan_time": self.scan_time,
            "reconstructed_at": self.reconstructed_at,
            "source": self.source,
            "projections_used": self.projections_used,
            "projections_planned": self.projections_planned,
            "complete": self.complete,
            "incomplete_reason": self.incomplete_reason,
        }

    @property
    def label(self) -> str:
        """The word a log line and a figure title use: "complete" or "PARTIAL (why)"."""
        if self.complete:
            return "complete"
        return (
            f"PARTIAL ({self.projections_used} of {self.projections_planned} projections; "
            f"{self.incomplete_reason})"
        )

    def title(self) -> str:
        """A figure's super-title: the scan and, for a partial one, that it is partial."""
        short = self.scan_uid if len(self.scan_uid) <= 40 else self.scan_uid[:37] + "..."
        return f"scan {short}: {self.label}"


def scan_dir_name(scan_uid: str) -> str:
    """A directory name for a scan uid: characters other than letters, digits, ``.``, ``_`` and
    ``-`` become ``_``, a leading dot too (no ``..``, no hidden files, no path separators), at
    most 128 characters."""
    name = _UNSAFE.sub("_", scan_uid)[:_MAX_NAME]
    if name.startswith("."):
        name = "_" + name[1:]
    return name or "_"


def new_scan_dir(out: Path, scan_uid: str) -> Path:
    """A fresh directory for one reconstruction of ``scan_uid`` under ``out``: ``out/<uid>``, or
    ``out/<uid>.2``, ``.3``... when that exists (a scan reconstructed again never overwrites
    the earlier result). Created."""
    out.mkdir(parents=True, exist_ok=True)
    base = scan_dir_name(scan_uid)
    n = 1
    while True:
        path = out / (base if n == 1 else f"{base}.{n}")
        try:
            path.mkdir()
        except FileExistsError:
            n += 1
            continue
        return path


def scan_dirs(out: Path, scan_uid: str) -> list[Path]:
    """The directories ``new_scan_dir`` made for ``scan_uid`` under ``out``, oldest first."""
    base = scan_dir_name(scan_uid)
    found: list[Path] = []
    n = 1
    while (path := out / (base if n == 1 else f"{base}.{n}")).is_dir():
        found.append(path)
        n += 1
    return found


def completed_dir(out: Path, scan_uid: str) -> Path | None:
    """A directory under ``out`` that holds a complete reconstruction of ``scan_uid`` (its
    ``recon.h5`` says so), or None."""
    for path in scan_dirs(out, scan_uid):
        try:
            with h5py.File(path / "recon.h5", "r") as f:
                if f.attrs.get("scan_uid") == scan_uid and bool(f.attrs.get("complete", False)):
                    return path
        except (OSError, KeyError):
            continue
    return None


def point_latest(out: Path, scan_dir: Path) -> Path:
    """Make ``out/latest`` a symbolic link to ``scan_dir`` (relative), replaced atomically."""
    link = out / "latest"
    tmp = out / f".latest.{scan_dir.name}.tmp"
    if tmp.is_symlink() or tmp.exists():
        tmp.unlink()
    tmp.symlink_to(scan_dir.name, target_is_directory=True)
    tmp.replace(link)
    return link
