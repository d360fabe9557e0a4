"""The fit store: one stepping-curve fit per projection and per reference series of a scan.

A complete series is fitted as ``recon.pipeline`` does (least squares on the measured G2
positions, the dark subtracted, each step scaled by the ring current to the scan's first positive
reading); only the fit (a0, c1) is kept, written into a buffer of a ``FitPool`` that the next scan
reuses (``recon.fitpool``: why that matters at 2048^2). A fit taken with a dark that changed
later is corrected when it is used: the fit is linear in the dark. The reference of a projection
is interpolated in time between the reference series (``interpolate_reference``).

The stepping curve's shape is measured from the calibration series (reference series 0 with
more steps than the plan's ``steps``) when it is fitted; the fit method is chosen, as offline
(``recon.pipeline.scan_fit``), from that shape and the lowest-numbered projection's steps, and
every fit is unbiased with it when used (after the dark correction: ``recon.curve``).

Dead, hot and saturated pixels are found, as offline, from the dark and the reference fits (and
the reference frames' peaks, noted as they are fitted) and replaced by the median of their good
neighbours in the projections (``recon.badpixels``; at a slab's edge only its own rows count).

Arrays: fits (rows, columns) of the reconstructor's slab, ``a0`` float32 [counts], ``c1``
complex64 [counts]; darks (rows, columns) float32 [counts]; times [s]; rotations [deg].
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from contracts.frames import ImageKey
from recon.badpixels import find_bad_pixels, finite_frames, repair, saturated_pixels
from recon.curve import (
    DOSE_REF_MA,
    AliasTable,
    CurveShape,
    FitChoice,
    choose_fit,
    frames_scale,
    measure_shape,
    unbias,
)
from recon.fitmode import FitMode
from recon.fitpool import FitPool
from recon.pipeline import Projections
from recon.retrieval import (
    Signals,
    StepFit,
    design_matrix,
    fit_dose_normalised,
    interpolate_reference,
    retrieve_interpolated,
    step_phases,
)
from recon.scanresult import StreamStats
from recon.series import Series

F32 = NDArray[np.float32]


@dataclass
class Fitted:
    """A fitted series: its fit, the dark it was taken with and the fit's weights on a dark
    change."""

    index: int  # angle index (projection) or series index (reference)
    attempt: int
    fit: StepFit
    t_mid: float  # mean timestamp of the steps fitted [s]
    rotation_deg: float  # mean rotation of the steps fitted [deg]
    dark: F32 | None  # the dark subtracted (None: none)
    dark_weights: NDArray[np.float64]  # (3,) sum_k pinv[j, k] scale_k
    frames: int = 0  # frames fitted
    theta: NDArray[np.float64] | None = None  # (frames,) measured step phases [rad]
    table: tuple[FitChoice, AliasTable | None] | None = None  # the alias table, by choice


class FitStore:
    """The fits of one scan's projections (by angle index) and references (by series index).

    ``shape``: (rows, columns) of the fits; ``g2_pitch_m``: the stepping period [m]. Counts
    completed, incomplete, unusable and superseded series into ``stats``; ``version`` changes
    with every change of the fits or of the dark.
    """

    def __init__(
        self,
        pool: FitPool,
        shape: tuple[int, int],
        g2_pitch_m: float,
        stats: StreamStats,
        *,
        steps: int | None = None,
        fit_mode: FitMode = "auto",
    ) -> None:
        self.shape = shape
        #: the plan's steps per series: reference series 0 with more is the calibration
        self.steps = steps
        self.fit_mode: FitMode = fit_mode
        #: the curve's shape from the calibration series (None: none yet, or none planned)
        self.curve: CurveShape | None = None
        self._choice: tuple[tuple[int, int], FitChoice] | None = None
        self.g2_pitch_m = g2_pitch_m
        self.stats = stats
        self.refs: dict[int, Fitted] = {}
        self.projs: dict[int, Fitted] = {}
        #: the current dark, (rows, columns) [counts]; None before the first dark frame
        self.dark: F32 | None = None
        #: ring current every fit is scaled to [mA] (``recon.curve.DOSE_REF_MA``)
        self.dose_ref = DOSE_REF_MA
        self.version = 0
        self._pool = pool
        #: pixels at their type's top count in a reference frame; with NaN or inf in a frame
        self.saturated = np.zeros(shape, bool)
        self.nonfinite = np.zeros(shape, bool)
        self.notes: list[str] = []  # on the frames with NaN or inf

    def set_dark(self, dark: F32) -> None:
        """The dark changed (fits taken before are corrected when used). NaN or inf in it
        (from a float dark frame) become 0 there, and those pixels bad ones."""
        where = ~np.isfinite(dark)
        if where.any():
            self.nonfinite |= where
            self.notes.append(f"the dark: {int(where.sum())} pixels not finite")
            dark = np.where(where, np.float32(0), dark).astype(np.float32)
        self.dark = dark
        self.version += 1

    def release(self) -> None:
        """Give every fit back to the pool (nothing uses them any more)."""
        self._pool.give(r.fit for r in [*self.refs.values(), *self.projs.values()])

    def fit(self, s: Series, whole: dict[int, NDArray[np.generic]] | None = None) -> Fitted | None:
        """Fit a closed series; None (counted unusable) with fewer than 3 steps or a singular
        fit. A series with missing steps is fitted on the steps it has (counted incomplete).
        ``whole``: the calibration series' whole frames by step index (a slab worker's, so that
        it measures the curve's shape on the whole detector as one worker does)."""
        sel = s.filled
        if not sel.all():
            if sel.sum() < 3:
                self.stats.unusable_series += 1
                return None
            self.stats.incomplete_series += 1
        frames = self._screened(s, sel)
        try:
            fit, weights = self._solve(s, sel, frames)
        except ValueError:
            self.stats.unusable_series += 1
            return None
        image_key, index, attempt = s.key
        theta = step_phases(s.g2_m[sel], self.g2_pitch_m)
        if image_key == ImageKey.FLAT and index == 0 and self._is_calibration(sel.size):
            self._measure(s, sel, theta, whole or {})
        return Fitted(
            index,
            attempt,
            fit,
            float(s.time_s[sel].mean()),
            float(s.rotation_deg[sel].mean()),
            self.dark,
            weights,
            int(sel.sum()),
            theta,
        )

    def _screened(self, s: Series, sel: NDArray[np.bool_]) -> list[NDArray[np.generic]]:
        """The frames of the steps received, NaN and inf set to 0 (noted, as offline); a
        reference's saturated pixels noted."""
        frames = [f for f, ok in zip(s.frames, sel, strict=True) if ok and f is not None]
        floats = frames and np.issubdtype(frames[0].dtype, np.floating)
        if floats and not all(np.isfinite(f).all() for f in frames):
            clean, bad, notes = finite_frames(np.stack(frames), s.first_frame)
            self.nonfinite |= bad
            self.notes.extend(notes)
            frames = list(clean)
        if s.key[0] == ImageKey.FLAT:
            self.saturated |= saturated_pixels(frames, self.shape)
        return frames

    def _is_calibration(self, planned_steps: int) -> bool:
        return self.steps is not None and planned_steps > self.steps

    def _measure(
        self,
        s: Series,
        sel: NDArray[np.bool_],
        theta: NDArray[np.float64],
        whole: dict[int, NDArray[np.generic]],
    ) -> None:
        """The curve's shape from the calibration series (as ``recon.pipeline.scan_fit``: no
        dark), from its whole frames when every step has one."""
        steps = np.flatnonzero(sel)
        if all(int(k) in whole for k in steps):
            frames = [whole[int(k)] for k in steps]
        else:
            frames = [f for f, ok in zip(s.frames, sel, strict=True) if ok and f is not None]
        dose_ref = self.dose_ref
        try:
            scale = frames_scale(s.current_ma[sel], dose_ref)
            self.curve = measure_shape(frames, theta, scale=scale)
        except ValueError:
            self.curve = None
        self._choice = None
        self.version += 1

    def choice(self) -> FitChoice:
        """The fit every series gets: from the curve's shape and the steps of the
        lowest-numbered projection (first-harmonic before any projection)."""
        if not self.projs:
            return FitChoice("first-harmonic", self.steps or 3)
        first = self.projs[min(self.projs)]
        key = (first.index, first.attempt)
        if self._choice is None or self._choice[0] != key:
            assert first.theta is not None
            if self.fit_mode == "shape-aware" and self.curve is None:
                # a service goes on: the first-harmonic fit, and the reason, rather than none
                plain = choose_fit(None, first.theta, "first-harmonic")
                why = "fit 'shape-aware' asked for, but the scan has no calibration series"
                self._choice = (key, dataclasses.replace(plain, warnings=(why,)))
            else:
                self._choice = (key, choose_fit(self.curve, first.theta, self.fit_mode))
        return self._choice[1]

    def alias_table(self, rec: Fitted) -> AliasTable | None:
        """The alias table of ``rec``'s steps under the current choice (None: first-harmonic
        path), made once per choice."""
        choice = self.choice()
        if choice.method != "shape-aware" or rec.theta is None:
            return None
        if rec.table is None or rec.table[0] is not choice:
            rec.table = (choice, choice.table(rec.theta))
        return rec.table[1]

    def _unbiased(self, rec: Fitted, fit: StepFit) -> StepFit:
        """``fit`` (of ``rec``, dark-corrected) unbiased for the curve's harmonics, or as is
        on the first-harmonic path."""
        table = self.alias_table(rec)
        return fit if table is None else unbias(fit, table)

    def _solve(
        self, s: Series, sel: NDArray[np.bool_], frames: list[NDArray[np.generic]]
    ) -> tuple[StepFit, NDArray[np.float64]]:
        """As recon.pipeline._fit_series: steps in step order, darks, ring-current scaling;
        ``frames``: those of the steps received (``_screened``)."""
        theta = step_phases(s.g2_m[sel], self.g2_pitch_m)
        a = design_matrix(theta)
        pinv = np.linalg.solve(a.T @ a, a.T)
        current = s.current_ma[sel]
        dose_ref = self.dose_ref
        fit = fit_dose_normalised(
            frames, theta, self.dark, current, dose_ref, out=self._pool.take()
        )
        if np.all(current > 0):
            scale = dose_ref / np.asarray(current, np.float64)
            return fit, np.asarray(pinv @ scale.astype(np.float32).astype(np.float64), np.float64)
        return fit, np.asarray(pinv.sum(axis=1), np.float64)

    def keep(self, image_key: int, rec: Fitted) -> bool:
        """Store a fit of a reference (``ImageKey.FLAT``) or projection series; False when the
        one stored wins (a later attempt, or the same attempt with more frames)."""
        table = self.refs if image_key == ImageKey.FLAT else self.projs
        old = table.get(rec.index)
        if old is not None:
            later = old.attempt > rec.attempt
            if later or (old.attempt == rec.attempt and old.frames > rec.frames):
                self.stats.superseded += rec.frames  # an older attempt, or a worse part
                self._pool.give([rec.fit])
                return False
            self.stats.superseded += old.frames
            self._pool.give([old.fit])
        self.version += 1
        if image_key == ImageKey.FLAT:
            self.stats.references += 1
        else:
            self.stats.projections += 1
        table[rec.index] = rec
        return True

    def corrected(self, rec: Fitted, rows: NDArray[np.int64] | None = None) -> StepFit:
        """The fit (of the given rows of the slab; None: all) as if taken with the current
        dark (linear correction), unbiased for the curve's harmonics when the shape-aware fit
        runs."""
        return self._unbiased(rec, self.dark_corrected(rec, rows))

    def dark_corrected(self, rec: Fitted, rows: NDArray[np.int64] | None = None) -> StepFit:
        """The fit (of the given rows; None: all) as if taken with the current dark."""
        a0, c1 = rec.fit.a0, rec.fit.c1
        if rows is not None:
            a0, c1 = a0[rows], c1[rows]
        if rec.dark is self.dark:
            return StepFit(a0, c1)
        zero = np.zeros(self.shape, np.float32)
        new = self.dark if self.dark is not None else zero
        old = rec.dark if rec.dark is not None else zero
        delta = (new - old) if rows is None else (new - old)[rows]
        w = rec.dark_weights
        a0 = (a0 - delta * np.float32(w[0])).astype(np.float32)
        c1 = (c1 - delta * np.complex64(0.5 * w[1] - 0.5j * w[2])).astype(np.complex64)
        return StepFit(a0, c1)

    def reference(self, rows: NDArray[np.int64], t_s: float) -> StepFit:
        """The reference of those rows of the slab at time ``t_s`` [s], interpolated between the
        reference series so far (needs one)."""
        refs = sorted(self.refs.values(), key=lambda r: r.t_mid)
        fits = [self.corrected(r) for r in refs]
        fits = [StepFit(f.a0[rows], f.c1[rows]) for f in fits]
        return interpolate_reference(fits, [r.t_mid for r in refs], t_s)

    def projections(self, spare: Projections | None = None) -> Projections:
        """T, dphi, D (angles, rows, columns) of every projection so far, by angle index,
        against the interpolated reference; written into ``spare`` when it has that shape.
        ValueError without a reference or a projection."""
        if not self.refs:
            raise ValueError("the scan has no reference (flat) series: cannot normalise")
        if not self.projs:
            raise ValueError("the scan has no projections")
        refs = sorted(self.refs.values(), key=lambda r: r.t_mid)
        ref_fits = [self.corrected(r) for r in refs]
        times = np.asarray([r.t_mid for r in refs])
        angles = sorted(self.projs)
        shape = (len(angles), *self.shape)
        if spare is not None and spare.dphi.shape == shape:
            trans, dphi, dfield = spare.transmission, spare.dphi, spare.darkfield
        else:
            trans = np.empty(shape, np.float32)
            dphi = np.empty(shape, np.float32)
            dfield = np.empty(shape, np.float32)
        theta = np.empty(len(angles), np.float64)
        for j, a in enumerate(angles):
            rec = self.projs[a]
            out = Signals(trans[j], dphi[j], dfield[j])
            table = self.alias_table(rec)  # applied in the retrieval's pass
            retrieve_interpolated(
                self.dark_corrected(rec), ref_fits, times, rec.t_mid, out,
                None if table is None else table.lookup,
            )  # fmt: skip
            theta[j] = np.deg2rad(rec.rotation_deg)
        signal = np.mean([self.dark_corrected(r).a0 for r in refs], axis=0)
        bad = find_bad_pixels(
            self.dark,
            signal,
            saturated=self.saturated,
            nonfinite=self.nonfinite,
            notes=self.notes,
        )
        for signals in (trans, dphi, dfield):
            repair(signals, bad.mask)
        return Projections(trans, dphi, dfield, theta, self.choice(), bad)
