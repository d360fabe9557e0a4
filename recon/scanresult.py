"""What a streaming reconstructor reports for one scan: exact counts and the outcome."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

from recon.pipeline import Projections, Volumes

#: Most lost frame numbers listed (``StreamStats.lost``); ``lost_count`` counts them all, so
#: that a scan-end claiming any number of frames sent costs memory for this many at most.
MAX_LOST_LISTED: Final = 1000


@dataclass
class StreamStats:
    """Exact counts of what the reconstructor received and used."""

    frames: int = 0  # distinct frame numbers applied (stream + file)
    from_file: int = 0  # of which read from the scan file (catch-up)
    duplicates: int = 0  # frame numbers seen before (dropped)
    superseded: int = 0  # frames of an older attempt (dropped or discarded)
    foreign: int = 0  # frames of another scan uid, or before any scan-start (dropped)
    bad_frames: int = 0  # valid messages that do not fit the scan (shape, step index; dropped)
    malformed: int = 0  # malformed messages (counted by the receiver, dropped)
    lost: list[int] = field(default_factory=list)  # the first lost frame numbers (at most
    # MAX_LOST_LISTED): below scan-end's frames_sent, never received
    lost_count: int = 0  # every lost frame number
    recovered: int = 0  # frames missing from the stream, read from the scan file at scan end
    frames_sent: int | None = None  # from scan-end
    projections: int = 0  # projection series completed (re-takes included)
    references: int = 0  # reference series completed
    incomplete_series: int = 0  # series fitted at scan end with missing steps
    unusable_series: int = 0  # series that could not be fitted (too few steps)
    live_updates: int = 0

    def summary(self) -> str:
        """One line per figure."""
        lost = f"{self.lost_count}" + (f" {self.lost[:20]}" if self.lost else "")
        return (
            f"frames {self.frames} (from file {self.from_file}, recovered {self.recovered}), "
            f"frames sent {self.frames_sent}, lost {lost}, duplicates {self.duplicates}, malformed "
            f"{self.malformed}, superseded {self.superseded}, foreign {self.foreign}, bad "
            f"{self.bad_frames}; series: projections {self.projections}, references "
            f"{self.references}, incomplete {self.incomplete_series}, unusable "
            f"{self.unusable_series}; live updates {self.live_updates}"
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
    #: "last_frame_to_volume_s": from the last frame's arrival to the written volume;
    #: "finalize_s": from the end of the scan (scan-end or its absence) to the written volume
    timings_s: dict[str, float] = field(default_factory=dict)

    def summary(self) -> str:
        """Human-readable report (what ``talbot recon`` prints)."""
        lines = [f"scan {self.scan_uid}: {self.stats.summary()}"]
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
