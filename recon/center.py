"""Rotation-centre estimation for parallel-beam sinograms.

Convention (docs/reconstruction.md): the rotation axis sits at detector column
``(ncols-1)/2 + c_off``; every function here returns ``c_off`` [px] (the value the FBP functions
take as ``center_offset``). Two methods:

- ``center_from_sinogram``: the centre of mass of each projection of a non-negative sinogram
  (e.g. -ln T over 180 deg) follows ``m1(theta) = c + a cos theta + b sin theta`` exactly in
  parallel beam when the object stays in the field (Helgason-Ludwig consistency, order 1; Kak &
  Slaney ch. 3); a linear least-squares fit gives c.
- ``center_from_phase``: the same on the phase projection, the differential phase integrated
  along the shear direction (``integrate_phase``): a refracting object that hardly absorbs has a
  phase projection but no -ln T to speak of;
- ``center_from_projections``: both, weighed by how well each projection's centre of mass
  follows the sinusoid of its orbit (the standard error of c), so that the one to trust wins;
- ``center_from_opposite``: p(theta + pi, s) = p(theta, -s), so the mirrored opposite projection
  is the first one shifted by 2 c_off; integer lag by FFT cross-correlation, then a sub-pixel
  refinement minimising the squared difference under a band-limited (Fourier) shift. With
  ``odd=True`` for differential-phase data, g(theta + pi, s) = -g(theta, -s)
  (docs/physics.md). The operator's alignment check.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import scipy.fft
import scipy.optimize
from numpy.typing import ArrayLike, NDArray


@dataclass(frozen=True)
class CenterFit:
    """A rotation-centre estimate: offset c_off [px] and its standard error [px] from the
    scatter of the centres of mass about the fitted orbit (inf when it cannot be told)."""

    offset_px: float
    stderr_px: float


def center_from_sinogram(sinogram: ArrayLike, angles_rad: ArrayLike) -> float:
    """Rotation-centre offset c_off [px] from the projection centres of mass.

    ``sinogram`` (angles, columns), non-negative line integrals (e.g. -ln T or mu), the object
    inside the field at every angle; ``angles_rad`` (angles,) [rad], at least 3 distinct angles
    not all equal modulo pi.
    """
    return fit_center(sinogram, angles_rad).offset_px


def fit_center(sinogram: ArrayLike, angles_rad: ArrayLike) -> CenterFit:
    """``center_from_sinogram`` with the standard error of the offset [px]."""
    s = np.asarray(sinogram, dtype=np.float64)
    th = np.asarray(angles_rad, dtype=np.float64)
    if s.ndim != 2:
        raise ValueError(f"sinogram must be (angles, columns), got shape {s.shape}")
    if th.ndim != 1 or th.size != s.shape[0]:
        raise ValueError(f"angles_rad must be 1-D with {s.shape[0]} angles, got shape {th.shape}")
    if th.size < 3:
        raise ValueError(f"angles_rad needs at least 3 angles, got {th.size}")
    if not (np.all(np.isfinite(s)) and np.all(np.isfinite(th))):
        raise ValueError("sinogram and angles_rad must be finite")
    mass = s.sum(axis=1)
    if np.any(mass <= 0):
        raise ValueError("sinogram must have a positive total in every projection (object in view)")
    cols = np.arange(s.shape[1], dtype=np.float64)
    m1 = (s @ cols) / mass
    a = np.stack([np.ones_like(th), np.cos(th), np.sin(th)], axis=1)
    if np.linalg.cond(a) > 1e3:
        raise ValueError("angles_rad do not span enough of the circle to separate centre and orbit")
    coef, *_ = np.linalg.lstsq(a, m1, rcond=None)
    dof = th.size - 3
    resid = m1 - a @ coef
    sigma2 = float(resid @ resid) / dof if dof > 0 else math.inf
    stderr = math.sqrt(sigma2 * float(np.linalg.inv(a.T @ a)[0, 0])) if dof > 0 else math.inf
    return CenterFit(float(coef[0] - (s.shape[1] - 1) / 2.0), stderr)


def integrate_phase(dphi: ArrayLike, edge_px: int = 2) -> NDArray[np.float64]:
    """Phase projections (angles, columns) [rad, up to the shear's scale] from differential
    phase (angles, columns) [rad]: the running sum along the columns (the shear direction),
    centred on each column,
    less the straight line through the mean of the ``edge_px`` outermost columns at each side,
    which are air when the object stays in the field (this removes a constant phase offset of
    the reference, which the sum turns into a ramp)."""
    g = np.asarray(dphi, dtype=np.float64)
    if g.ndim != 2 or g.shape[1] < 2 * edge_px + 2:
        raise ValueError(f"dphi must be (angles, columns >= {2 * edge_px + 2}), got {g.shape}")
    # the running sum up to column j integrates up to j + 1/2; less half of column j's own
    # value it is centred on column j (the mean of the sums up to j and j - 1)
    phase = np.cumsum(g, axis=1) - 0.5 * g
    left = phase[:, :edge_px].mean(axis=1, keepdims=True)
    right = phase[:, -edge_px:].mean(axis=1, keepdims=True)
    u = (np.arange(g.shape[1]) - (edge_px - 1) / 2.0) / (g.shape[1] - edge_px)
    return phase - (left + (right - left) * u[None, :])


class NoCentre(ValueError):
    """No sinogram gives the rotation centre (too few angles, no contrast)."""


def center_from_phase(dphi: ArrayLike, angles_rad: ArrayLike) -> CenterFit:
    """Rotation centre from the differential-phase sinogram (angles, columns) [rad] of an object
    that refracts as matter does (delta > 0: a non-negative phase projection)."""
    return fit_center(integrate_phase(dphi), angles_rad)


def center_from_projections(
    neg_log_t: ArrayLike, dphi: ArrayLike, angles_rad: ArrayLike
) -> CenterFit:
    """The rotation centre from the attenuation (-ln T) and the differential-phase sinograms
    (angles, columns), each weighed by 1 / its standard error squared; a sinogram that cannot
    give one (no absorption: no positive total) is left out. NoCentre when neither can."""
    fits: list[CenterFit] = []
    errors: list[str] = []
    for name, make in (
        ("attenuation", lambda: fit_center(neg_log_t, angles_rad)),
        ("differential phase", lambda: center_from_phase(dphi, angles_rad)),
    ):
        try:
            fits.append(make())
        except ValueError as exc:
            errors.append(f"{name}: {exc}")
    fits = [f for f in fits if math.isfinite(f.offset_px)]
    if not fits:
        raise NoCentre("no sinogram gives the rotation centre (" + "; ".join(errors) + ")")
    if len(fits) == 1 or not all(math.isfinite(f.stderr_px) and f.stderr_px > 0 for f in fits):
        return min(fits, key=lambda f: f.stderr_px)
    weights = np.array([1.0 / f.stderr_px**2 for f in fits])
    offset = float(np.dot(weights, [f.offset_px for f in fits]) / weights.sum())
    return CenterFit(offset, float(1.0 / math.sqrt(weights.sum())))


def _fourier_shift(p: NDArray[np.float64], shift: float, n_pad: int) -> NDArray[np.float64]:
    """p(i - shift) by band-limited interpolation (zero-padded to n_pad)."""
    spec = scipy.fft.rfft(p, n=n_pad)
    nu = np.fft.rfftfreq(n_pad)
    return scipy.fft.irfft(spec * np.exp(-2j * np.pi * nu * shift), n=n_pad)[: p.size]


def _edge_level(p: NDArray[np.float64]) -> NDArray[np.float64]:
    return np.concatenate([p[:, :2], p[:, -2:]], axis=1).mean(axis=1, keepdims=True)


def center_from_opposite(p0: ArrayLike, p180: ArrayLike, *, odd: bool = False) -> float:
    """Rotation-centre offset c_off [px] from two projections 180 deg apart.

    ``p0``, ``p180``: (columns,) or (rows, columns) (rows are summed after mirroring, which keeps
    the relation); transmission-like data (``odd=False``) or differential phase (``odd=True``,
    sign flips under the mirror). Sub-pixel accurate for smooth, in-field objects.
    """
    a = np.asarray(p0, dtype=np.float64)
    b = np.asarray(p180, dtype=np.float64)
    if a.shape != b.shape or a.ndim not in (1, 2):
        raise ValueError(
            f"p0 and p180 must have the same shape (columns,) or (rows, columns), got "
            f"{a.shape} and {b.shape}"
        )
    if not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))):
        raise ValueError("p0 and p180 must be finite")
    if a.ndim == 2:
        a2, b2 = a, b
    else:
        a2, b2 = a[None], b[None]
    n = a2.shape[1]
    if n < 4:
        raise ValueError(f"p0 needs at least 4 columns, got {n}")
    # mirrored opposite projection: r(u) = p0(u + 2 c_off)
    r = b2[:, ::-1] * (-1.0 if odd else 1.0)
    # subtract the air level (mean of the two outermost columns at each side) so that the zero
    # padding adds no edge
    a2 = a2 - _edge_level(a2)
    r = r - _edge_level(r)
    n_pad = scipy.fft.next_fast_len(2 * n)
    xc = scipy.fft.irfft(
        np.sum(scipy.fft.rfft(r, n=n_pad) * np.conj(scipy.fft.rfft(a2, n=n_pad)), axis=0), n=n_pad
    )
    lag = int(np.argmax(xc))
    if lag > n_pad // 2:
        lag -= n_pad
    # r(u) = a(u + d) with d = 2 c_off: the correlation peaks at lag = -d
    d0 = -float(lag)

    def cost(d: float) -> float:
        shifted = np.stack([_fourier_shift(row, -d, n_pad) for row in a2])
        lo, hi = int(np.ceil(abs(d))) + 1, n - int(np.ceil(abs(d))) - 1
        return float(np.sum((shifted[:, lo:hi] - r[:, lo:hi]) ** 2))

    res = scipy.optimize.minimize_scalar(
        cost, bounds=(d0 - 1.5, d0 + 1.5), method="bounded", options={"xatol": 1e-4}
    )
    return float(res.x) / 2.0
