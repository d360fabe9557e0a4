"""The streaming reconstructor: frames in (stream or SWMR file), live slices and volumes out.

What happens to a frame (DESIGN §3.2, §3.4; docs/stream-protocol.md):

1. identity: frames are keyed by (scan uid, image_key, angle or reference-series index, attempt);
   a frame number already seen (from the stream or from the scan file) is a duplicate and
   dropped; a frame of an older attempt than one already seen is superseded and dropped; a newer
   attempt discards the open older one (the latest attempt of a series wins);
2. assembly: frames of an open series are copied into one (steps, rows, columns) buffer; darks
   are summed (float64) into the dark of their attempt. Only open series hold raw frames, and at
   most ``max_open_series`` of them (the oldest is closed early when more open);
3. a complete series is fitted (least squares on the measured G2 positions, darks subtracted,
   normalised by the ring current) exactly as ``recon.pipeline`` does; only the fit (a0, c1) is
   kept per projection and per reference series, in buffers the next scan reuses
   (``recon.fitpool``);
4. live view: the chosen detector rows of each new projection are retrieved against the
   reference interpolated in time between the series received so far (the latest one when the
   later bracketing series has not arrived yet), filtered and backprojected into live slices
   (``accumulate_projection``); a re-take replaces its earlier contribution; updates go out on
   the viewer PUB socket;
5. at scan end: every projection is re-retrieved against the final time-interpolated reference,
   fits taken with a dark that changed later are corrected (the fit is linear in the dark),
   the volume is reconstructed with the fast path (``reconstruct_volumes``, gridding) and
   written (``recon.output``). Lost frame numbers (below ``frames_sent`` of ``scan-end`` and
   never received), duplicates and malformed messages are counted exactly.

Arrays: frames (rows, columns); fits (rows, columns); live slices (channels, rows, y, x).
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np
import scipy.fft
from numpy.typing import NDArray

from contracts.frames import ImageKey
from contracts.instrument import Instrument
from contracts.messages import Frame, FrameHeader, LiveSlices, ScanEnd, ScanStart, frame_header
from contracts.scanfile import DATA_PATH, read_frame_table, read_header
from contracts.scanplan import ScanPlan
from contracts.sockets import FrameReceiver, LivePublisher
from recon.fbp import (
    Method,
    accumulate_projection,
    filter_response,
    padded_length,
    prepare_gridding,
)
from recon.fitpool import FitPool, written
from recon.output import load_plotting, write_recon
from recon.pipeline import Projections, Volumes, reconstruct_volumes
from recon.retrieval import (
    Signals,
    StepFit,
    design_matrix,
    fit_dose_normalised,
    interpolate_reference,
    retrieve,
    retrieve_interpolated,
    step_phases,
)

log = logging.getLogger(__name__)

F32 = NDArray[np.float32]
CHANNELS = ("delta", "mu", "darkfield")


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
    lost: list[int] = field(default_factory=list)  # frame numbers never received
    recovered: int = 0  # frames missing from the stream, read from the scan file at scan end
    frames_sent: int | None = None  # from scan-end
    projections: int = 0  # projection series completed (re-takes included)
    references: int = 0  # reference series completed
    incomplete_series: int = 0  # series fitted at scan end with missing steps
    unusable_series: int = 0  # series that could not be fitted (too few steps)
    live_updates: int = 0

    def summary(self) -> str:
        """One line per figure."""
        lost = f"{len(self.lost)}" + (f" {self.lost[:20]}" if self.lost else "")
        return (
            f"frames {self.frames} (from file {self.from_file}, recovered {self.recovered}), "
            f"frames sent {self.frames_sent}, lost {lost}, duplicates {self.duplicates}, malformed "
            f"{self.malformed}, superseded {self.superseded}, foreign {self.foreign}, bad "
            f"{self.bad_frames}; series: projections {self.projections}, references "
            f"{self.references}, incomplete {self.incomplete_series}, unusable "
            f"{self.unusable_series}; live updates {self.live_updates}"
        )


@dataclass
class _Series:
    """An open series: its frames (one (rows, columns) array per step, where they arrived: a
    stream buffer or a file read, never copied into a stack) and per-step tags."""

    key: tuple[int, int, int]  # image_key, angle or series index, attempt
    first_frame: int
    frames: list[NDArray[np.generic] | None]
    filled: NDArray[np.bool_]
    g2_m: NDArray[np.float64]
    current_ma: NDArray[np.float64]
    time_s: NDArray[np.float64]
    rotation_deg: NDArray[np.float64]


@dataclass
class _Fitted:
    """A fitted series: fit, the dark it was taken with and the fit's weights on a dark change."""

    index: int
    attempt: int
    fit: StepFit
    t_mid: float
    rotation_deg: float
    dark: F32 | None
    dark_weights: NDArray[np.float64]  # (3,) sum_k pinv[j, k] scale_k
    frames: int = 0  # frames fitted
    live_q: F32 | None = None  # (3 * live rows, columns): this projection's live contribution


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


