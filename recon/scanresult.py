"""What a streaming reconstructor reports for one scan: exact counts and the outcome."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, Literal

from recon.pipeline import Projections, Volumes
from recon.provenance import Provenance

#: A scan's outcome: every planned series in ("complete"), a volume from part of the scan
#: ("partial"), or no volume ("failed").
Outcome = Literal["complete", "partial", "failed"]

#: Most lost frame numbers listed (``StreamStats.lost``); ``lost_count`` counts them all, so
#: that a scan-end claiming any number of frames sent costs memory for this many at most.
MAX_LOST_LISTED: Final = 1000


@dataclass
class StreamStats:
    """Exact counts of what the reconstructor received and used."""

    frames: int = 0  # distinct frame numbers applied (stream + file; not refused ones)
    from_file: int = 0  # of which read from the scan file (catch-up)
    duplicates: int = 0  # frame numbers seen before (dropped)
    superseded: int = 0  # frames of an older attempt (dropped or discarded)
    foreign: int = 0  # frames of another scan uid, or before any scan-start (dropped)
    bad_frames: int = 0  # valid messages that do not fit the scan (shape, step index; dropped)
    malformed: int = 0  # malformed messages (counted by the receiver, dropped)
    lost: list[int] = field(default_factory=list)  # the first lost frame numbers (at most
    # MAX_LOST_LISTED): below scan-end's frames_sent, never received
    lost_count: int = 0  # every lost frame number
    recovered: int = 0  # frames the stream skipped or lost, read from the raw scan file
    frames_sent: int | None = None  # from scan-end
    projections: int = 0  # projection series completed (re-takes included)
    references: int = 0  # reference series completed
    incomplete_series: int = 0  # series fitted at scan end with missing steps
    unusable_series: int = 0  # series that could not be fitted (too few steps)
    live_updates: int = 0
    refused_ends: int = 0  # scan-ends refused (a frames_sent beyond what the plan allows)

    def summary(self) -> str:
        """One line per figure."""
        lost = f"{self.lost_count}" + (f" {self.lost[:20]}" if self.lost else "")
        return (
            f"frames {self.frames} (from file {self.from_file}, recovered {self.recovered}), "
            f"frames sent {'? (no scan-end)' if self.frames_sent is None else self.frames_sent}, "
            f"lost {lost}, duplicates {self.duplicates}, malformed "
            f"{self.malformed}, superseded {self.superseded}, foreign {self.foreign}, bad "
            f"{self.bad_frames}; series: projections {self.projections}, references "
            f"{self.references}, incomplete {self.incomplete_series}, unusable "
            f"{self.unusable_series}; live updates {self.live_updates}"
            + (f"; refused scan-ends {self.refused_ends}" if self.refused_ends else "")
        )


@dataclass
class ServiceStats:
    """What a reconstructor saw over all its scans and between them: every message it dropped
    is counted here at once, whatever state it was in."""

    malformed: int = 0  # malformed messages (the offending field is logged)
    foreign: int = 0  # frames and scan-ends of no scan in progress
    refused: int = 0  # valid messages that do not fit their scan, and scan-starts refused
    passed_over: int = 0  # runs that are not phase-stepping CT
    outcomes: Counter[str] = field(default_factory=Counter)  # scans by ``StreamResult.outcome``

    def summary(self) -> str:
        """One line."""
        scans = ", ".join(f"{k} {self.outcomes[k]}" for k in ("complete", "partial", "failed"))
        return (
            f"scans: {scans}; passed over {self.passed_over}; dropped: malformed "
            f"{self.malformed}, foreign {self.foreign}, refused {self.refused}"
        )


@dataclass
class StreamResult:
    """Outcome of one scan."""

    scan_uid: str
    stats: StreamStats
    projections: Projections | None = None
    volumes: Volumes | None = None
    files: list[str] = field(default_factory=list)
    error: str = ""
    #: what the volume is of, and whether the scan was complete (None: no volume)
    provenance: Provenance | None = None
    #: the scan's own output directory (``recon.provenance.new_scan_dir``; None: no output)
    directory: Path | None = None
    #: "last_frame_to_volume_s": from the last frame's arrival to the written volume;
    #: "finalize_s": from the end of the scan (scan-end or its absence) to the written volume
    timings_s: dict[str, float] = field(default_factory=dict)

    @property
    def outcome(self) -> Outcome:
        """complete, partial (a volume from part of the scan) or failed (no volume)."""
        if self.volumes is None or self.provenance is None:
            return "failed"
        return "complete" if self.provenance.complete else "partial"

    def status_line(self) -> str:
        """One line: the scan, its outcome and where it went."""
        if self.outcome == "failed":
            return f"scan {self.scan_uid}: FAILED: {self.error or 'no volume'}"
        assert self.provenance is not None
        where = f" in {self.directory}" if self.directory is not None else ""
        return f"scan {self.scan_uid}: {self.provenance.label}{where}"

    def summary(self) -> str:
        """Human-readable report (what ``talbot recon`` prints)."""
        lines = [self.status_line(), f"  {self.stats.summary()}"]
        if self.volumes is not None:
            lines.append(
                f"  volume {self.volumes.delta.shape} (z, y, x), voxel "
                f"{self.volumes.voxel_size_m * 1e6:.3g} um, centre "
                f"{self.volumes.center_offset_px:+.2f} px"
            )
        if self.timings_s:
            lines.append(
                "  timings: " + ", ".join(f"{k} {v:.2f} s" for k, v in self.timings_s.items())
            )
        if self.files:
            lines.append("  wrote: " + ", ".join(self.files))
        if self.error:
            lines.append(f"  error: {self.error}")
        return "\n".join(lines)
