"""Offline reconstruction of a whole phase-stepping CT scan: frames + frame table -> volumes.

The same steps run in the streaming reconstructor, series by series:

1. keep the latest attempt of every series, average the darks;
2. fit every reference series and every projection series by least squares on the measured
   (encoder) step positions, each frame normalised by the beam monitor (ring current); when
   the scan has a calibration series (reference series 0 with more steps than the projections,
   ``ScanPlan.calibration_steps``) and the curve it measures is not sinusoidal enough for the
   scan's steps, unbias every fit with that shape (``recon.curve``);
3. retrieve T, dphi and D of each projection against the reference interpolated in time between
   the reference series that bracket it; replace the detector's dead, hot and saturated pixels
   (found from the darks and the references) by the median of their good neighbours
   (``recon.badpixels``);
4. estimate the rotation centre from the attenuation and phase sinograms, optionally suppress
   rings, and reconstruct delta (Hilbert FBP), mu and the dark-field coefficient (ramp FBP) in
   physical units.

Arrays: frames (n_frames, rows, columns); projections (angles, rows, columns); volumes (z, y, x).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from contracts.frames import FrameTable, ImageKey
from contracts.instrument import Geometry
from recon.badpixels import BadPixels, find_bad_pixels, finite_frames, repair, saturated_pixels
from recon.center import center_from_projections
from recon.curve import (
    DOSE_REF_MA,
    FitChoice,
    choose_fit,
    frames_scale,
    measure_shape,
    unbias,
)
from recon.fbp import Method, reconstruct_darkfield, reconstruct_delta, reconstruct_mu
from recon.fitmode import FitMode
from recon.retrieval import (
    Signals,
    StepFit,
    fit_dose_normalised,
    retrieve_interpolated,
    step_phases,
    unwrap_rows,
)
from recon.rings import remove_stripes

F32 = NDArray[np.float32]


@dataclass(frozen=True)
class Projections:
    """Retrieved projections, each (angles, rows, columns) float32, and their angles [rad];
    ``fit``: which stepping-curve fit gave them (None: not recorded); ``bad_pixels``: the
    detector pixels replaced by their neighbours' median (None: not looked for)."""

    transmission: F32
    dphi: F32
    darkfield: F32
    angles_rad: NDArray[np.float64]
    fit: FitChoice | None = None
    bad_pixels: BadPixels | None = None


@dataclass(frozen=True)
class Volumes:
    """Reconstructed volumes (z, y, x) float32 in physical units.

    ``delta`` dimensionless, ``mu`` [1/m], ``darkfield`` (linear diffusion coefficient) [1/m].
    """

    delta: F32
    mu: F32
    darkfield: F32
    voxel_size_m: float
    center_offset_px: float
    fit: FitChoice | None = None  # the stepping-curve fit of the projections

    UNITS = {"delta": "1", "mu": "1/m", "darkfield": "1/m"}  # noqa: RUF012


def _series_groups(table: FrameTable, key: ImageKey, keep: NDArray[np.bool_]) -> dict[int, NDArray]:
    """Frame indices of each series of one image key (latest attempt only), by series number."""
    rows = table.rows
    selected = np.flatnonzero((rows["image_key"] == key) & keep)
    field = "angle_index" if key == ImageKey.PROJECTION else "series_index"
    groups: dict[int, list[int]] = {}
    for i in selected.tolist():
        groups.setdefault(int(rows[field][i]), []).append(i)
    return {k: np.asarray(v) for k, v in sorted(groups.items())}


@dataclass(frozen=True)
class SeriesFrames:
    """One series' frame indices in step order and its measured step phases [rad]."""

    index: NDArray[np.intp]
    theta: NDArray[np.float64]
    current_ma: NDArray[np.float64]

    @classmethod
    def of(cls, table: FrameTable, index: NDArray[np.intp], period_m: float) -> SeriesFrames:
        rows = table.rows[index]
        order = np.argsort(rows["step_index"], kind="stable")
        index, rows = index[order], rows[order]
        theta = step_phases(rows["g2_position_m"], period_m)
        return cls(index, theta, np.asarray(rows["ring_current_ma"], np.float64))


