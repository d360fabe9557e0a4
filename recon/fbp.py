"""Filtered backprojection for parallel-beam grating-interferometer CT (ramp and Hilbert).

Conventions (docs/reconstruction.md):

- Sinograms are (angles, columns), stacks (angles, rows, columns); angles [rad] over [0, pi).
  Volumes are (z, y, x) with z = detector row and x, y centred on the rotation axis:
  ``x_j = (j - (n-1)/2)`` pixels. Detector column i has ``s_i = i - (ncols-1)/2 - c_off`` pixels,
  the rotation axis sitting at column ``(ncols-1)/2 + c_off``; at angle theta,
  ``s = x cos theta + y sin theta``.
- Filters are the DISCRETE spatial kernels in pixel units (Kak & Slaney, "Principles of
  Computerized Tomographic Imaging", ch. 3; docs/physics.md), applied by FFT convolution
  with >= 2x zero padding: Ram-Lak ``h[0] = 1/4, h[odd n] = -1/(pi^2 n^2)``, Hilbert
  ``h[odd n] = 1/(pi^2 n)`` (frequency response ``-i sgn(nu)/(2 pi)``, the filter of Pfeiffer et
  al., PRL 98, 108105 (2007), applied to derivative data ``dp/ds``). Even lags are zero.
- Backprojection weight pi/N_theta: ``f(x, y) = pi/N_theta sum_theta q_theta(x cos + y sin)``.
  The result is in "per pixel" units: the value whose line integral in pixel units is the data.

Two backprojectors: a direct one (numba, linear interpolation, any subset of slices; the live
slices and the ground truth) and the fast path ``GriddingBackprojector`` (type-1 NUFFT of the
filtered projections' spectra on the polar grid to the image grid with finufft: Barnett, Magland,
af Klinteberg, SIAM J. Sci. Comput. 41, C479 (2019)), which equals backprojection with
band-limited instead of linear interpolation.
"""

from __future__ import annotations

import math
import os
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any, Literal

import finufft
import numba
import numpy as np
import scipy.fft
from numpy.typing import ArrayLike, NDArray

FilterKind = Literal["ramp", "hilbert"]
Window = Literal["none", "hann", "shepp-logan"]
Method = Literal["gridding", "direct"]

F32 = NDArray[np.float32]

#: Largest shear [px] for the finite-shear (sinc) correction: the first zero of sinc(nu xi) must
#: stay beyond the detector Nyquist frequency with margin (sinc(0.75) = 0.30).
MAX_CORRECTED_SHEAR_PX = 1.5


#: Images at least this many pixels across plan the NUFFT's fine-grid FFT with FFTW_MEASURE
#: (FFTW times candidate algorithms once per grid size and transform count in a process, ~2 s at
#: 1024 px, and keeps the winner as wisdom); smaller ones use FFTW_ESTIMATE, whose plans cost
#: nothing and whose transforms are as fast there. At 1024 px x 180 angles MEASURE halves the
#: transform (38 -> 19 ms, docs/benchmarks.md).
FFTW_MEASURE_MIN_SIZE = 512
_FFTW_MEASURE, _FFTW_ESTIMATE = 0, 64  # FFTW's planner flags, as finufft's ``fftw`` option


def _workers() -> int:
    return os.cpu_count() or 1


def _fftw_flag(size: int) -> int:
    return _FFTW_MEASURE if size >= FFTW_MEASURE_MIN_SIZE else _FFTW_ESTIMATE


def _finufft_plan(size: int, n_trans: int, eps: float, nthreads: int) -> Any:
    return finufft.Plan(
        1,
        (size, size),
        n_trans=n_trans,
        eps=eps,
        isign=1,
        dtype="complex64",
        nthreads=nthreads,
        fftw=_fftw_flag(size),
    )


# --------------------------------------------------------------------------------------------
# checks


def _check_angles(angles_rad: ArrayLike, n_angles: int | None = None) -> NDArray[np.float64]:
    a = np.asarray(angles_rad, dtype=np.float64)
    if a.ndim != 1 or a.size == 0:
        raise ValueError(f"angles_rad must be a non-empty 1-D array [rad], got shape {a.shape}")
    if not np.all(np.isfinite(a)):
        raise ValueError("angles_rad contains NaN or inf")
    if n_angles is not None and a.size != n_angles:
        raise ValueError(
            f"angles_rad has {a.size} angles but the sinogram has {n_angles} (axis 0 must match)"
        )
    return a


