"""The streaming reconstructor: frames in (stream or SWMR file), live slices and volumes out.

What happens to a frame (docs/stream-protocol.md; the retrieval and backprojection are those of
docs/reconstruction.md), each step the job of one part, made fresh for every scan:

1. identity (``recon.scanstate``): frames are keyed by (scan uid, image_key, angle or
   reference-series index, attempt); a frame number already seen (from the stream or from the
   scan file) is a duplicate and dropped;
2. assembly (``recon.series``): a frame of an older attempt than one already seen is superseded
   and dropped; a newer attempt discards the open older one (the latest attempt of a series wins).
   Frames of an open series are kept per step; darks are summed (float64) into the dark of their
   attempt. Only open series hold raw frames, and at most ``max_open_series`` of them (the oldest
   is closed early when more open);
3. fits (``recon.fitstore``): a complete series is fitted (least squares on the measured G2
   positions, darks subtracted, normalised by the ring current) exactly as ``recon.pipeline``
   does; only the fit (a0, c1) is kept per projection and per reference series, in buffers the
   next scan reuses (``recon.fitpool``);
4. live view (``recon.liveview``): the chosen detector rows of each new projection are retrieved
   against the reference interpolated in time between the series received so far (the latest one
   when the later bracketing series has not arrived yet), filtered and backprojected into live
   slices; a re-take replaces its earlier contribution; updates go out on the viewer PUB socket;
5. at scan end: every projection is re-retrieved against the final time-interpolated reference,
   fits taken with a dark that changed later are corrected (the fit is linear in the dark),
   the volume is reconstructed with the fast path (``reconstruct_volumes``, gridding) and
   written (``recon.output``). Lost frame numbers (below ``frames_sent`` of ``scan-end`` and
   never received), duplicates and malformed messages are counted exactly.

Arrays: frames (rows, columns); fits (rows, columns); live slices (channels, rows, y, x).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from contracts.frames import ImageKey
from contracts.messages import Frame, FrameHeader, ScanEnd, ScanStart, frame_header
from contracts.scanfile import (
    DATA_PATH,
    open_scan_file,
    read_end,
    read_frame_table,
    read_header,
    readable_frames,
)
from contracts.scanplan import ScanPlan
from contracts.sockets import FrameReceiver, LivePublisher
from recon.center import NoCentre
from recon.fbp import Method, prepare_gridding
from recon.fitmode import FIT_MODES, FitMode
from recon.fitpool import FitPool, written
from recon.fitstore import FitStore, Fitted
from recon.liveview import CHANNELS, LiveView
from recon.output import load_plotting, write_recon
from recon.pipeline import Projections, Volumes, reconstruct_volumes
from recon.provenance import Provenance, completed_dir, new_scan_dir, point_latest, scan_dirs
from recon.scanresult import MAX_LOST_LISTED, ServiceStats, StreamResult, StreamStats
from recon.scanstate import Early, ScanState
from recon.series import Series, SeriesAssembly, SeriesKey

__all__ = ["CHANNELS", "StreamResult", "StreamStats", "StreamingReconstructor"]

log = logging.getLogger(__name__)

F32 = NDArray[np.float32]

#: How often a quiet stream's scan file is asked whether its writer closed it [s].
FILE_END_CHECK_S = 0.5
#: A scan-end may claim at most this many times the frames its plan has (re-takes included);
#: a frame number must be below it. A larger claim is refused: no number a message merely
#: claims makes the reconstructor work or allocate in proportion to it.
CLAIM_FACTOR = 4
#: Refusals logged per kind and scan (every one is counted).
LOGGED_PER_KIND = 5
#: Scan uids remembered for quiet counting (frames of a scan passed over or just finished).
REMEMBERED_UIDS = 16


class StreamingReconstructor:
    """Consumes one scan's messages (``start``, ``add_frame``, ``end``) and reconstructs it.

    ``rows`` = (r0, r1) restricts the work to a slab of detector rows (a slab worker; frames may be
    full frames or slabs with ``row_offset``). ``live_rows``: absolute detector rows shown live
    (default: the middle row; empty: no live view). ``center_offset_px``: rotation axis for the
    final volume (None: estimated from the data as the offline pipeline does; slab workers need an
    explicit value so that all slabs share it). ``live_center_offset_px`` (None: the instrument's
    calibrated axis). ``live_max_px``: live slices of a wider detector are binned b x b with the
    smallest b that brings them to at most this many pixels across (the voxel ``live_voxel_m`` is b
    pixels). ``fit``: the stepping-curve fit (``recon.curve``; "auto": shape-aware when the
    scan's calibration series says the curve needs it).
    """

    def __init__(
        self,
        *,
        out: Path | None = None,
        rows: tuple[int, int] | None = None,
        live_rows: tuple[int, ...] | None = None,
        live: LivePublisher | None = None,
        live_interval_s: float = 0.2,
        center_offset_px: float | None = None,
        live_center_offset_px: float | None = None,
        method: Method = "gridding",
        max_open_series: int = 8,
        write_projections: bool = True,
        live_max_px: int = 1024,
        fit: FitMode = "auto",
    ) -> None:
        if fit not in FIT_MODES:
            raise ValueError(f"fit must be one of {', '.join(FIT_MODES)}, got {fit!r}")
        if rows is not None and not (0 <= rows[0] < rows[1]):
            raise ValueError(f"rows must be (r0, r1) with 0 <= r0 < r1, got {rows!r}")
        if max_open_series < 1:
            raise ValueError(f"max_open_series must be >= 1, got {max_open_series!r}")
        if live_interval_s < 0:
            raise ValueError(f"live_interval_s must be >= 0 s, got {live_interval_s!r}")
        if live_max_px < 16:
            raise ValueError(f"live_max_px must be >= 16, got {live_max_px!r}")
        self.out = out
        self.slab = rows
        self.live_rows_requested = live_rows
        self.live = live
        self.live_interval_s = live_interval_s
        self.center_offset_px = center_offset_px
        self.live_center_offset_px = live_center_offset_px
        self.method: Method = method
        self.max_open_series = max_open_series
        self.write_projections = write_projections
        self.live_max_px = live_max_px
        self.fit_mode: FitMode = fit
        #: The scan file (``run(catch_up=...)``): frames the stream lost are read from it at end.
        self.scan_file: Path | None = None
        #: Counts of the scan in progress (between scans: of the messages that fit none).
        self.stats = StreamStats()
        #: Counts over every scan and between scans (``run``): what a service saw.
        self.totals = ServiceStats()
        self._logged: dict[str, int] = {}  # refusals logged per kind, this scan
        self._quiet: list[str] = []  # uids whose stray messages are counted, not logged
        #: the scan in progress when ``run`` was stopped ("": none was)
        self.stopped_scan = ""
        self._pool = FitPool()
        # a finished scan's projections and volumes, given back by the caller (``recycle``)
        self._spare_projections: Projections | None = None
        self._spare_volumes: Volumes | None = None
        self._planning: threading.Thread | None = None
        self._scan: ScanState | None = None  # the scan in progress
        # the latest scan started: its fits and live view stay until the next scan starts
        self._last: ScanState | None = None

    # --------------------------------------------------------------------------------------------
    # what callers and tests read

    @property
    def scan(self) -> ScanStart | None:
        """The scan-start of the scan in progress (None between scans). Assigning None abandons
        the scan in progress without a result (``end`` makes one)."""
        return None if self._scan is None else self._scan.start

    @scan.setter
    def scan(self, value: None) -> None:
        if value is not None:
            raise ValueError("a scan begins with start(), not by assigning scan")
        self._scan = None

    @property
    def scan_uid(self) -> str | None:
        """The uid of the scan in progress."""
        return None if self._scan is None else self._scan.start.scan_uid

    @property
    def live_rows(self) -> tuple[int, ...]:
        """Absolute detector rows of the live slices of the latest scan (none before one)."""
        return () if self._last is None else self._last.view.rows

    @property
    def live_slices(self) -> F32:
        """The latest scan's live slices (channels ``CHANNELS``, rows, y, x): delta [1], mu and
        dark-field [1/m]; (3, 0, 0, 0) before a scan."""
        if self._last is None:
            return np.zeros((len(CHANNELS), 0, 0, 0), np.float32)
        return self._last.view.slices

    @property
    def live_voxel_m(self) -> float:
        """The live slices' voxel [m] (0 before a scan)."""
        return 0.0 if self._last is None else self._last.view.voxel_m

    @property
    def live_latency_s(self) -> list[float]:
        """Seconds from the arrival of a projection's last frame to its live update, per update
        of the latest scan."""
        return [] if self._last is None else self._last.view.latency_s

    @property
    def _open(self) -> dict[SeriesKey, Series]:
        """The open series (tests)."""
        return {} if self._last is None else self._last.series.open

    @property
    def _refs(self) -> dict[int, Fitted]:
        """The latest scan's reference fits by series index (tests)."""
        return {} if self._last is None else self._last.fits.refs

    @property
    def _projs(self) -> dict[int, Fitted]:
        """The latest scan's projection fits by angle index (tests)."""
        return {} if self._last is None else self._last.fits.projs

    @property
    def _seen(self) -> set[int]:
        """The frame numbers applied in the scan in progress (benchmarks)."""
        return set() if self._scan is None else self._scan.seen

    # --------------------------------------------------------------------------------------------
    # scan lifecycle

    def start(self, start: ScanStart) -> None:
        """Begin a scan (resets all state); ValueError for a scan-start without a scan plan
        (not a phase-stepping CT) or a detector without the slab's rows."""
        plan = start.plan
        if plan is None:
            raise ValueError(f"scan {start.scan_uid} is not a phase-stepping CT (no scan plan)")
        full_rows, cols = start.shape
        rows = self._rows_of(full_rows)
        if self.out is not None:
            threading.Thread(target=load_plotting, name="load-plotting", daemon=True).start()
        if self.method == "gridding":  # FFTW plans the final volume's FFTs while the scan runs
            self._planning = threading.Thread(
                target=prepare_gridding,
                args=(cols, rows[1] - rows[0]),
                name="plan-gridding",
                daemon=True,
            )
            self._planning.start()
        # the previous scan's fits are free now: this scan's are written into them
        if self._last is not None:
            self._last.fits.release()
        shape = (rows[1] - rows[0], cols)
        self._pool.use_shape(shape)
        self.stats = stats = StreamStats()
        geometry = start.instrument.geometry
        self._logged = {}
        self._scan = self._last = ScanState(
            start,
            plan,
            rows,
            stats,
            series=SeriesAssembly(plan, self.max_open_series, stats),
            fits=FitStore(
                self._pool,
                shape,
                geometry.g2_pitch_m,
                stats,
                steps=plan.steps,
                fit_mode=self.fit_mode,
            ),
            view=self._live_view(start, plan, rows, stats),
        )
        self._scan.raw_file = self._readable_raw_file(start)

    def _readable_raw_file(self, start: ScanStart) -> Path | None:
        """The scan file of ``start`` that this reconstructor can read: the one the scan-start
        names, else the one given (``run(catch_up=...)``), when it is a regular file whose
        header has the scan's uid. None (said once in the log) when neither is."""
        named = [Path(p) for p in (start.raw_file,) if p is not None]
        given = [self.scan_file] if self.scan_file is not None else []
        why = ""
        for path in [*named, *given]:
            if not path.is_file():
                why = f"{path} is not a file here"
                continue
            try:
                with open_scan_file(path) as f:
                    uid = read_header(f).scan_uid
            except (OSError, ValueError) as exc:
                why = f"{path}: {exc}"
                continue
            if uid == start.scan_uid:
                return path
            why = f"{path} holds scan {uid}"
        if why:
            log.warning(
                "scan %s: no readable raw file (%s): frames the stream loses are lost",
                start.scan_uid,
                why,
            )
        return None

    def _live_view(
        self, start: ScanStart, plan: ScanPlan, rows: tuple[int, int], stats: StreamStats
    ) -> LiveView:
        full_rows, cols = start.shape
        if self.live_center_offset_px is None:
            offset = start.instrument.rotation_axis_offset_px
        else:
            offset = self.live_center_offset_px
        wanted = (full_rows // 2,) if self.live_rows_requested is None else self.live_rows_requested
        return LiveView(
            scan_uid=start.scan_uid,
            geometry=start.instrument.geometry,
            angles=plan.angles,
            cols=cols,
            rows=rows,
            wanted=wanted,
            max_px=self.live_max_px,
            axis_offset_px=offset,
            publisher=self.live,
            interval_s=self.live_interval_s,
            stats=stats,
        )

    def _rows_of(self, full_rows: int) -> tuple[int, int]:
        """The detector rows (r0, r1) this reconstructor works on, for a detector of that many."""
        r0, r1 = self.slab if self.slab is not None else (0, full_rows)
        if r1 > full_rows:
            raise ValueError(f"rows {self.slab} exceed the detector's {full_rows} rows")
        return r0, r1

    def wait_prepared(self, timeout_s: float | None = None) -> bool:
        """Wait until the final volume's FFT planning, started at scan start, is done (it takes
        ~3 s once per process at 1024 px; a scan lasts longer). True when it is done."""
        planning = self._planning
        if planning is not None:
            planning.join(timeout_s)
            return not planning.is_alive()
        return True

    def add_frame(
        self, header: FrameHeader, data: NDArray[np.generic], from_file: bool = False
    ) -> None:
        """Apply one frame (rows, columns) of the current scan; never raises on bad input."""
        t_arrival = time.perf_counter()
        scan = self._scan
        if scan is None or header.scan_uid != scan.start.scan_uid:
            self._stray("frame", header.scan_uid)
            return
        if header.frame_number >= self._claim_limit(scan):
            self._refuse(
                "frame_number",
                f"frame_number {header.frame_number} is beyond {CLAIM_FACTOR} x the "
                f"{scan.plan.frames_planned()} frames the plan has",
            )
            return
        slab = scan.admit(header, data, from_file, t_arrival)
        if slab is None:
            if header.frame_number not in scan.seen:
                self._refuse("shape", f"frame {header.frame_number} has no rows or columns "
                             f"of this scan's {scan.shape} (shape {list(data.shape)}, row_offset "
                             f"{header.row_offset})")  # fmt: skip
            return
        series = scan.series
        refused = series.refusal(header)
        if refused:
            self._refuse("step", f"frame {header.frame_number}: {refused}")
            return  # not the scan's frame: its number stays free for the real one
        if not from_file and header.frame_number > scan.highest + 1 and scan.raw_file:
            # the stream skipped frames (a late start, a restart, a frame the detector could
            # not publish): they are in the raw file, and go in first, in their order
            self._fill_from_file(scan, below=header.frame_number)
        key = series.identify(header)
        scan.accept(header, from_file, t_arrival)  # (a superseded attempt's frame too)
        if key is None:
            return
        scan.keep_whole(header, data)
        if key[0] == ImageKey.DARK:
            scan.fits.set_dark(series.add_dark(header.attempt, slab))
            return
        if key not in series.open:
            while series.full:  # the oldest open series is closed early
                self._close(scan, series.pop_oldest(), None)
        done = series.put(key, header, slab)
        if done is not None:
            self._close(scan, done, t_arrival)

    @staticmethod
    def _claim_limit(scan: ScanState) -> int:
        """Frame numbers and ``frames_sent`` of a scan are below this (``CLAIM_FACTOR``)."""
        return CLAIM_FACTOR * max(1, scan.plan.frames_planned())

    def _refuse(self, kind: str, text: str, *, frame: bool = True) -> None:
        """A valid message of the scan in progress that does not fit it: counted (a frame in
        the scan's ``bad_frames``, a scan-end in ``refused_ends``; every refusal in the
        totals) and logged, ``LOGGED_PER_KIND`` times per kind and scan."""
        if frame:
            self.stats.bad_frames += 1
        else:
            self.stats.refused_ends += 1
        self.totals.refused += 1
        n = self._logged.get(kind, 0) + 1
        self._logged[kind] = n
        if n <= LOGGED_PER_KIND:
            uid = self.scan_uid or "?"
            more = " (further ones counted, not logged)" if n == LOGGED_PER_KIND else ""
            log.warning("scan %s: refused: %s%s", uid, text, more)

    def _stray(self, what: str, scan_uid: str) -> None:
        """A frame or scan-end of no scan in progress: counted; logged once per scan uid,
        unless the uid is one passed over or just finished."""
        self.stats.foreign += 1
        self.totals.foreign += 1
        if scan_uid in self._quiet:
            return
        self._remember(scan_uid)
        now = f" (scan {self.scan_uid} is in progress)" if self.scan_uid else ""
        log.warning(
            "%s of scan %s, which has no valid scan-start here%s: dropped (counted as foreign; "
            "further ones of that scan are not logged)",
            what,
            scan_uid,
            now,
        )

    def _remember(self, scan_uid: str) -> None:
        if scan_uid not in self._quiet:
            self._quiet.append(scan_uid)
            del self._quiet[:-REMEMBERED_UIDS]

    def _close(self, scan: ScanState, s: Series, t_arrival: float | None) -> None:
        """Fit a series no longer open, keep the fit, update the live view."""
        fits = scan.fits
        whole = None
        if s.key[:2] == (ImageKey.FLAT, 0) and scan.calibration_whole:
            whole = scan.whole_calibration(s.key[2])
            scan.calibration_whole.clear()  # the shape is measured: the whole frames go
        rec = fits.fit(s, whole)
        if rec is None or not fits.keep(s.key[0], rec):
            return
        if s.key[0] == ImageKey.FLAT:
            for angle in scan.view.take_pending():
                self._live_update(scan, angle, None)
        else:
            scan.view.withdraw(rec.index)  # a re-take replaces its earlier contribution
            self._live_update(scan, rec.index, t_arrival)
        self._finish_early(scan)

    def _live_update(self, scan: ScanState, angle: int, t_arrival: float | None) -> None:
        view, fits = scan.view, scan.fits
        if not view.rows:
            return
        if not fits.refs:
            view.pending.append(angle)
            return
        rec = fits.projs[angle]
        rows = view.local_rows
        sample = fits.corrected(rec, rows)
        view.add(angle, rec.rotation_deg, sample, fits.reference(rows, rec.t_mid), t_arrival)
        view.publish(len(fits.projs))

    def _finish_early(self, scan: ScanState) -> None:
        """Reconstruct as soon as every planned series is in, before ``scan-end``: the beamline
        still restores the sample and closes the run after the last frame (~1 s). ``end``
        reuses the result unless something changed since (a re-take, a late frame)."""
        if scan.early is not None or not scan.all_in():
            return
        version = scan.fits.version
        result = self._reconstruct(scan)
        scan.early = Early(version, result, time.perf_counter())

    # --------------------------------------------------------------------------------------------
    # end of scan

    def end(self, end: ScanEnd | None, cut_short: str = "") -> StreamResult:
        """Close the scan: count losses, re-finalise every projection, reconstruct, write (or keep
        the reconstruction made when the last planned series came in, if nothing changed).
        ``end`` None: the scan-end did not come, and ``cut_short`` says why (the result is
        partial when the fits lack any planned series)."""
        if self._scan is None:
            raise RuntimeError("end() without a scan in progress")
        planned = self._scan.plan.frames_planned()
        self._scan.cut_short = (
            cut_short
            if end is None
            else f"its scan-end came after {end.frames_sent} of {planned} planned frames"
        )  # (said only when the scan lacks something)
        if end is None:
            self._fill_from_file(self._scan)  # whatever the file holds that the stream did not
        t_end = time.perf_counter()
        if end is not None:
            self._count_lost(end.frames_sent)
        scan = self._scan  # (a scan file of another uid would have started that scan)
        assert scan is not None
        for s in scan.series.by_arrival():  # closed while still open: no early result meanwhile
            self._close(scan, s, None)
        scan.series.open.clear()
        scan.view.publish(len(scan.fits.projs), force=True)
        early = scan.early_result()
        if early is not None:
            result, t_done = early.result, early.done_s
        else:
            result = self._reconstruct(scan)
            t_done = time.perf_counter()
        result.stats = self.stats
        t_last = scan.t_last_frame if scan.t_last_frame is not None else t_end
        result.timings_s = {
            "last_frame_to_volume_s": max(0.0, t_done - t_last),
            "finalize_s": time.perf_counter() - t_end,
        }
        self._scan = None
        self.stats = StreamStats()
        self._remember(result.scan_uid)  # its late messages are counted, not logged
        self.totals.outcomes[result.outcome] += 1
        return result

    def _count_lost(self, frames_sent: int) -> None:
        """Frame numbers below ``frames_sent`` never received; those the scan file holds are
        read from it (recovered). Counted from the frames seen, and at most
        ``MAX_LOST_LISTED`` of them listed: a claimed count allocates nothing in proportion."""
        assert self._scan is not None
        self.stats.frames_sent = frames_sent
        self._tally_lost(frames_sent)
        raw = self._scan.raw_file
        if self.stats.lost_count and raw is not None and raw.exists():
            self._fill_from_file(self._scan)
            self._tally_lost(frames_sent)

    def _tally_lost(self, frames_sent: int) -> None:
        assert self._scan is not None
        seen = self._scan.seen
        self.stats.lost_count = frames_sent - sum(1 for n in seen if n < frames_sent)
        listed: list[int] = []
        n = 0
        while len(listed) < min(MAX_LOST_LISTED, self.stats.lost_count) and n < frames_sent:
            if n not in seen:
                listed.append(n)
            n += 1
        self.stats.lost = listed

    def _reconstruct(self, scan: ScanState) -> StreamResult:
        """Projections, volumes and (with ``out``) the files, from the fits so far."""
        result = StreamResult(scan.start.scan_uid, self.stats)
        try:
            result.projections = self._projections(scan.fits)
            spare, self._spare_volumes = self._spare_volumes, None
            rows, cols = scan.shape
            if spare is not None and spare.delta.shape != (rows, cols, cols):
                spare = None
            try:
                result.volumes = reconstruct_volumes(
                    result.projections,
                    scan.instrument.geometry,
                    center_offset_px=self.center_offset_px,
                    method=self.method,
                    out=spare,
                )
            except NoCentre:
                if not scan.missing():
                    raise
                # a scan cut short may lack the angles that find the axis: the calibrated one
                result.volumes = reconstruct_volumes(
                    result.projections,
                    scan.instrument.geometry,
                    center_offset_px=scan.instrument.rotation_axis_offset_px,
                    method=self.method,
                    out=spare,
                )
                scan.centre_note = (
                    "rotation centre from the instrument's calibration (too few angles to find it)"
                )
        except ValueError as exc:
            result.error = str(exc)
        if result.volumes is not None:
            result.provenance = self._provenance(scan)
        if self.out is not None:
            if scan.directory is None:  # one directory per scan, made once
                scan.directory = new_scan_dir(self.out, scan.start.scan_uid)
            result.directory = scan.directory
            if result.volumes is not None:
                projections = result.projections if self.write_projections else None
                result.files = write_recon(
                    scan.directory, result.volumes, projections, result.provenance
                )
                point_latest(self.out, scan.directory)
        return result

    def _source(self, scan: ScanState) -> str:
        """Where the frames came from: the stream, the raw file, or both."""
        from_file, frames = self.stats.from_file, self.stats.frames
        if scan.raw_file is None or from_file == 0:
            return "stream"
        return str(scan.raw_file) if from_file == frames else f"stream and {scan.raw_file}"

    def _provenance(self, scan: ScanState) -> Provenance:
        """What a volume made now from ``scan`` is of: complete when the fits hold every
        planned series from all of its steps."""
        missing = scan.missing()
        complete = not missing
        gaps = [*missing, *(t for t in (scan.cut_short, scan.centre_note) if t)]
        return Provenance(
            scan_uid=scan.start.scan_uid,
            plan=scan.plan,
            projections_used=len(scan.fits.projs),
            projections_planned=scan.plan.angles,
            complete=complete,
            incomplete_reason="" if complete else "; ".join(gaps),
            source=self._source(scan),
            scan_time=scan.started_at,
        )

    def projections(self) -> Projections:
        """T, dphi, D of every projection so far against the final interpolated reference."""
        if self._last is None:
            raise ValueError("no scan has started")
        return self._projections(self._last.fits)

    def _projections(self, fits: FitStore) -> Projections:
        projections = fits.projections(self._spare_projections)  # ValueError: spare kept
        self._spare_projections = None
        return projections

    def reserve(
        self, shape: tuple[int, int], angles: int, *, references: int = 4, volumes: bool = True
    ) -> float:
        """Make and write now the memory a scan of ``angles`` projections of a (rows, columns)
        detector will use: the fits, the projections and (``volumes``) the final volumes (12 B
        per pixel per series, 12 B per pixel per projection, 12 B per voxel). A service does
        this once at its start, so that its first scan does not write memory the process has
        never touched (slow where a VM backs memory lazily: docs/benchmarks.md). Returns the
        bytes reserved. Scans of another shape simply do not use it."""
        rows, cols = (int(shape[0]), int(shape[1]))
        if rows < 1 or cols < 2 or angles < 1 or references < 0:
            raise ValueError(
                f"reserve needs shape (rows >= 1, columns >= 2), angles >= 1 and references "
                f">= 0, got {shape!r}, {angles!r}, {references!r}"
            )
        r0, r1 = self._rows_of(rows)
        slab = (r1 - r0, cols)
        self._pool.use_shape(slab)
        self._pool.reserve(angles + references)
        t, p, d = (written((angles, *slab)) for _ in range(3))
        self._spare_projections = Projections(t, p, d, np.zeros(angles))
        total = (angles + references) * 12 * slab[0] * cols + 12 * angles * slab[0] * cols
        if volumes:
            delta, mu, eps = (written((slab[0], cols, cols)) for _ in range(3))
            self._spare_volumes = Volumes(delta, mu, eps, 0.0, 0.0)  # arrays only: written into
            total += 12 * slab[0] * cols * cols
        return float(total)

    def recycle(self, result: StreamResult) -> None:
        """Take back a result's projections and volumes, which the caller is done with (files
        written, figures reported): the next scan of the same size writes into them instead of
        into new memory (13 GB of volumes at 1024^3, which a fresh process writes at a fraction
        of the speed of memory it has used before: docs/benchmarks.md). ``result`` keeps its
        stats, files and timings; its ``projections`` and ``volumes`` become None."""
        if result.volumes is not None and result.volumes.delta.base is None:
            self._spare_volumes = result.volumes
        if result.projections is not None and result.projections.dphi.base is None:
            self._spare_projections = result.projections
        result.volumes = None
        result.projections = None

    # --------------------------------------------------------------------------------------------
    # sources

    def catch_up(self, path: Path, below: int | None = None) -> int:
        """Read every frame already in the (SWMR) scan file (``below``: those of lower frame
        numbers only); starts the scan from its header if none is in progress. Returns the
        number of rows looked at."""
        with open_scan_file(path) as f:
            header = read_header(f)
            if self.scan_uid != header.scan_uid:
                self.start(
                    ScanStart(
                        scan_uid=header.scan_uid,
                        instrument=header.instrument,
                        plan=header.plan,
                        dtype=header.dtype,  # type: ignore[arg-type]
                        shape=header.shape,
                        raw_file=str(Path(path).resolve()),
                    )
                )
            table = read_frame_table(f)
            data = f[DATA_PATH]
            n = readable_frames(f, table)  # rows with a whole frame (none read as zeros)
            if below is not None:
                n = min(n, below)
            for i in range(n):
                if i in self._seen:
                    continue
                try:
                    fh = frame_header(
                        header.scan_uid,
                        table.rows[i],
                        frame_number=i,
                        dtype=header.dtype,
                        shape=header.shape,
                    )
                except ValueError:
                    self.stats.bad_frames += 1
                    continue
                self.add_frame(fh, data[i], from_file=True)
        return n

    def _end_from_file(self) -> StreamResult | None:
        """The scan in progress, ended by its scan file's end record when the stream is quiet:
        the writer closed the file, so every frame is in it, and the scan-end may never come
        (it and the last frames can sit in the socket buffers of a receiver that was killed).
        Reads the frames still missing from the file and ends the scan as a scan-end of the
        frames written would. None while the file is open, absent, or of another scan."""
        scan = self._scan
        path = None if scan is None else scan.raw_file
        if path is None or scan is None or not path.exists():
            return None
        try:
            with open_scan_file(path) as f:
                if read_header(f).scan_uid != scan.start.scan_uid:
                    return None
                written = read_end(f).frames_written
        except (OSError, ValueError):
            return None
        if written is None:
            return None
        self.catch_up(path)
        return self.end(ScanEnd(scan_uid=scan.start.scan_uid, frames_sent=written))

    def _fill_from_file(self, scan: ScanState, below: int | None = None) -> None:
        """Read from the scan's raw file every frame it holds that was not applied yet
        (``below``: of lower frame numbers only)."""
        if scan.raw_file is None:
            return
        before = self.stats.from_file
        try:
            self.catch_up(scan.raw_file, below)
            self.stats.recovered += self.stats.from_file - before
        except (OSError, ValueError) as exc:
            log.warning("scan %s: reading %s failed: %s", scan.start.scan_uid, scan.raw_file, exc)

    def run(
        self,
        receiver: FrameReceiver,
        *,
        catch_up: Path | None = None,
        idle_timeout_s: float | None = None,
        stop: threading.Event | None = None,
        on_result: Callable[[StreamResult], None] | None = None,
        scans: int | None = 1,
        recycle: bool = False,
        finish_on_stop: bool = False,
    ) -> list[StreamResult]:
        """Follow the stream until ``scans`` scans ended (None: until stopped), ``stop`` is set,
        or nothing arrived for ``idle_timeout_s``.

        ``stop`` abandons the scan in progress (a kill), or with ``finish_on_stop`` ends it as
        a scan cut short (a service stopped by a signal: its volume says what it lacks).
        ``recycle``: once ``on_result`` has seen a result, its projections and volumes are taken
        back for the next scan (``recycle``): the results returned keep stats, files, timings and
        error only. A service following many scans needs this, or it holds every scan's volumes.

        A late or restarted reconstructor needs nothing more: the publisher sends it the
        scan-start of the scan in progress, which names the raw file; frames the stream skipped
        are read from it, and its end marker ends the scan when the scan-end does not come.
        ``catch_up`` (the scan file) is for a publisher that names none: connect ``receiver``
        BEFORE calling; the frames the file holds are read first and the stream's copies of
        them dropped.
        """
        results: list[StreamResult] = []

        def finish(result: StreamResult) -> bool:
            results.append(result)
            if on_result is not None:
                on_result(result)
            if recycle:
                self.recycle(result)
            return scans is not None and len(results) >= scans

        self.scan_file = None if catch_up is None else Path(catch_up)
        if self.scan_file is not None and self.scan_file.exists():
            self.catch_up(self.scan_file)
        malformed = receiver.stats.malformed
        last = checked = time.monotonic()
        while not (scans is not None and len(results) >= scans):
            if stop is not None and stop.is_set():
                if self._scan is not None:
                    self.stopped_scan = self._scan.start.scan_uid
                    if finish_on_stop:
                        finish(self.end(None, cut_short="stopped before its end"))
                break
            msg = receiver.recv(timeout_s=0.05)
            if receiver.stats.malformed != malformed:  # counted at once, whatever the state
                self.stats.malformed += receiver.stats.malformed - malformed
                self.totals.malformed += receiver.stats.malformed - malformed
                malformed = receiver.stats.malformed
            now = time.monotonic()
            if msg is None:
                if now - checked > FILE_END_CHECK_S:
                    checked = now
                    ended = self._end_from_file()
                    if ended is not None:
                        finish(ended)
                        continue
                if idle_timeout_s is not None and now - last > idle_timeout_s:
                    break
                continue
            last = now
            if isinstance(msg, Frame):
                self.add_frame(msg.header, msg.data)
            elif isinstance(msg, ScanStart):
                self._on_scan_start(msg, finish)
            elif isinstance(msg, ScanEnd):
                self._on_scan_end(msg, finish)
        return results

    def _on_scan_start(self, msg: ScanStart, finish: Callable[[StreamResult], bool]) -> None:
        """A scan-start in the stream. One of the scan in progress is a repeat (sent to a
        consumer that connected mid-scan) and ignored; one of another scan ends the scan in
        progress, which gets no more frames, as cut short."""
        current = self._scan
        if current is not None and current.start.scan_uid == msg.scan_uid:
            return
        if current is not None:
            log.warning(
                "scan-start of %s while scan %s is in progress: %s ends here",
                msg.scan_uid,
                current.start.scan_uid,
                current.start.scan_uid,
            )
            cut = f"interrupted by scan-start of {msg.scan_uid}"
            if finish(self.end(None, cut_short=cut)):
                return  # that was the last scan wanted
        if msg.plan is None:  # an alignment scan or a stock plan: nothing to reconstruct
            self.totals.passed_over += 1
            self._remember(msg.scan_uid)
            log.info("scan %s is not a phase-stepping CT; passed over", msg.scan_uid)
            return
        done = None if self.out is None else completed_dir(self.out, msg.scan_uid)
        if done is not None:  # a restarted service sent a scan it finished before
            self.totals.passed_over += 1
            self._remember(msg.scan_uid)
            log.info(
                "scan %s is reconstructed complete in %s already; passed over", msg.scan_uid, done
            )
            return
        earlier = [] if self.out is None else scan_dirs(self.out, msg.scan_uid)
        if earlier:
            log.info(
                "scan %s: %s holds a partial reconstruction; reconstructing it again",
                msg.scan_uid,
                earlier[-1],
            )
        try:
            self.start(msg)
        except ValueError as exc:
            self.totals.refused += 1
            log.warning("scan-start of %s refused: %s", msg.scan_uid, exc)
            return
        # a late or restarted consumer: its first frame's number jumps, and the frames below
        # it are read from the raw file first (``add_frame``)

    def _on_scan_end(self, msg: ScanEnd, finish: Callable[[StreamResult], bool]) -> None:
        """A scan-end: ends the scan in progress unless it is another scan's, or claims more
        frames than the plan allows (refused, counted, logged)."""
        scan = self._scan
        if scan is None or msg.scan_uid != scan.start.scan_uid:
            self._stray("scan-end", msg.scan_uid)
            return
        limit = self._claim_limit(scan)
        if msg.frames_sent > limit:
            self._refuse(
                "frames_sent",
                f"scan-end with frames_sent {msg.frames_sent}, more than {CLAIM_FACTOR} x the "
                f"{scan.plan.frames_planned()} frames the plan has",
                frame=False,
            )
            return
        finish(self.end(msg))