def _fit_series(
    frames: NDArray[np.generic], series: SeriesFrames, dark: F32 | None, dose_ref: float
) -> StepFit:
    """The first-harmonic fit of one series (unbiased later, with its alias table)."""
    return fit_dose_normalised(
        frames[series.index], series.theta, dark, series.current_ma, dose_ref
    )


def scan_fit(
    frames: NDArray[np.generic],
    references: dict[int, SeriesFrames],
    projections: dict[int, SeriesFrames],
    dark: F32 | None,
    dose_ref: float,
    mode: FitMode = "auto",
) -> FitChoice:
    """The fit of a scan's series: reference series 0 is a calibration series when it has more
    steps than every projection series; its shape decides (``recon.curve.choose_fit``)."""
    first = next(iter(projections.values()))
    calibration = references.get(0)
    most = max(p.index.size for p in projections.values())
    shape = None
    if calibration is not None and calibration.index.size > most:
        shape = measure_shape(  # without the dark: as a slab worker can (recon.curve)
            frames[calibration.index],
            calibration.theta,
            scale=frames_scale(calibration.current_ma, dose_ref),
        )
    return choose_fit(shape, first.theta, mode)


def retrieve_projections(
    frames: NDArray[np.generic],
    table: FrameTable,
    geometry: Geometry,
    *,
    fit: FitMode = "auto",
) -> Projections:
    """T, dphi and D of every projection angle of a scan.

    ``frames`` (n_frames, rows, columns) [counts] in the order of ``table``; the stepped grating's
    pitch comes from ``geometry.g2_pitch_m``. ``fit``: the stepping-curve fit (``recon.curve``:
    "auto" unbiases with the calibration series' shape when that matters). Raises ValueError if
    the scan has no reference series or no projections, or if the frame count does not match the
    table.
    """
    if frames.ndim != 3:
        raise ValueError(f"frames must be (n_frames, rows, columns), got shape {frames.shape}")
    if frames.shape[0] != len(table):
        raise ValueError(f"frames has {frames.shape[0]} frames but the table {len(table)} rows")
    frames, nonfinite, notes = finite_frames(frames)  # the fits refuse NaN and inf
    keep = table.latest_attempts()
    rows = table.rows
    dark_idx = np.flatnonzero((rows["image_key"] == ImageKey.DARK) & keep)
    dark = (
        frames[dark_idx].mean(axis=0, dtype=np.float64).astype(np.float32)
        if dark_idx.size
        else None
    )
    dose_ref = DOSE_REF_MA  # (a series with a reading <= 0 is not normalised)

    period = geometry.g2_pitch_m
    ref_groups = _series_groups(table, ImageKey.FLAT, keep)
    proj_groups = _series_groups(table, ImageKey.PROJECTION, keep)
    if not ref_groups:
        raise ValueError("the scan has no reference (flat) series: cannot normalise")
    if not proj_groups:
        raise ValueError("the scan has no projections")

    refs = {k: SeriesFrames.of(table, idx, period) for k, idx in ref_groups.items()}
    projs = {k: SeriesFrames.of(table, idx, period) for k, idx in proj_groups.items()}
    choice = scan_fit(frames, refs, projs, dark, dose_ref, fit)

    ref_fits: list[StepFit] = []
    ref_times: list[float] = []
    signal = np.zeros(frames.shape[1:], np.float64)  # mean reference minus dark [counts]
    for ref in refs.values():
        ref_fit = _fit_series(frames, ref, dark, dose_ref)
        signal += ref_fit.a0
        alias = choice.table(ref.theta)
        ref_fits.append(ref_fit if alias is None else unbias(ref_fit, alias, ref_fit))
        ref_times.append(float(rows["timestamp_s"][ref.index].mean()))
    order = np.argsort(ref_times)
    ref_fits = [ref_fits[i] for i in order]
    times = np.asarray(ref_times)[order]

    n = len(proj_groups)
    shape = frames.shape[1:]
    trans = np.empty((n, *shape), np.float32)
    dphi = np.empty((n, *shape), np.float32)
    dfield = np.empty((n, *shape), np.float32)
    angles = np.empty(n, np.float64)
    for j, proj in enumerate(projs.values()):
        idx = proj.index
        sample = _fit_series(frames, proj, dark, dose_ref)
        t_mid = float(rows["timestamp_s"][idx].mean())
        alias = choice.table(proj.theta)  # applied in the retrieval's pass
        retrieve_interpolated(
            sample, ref_fits, times, t_mid, Signals(trans[j], dphi[j], dfield[j]),
            None if alias is None else alias.lookup,
        )  # fmt: skip
        angles[j] = np.deg2rad(float(rows["rotation_deg"][idx].mean()))
    flats = (frames[i] for ref in refs.values() for i in ref.index)
    bad = find_bad_pixels(
        dark,
        signal / len(refs),
        saturated=saturated_pixels(flats, shape),
        nonfinite=nonfinite,
        notes=notes,
    )
    for signals in (trans, dphi, dfield):
        repair(signals, bad.mask)
    return Projections(trans, dphi, dfield, angles, choice, bad)