def _check_sinogram(sino: ArrayLike, name: str = "sinogram") -> NDArray[np.float32]:
    s = np.asarray(sino)
    if s.ndim not in (2, 3):
        raise ValueError(
            f"{name} must be (angles, columns) or (angles, rows, columns), got shape {s.shape}"
        )
    if s.shape[0] < 1 or s.shape[-1] < 2:
        raise ValueError(f"{name} needs >= 1 angle and >= 2 columns, got shape {s.shape}")
    s = np.asarray(s, dtype=np.float32)
    if not np.all(np.isfinite(s)):
        raise ValueError(f"{name} contains NaN or inf")
    return s


def _check_offset(center_offset: float) -> float:
    c = float(center_offset)
    if not math.isfinite(c):
        raise ValueError(f"center_offset must be finite [px], got {center_offset!r}")
    return c


def _check_size(size: int | None, n_cols: int) -> int:
    n = n_cols if size is None else int(size)
    if n < 1:
        raise ValueError(f"size must be a positive number of pixels, got {size!r}")
    return n


# --------------------------------------------------------------------------------------------
# filters


def padded_length(n_cols: int, pad_factor: float = 2.0) -> int:
    """Even FFT length >= pad_factor * n_cols (pad_factor >= 2)."""
    if pad_factor < 2:
        raise ValueError(f"pad_factor must be >= 2 (linear convolution), got {pad_factor!r}")
    n = scipy.fft.next_fast_len(math.ceil(pad_factor * n_cols), real=True)
    return n + (n % 2)


def gridding_length(n_cols: int, size: int, center_offset: float = 0.0, margin: int = 8) -> int:
    """Shortest even FFT length L for the gridding backprojector's periodic projections that keeps
    every pixel of the ``size``-px square image off the wrapped copies of the data.

    Pixel (x, y) reads the filtered projection at ``u = axis + x cos + y sin`` with ``|u - axis|
    <= R = size/sqrt(2) + 1`` (the square's half-diagonal); the data occupy columns
    ``0 .. n_cols-1`` and are zero beyond. A period L maps u outside the data to ``u -+ L``, which
    must stay ``margin`` columns clear of them: ``L >= max(n_cols - (axis - R), axis + R) +
    margin``. At 1024 columns this is ~1250 against the 2048 of 2x zero padding, and the NUFFT
    spreads that many fewer polar points (docs/benchmarks.md).
    """
    axis = (n_cols - 1) / 2.0 + center_offset
    reach = size / math.sqrt(2.0) + 1.0
    n = scipy.fft.next_fast_len(math.ceil(max(n_cols - (axis - reach), axis + reach)) + margin)
    while n % 2:
        n = scipy.fft.next_fast_len(n + 1)
    return int(n)


