"""Analytic parallel-beam test objects with exact line integrals (pixel units).

Ellipses ``(x0, y0, a, b, alpha, value)`` in pixels, centred coordinates (x, y) about the rotation
axis; detector coordinate ``s = x cos theta + y sin theta``. Kak & Slaney ch. 3, eq. (3.35).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray

Ellipse = tuple[float, float, float, float, float, float]


def detector_s(n_cols: int, center_offset: float = 0.0) -> NDArray[np.float64]:
    """Detector coordinates s_i = i - (ncols-1)/2 - c_off [px]."""
    return np.arange(n_cols) - (n_cols - 1) / 2.0 - center_offset


def ellipse_projection(
    ellipses: Sequence[Ellipse], angles: NDArray[np.float64], s: NDArray[np.float64]
) -> NDArray[np.float64]:
    """Exact line integrals (angles, len(s)) of a sum of uniform ellipses [value * px]."""
    th = np.asarray(angles, dtype=np.float64)[:, None]
    out = np.zeros((th.shape[0], s.size))
    for x0, y0, a, b, alpha, value in ellipses:
        r2 = (a * np.cos(th - alpha)) ** 2 + (b * np.sin(th - alpha)) ** 2
        sp = s[None, :] - (x0 * np.cos(th) + y0 * np.sin(th))
        out += 2.0 * value * a * b * np.sqrt(np.clip(r2 - sp**2, 0.0, None)) / r2
    return out


def ellipse_image(ellipses: Sequence[Ellipse], n: int) -> NDArray[np.float64]:
    """Point-sampled image (n, n) (y, x) on x_j = j - (n-1)/2."""
    c = np.arange(n) - (n - 1) / 2.0
    x, y = np.meshgrid(c, c)
    img = np.zeros((n, n))
    for x0, y0, a, b, alpha, value in ellipses:
        xr = (x - x0) * np.cos(alpha) + (y - y0) * np.sin(alpha)
        yr = -(x - x0) * np.sin(alpha) + (y - y0) * np.cos(alpha)
        img += value * ((xr / a) ** 2 + (yr / b) ** 2 <= 1.0)
    return img


def gaussian_projection(
    blobs: Sequence[tuple[float, float, float, float]],
    angles: NDArray[np.float64],
    s: NDArray[np.float64],
) -> NDArray[np.float64]:
    """Exact line integrals of isotropic Gaussians ``(x0, y0, sigma, amplitude)`` [px]."""
    th = np.asarray(angles, dtype=np.float64)[:, None]
    out = np.zeros((th.shape[0], s.size))
    for x0, y0, sig, amp in blobs:
        sp = s[None, :] - (x0 * np.cos(th) + y0 * np.sin(th))
        out += amp * np.sqrt(2.0 * np.pi) * sig * np.exp(-0.5 * (sp / sig) ** 2)
    return out


def gaussian_image(
    blobs: Sequence[tuple[float, float, float, float]], n: int
) -> NDArray[np.float64]:
    """Point-sampled image (n, n) (y, x) of the Gaussians."""
    c = np.arange(n) - (n - 1) / 2.0
    x, y = np.meshgrid(c, c)
    img = np.zeros((n, n))
    for x0, y0, sig, amp in blobs:
        img += amp * np.exp(-0.5 * ((x - x0) ** 2 + (y - y0) ** 2) / sig**2)
    return img


def angles_180(n: int) -> NDArray[np.float64]:
    """n equally spaced angles over [0, pi) [rad]."""
    return np.arange(n) * np.pi / n