def _neg_log_safe(values: F32) -> F32:
    return np.clip(values, 1e-6, None).astype(np.float32)


def reconstruct_volumes(
    projections: Projections,
    geometry: Geometry,
    *,
    center_offset_px: float | None = None,
    rings: bool = False,
    unwrap: bool = True,
    method: Method = "gridding",
    rows: Sequence[int] | None = None,
    out: Volumes | None = None,
) -> Volumes:
    """delta, mu and dark-field volumes (z, y, x) from retrieved projections.

    ``center_offset_px``: rotation axis minus the detector centre (columns-1)/2 [px]; estimated
    from the attenuation and the differential-phase sinograms when None (``recon.center``).
    ``rings`` applies sorting-based stripe suppression to every sinogram; it is off by default
    because an object centred on the rotation axis (a rod) has sinogram columns that are constant
    over the angles, which the stripe filter cannot tell from a stripe (docs/reconstruction.md).
    ``unwrap`` unwraps the differential phase along the shear direction (Itoh, from air at the
    left edge; a no-op when nothing wrapped). ``rows`` restricts the reconstruction to some
    detector rows (z). ``out``: volumes of the same shape whose arrays are written into (an
    earlier scan's, which the caller no longer uses: ``StreamingReconstructor.recycle``).
    """
    sel = slice(None) if rows is None else list(rows)
    trans = _neg_log_safe(projections.transmission[:, sel])
    dfield = _neg_log_safe(projections.darkfield[:, sel])
    dphi = projections.dphi[:, sel]
    if unwrap:
        dphi = unwrap_rows(dphi)
    angles = projections.angles_rad
    if center_offset_px is None:  # attenuation and phase, each as far as it can be trusted
        center_offset_px = center_from_projections(
            -np.log(trans).mean(axis=1), dphi.mean(axis=1), angles
        ).offset_px
    if rings:
        dphi = remove_stripes(dphi)
        trans = np.exp(-remove_stripes(-np.log(trans))).astype(np.float32)
        dfield = np.exp(-remove_stripes(-np.log(dfield))).astype(np.float32)
    pixel = geometry.pixel_size_m
    delta = reconstruct_delta(
        dphi,
        angles,
        shear_px=geometry.shear_px,
        wavelength_m=geometry.wavelength_m,
        pixel_m=pixel,
        center_offset=center_offset_px,
        method=method,
        out=None if out is None else out.delta,
    )
    mu = reconstruct_mu(
        trans,
        angles,
        pixel_m=pixel,
        center_offset=center_offset_px,
        method=method,
        out=None if out is None else out.mu,
    )
    eps = reconstruct_darkfield(
        dfield,
        angles,
        pixel_m=pixel,
        center_offset=center_offset_px,
        method=method,
        out=None if out is None else out.darkfield,
    )
    return Volumes(delta, mu, eps, pixel, float(center_offset_px), projections.fit)