def filter_response(
    kind: FilterKind,
    n_pad: int,
    *,
    window: Window = "none",
    shear_px: float | None = None,
) -> NDArray[np.complex128]:
    """rfft response (n_pad//2 + 1,) of the discrete spatial kernel on a padded length ``n_pad``.

    ``kind="ramp"``: Ram-Lak (real, ~|nu|); ``kind="hilbert"``: ``h[odd n] = 1/(pi^2 n)``
    (imaginary, ~ -i sgn(nu)/(2 pi)), nu in cycles/pixel. ``window`` multiplies the response
    (hann ``(1 + cos 2 pi nu)/2``, shepp-logan ``sinc(nu)``). ``shear_px`` (Hilbert only, <= 1.5)
    divides by ``sinc(nu xi)``: the exact inverse of the finite-shear difference
    ``Phi(s + xi/2) - Phi(s - xi/2) = xi (sinc(nu xi) * dPhi/ds)`` in frequency.
    """
    if n_pad < 4 or n_pad % 2:
        raise ValueError(f"n_pad must be an even length >= 4, got {n_pad!r}")
    lag = np.fft.fftfreq(n_pad, d=1.0 / n_pad)  # integer lags in [-n/2, n/2)
    odd = (np.abs(lag) % 2) == 1
    h = np.zeros(n_pad)
    if kind == "ramp":
        h[0] = 0.25
        h[odd] = -1.0 / (np.pi**2 * lag[odd] ** 2)
        h[n_pad // 2] = 0.0  # keep the kernel symmetric
        resp = scipy.fft.rfft(h).real.astype(np.complex128)
    elif kind == "hilbert":
        h[odd] = 1.0 / (np.pi**2 * lag[odd])
        h[n_pad // 2] = 0.0  # keep the kernel antisymmetric
        resp = 1j * scipy.fft.rfft(h).imag
    else:
        raise ValueError(f"kind must be 'ramp' or 'hilbert', got {kind!r}")
    nu = np.fft.rfftfreq(n_pad)
    if window == "hann":
        resp *= 0.5 * (1.0 + np.cos(2.0 * np.pi * nu))
    elif window == "shepp-logan":
        resp *= np.sinc(nu)
    elif window != "none":
        raise ValueError(f"window must be 'none', 'hann' or 'shepp-logan', got {window!r}")
    if shear_px is not None:
        if kind != "hilbert":
            raise ValueError("shear_px (finite-shear correction) applies to kind='hilbert' only")
        if not (0 < shear_px <= MAX_CORRECTED_SHEAR_PX):
            raise ValueError(
                f"shear_px must be in (0, {MAX_CORRECTED_SHEAR_PX}] px for the finite-shear "
                f"correction, got {shear_px!r}"
            )
        resp /= np.sinc(nu * shear_px)
    return resp


def filter_sinogram(
    sinogram: ArrayLike,
    kind: FilterKind,
    *,
    window: Window = "none",
    shear_px: float | None = None,
    pad_factor: float = 2.0,
) -> F32:
    """Convolve every projection row (last axis = detector columns) with the discrete kernel.

    Input (..., columns) in data units; output float32, same shape, data units per pixel (ramp)
    or data units (Hilbert). Zero padding to ``padded_length(columns, pad_factor)``.
    """
    s = _check_sinogram(sinogram) if np.ndim(sinogram) in (2, 3) else np.asarray(sinogram)
    n_cols = s.shape[-1]
    n_pad = padded_length(n_cols, pad_factor)
    resp = filter_response(kind, n_pad, window=window, shear_px=shear_px)
    spec = scipy.fft.rfft(s, n=n_pad, axis=-1, workers=_workers())
    spec *= resp.astype(np.complex64 if spec.dtype == np.complex64 else np.complex128)
    out = scipy.fft.irfft(spec, n=n_pad, axis=-1, workers=_workers())[..., :n_cols]
    return np.ascontiguousarray(out, dtype=np.float32)


# --------------------------------------------------------------------------------------------
# direct backprojection (linear interpolation)


@numba.njit(parallel=True, fastmath=True, cache=True)
def _bp_kernel(q, cos_t, sin_t, weights, axis_col, scale, out):  # type: ignore[no-untyped-def]
    # q: (angles, slices, samples + 2), sample j at column j/scale, one zero sample at each end;
    # out: (slices, n, n) y, x
    n_ang, n_sl, ncp = q.shape
    n = out.shape[1]
    half = (n - 1) / 2.0
    for yi in numba.prange(n):
        y = yi - half
        for a in range(n_ang):
            c = cos_t[a] * scale
            base = (y * sin_t[a] + axis_col) * scale + 1.0 - half * c  # +1: leading zero sample
            w = weights[a]
            for xi in range(n):
                u = base + xi * c
                if u < 0.0 or u >= ncp - 1:
                    continue
                i = int(u)
                t = u - i
                for z in range(n_sl):
                    out[z, yi, xi] += w * ((1.0 - t) * q[a, z, i] + t * q[a, z, i + 1])


def accumulate_projection(
    out: NDArray[np.float32],
    filtered: ArrayLike,
    theta_rad: float,
    *,
    weight: float,
    center_offset: float = 0.0,
) -> None:
    """Add one filtered projection to slices in place (streaming / live slices).

    ``out`` (slices, n, n) float32 (y, x); ``filtered`` (slices, columns) filtered detector rows of
    the same slices; ``weight`` is the backprojection weight (pi/N_theta for a full 180 deg scan).
    Linear interpolation, zero outside the detector.
    """
    q = np.asarray(filtered, dtype=np.float32)
    if q.ndim != 2:
        raise ValueError(f"filtered must be (slices, columns), got shape {q.shape}")
    if out.ndim != 3 or out.shape[0] != q.shape[0] or out.shape[1] != out.shape[2]:
        raise ValueError(f"out must be (slices={q.shape[0]}, n, n), got shape {out.shape}")
    if out.dtype != np.float32:
        raise ValueError(f"out must be float32, got {out.dtype}")
    _backproject_into(out, q[None], np.array([theta_rad]), np.array([weight]), center_offset)


def _backproject_into(
    out: NDArray[np.float32],
    q: NDArray[np.float32],
    angles: NDArray[np.float64],
    weights: NDArray[np.float64],
    center_offset: float,
    oversample: int = 1,
) -> None:
    n_cols = q.shape[-1]
    if oversample < 1:
        raise ValueError(f"oversample must be an integer >= 1, got {oversample!r}")
    if oversample > 1:
        q = upsample(q, oversample)
    qp = np.zeros((*q.shape[:-1], q.shape[-1] + 2), np.float32)
    qp[..., 1:-1] = q
    axis_col = (n_cols - 1) / 2.0 + _check_offset(center_offset)
    _bp_kernel(
        qp,
        np.cos(angles).astype(np.float64),
        np.sin(angles).astype(np.float64),
        weights.astype(np.float32),
        axis_col,
        float(oversample),
        out,
    )


def upsample(q: NDArray[np.float32], factor: int, pad_factor: float = 2.0) -> F32:
    """Band-limited (DFT zero-insertion) upsampling along the last axis: sample j at column
    j/factor; the same interpolant the gridding path evaluates exactly. (..., n) -> (..., n*factor).
    """
    n_cols = q.shape[-1]
    n_pad = padded_length(n_cols, pad_factor)
    spec = scipy.fft.rfft(q, n=n_pad, axis=-1, workers=_workers())
    spec[..., -1] *= 0.5  # split the Nyquist term symmetrically
    up = scipy.fft.irfft(spec, n=n_pad * factor, axis=-1, workers=_workers()) * factor
    return np.ascontiguousarray(up[..., : n_cols * factor], dtype=np.float32)


def backproject(
    filtered: ArrayLike,
    angles_rad: ArrayLike,
    *,
    center_offset: float = 0.0,
    size: int | None = None,
    oversample: int = 1,
) -> F32:
    """Direct backprojection with linear interpolation and weight pi/N_theta.

    ``filtered`` (angles, columns) -> (n, n), or (angles, rows, columns) -> (rows, n, n), (y, x)
    with n = ``size`` (default: columns). Units: data units (per pixel if ramp-filtered).
    ``oversample`` > 1 first upsamples the projections band-limited (then linear interpolation
    between the fine samples approaches the band-limited interpolant of the gridding path).
    """
    q = _check_sinogram(filtered, "filtered")
    angles = _check_angles(angles_rad, q.shape[0])
    single = q.ndim == 2
    q3 = q[:, None, :] if single else q
    n = _check_size(size, q.shape[-1])
    out = np.zeros((q3.shape[1], n, n), np.float32)
    weights = np.full(angles.size, np.pi / angles.size)
    _backproject_into(out, q3, angles, weights, center_offset, oversample)
    return out[0] if single else out


def backproject_rows(
    sinograms: ArrayLike,
    angles_rad: ArrayLike,
    rows: Sequence[int],
    kind: FilterKind,
    *,
    window: Window = "none",
    shear_px: float | None = None,
    center_offset: float = 0.0,
    size: int | None = None,
) -> F32:
    """Filter and directly backproject chosen detector rows of a stack: live slices.

    ``sinograms`` (angles, rows, columns); returns (len(rows), n, n) (y, x) in FBP units.
    """
    s = np.asarray(sinograms)
    if s.ndim != 3:
        raise ValueError(f"sinograms must be (angles, rows, columns), got shape {s.shape}")
    idx = np.asarray(rows, dtype=np.int64)
    if idx.ndim != 1 or idx.size == 0 or idx.min() < 0 or idx.max() >= s.shape[1]:
        raise ValueError(f"rows must be indices in [0, {s.shape[1]}), got {list(rows)!r}")
    q = filter_sinogram(s[:, idx, :], kind, window=window, shear_px=shear_px)
    return backproject(q, angles_rad, center_offset=center_offset, size=size)


# --------------------------------------------------------------------------------------------
# fast path: NUFFT gridding


class GriddingBackprojector:
    """Backprojection of filtered projections by a type-1 NUFFT (Fourier-class gridding).

    With ``Q_theta[m]`` the length-L DFT of the zero-padded filtered projection (L from
    ``gridding_length``: no pixel of the square image reads a wrapped copy; or
    ``padded_length(n_cols, pad_factor)`` when ``pad_factor`` is given) and
    ``nu_m = m/L`` (m = -L/2..L/2, Nyquist split in halves so the result stays real),
    ``f(x, y) = pi/(N_theta L) sum_theta sum_m Q_theta[m] e^{2 pi i nu_m u}`` with
    ``u = u_axis + x cos theta + y sin theta``: band-limited interpolation of the same filtered
    samples the direct backprojector uses. The polar points ``(nu cos, nu sin)`` and the axis
    phase ramp are set once per geometry
    (``finufft.Plan``, reused); two real slices are packed into one complex transform and
    up to ``batch`` transforms run per call (n_trans; a plan per transform count in use, made on
    first need). complex64 with ``eps`` = 1e-4 by default: the benchmark's RMSE against the
    phantom is the same to 4 digits as at 1e-6, at 2.5x the speed (docs/benchmarks.md).
    """

    def __init__(
        self,
        n_cols: int,
        angles_rad: ArrayLike,
        *,
        size: int | None = None,
        center_offset: float = 0.0,
        pad_factor: float | None = None,
        eps: float = 1e-4,
        batch: int = 2,
        nthreads: int | None = None,
    ) -> None:
        if n_cols < 2:
            raise ValueError(f"n_cols must be >= 2, got {n_cols!r}")
        if batch < 1:
            raise ValueError(f"batch must be >= 1, got {batch!r}")
        if not (1e-7 <= eps < 1e-1):
            raise ValueError(f"eps must be in [1e-7, 0.1), got {eps!r}")
        self.angles = _check_angles(angles_rad)
        self.n_cols = int(n_cols)
        self.size = _check_size(size, self.n_cols)
        self.center_offset = _check_offset(center_offset)
        self.n_pad = (
            gridding_length(self.n_cols, self.size, self.center_offset)
            if pad_factor is None
            else padded_length(self.n_cols, pad_factor)
        )
        self.batch = int(batch)
        n_ang = self.angles.size
        L = self.n_pad
        m = np.arange(-L // 2, L // 2 + 1)  # L + 1 frequencies, Nyquist at both ends
        nu = m / L
        cos_t = np.cos(self.angles)[:, None]
        sin_t = np.sin(self.angles)[:, None]
        kx = (2.0 * np.pi * nu[None, :] * cos_t).ravel()
        ky = (2.0 * np.pi * nu[None, :] * sin_t).ravel()
        # image x = k + d with k the finufft mode index (k = j - n//2)
        d = self.size // 2 - (self.size - 1) / 2.0
        axis_col = (self.n_cols - 1) / 2.0 + self.center_offset
        wm = np.ones(L + 1)
        wm[0] = wm[-1] = 0.5
        phase = 2.0 * np.pi * nu[None, :] * axis_col + (kx + ky).reshape(n_ang, L + 1) * d
        self._factor = ((np.pi / (n_ang * L)) * wm[None, :] * np.exp(1j * phase)).astype(
            np.complex64
        )
        self._m_index = np.concatenate([np.arange(L // 2, L), np.arange(0, L // 2 + 1)])
        self._eps = eps
        self._nthreads = nthreads or _workers()
        # first coordinate <-> output axis 1 (rows = y), second <-> axis 2 (x)
        self._points = (ky.astype(np.float32), kx.astype(np.float32))
        self._plans: dict[int, Any] = {}

    def _plan(self, n_trans: int) -> Any:
        plan = self._plans.get(n_trans)
        if plan is None:
            plan = _finufft_plan(self.size, n_trans, self._eps, self._nthreads)
            plan.setpts(*self._points)
            self._plans[n_trans] = plan
        return plan

    def __call__(self, filtered: ArrayLike, out: F32 | None = None) -> F32:
        """Backproject filtered projections (angles, [rows,] columns) -> ([rows,] n, n) (y, x),
        into ``out`` (float32 (rows, n, n), e.g. a slab of a larger volume) when given."""
        q = _check_sinogram(filtered, "filtered")
        if q.shape[0] != self.angles.size or q.shape[-1] != self.n_cols:
            raise ValueError(
                f"filtered must be (angles={self.angles.size}, [rows,] columns={self.n_cols}), "
                f"got shape {q.shape}"
            )
        single = q.ndim == 2
        q3 = q[:, None, :] if single else q
        n_sl = q3.shape[1]
        if out is None:
            out = np.empty((n_sl, self.size, self.size), np.float32)
        elif single or out.shape != (n_sl, self.size, self.size) or out.dtype != np.float32:
            raise ValueError(
                f"out must be float32 ({n_sl}, {self.size}, {self.size}) for a stack of "
                f"{n_sl} rows, got {out.dtype} {out.shape}"
            )
        pairs = [(z, z + 1 if z + 1 < n_sl else None) for z in range(0, n_sl, 2)]
        n_ang, n_freq = self._factor.shape
        # work buffers reused across chunks (fresh memory is slow to touch, docs/benchmarks.md);
        # the zero padding beyond n_cols is never written
        width = min(self.batch, len(pairs))
        packed = np.zeros((width, n_ang, self.n_pad), np.complex64)
        strengths = np.empty((width, n_ang, n_freq), np.complex64)
        images = np.empty((width, self.size, self.size), np.complex64)
        for b0 in range(0, len(pairs), self.batch):
            chunk = pairs[b0 : b0 + self.batch]
            n_trans = len(chunk)
            for j, (za, zb) in enumerate(chunk):
                packed[j, :, : self.n_cols].real = q3[:, za, :]
                packed[j, :, : self.n_cols].imag = 0.0 if zb is None else q3[:, zb, :]
            spec = scipy.fft.fft(packed[:n_trans], axis=-1, workers=_workers())
            np.take(spec, self._m_index, axis=-1, out=strengths[:n_trans])
            strengths[:n_trans] *= self._factor
            img = images[:n_trans]
            self._plan(n_trans).execute(strengths[:n_trans].reshape(n_trans, -1), out=img)
            for j, (za, zb) in enumerate(chunk):
                out[za] = img[j].real
                if zb is not None:
                    out[zb] = img[j].imag
        return out[0] if single else out


# --------------------------------------------------------------------------------------------
# high-level FBP in physical units


def fbp(
    sinograms: ArrayLike,
    angles_rad: ArrayLike,
    kind: FilterKind,
    *,
    window: Window = "none",
    shear_px: float | None = None,
    center_offset: float = 0.0,
    size: int | None = None,
    method: Method = "gridding",
    eps: float = 1e-4,
    out: F32 | None = None,
) -> F32:
    """Filtered backprojection of (angles, [rows,] columns) -> ([rows,] n, n) in per-pixel units.

    ``kind="ramp"`` for line-integral data (reconstructs the value per pixel); ``kind="hilbert"``
    for derivative data dp/ds (same result for p). ``method="gridding"`` (NUFFT fast path) or
    ``"direct"`` (linear-interpolation backprojection). ``out``: a float32 C-contiguous array of
    the result's shape to write into (a volume buffer kept from an earlier scan), returned.
    """
    s = _check_sinogram(sinograms)
    angles = _check_angles(angles_rad, s.shape[0])
    if method not in ("gridding", "direct"):
        raise ValueError(f"method must be 'gridding' or 'direct', got {method!r}")
    n = _check_size(size, s.shape[-1])
    shape = (n, n) if s.ndim == 2 else (s.shape[1], n, n)
    if out is not None and (
        out.shape != shape or out.dtype != np.float32 or not out.flags.c_contiguous
    ):
        raise ValueError(
            f"out must be a C-contiguous float32 array of shape {shape}, got {out.dtype} "
            f"{out.shape}"
        )
    if method == "direct" or s.ndim == 2:
        q = filter_sinogram(s, kind, window=window, shear_px=shear_px)
        if method == "direct":
            image = backproject(q, angles, center_offset=center_offset, size=size)
        else:
            image = gridding_backprojector(s.shape[-1], angles, size, center_offset, eps)(q)
        if out is None:
            return image
        np.copyto(out, image)
        return out
    bp = gridding_backprojector(s.shape[-1], angles, size, center_offset, eps)
    # filtered FILTER_CHUNK_ROWS rows at a time, each chunk backprojected into its slab of the
    # volume: the filter's padded temporaries stay small (at 1024^2 x 180 angles the whole
    # filtered stack and its spectra would add ~3.8 GB next to the volumes)
    if out is None:
        out = np.empty(shape, np.float32)
    for r0 in range(0, s.shape[1], FILTER_CHUNK_ROWS):
        r1 = min(r0 + FILTER_CHUNK_ROWS, s.shape[1])
        bp(filter_sinogram(s[:, r0:r1], kind, window=window, shear_px=shear_px), out[r0:r1])
    return out


#: Detector rows filtered and backprojected at a time by ``fbp`` (gridding); even, so that the
#: slices pair into complex transforms as they would in one call.
FILTER_CHUNK_ROWS = 32

_GRIDDERS: OrderedDict[tuple[Any, ...], GriddingBackprojector] = OrderedDict()
_GRIDDERS_KEPT = 4


def gridding_backprojector(
    n_cols: int,
    angles_rad: NDArray[np.float64],
    size: int | None,
    center_offset: float,
    eps: float,
) -> GriddingBackprojector:
    """A ``GriddingBackprojector`` for this geometry, reused across calls (the NUFFT plan's
    point setup costs about as much as one 2048-px transform). Keeps the last few geometries."""
    key = (n_cols, np.asarray(angles_rad, np.float64).tobytes(), size, center_offset, eps)
    bp = _GRIDDERS.get(key)
    if bp is None:
        bp = GriddingBackprojector(
            n_cols, angles_rad, size=size, center_offset=center_offset, eps=eps
        )
        _GRIDDERS[key] = bp
        while len(_GRIDDERS) > _GRIDDERS_KEPT:
            _GRIDDERS.popitem(last=False)
    else:
        _GRIDDERS.move_to_end(key)
    return bp


def transform_counts(n_slices: int, batch: int = 2) -> set[int]:
    """The NUFFT transform counts a ``GriddingBackprojector`` with ``batch`` uses for
    ``n_slices`` slices (two real slices per complex transform)."""
    if n_slices < 1 or batch < 1:
        raise ValueError(f"n_slices and batch must be >= 1, got {n_slices!r}, {batch!r}")
    pairs = (n_slices + 1) // 2
    return {c for c in (min(batch, pairs), pairs % batch) if c > 0}


def prepare_gridding(
    size: int, n_slices: int, *, eps: float = 1e-4, batch: int = 2, nthreads: int | None = None
) -> None:
    """Plan the fine-grid FFTs that backprojecting ``n_slices`` slices of ``size`` px will use,
    so that the backprojection itself finds FFTW's wisdom ready (a streaming reconstructor does
    this at scan start, off the critical path). A no-op below ``FFTW_MEASURE_MIN_SIZE``."""
    if size < FFTW_MEASURE_MIN_SIZE:
        return
    point = np.zeros(1, np.float32)
    for n_trans in sorted(transform_counts(n_slices, batch)):
        plan = _finufft_plan(size, n_trans, eps, nthreads or _workers())
        plan.setpts(point, point)  # finufft plans the FFT here
        del plan


def _check_physical(**values: float) -> None:
    for name, v in values.items():
        if not (math.isfinite(v) and v > 0):
            raise ValueError(f"{name} must be a finite positive number, got {v!r}")


def reconstruct_delta(
    dphi: ArrayLike,
    angles_rad: ArrayLike,
    *,
    shear_px: float,
    wavelength_m: float,
    pixel_m: float,
    center_offset: float = 0.0,
    window: Window = "none",
    finite_shear: bool = False,
    size: int | None = None,
    method: Method = "gridding",
    out: F32 | None = None,
) -> F32:
    """Refractive-index decrement delta (dimensionless) from differential-phase sinograms.

    ``dphi`` (angles, [rows,] columns) [rad], unwrapped, with ``dphi = k (int delta(s + xi/2) dt
    - int delta(s - xi/2) dt) = -(Phi(s + xi/2) - Phi(s - xi/2))``, ``Phi = -k int delta dt`` (the
    sign a G2 stepped along +s measures: X-rays refract toward the thin side; checked against the
    Fresnel oracle in tests/sim); ``delta = (lambda/(2 pi xi)) FBP_H[dphi]`` with
    xi = ``shear_px * pixel_m`` [m] (Pfeiffer et al., PRL 98, 108105 (2007)). ``finite_shear``
    divides the Hilbert response by sinc(nu xi) (needs shear_px <= 1.5). Output ([z,] y, x) float32
    (into ``out`` when given, as ``fbp``).
    """
    _check_physical(shear_px=shear_px, wavelength_m=wavelength_m, pixel_m=pixel_m)
    f = fbp(
        dphi,
        angles_rad,
        "hilbert",
        window=window,
        shear_px=shear_px if finite_shear else None,
        center_offset=center_offset,
        size=size,
        method=method,
        out=out,
    )
    xi_m = shear_px * pixel_m
    return _scaled_in_place(f, wavelength_m / (2.0 * np.pi * xi_m))


def _scaled_in_place(volume: NDArray[np.floating], factor: float) -> F32:
    """``volume * factor`` as float32, in place when the volume is float32 already: a volume is
    the largest array of a reconstruction (4 GB at 1024^3), and each temporary copy of it costs
    its size in fresh memory."""
    out = volume if volume.dtype == np.float32 else volume.astype(np.float32)
    out *= np.float32(factor)
    return out


def _neg_log(values: ArrayLike, name: str) -> F32:
    v = np.asarray(values, dtype=np.float32)
    if not np.all(np.isfinite(v)) or np.any(v <= 0):
        raise ValueError(f"{name} must be finite and > 0 everywhere")
    return -np.log(v)


def reconstruct_mu(
    transmission: ArrayLike,
    angles_rad: ArrayLike,
    *,
    pixel_m: float,
    center_offset: float = 0.0,
    window: Window = "none",
    size: int | None = None,
    method: Method = "gridding",
    out: F32 | None = None,
) -> F32:
    """Linear attenuation coefficient mu [1/m] = FBP_ramp[-ln T] / pixel.

    ``transmission`` (angles, [rows,] columns), values in (0, ...). Output ([z,] y, x) float32
    (into ``out`` when given, as ``fbp``).
    """
    _check_physical(pixel_m=pixel_m)
    f = fbp(
        _neg_log(transmission, "transmission"),
        angles_rad,
        "ramp",
        window=window,
        center_offset=center_offset,
        size=size,
        method=method,
        out=out,
    )
    return _scaled_in_place(f, 1.0 / pixel_m)


def reconstruct_darkfield(
    darkfield: ArrayLike,
    angles_rad: ArrayLike,
    *,
    pixel_m: float,
    center_offset: float = 0.0,
    window: Window = "none",
    size: int | None = None,
    method: Method = "gridding",
    out: F32 | None = None,
) -> F32:
    """Linear diffusion coefficient epsilon [1/m] = FBP_ramp[-ln D] / pixel (Bech et al., PMB 55,
    5529 (2010)). ``darkfield`` (angles, [rows,] columns) > 0. Output ([z,] y, x) float32 (into
    ``out`` when given, as ``fbp``)."""
    _check_physical(pixel_m=pixel_m)
    f = fbp(
        _neg_log(darkfield, "darkfield"),
        angles_rad,
        "ramp",
        window=window,
        center_offset=center_offset,
        size=size,
        method=method,
        out=out,
    )
    return _scaled_in_place(f, 1.0 / pixel_m)