class StreamingReconstructor:
    """Consumes one scan's messages (``start``, ``add_frame``, ``end``) and reconstructs it.

    ``rows`` = (r0, r1) restricts the work to a slab of detector rows (a slab worker; frames may be
    full frames or slabs with ``row_offset``). ``live_rows``: absolute detector rows shown live
    (default: the middle row; empty: no live view). ``center_offset_px``: rotation axis for the
    final volume (None: estimated from the data as the offline pipeline does; slab workers need an
    explicit value so that all slabs share it). ``live_center_offset_px`` (None: the instrument's
    calibrated axis). ``live_max_px``: live slices of a wider detector are binned b x b with the
    smallest b that brings them to at most this many pixels across (the voxel ``live_voxel_m`` is b
    pixels).
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
    ) -> None:
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
        self.scan: ScanStart | None = None
        #: The scan file (``run(catch_up=...)``): frames the stream lost are read from it at end.
        self.scan_file: Path | None = None
        self.stats = StreamStats()
        #: Seconds from the arrival of a projection's last frame to its live update, per update.
        self.live_latency_s: list[float] = []
        self._pool = FitPool()
        # a finished scan's projections and volumes, given back by the caller (``recycle``)
        self._spare_projections: Projections | None = None
        self._spare_volumes: Volumes | None = None
        self._planning: threading.Thread | None = None
        self._refs: dict[int, _Fitted] = {}
        self._projs: dict[int, _Fitted] = {}

    # --------------------------------------------------------------------------------------------
    # scan lifecycle

    def start(self, start: ScanStart) -> None:
        """Begin a scan (resets all state); ValueError for a scan-start without a scan plan
        (not a phase-stepping CT)."""
        if start.plan is None:
            raise ValueError(f"scan {start.scan_uid} is not a phase-stepping CT (no scan plan)")
        if self.out is not None:
            threading.Thread(target=load_plotting, name="load-plotting", daemon=True).start()
        self.scan = start
        self.instrument: Instrument = start.instrument
        self.plan: ScanPlan = start.plan
        sched = start.plan
        self.steps = sched.steps
        full_rows, self.cols = start.shape
        r0, r1 = self._rows_of(full_rows)
        self.r0, self.r1 = r0, r1
        if self.method == "gridding":  # FFTW plans the final volume's FFTs while the scan runs
            self._planning = threading.Thread(
                target=prepare_gridding,
                args=(self.cols, r1 - r0),
                name="plan-gridding",
                daemon=True,
            )
            self._planning.start()
        # the previous scan's fits are free now: this scan's are written into them
        self._pool.give(r.fit for r in [*self._refs.values(), *self._projs.values()])
        self._pool.use_shape((r1 - r0, self.cols))
        self.stats = StreamStats()
        self.live_latency_s = []
        self._seen: set[int] = set()
        self._latest: dict[tuple[int, int], int] = {}
        self._open: dict[tuple[int, int, int], _Series] = {}
        self._dark_sum: dict[int, NDArray[np.float64]] = {}
        self._dark_count: dict[int, int] = {}
        self._dark: F32 | None = None
        self._dose_ref: float | None = None
        self._refs = {}
        self._projs = {}
        self._expected_refs = {i for kind, i in sched.order() if kind == "reference"}
        self._version = 0  # bumped by every change of the fits or the dark
        self._early: tuple[int, StreamResult, float] | None = None
        self._pending_live: list[int] = []
        self._last_publish = -math.inf
        wanted = (full_rows // 2,) if self.live_rows_requested is None else self.live_rows_requested
        self.live_rows = tuple(r for r in wanted if r0 <= r < r1)
        self._live_local = np.asarray([r - r0 for r in self.live_rows], dtype=np.int64)
        # live slices of a detector wider than live_max_px are binned b x b (columns binned
        # before the filter): a viewer's slice, at a quarter of the work for b = 2
        self._live_bin = b = max(1, math.ceil(self.cols / self.live_max_px))
        n = self.cols // b
        self.live_slices: F32 = np.zeros((len(CHANNELS), len(self.live_rows), n, n), np.float32)
        geo = start.instrument.geometry
        self.live_voxel_m = geo.pixel_size_m * b
        self._scale = np.array(
            [
                # the Hilbert FBP of the phase difference over the shear does not depend on the
                # sampling; the ramp FBP is per (binned) pixel
                geo.wavelength_m / (2.0 * math.pi * geo.shear_m),
                1.0 / self.live_voxel_m,
                1.0 / self.live_voxel_m,
            ],
            np.float32,
        )
        self._live_weight = math.pi / sched.angles
        # filter responses per live row: Hilbert (delta), ramp (mu, dark-field), times the units
        self._n_pad = padded_length(n)
        hil = filter_response("hilbert", self._n_pad) * self._scale[0]
        ramp = filter_response("ramp", self._n_pad)
        nl = len(self.live_rows)
        self._live_resp = np.concatenate(
            [
                np.repeat(hil[None], nl, axis=0),
                np.repeat(ramp[None] * self._scale[1], nl, axis=0),
                np.repeat(ramp[None] * self._scale[2], nl, axis=0),
            ]
        ).astype(np.complex64)
        if self.live_center_offset_px is None:
            offset = start.instrument.rotation_axis_offset_px
        else:
            offset = self.live_center_offset_px
        # the axis at full column (cols-1)/2 + offset, in binned columns (bin j spans jb..jb+b-1)
        axis = ((self.cols - 1) / 2.0 + offset - (b - 1) / 2.0) / b
        self._live_center = axis - (n - 1) / 2.0

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

    @property
    def scan_uid(self) -> str | None:
        """The uid of the scan in progress."""
        return None if self.scan is None else self.scan.scan_uid

    def add_frame(
        self, header: FrameHeader, data: NDArray[np.generic], from_file: bool = False
    ) -> None:
        """Apply one frame (rows, columns) of the current scan; never raises on bad input."""
        t_arrival = time.perf_counter()
        if self.scan is None or header.scan_uid != self.scan.scan_uid:
            self.stats.foreign += 1
            return
        n = header.frame_number
        if n in self._seen:
            self.stats.duplicates += 1
            return
        slab = self._crop(header, data)
        if slab is None:
            self.stats.bad_frames += 1
            return
        self._seen.add(n)
        self._t_last_frame = t_arrival  # the last frame taken (not duplicates, not foreign)
        self.stats.frames += 1
        if from_file:
            self.stats.from_file += 1
        key = int(header.image_key)
        index = {
            ImageKey.PROJECTION: header.angle_index,
            ImageKey.FLAT: header.series_index,
        }.get(ImageKey(key), -1)
        series = (key, index)
        latest = self._latest.get(series, -1)
        if header.attempt < latest:
            self.stats.superseded += 1
            return
        if header.attempt > latest:
            self._latest[series] = header.attempt
            self._discard_older(series, header.attempt)
        if key == ImageKey.DARK:
            self._add_dark(header.attempt, slab)
            return
        if self._dose_ref is None and header.ring_current_ma > 0:
            self._dose_ref = header.ring_current_ma
        if not 0 <= header.step_index < self.steps:
            self.stats.bad_frames += 1
            return
        skey = (key, index, header.attempt)
        s = self._open.get(skey)
        if s is None:
            s = self._new_series(skey, n)
        k = header.step_index
        s.frames[k] = slab
        s.filled[k] = True
        s.g2_m[k] = header.g2_position_m
        s.current_ma[k] = header.ring_current_ma
        s.time_s[k] = header.timestamp_s
        s.rotation_deg[k] = header.rotation_deg
        if s.filled.all():
            del self._open[skey]
            self._close(s, t_arrival)

    def _crop(self, header: FrameHeader, data: NDArray[np.generic]) -> NDArray[np.generic] | None:
        rows, cols = data.shape
        if cols != self.cols:
            return None
        a, b = self.r0 - header.row_offset, self.r1 - header.row_offset
        if a < 0 or b > rows:
            return None
        return data[a:b]

    def _new_series(self, skey: tuple[int, int, int], n: int) -> _Series:
        while len(self._open) >= self.max_open_series:
            oldest = min(self._open.values(), key=lambda s: s.first_frame)
            del self._open[oldest.key]
            self._close(oldest, None)
        m = self.steps
        s = _Series(
            skey,
            n,
            [None] * m,
            np.zeros(m, bool),
            np.zeros(m),
            np.zeros(m),
            np.zeros(m),
            np.zeros(m),
        )
        self._open[skey] = s
        return s

    def _discard_older(self, series: tuple[int, int], attempt: int) -> None:
        for skey in [k for k in self._open if k[:2] == series and k[2] < attempt]:
            self.stats.superseded += int(self._open.pop(skey).filled.sum())
        if series[0] == ImageKey.DARK:
            for a in [a for a in self._dark_sum if a < attempt]:
                self.stats.superseded += self._dark_count.pop(a)
                del self._dark_sum[a]

    def _add_dark(self, attempt: int, slab: NDArray[np.generic]) -> None:
        if attempt not in self._dark_sum:
            self._dark_sum[attempt] = np.zeros(slab.shape, np.float64)
            self._dark_count[attempt] = 0
        self._dark_sum[attempt] += slab.astype(np.float64)
        self._dark_count[attempt] += 1
        latest = max(self._dark_sum)
        self._dark = (self._dark_sum[latest] / self._dark_count[latest]).astype(np.float32)
        self._version += 1

    # --------------------------------------------------------------------------------------------
    # fitting

    def _fit(self, s: _Series, sel: NDArray[np.bool_]) -> tuple[StepFit, NDArray[np.float64]]:
        """As recon.pipeline._fit_series: steps in step order, darks, ring-current scaling."""
        period = self.instrument.geometry.g2_pitch_m
        theta = step_phases(s.g2_m[sel], period)
        a = design_matrix(theta)
        pinv = np.linalg.solve(a.T @ a, a.T)
        frames = [f for f, ok in zip(s.frames, sel, strict=True) if ok and f is not None]
        current = s.current_ma[sel]
        dark = self._dark
        dose_ref = self._dose_ref if self._dose_ref is not None else 1.0
        fit = fit_dose_normalised(frames, theta, dark, current, dose_ref, out=self._pool.take())
        if np.all(current > 0):
            scale = dose_ref / np.asarray(current, np.float64)
            return fit, np.asarray(pinv @ scale.astype(np.float32).astype(np.float64), np.float64)
        return fit, np.asarray(pinv.sum(axis=1), np.float64)

    def _close(self, s: _Series, t_arrival: float | None) -> None:
        sel = s.filled
        if not sel.all():
            if sel.sum() < 3:
                self.stats.unusable_series += 1
                return
            self.stats.incomplete_series += 1
        try:
            fit, weights = self._fit(s, sel)
        except ValueError:
            self.stats.unusable_series += 1
            return
        key, index, attempt = s.key
        rec = _Fitted(
            index,
            attempt,
            fit,
            float(s.time_s[sel].mean()),
            float(s.rotation_deg[sel].mean()),
            self._dark,
            weights,
            int(sel.sum()),
        )
        table = self._refs if key == ImageKey.FLAT else self._projs
        old = table.get(index)
        if old is not None:
            if old.attempt > attempt or (old.attempt == attempt and old.frames > rec.frames):
                self.stats.superseded += rec.frames  # an older attempt, or a worse part
                self._pool.give([rec.fit])
                return
            self.stats.superseded += old.frames
            self._pool.give([old.fit])
        self._version += 1
        if key == ImageKey.FLAT:
            self.stats.references += 1
            self._refs[index] = rec
            pending, self._pending_live = self._pending_live, []
            for angle in pending:
                self._live_update(angle, None)
        else:
            self.stats.projections += 1
            if old is not None and old.live_q is not None:
                self._accumulate(old, -self._live_weight)
            self._projs[index] = rec
            self._live_update(index, t_arrival)
        self._finish_early()

    def _finish_early(self) -> None:
        """Reconstruct as soon as every planned series is in, before ``scan-end``: the beamline
        still restores the sample and closes the run after the last frame (~1 s). ``end``
        reuses the result unless something changed since (a re-take, a late frame)."""
        if self._early is not None or self._open or self.scan is None:
            return
        if not self._expected_refs or len(self._projs) < self.plan.angles:
            return
        if not self._expected_refs <= set(self._refs):
            return
        version = self._version
        result = self._reconstruct()
        self._early = (version, result, time.perf_counter())

    # --------------------------------------------------------------------------------------------
    # live view

    def _reference(self, rows: NDArray[np.int64] | None, t_s: float) -> StepFit:
        refs = sorted(self._refs.values(), key=lambda r: r.t_mid)
        fits = [self._corrected(r) for r in refs]
        if rows is not None:
            fits = [StepFit(f.a0[rows], f.c1[rows]) for f in fits]
        return interpolate_reference(fits, [r.t_mid for r in refs], t_s)

    def _corrected(self, rec: _Fitted, rows: NDArray[np.int64] | None = None) -> StepFit:
        """The fit as if taken with the current dark (linear correction)."""
        a0, c1 = rec.fit.a0, rec.fit.c1
        if rows is not None:
            a0, c1 = a0[rows], c1[rows]
        if rec.dark is self._dark:
            return StepFit(a0, c1)
        zero = np.zeros((self.r1 - self.r0, self.cols), np.float32)
        new = self._dark if self._dark is not None else zero
        old = rec.dark if rec.dark is not None else zero
        delta = (new - old) if rows is None else (new - old)[rows]
        w = rec.dark_weights
        a0 = (a0 - delta * np.float32(w[0])).astype(np.float32)
        c1 = (c1 - delta * np.complex64(0.5 * w[1] - 0.5j * w[2])).astype(np.complex64)
        return StepFit(a0, c1)

    def _live_update(self, angle: int, t_arrival: float | None) -> None:
        if not self.live_rows:
            return
        rec = self._projs.get(angle)
        if rec is None:
            return
        if not self._refs:
            self._pending_live.append(angle)
            return
        rows = self._live_local
        ref = self._reference(rows, rec.t_mid)
        sig = retrieve(self._corrected(rec, rows), ref)
        lines = np.concatenate(
            [
                _finite(sig.dphi),
                -np.log(_positive(sig.transmission)),
                -np.log(_positive(sig.darkfield)),
            ]
        )
        b = self._live_bin
        n = self.live_slices.shape[-1]
        if b > 1:
            lines = lines[:, : n * b].reshape(len(lines), n, b).mean(axis=-1)
        spec = scipy.fft.rfft(lines, n=self._n_pad, axis=-1) * self._live_resp
        q = np.ascontiguousarray(
            scipy.fft.irfft(spec, n=self._n_pad, axis=-1)[:, :n], dtype=np.float32
        )
        rec.live_q = q
        self._accumulate(rec, self._live_weight)
        self.stats.live_updates += 1
        if t_arrival is not None:
            self.live_latency_s.append(time.perf_counter() - t_arrival)
        self._publish_live()

    def _accumulate(self, rec: _Fitted, weight: float) -> None:
        assert rec.live_q is not None
        n = self.live_slices.shape[-1]
        flat = self.live_slices.reshape(-1, n, n)
        accumulate_projection(
            flat,
            rec.live_q,
            math.radians(rec.rotation_deg),
            weight=weight,
            center_offset=self._live_center,
        )

    def _publish_live(self, force: bool = False) -> None:
        if self.live is None or self.scan is None:
            return
        now = time.monotonic()
        if not force and now - self._last_publish < self.live_interval_s:
            return
        self._last_publish = now
        self.live.publish(
            LiveSlices(
                self.scan.scan_uid,
                CHANNELS,
                self.live_rows,
                len(self._projs),
                self.plan.angles,
                self.live_voxel_m,
                self.live_slices,
            )
        )

    # --------------------------------------------------------------------------------------------
    # end of scan

    def end(self, end: ScanEnd | None) -> StreamResult:
        """Close the scan: count losses, re-finalise every projection, reconstruct, write (or keep
        the reconstruction made when the last planned series came in, if nothing changed)."""
        if self.scan is None:
            raise RuntimeError("end() without a scan in progress")
        t_end = time.perf_counter()
        if end is not None:
            self.stats.frames_sent = end.frames_sent
            self.stats.lost = [n for n in range(end.frames_sent) if n not in self._seen]
            if self.stats.lost and self.scan_file is not None and self.scan_file.exists():
                before = self.stats.from_file
                self.catch_up(self.scan_file)
                self.stats.recovered = self.stats.from_file - before
                self.stats.lost = [n for n in self.stats.lost if n not in self._seen]
        for s in sorted(self._open.values(), key=lambda s: s.first_frame):
            self._close(s, None)
        self._open.clear()
        self._publish_live(force=True)
        early = self._early
        if early is not None and early[0] == self._version:
            result, t_done = early[1], early[2]
        else:
            result = self._reconstruct()
            t_done = time.perf_counter()
        result.stats = self.stats
        result.timings_s = {
            "last_frame_to_volume_s": max(0.0, t_done - getattr(self, "_t_last_frame", t_end)),
            "finalize_s": time.perf_counter() - t_end,
        }
        self.scan = None
        self.stats = StreamStats()
        self._early = None
        return result

    def _reconstruct(self) -> StreamResult:
        """Projections, volumes and (with ``out``) the files, from the fits so far."""
        assert self.scan is not None
        result = StreamResult(self.scan.scan_uid, self.stats)
        try:
            result.projections = self.projections()
            spare, self._spare_volumes = self._spare_volumes, None
            shape = (self.r1 - self.r0, self.cols, self.cols)
            result.volumes = reconstruct_volumes(
                result.projections,
                self.instrument.geometry,
                center_offset_px=self.center_offset_px,
                method=self.method,
                out=spare if spare is not None and spare.delta.shape == shape else None,
            )
        except ValueError as exc:
            result.error = str(exc)
        if self.out is not None and result.volumes is not None:
            result.files = write_recon(
                self.out, result.volumes, result.projections if self.write_projections else None
            )
        return result

    def projections(self) -> Projections:
        """T, dphi, D of every projection so far against the final interpolated reference."""
        if not self._refs:
            raise ValueError("the scan has no reference (flat) series: cannot normalise")
        if not self._projs:
            raise ValueError("the scan has no projections")
        refs = sorted(self._refs.values(), key=lambda r: r.t_mid)
        ref_fits = [self._corrected(r) for r in refs]
        times = np.asarray([r.t_mid for r in refs])
        angles = sorted(self._projs)
        shape = (len(angles), self.r1 - self.r0, self.cols)
        spare, self._spare_projections = self._spare_projections, None
        if spare is not None and spare.dphi.shape == shape:
            trans, dphi, dfield = spare.transmission, spare.dphi, spare.darkfield
        else:
            trans = np.empty(shape, np.float32)
            dphi = np.empty(shape, np.float32)
            dfield = np.empty(shape, np.float32)
        theta = np.empty(len(angles), np.float64)
        for j, a in enumerate(angles):
            rec = self._projs[a]
            out = Signals(trans[j], dphi[j], dfield[j])
            retrieve_interpolated(self._corrected(rec), ref_fits, times, rec.t_mid, out)
            theta[j] = np.deg2rad(rec.rotation_deg)
        return Projections(trans, dphi, dfield, theta)

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

    def catch_up(self, path: Path) -> int:
        """Read every frame already in the (SWMR) scan file; starts the scan from its header if
        none is in progress. Returns the number of frames read."""
        with h5py.File(path, "r", libver="latest", swmr=True) as f:
            header = read_header(f)
            if self.scan is None or self.scan.scan_uid != header.scan_uid:
                self.start(
                    ScanStart(
                        scan_uid=header.scan_uid,
                        instrument=header.instrument,
                        plan=header.plan,
                        dtype=header.dtype,  # type: ignore[arg-type]
                        shape=header.shape,
                    )
                )
            table = read_frame_table(f)
            data = f[DATA_PATH]
            n = min(len(table), int(data.shape[0]))
            scan = self.scan
            assert scan is not None
            for i in range(n):
                if i in self._seen:
                    continue
                try:
                    fh = frame_header(
                        scan.scan_uid,
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

    def run(
        self,
        receiver: FrameReceiver,
        *,
        catch_up: Path | None = None,
        idle_timeout_s: float | None = None,
        stop: threading.Event | None = None,
        on_result: Callable[[StreamResult], None] | None = None,
        scans: int = 1,
        recycle: bool = False,
    ) -> list[StreamResult]:
        """Follow the stream until ``scans`` scans ended, ``stop`` is set (abandons the scan in
        progress: a kill), or nothing arrived for ``idle_timeout_s``.

        ``recycle``: once ``on_result`` has seen a result, its projections and volumes are taken
        back for the next scan (``recycle``): the results returned keep stats, files, timings and
        error only. A service following many scans needs this, or it holds every scan's volumes.

        Connect ``receiver`` BEFORE calling: with ``catch_up`` (the scan file) the frames the
        file already holds are read first and the stream's copies of them dropped (the detector
        writes a frame to the file before it publishes it, so nothing falls in between).
        """
        results: list[StreamResult] = []

        def finish(result: StreamResult) -> None:
            results.append(result)
            if on_result is not None:
                on_result(result)
            if recycle:
                self.recycle(result)

        base = receiver.stats.malformed
        self.scan_file = None if catch_up is None else Path(catch_up)
        if self.scan_file is not None and self.scan_file.exists():
            self.catch_up(self.scan_file)
        last = time.monotonic()
        while len(results) < scans:
            if stop is not None and stop.is_set():
                break
            msg = receiver.recv(timeout_s=0.05)
            self.stats.malformed = receiver.stats.malformed - base
            if msg is None:
                if idle_timeout_s is not None and time.monotonic() - last > idle_timeout_s:
                    break
                continue
            last = time.monotonic()
            if isinstance(msg, Frame):
                self.add_frame(msg.header, msg.data)
            elif isinstance(msg, ScanStart):
                if self.scan is not None and self.scan.scan_uid != msg.scan_uid:
                    finish(self.end(None))  # its scan-end never came: finish it
                    if len(results) >= scans:
                        break
                if msg.plan is None:  # an alignment scan or a stock plan: nothing to reconstruct
                    log.info("scan %s is not a phase-stepping CT; passed over", msg.scan_uid)
                    continue
                if self.scan is None:
                    self.start(msg)
                    base = receiver.stats.malformed
            elif isinstance(msg, ScanEnd):
                if self.scan is None or msg.scan_uid != self.scan.scan_uid:
                    self.stats.foreign += 1
                    continue
                self.stats.malformed = receiver.stats.malformed - base
                result = self.end(msg)
                base = receiver.stats.malformed
                finish(result)
        return results


def _finite(x: F32) -> F32:
    return np.nan_to_num(x, nan=0.0, posinf=0.0, neginf=0.0).astype(np.float32)


def _positive(x: F32) -> F32:
    return np.clip(np.nan_to_num(x, nan=1.0, posinf=1.0, neginf=1.0), 1e-6, None).astype(np.float32)
