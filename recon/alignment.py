"""Analysis of the alignment scans (``plans.alignment``): pure functions on frames + tags.

Frames are (n_frames, rows, columns) [counts] with the ``contracts.frames.FrameTable`` of the
scan file, positions in metres as in the file. Stepping-curve fits by least squares on the
measured grating positions (``recon.retrieval.fit_stepping``; Weitkamp et al., Opt. Express 13,
6296 (2005)); rotation centre from two opposite projections (``recon.center.center_from_opposite``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import ArrayLike, NDArray

from contracts.frames import FrameTable, ImageKey
from recon.center import center_from_opposite
from recon.retrieval import StepFit, fit_stepping, retrieve, step_phases

F32 = NDArray[np.float32]


@dataclass(frozen=True)
class VisibilityMaps:
    """Mean intensity [counts], visibility [1] and fringe phase [rad] maps, (rows, columns)."""

    mean: F32
    visibility: F32
    phase: F32

    def save(self, path: str | Path) -> Path:
        """Write the three maps to an ``.npz`` file; returns its path."""
        out = Path(path)
        np.savez(out, mean=self.mean, visibility=self.visibility, phase=self.phase)
        return out


def _dark(frames: NDArray[np.generic], table: FrameTable, keep: NDArray[np.bool_]) -> F32 | None:
    idx = np.flatnonzero((table.rows["image_key"] == ImageKey.DARK) & keep)
    if idx.size == 0:
        return None
    return frames[idx].mean(axis=0, dtype=np.float64).astype(np.float32)


def _series_fit(
    frames: NDArray[np.generic],
    table: FrameTable,
    key: ImageKey,
    index: int,
    period_m: float,
    dark: F32 | None,
) -> StepFit:
    rows = table.rows
    field = "angle_index" if key == ImageKey.PROJECTION else "series_index"
    keep = table.latest_attempts()
    idx = np.flatnonzero((rows["image_key"] == key) & (rows[field] == index) & keep)
    if idx.size < 3:
        kind = "reference" if key == ImageKey.FLAT else key.name.lower()
        raise ValueError(f"series {kind} {index} has {idx.size} frames; needs >= 3")
    idx = idx[np.argsort(rows["step_index"][idx], kind="stable")]
    theta = step_phases(rows["g2_position_m"][idx], period_m)
    return fit_stepping(np.asarray(frames)[idx], theta, dark)


def _check(frames: NDArray[np.generic], table: FrameTable, period_m: float) -> None:
    if np.ndim(frames) != 3:
        raise ValueError(f"frames must be (n_frames, rows, columns), got {np.shape(frames)}")
    if np.shape(frames)[0] != len(table):
        raise ValueError(f"frames has {np.shape(frames)[0]} frames but the table {len(table)}")
    if not period_m > 0:
        raise ValueError(f"period_m must be > 0, got {period_m!r}")


def visibility_maps(
    frames: NDArray[np.generic], table: FrameTable, period_m: float, series_index: int = 0
) -> VisibilityMaps:
    """Mean, visibility and phase maps of reference series ``series_index`` (dark-subtracted
    when the scan has darks). ``period_m``: pitch of the stepped grating [m]."""
    _check(frames, table, period_m)
    dark = _dark(frames, table, table.latest_attempts())
    fit = _series_fit(frames, table, ImageKey.FLAT, series_index, period_m, dark)
    return VisibilityMaps(fit.a0, fit.visibility, fit.phase)


def fringe_frequency(c1: ArrayLike) -> tuple[float, float]:
    """Signed moire fringe frequency (along rows y, along columns x) [cycles/px] of a complex
    first-harmonic map (rows, columns): the mean phase step between neighbours / 2 pi."""
    c = np.asarray(c1, dtype=np.complex128)
    if c.ndim != 2 or min(c.shape) < 2:
        raise ValueError(f"c1 must be 2-D with at least 2 rows and columns, got {c.shape}")
    fy = np.angle(np.sum(c[1:, :] * np.conj(c[:-1, :]))) / (2 * np.pi)
    fx = np.angle(np.sum(c[:, 1:] * np.conj(c[:, :-1]))) / (2 * np.pi)
    return float(fy), float(fx)


@dataclass(frozen=True)
class ScanResult:
    """A 1-D alignment scan: motor positions, the figure of merit at each, the best position."""

    positions: NDArray[np.float64]
    values: NDArray[np.float64]
    best: float


def roll_scan_result(
    frames: NDArray[np.generic], table: FrameTable, period_m: float, rolls_mrad: ArrayLike
) -> ScanResult:
    """Moire period versus G2 roll and the best roll [mrad].

    A roll mismatch turns the analyser lines against the fringes and gives moire fringes along
    y with a signed frequency linear in (roll - best); a line fit of the signed frequency finds
    its zero. ``values`` are moire periods along y [px] (inf where no fringe is seen).
    Reference series i was taken at ``rolls_mrad[i]``.
    """
    _check(frames, table, period_m)
    rolls = np.asarray(rolls_mrad, dtype=np.float64)
    if rolls.ndim != 1 or rolls.size < 3:
        raise ValueError(f"rolls_mrad needs at least 3 positions, got {rolls.size}")
    dark = _dark(frames, table, table.latest_attempts())
    freq = np.array(
        [
            fringe_frequency(_series_fit(frames, table, ImageKey.FLAT, i, period_m, dark).c1)[0]
            for i in range(rolls.size)
        ]
    )
    slope, intercept = np.polyfit(rolls, freq, 1)
    if slope == 0:
        raise ValueError("the moire frequency does not change with roll; widen rolls_mrad")
    with np.errstate(divide="ignore"):
        periods = np.where(freq != 0, 1.0 / np.abs(freq), np.inf)
    return ScanResult(rolls, periods, float(-intercept / slope))


def distance_scan_result(
    frames: NDArray[np.generic], table: FrameTable, period_m: float, z_mm: ArrayLike
) -> ScanResult:
    """Median visibility versus G2 z [mm] and the best z (vertex of a parabola through the
    maximum and its neighbours; the maximum itself at an end of the scan)."""
    _check(frames, table, period_m)
    z = np.asarray(z_mm, dtype=np.float64)
    if z.ndim != 1 or z.size < 3:
        raise ValueError(f"z_mm needs at least 3 positions, got {z.size}")
    dark = _dark(frames, table, table.latest_attempts())
    vis = np.array(
        [
            float(
                np.median(_series_fit(frames, table, ImageKey.FLAT, i, period_m, dark).visibility)
            )
            for i in range(z.size)
        ]
    )
    return ScanResult(z, vis, _peak(z, vis))


def _peak(x: NDArray[np.float64], y: NDArray[np.float64]) -> float:
    order = np.argsort(x)
    x, y = x[order], y[order]
    i = int(np.argmax(y))
    if i == 0 or i == x.size - 1:
        return float(x[i])
    a, b, _ = np.polyfit(x[i - 1 : i + 2], y[i - 1 : i + 2], 2)
    return float(-b / (2 * a)) if a < 0 else float(x[i])


def center_check_result(frames: NDArray[np.generic], table: FrameTable, period_m: float) -> float:
    """Rotation-centre offset [px] (axis minus detector centre (cols-1)/2) from the projection
    series at angle indices 0 and 1 (theta and theta + 180 deg) of a ``center_check_scan``,
    on the attenuation -ln T."""
    _check(frames, table, period_m)
    dark = _dark(frames, table, table.latest_attempts())
    ref = _series_fit(frames, table, ImageKey.FLAT, 0, period_m, dark)
    p = [
        retrieve(_series_fit(frames, table, ImageKey.PROJECTION, i, period_m, dark), ref)
        for i in (0, 1)
    ]
    a0 = -np.log(np.clip(p[0].transmission, 1e-6, None))
    a1 = -np.log(np.clip(p[1].transmission, 1e-6, None))
    return center_from_opposite(a0, a1)
