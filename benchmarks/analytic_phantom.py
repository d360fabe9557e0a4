"""Analytic 2-D ellipse phantoms with exact parallel-beam line integrals (benchmarks only).

Kept separate from ``sim`` on purpose: the benchmarks must not depend on the simulator.

Coordinates are in detector pixels. Image pixel (row i, column j) sits at
``x = j - c``, ``y = i - c`` with ``c`` the image centre index ((n-1)/2 by default); an ellipse
of value ``rho`` (per pixel), centre ``(x0, y0)``, semi-axes ``a`` (along its own x) and ``b``,
rotated by ``phi`` [rad] counter-clockwise from +x. At projection angle theta [rad] the detector
coordinate is ``s = x cos theta + y sin theta``; the line integral [value x pixels] is
(Kak & Slaney, "Principles of Computerized Tomographic Imaging", ch. 3, eq. 3.41)::

    p(theta, s) = 2 rho a b sqrt(r^2 - t^2) / r^2   for |t| <= r, else 0,
    r^2 = a^2 cos^2(theta - phi) + b^2 sin^2(theta - phi),  t = s - x0 cos theta - y0 sin theta.

The finite-shear difference ``p(s + xi/2) - p(s - xi/2)`` (what a grating interferometer measures,
up to the constant) is exact too, so the Hilbert (DPC) path gets exact data as well.
Sinograms are (angles, columns) float32; images (rows, columns) = (y, x) float32.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

F32 = NDArray[np.float32]
F64 = NDArray[np.float64]


@dataclass(frozen=True)
class Ellipse:
    """One ellipse: value per pixel, centre and semi-axes as fractions of the half-width R."""

    rho: float
    a: float
    b: float
    x0: float
    y0: float
    phi_deg: float = 0.0


#: Modified Shepp-Logan (Toft 1996), the usual CT test object; fits in the unit circle.
SHEPP_LOGAN: tuple[Ellipse, ...] = (
    Ellipse(1.0, 0.69, 0.92, 0.0, 0.0),
    Ellipse(-0.8, 0.6624, 0.874, 0.0, -0.0184),
    Ellipse(-0.2, 0.11, 0.31, 0.22, 0.0, -18.0),
    Ellipse(-0.2, 0.16, 0.41, -0.22, 0.0, 18.0),
    Ellipse(0.1, 0.21, 0.25, 0.0, 0.35),
    Ellipse(0.1, 0.046, 0.046, 0.0, 0.1),
    Ellipse(0.1, 0.046, 0.046, 0.0, -0.1),
    Ellipse(0.1, 0.046, 0.023, -0.08, -0.605),
    Ellipse(0.1, 0.023, 0.023, 0.0, -0.606),
    Ellipse(0.1, 0.023, 0.046, 0.06, -0.605),
)


def unit_disk(radius: float = 0.4, x0: float = 0.0, y0: float = 0.0) -> tuple[Ellipse, ...]:
    """A disk of value 1 (fractions of R) - the scale check of every FBP convention."""
    return (Ellipse(1.0, radius, radius, x0, y0),)


def calibration_phantom() -> tuple[Ellipse, ...]:
    """A unit disk off centre plus a small marker disk: fixes scale AND orientation."""
    return (
        Ellipse(1.0, 0.35, 0.35, 0.2, -0.1),
        Ellipse(0.5, 0.08, 0.08, -0.45, 0.4),
    )


def _half_width(n: int) -> float:
    return n / 2.0


def sinogram(
    ellipses: tuple[Ellipse, ...],
    angles_rad: F64,
    n_cols: int,
    *,
    axis_col: float | None = None,
    shear_px: float | None = None,
) -> F32:
    """Exact line integrals (angles, n_cols) [value x pixels] sampled at the column centres.

    ``axis_col``: detector column of the rotation axis (default (n_cols-1)/2); column i has
    ``s = i - axis_col``. ``shear_px``: return the finite difference ``p(s + xi/2) - p(s - xi/2)``
    instead (differential data with shear xi in pixels).
    """
    if n_cols < 2:
        raise ValueError(f"n_cols must be >= 2, got {n_cols!r}")
    theta = np.asarray(angles_rad, dtype=np.float64)
    if theta.ndim != 1:
        raise ValueError(f"angles_rad must be 1-D, got shape {theta.shape}")
    c = (n_cols - 1) / 2.0 if axis_col is None else float(axis_col)
    s = np.arange(n_cols, dtype=np.float64) - c
    if shear_px is None:
        return _integrals(ellipses, theta, s, _half_width(n_cols)).astype(np.float32)
    if not shear_px > 0:
        raise ValueError(f"shear_px must be > 0 pixels, got {shear_px!r}")
    big_r = _half_width(n_cols)
    hi = _integrals(ellipses, theta, s + shear_px / 2.0, big_r)
    lo = _integrals(ellipses, theta, s - shear_px / 2.0, big_r)
    return (hi - lo).astype(np.float32)


def _integrals(ellipses: tuple[Ellipse, ...], theta: F64, s: F64, big_r: float) -> F64:
    out = np.zeros((theta.size, s.size))
    cos_t = np.cos(theta)[:, None]
    sin_t = np.sin(theta)[:, None]
    for e in ellipses:
        a, b = e.a * big_r, e.b * big_r
        x0, y0 = e.x0 * big_r, e.y0 * big_r
        phi = np.deg2rad(e.phi_deg)
        rel = theta[:, None] - phi
        r2 = a**2 * np.cos(rel) ** 2 + b**2 * np.sin(rel) ** 2
        t = s[None, :] - (x0 * cos_t + y0 * sin_t)
        inside = np.clip(r2 - t**2, 0.0, None)
        out += 2.0 * e.rho * a * b * np.sqrt(inside) / r2
    return out


def image(
    ellipses: tuple[Ellipse, ...],
    n: int,
    *,
    centre: float | None = None,
    centre_y: float | None = None,
    supersample: int = 3,
) -> F32:
    """Phantom image (n, n) = (y, x), each pixel the mean of supersample^2 point samples.

    ``centre``: pixel index of the rotation axis along x (default (n-1)/2) - must match the
    detector ``axis_col`` convention the sinogram was sampled with; ``centre_y`` the row index of
    the axis (default: same as ``centre``).
    """
    if n < 2:
        raise ValueError(f"n must be >= 2, got {n!r}")
    if supersample < 1:
        raise ValueError(f"supersample must be >= 1, got {supersample!r}")
    c = (n - 1) / 2.0 if centre is None else float(centre)
    cy = c if centre_y is None else float(centre_y)
    big_r = _half_width(n)
    offs = (np.arange(supersample) + 0.5) / supersample - 0.5
    out = np.zeros((n, n))
    idx = np.arange(n, dtype=np.float64) - c
    idy = np.arange(n, dtype=np.float64) - cy
    for e in ellipses:
        a, b = e.a * big_r, e.b * big_r
        x0, y0 = e.x0 * big_r, e.y0 * big_r
        cp, sp = np.cos(np.deg2rad(e.phi_deg)), np.sin(np.deg2rad(e.phi_deg))
        # only the bounding box of the ellipse
        ext = max(a, b) + 1.0
        j0 = max(0, int(np.floor(x0 + c - ext)))
        j1 = min(n, int(np.ceil(x0 + c + ext)) + 1)
        i0 = max(0, int(np.floor(y0 + cy - ext)))
        i1 = min(n, int(np.ceil(y0 + cy + ext)) + 1)
        if j0 >= j1 or i0 >= i1:
            continue
        acc = np.zeros((i1 - i0, j1 - j0))
        for dy in offs:
            y = (idy[i0:i1] + dy - y0)[:, None]
            for dx in offs:
                x = (idx[j0:j1] + dx - x0)[None, :]
                u = (x * cp + y * sp) / a
                v = (-x * sp + y * cp) / b
                acc += (u * u + v * v) <= 1.0
        out[i0:i1, j0:j1] += e.rho * acc / supersample**2
    return out.astype(np.float32)


def circle_mask(
    n: int, *, margin_px: float = 2.0, centre: float | None = None
) -> NDArray[np.bool_]:
    """Pixels inside the reconstruction circle (radius n/2 - margin_px) of an n x n image."""
    c = (n - 1) / 2.0 if centre is None else float(centre)
    idx = np.arange(n) - c
    r2 = idx[:, None] ** 2 + idx[None, :] ** 2
    return np.asarray(r2 <= (n / 2.0 - margin_px) ** 2)
