"""The state of one scan in a streaming reconstructor, made fresh at its scan-start.

What the scan is (its scan-start, plan, instrument and the detector rows worked on), which frame
numbers came in, the reconstruction made early (when the last planned series came in, before
scan-end) and the parts that hold the scan's data: series assembly, fits and live view.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from contracts.frames import ImageKey
from contracts.instrument import Instrument
from contracts.messages import FrameHeader, ScanStart
from contracts.scanplan import ScanPlan
from recon.fitstore import FitStore
from recon.liveview import LiveView
from recon.scanresult import StreamResult, StreamStats
from recon.series import SeriesAssembly


@dataclass(frozen=True)
class Early:
    """A reconstruction made before scan-end, and the fit store's version it was made from."""

    version: int
    result: StreamResult
    done_s: float  # ``time.perf_counter`` when it was done


class ScanState:
    """One scan: ``start`` (with its plan), the slab ``rows`` = (r0, r1) of detector rows worked
    on, the frames seen and the parts. Counts frames into ``stats``."""

    def __init__(
        self,
        start: ScanStart,
        plan: ScanPlan,
        rows: tuple[int, int],
        stats: StreamStats,
        *,
        series: SeriesAssembly,
        fits: FitStore,
        view: LiveView,
    ) -> None:
        self.start = start
        self.plan = plan
        self.rows = rows
        self.cols = int(start.shape[1])
        self.stats = stats
        self.series = series
        self.fits = fits
        self.view = view
        #: frame numbers applied (from the stream or the scan file)
        self.seen: set[int] = set()
        #: ``time.perf_counter`` at the arrival of the last frame applied (None: none yet)
        self.t_last_frame: float | None = None
        self.early: Early | None = None
        #: the scan's output directory, made when its first volume is written
        self.directory: Path | None = None
        #: the raw scan file named by the scan-start (or ``--file``) where it can be read
        self.raw_file: Path | None = None
        #: when the scan started here (ISO 8601, UTC)
        self.started_at = datetime.now(UTC).isoformat()
        #: how the final volume's rotation centre was found, when not from the data
        self.centre_note = ""
        #: the highest frame number applied (-1: none yet)
        self.highest = -1
        #: why the scan ended without its scan-end or its file's end marker ("": it did not)
        self.cut_short = ""
        #: a slab worker's whole frames of the calibration series, by (attempt, step index)
        self.calibration_whole: dict[tuple[int, int], NDArray[np.generic]] = {}
        self._expected_refs = {i for kind, i in plan.order() if kind == "reference"}

    @property
    def instrument(self) -> Instrument:
        """The instrument of the scan."""
        return self.start.instrument

    @property
    def shape(self) -> tuple[int, int]:
        """(rows, columns) of the slab worked on."""
        return self.rows[1] - self.rows[0], self.cols

    def admit(
        self, header: FrameHeader, data: NDArray[np.generic], from_file: bool, t_arrival: float
    ) -> NDArray[np.generic] | None:
        """The slab's rows (rows, columns) of a frame of this scan, a view of ``data``; None for
        a duplicate frame number (counted) or a frame without the slab's rows or columns (the
        caller counts it). The
        frame takes its number only when :meth:`accept` says so (a frame refused later, e.g.
        for its step index, leaves the number to the real frame)."""
        if header.frame_number in self.seen:
            self.stats.duplicates += 1
            return None
        return self._crop(header, data)

    def accept(self, header: FrameHeader, from_file: bool, t_arrival: float) -> None:
        """The frame is the scan's: its number is taken, it is counted."""
        n = header.frame_number
        self.highest = max(self.highest, n)
        self.seen.add(n)
        self.t_last_frame = t_arrival  # the last frame taken (not duplicates, not foreign)
        self.stats.frames += 1
        if from_file:
            self.stats.from_file += 1

    def keep_whole(self, header: FrameHeader, data: NDArray[np.generic]) -> None:
        """A slab worker keeps a whole frame (``data`` of the full detector) of the calibration
        series (reference series 0 of a plan with ``calibration_steps``): the curve's shape is
        measured on the whole detector (``recon.curve``), as one worker measures it."""
        whole = header.row_offset == 0 and data.shape[0] == int(self.start.shape[0])
        is_slab = self.rows != (0, int(self.start.shape[0]))
        if (
            whole
            and is_slab
            and self.plan.calibration_steps
            and header.image_key == ImageKey.FLAT
            and header.series_index == 0
        ):
            self.calibration_whole[(header.attempt, header.step_index)] = data

    def whole_calibration(self, attempt: int) -> dict[int, NDArray[np.generic]]:
        """The whole calibration frames of one attempt, by step index."""
        return {k: v for (a, k), v in self.calibration_whole.items() if a == attempt}

    def _crop(self, header: FrameHeader, data: NDArray[np.generic]) -> NDArray[np.generic] | None:
        rows, cols = data.shape
        if cols != self.cols:
            return None
        a, b = self.rows[0] - header.row_offset, self.rows[1] - header.row_offset
        if a < 0 or b > rows:
            return None
        return data[a:b]

    def all_in(self) -> bool:
        """Every planned series is in (none open, every projection and planned reference)."""
        if self.series.open or not self._expected_refs:
            return False
        if len(self.fits.projs) < self.plan.angles:
            return False
        return self._expected_refs <= set(self.fits.refs)

    def missing(self) -> list[str]:
        """What the fits lack for a complete scan, in words (empty: every planned projection
        and reference series fitted from all of its steps)."""
        plan, fits = self.plan, self.fits
        gaps: list[str] = []
        if len(fits.projs) < plan.angles:
            gaps.append(f"{plan.angles - len(fits.projs)} of {plan.angles} projections missing")
        refs = self._expected_refs - set(fits.refs)
        if refs:
            gaps.append(f"{len(refs)} of {len(self._expected_refs)} reference series missing")
        short = sum(1 for r in fits.projs.values() if r.frames < plan.steps) + sum(
            1 for i, r in fits.refs.items() if r.frames < plan.series_steps(("reference", i))
        )
        if short:
            gaps.append(f"{short} series fitted with missing steps")
        return gaps

    def early_result(self) -> Early | None:
        """The early reconstruction, if nothing changed since it was made."""
        early = self.early
        if early is not None and early.version == self.fits.version:
            return early
        return None
