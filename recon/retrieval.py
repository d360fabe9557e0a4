"""Phase-stepping retrieval: transmission, differential phase and dark-field per pixel.

Model per pixel (docs/physics.md): ``I_k = a0 [1 + V cos(theta_k + phi)]`` with
``theta_k = 2 pi x_k / p2`` and ``x_k`` the MEASURED (encoder) stepped-grating position [m]. Written
linearly, ``I_k = a + b cos theta_k + c sin theta_k``; with the design matrix ``A = [1, cos, sin]``
(M x 3), shared by all pixels, the least-squares solution is one GEMM ``(A^T A)^-1 A^T I`` over all
pixels. It equals the FFT first harmonic when the steps are equidistant (Enucatl/phase-stepping-fit;
Pfeiffer et al., Nature Physics 2, 258 (2006)). The first harmonic is ``c1 = (b - i c)/2
= a0 V / 2 e^{i phi}``; ``theta_k`` may span several grating periods.

Sample vs reference (flat) series, darks subtracted first:
``T = a0_s / a0_r``, ``dphi = arg(c1_s conj(c1_r))`` in (-pi, pi] (wrapped angles are never
subtracted), ``D = (|c1_s|/a0_s) / (|c1_r|/a0_r)``.

Two equal implementations: a pure-NumPy path (chunked GEMM) and a fused numba kernel (any integer or
float frame dtype in, float32 out, dark subtraction and the three sums in one pass, optionally T,
dphi and D directly against a reference). Arrays are (steps, rows, columns) for frame stacks and
(rows, columns) for maps.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numba
import numpy as np
from numpy.typing import ArrayLike, NDArray

#: Largest accepted condition number of the design matrix A (steps must be spread over the circle).
MAX_CONDITION = 50.0

#: Bytes of float32 work memory per chunk of rows in the NumPy path.
_CHUNK_BYTES = 64 * 2**20

#: Most frames the numba kernels take (numba passes the frames as a tuple to a parallel loop,
#: which it unpacks up to ``NUMBA_PARFOR_MAX_TUPLE_SIZE``, 100); longer series (a calibration
#: series of up to 256 steps) take the NumPy path.
NUMBA_MAX_FRAMES = 100

F32 = NDArray[np.float32]
C64 = NDArray[np.complex64]


@dataclass(frozen=True)
class StepFit:
    """Per-pixel stepping-curve fit: mean ``a0`` [counts], first harmonic ``c1``.

    ``c1 = a0 V/2 e^{i phi}``. Both are (rows, columns); ``a0`` float32, ``c1`` complex64.
    """

    a0: F32
    c1: C64

    def __post_init__(self) -> None:
        if self.a0.ndim != 2:
            raise ValueError(f"a0 must be 2-D (rows, columns), got shape {self.a0.shape}")
        if self.c1.shape != self.a0.shape:
            raise ValueError(f"c1 shape {self.c1.shape} must equal a0 shape {self.a0.shape}")

    @property
    def visibility(self) -> F32:
        """Visibility ``V = 2 |c1| / a0`` (0 where a0 <= 0)."""
        with np.errstate(divide="ignore", invalid="ignore"):
            v = np.where(self.a0 > 0, 2.0 * np.abs(self.c1) / self.a0, 0.0)
        return v.astype(np.float32)

    @property
    def phase(self) -> F32:
        """Stepping-curve phase ``phi = arg c1`` [rad] in (-pi, pi]."""
        return np.angle(self.c1).astype(np.float32)


@dataclass(frozen=True)
class Signals:
    """Retrieved signals, each (rows, columns) float32: transmission, differential phase [rad]
    in (-pi, pi], dark-field (visibility reduction)."""

    transmission: F32
    dphi: F32
    darkfield: F32


# --------------------------------------------------------------------------------------------
# design matrix and input checks


def step_phases(positions_m: ArrayLike, period_m: float) -> NDArray[np.float64]:
    """Step phases ``theta_k = 2 pi x_k / p2`` [rad] from measured grating positions [m]."""
    x = np.asarray(positions_m, dtype=np.float64)
    if x.ndim != 1:
        raise ValueError(f"positions_m must be 1-D, got shape {x.shape}")
    if not np.all(np.isfinite(x)):
        raise ValueError("positions_m contains NaN or inf")
    if not (math.isfinite(period_m) and period_m > 0):
        raise ValueError(f"period_m must be a finite positive length [m], got {period_m!r}")
    return np.asarray(2.0 * np.pi * x / period_m, dtype=np.float64)


def design_matrix(theta_rad: ArrayLike) -> NDArray[np.float64]:
    """The M x 3 design matrix ``[1, cos theta_k, sin theta_k]``, checked for conditioning.

    Raises ValueError (naming ``theta_rad``) for fewer than 3 steps, NaN/inf, or steps that do not
    spread over the circle (condition number above ``MAX_CONDITION``).
    """
    theta = np.asarray(theta_rad, dtype=np.float64)
    if theta.ndim != 1:
        raise ValueError(f"theta_rad must be 1-D (steps,), got shape {theta.shape}")
    if theta.size < 3:
        raise ValueError(f"theta_rad needs at least 3 phase steps, got {theta.size}")
    if not np.all(np.isfinite(theta)):
        raise ValueError("theta_rad contains NaN or inf")
    a = np.stack([np.ones_like(theta), np.cos(theta), np.sin(theta)], axis=1)
    cond = np.linalg.cond(a)
    if not cond < MAX_CONDITION:
        raise ValueError(
            f"theta_rad steps are not spread over the circle (condition number {cond:.3g} of the "
            f"design matrix exceeds {MAX_CONDITION:g}); step over a full grating period"
        )
    return a


def _pseudo_inverse(theta_rad: ArrayLike) -> NDArray[np.float64]:
    """``(A^T A)^-1 A^T`` (3 x M)."""
    a = design_matrix(theta_rad)
    return np.asarray(np.linalg.solve(a.T @ a, a.T), dtype=np.float64)


#: A phase-stepping series: one (steps, rows, columns) array, or one (rows, columns) array per
#: step (frames kept where they arrived, e.g. in stream buffers: no stacking copy).
Frames = NDArray[np.generic] | Sequence[NDArray[np.generic]]


def _kernel_frames(
    frames: Frames, n_steps: int
) -> tuple[tuple[NDArray[np.generic], ...], tuple[int, int]]:
    """Checked frames as the kernels take them (a tuple of read-only C-contiguous 2-D arrays of
    one type, views where possible) and the frame shape (rows, columns)."""
    if isinstance(frames, np.ndarray):
        if frames.ndim != 3:
            raise ValueError(f"frames must be 3-D (steps, rows, columns), got shape {frames.shape}")
        parts: list[NDArray[np.generic]] = list(frames)
        count, shape = frames.shape[0], (int(frames.shape[1]), int(frames.shape[2]))
    else:
        parts = [np.asarray(f) for f in frames]
        if any(f.ndim != 2 for f in parts) or len({f.shape for f in parts}) > 1:
            raise ValueError("frames given one per step must all be 2-D of one shape")
        if len({f.dtype for f in parts}) > 1:
            raise ValueError("frames given one per step must share one dtype")
        count = len(parts)
        shape = (int(parts[0].shape[0]), int(parts[0].shape[1])) if parts else (0, 0)
    if count != n_steps:
        raise ValueError(f"frames has {count} steps but theta_rad has {n_steps} (they must match)")
    dtype = parts[0].dtype
    if not (np.issubdtype(dtype, np.integer) or np.issubdtype(dtype, np.floating)):
        raise ValueError(f"frames must be an integer or float array, got dtype {dtype}")
    if np.issubdtype(dtype, np.floating) and not all(np.all(np.isfinite(f)) for f in parts):
        raise ValueError("frames contains NaN or inf")
    # One kernel specialisation for a stack and for frames given one by one, so that both give
    # bit-identical results (fastmath code differs between specialisations in the last bits).
    views = []
    for f in parts:
        v = np.ascontiguousarray(f).view()
        v.flags.writeable = False  # one numba type for every frame, whatever its origin
        views.append(v)
    return tuple(views), shape


def _check_dark(dark: ArrayLike | None, shape: tuple[int, ...]) -> F32 | None:
    if dark is None:
        return None
    d = np.ascontiguousarray(dark, dtype=np.float32)
    if d.shape != shape:
        raise ValueError(f"dark must have shape {shape} (rows, columns), got {d.shape}")
    if not np.all(np.isfinite(d)):
        raise ValueError("dark contains NaN or inf")
    return d


# --------------------------------------------------------------------------------------------
# numba kernels (rows in parallel, columns vectorised)

# atan(a)/a = P(a^2) on [0, 1], near-minimax fit (max error of atan 5.8e-9 rad in exact arithmetic,
# below float32 rounding); branch-free so that the column loop vectorises (libm atan2 does not).
_ATAN_C = (
    0.9999998864069177,
    -0.3333259709514158,
    0.19985907372513967,
    -0.14161231716338624,
    0.10498951521399581,
    -0.07234863520865394,
    0.039781255321340706,
    -0.014401360289976933,
    0.0024567220991346117,
)


@numba.njit(inline="always", fastmath=True)
def _atan2f(y, x):  # type: ignore[no-untyped-def]
    """float32 atan2 in [-pi, pi], |error| < 3e-7 rad; atan2(0, 0) = 0."""
    ax = abs(x)
    ay = abs(y)
    mx = max(ax, ay)
    mn = min(ax, ay)
    a = mn / max(mx, np.float32(1e-30))
    s = a * a
    p = np.float32(_ATAN_C[8])
    p = p * s + np.float32(_ATAN_C[7])
    p = p * s + np.float32(_ATAN_C[6])
    p = p * s + np.float32(_ATAN_C[5])
    p = p * s + np.float32(_ATAN_C[4])
    p = p * s + np.float32(_ATAN_C[3])
    p = p * s + np.float32(_ATAN_C[2])
    p = p * s + np.float32(_ATAN_C[1])
    p = p * s + np.float32(_ATAN_C[0])
    r = a * p
    r = np.float32(np.pi / 2) - r if ay > ax else r
    r = np.float32(np.pi) - r if x < 0 else r
    return -r if y < 0 else r


@numba.njit(inline="always", fastmath=True, cache=True)
def _row_sums(frames, dark, has_dark, pinv, r):  # type: ignore[no-untyped-def]
    """The three least-squares sums (pinv @ (I - dark)) of detector row ``r``.

    The dark is subtracted after the sums, as ``dark * sum_k pinv[j, k]``: one read of the dark
    row instead of one per step (equal in exact arithmetic; the float32 difference is far
    below the photon noise)."""
    m = len(frames)
    cols = frames[0].shape[1]
    s0 = np.zeros(cols, np.float32)
    s1 = np.zeros(cols, np.float32)
    s2 = np.zeros(cols, np.float32)
    for k in range(m):
        w0 = pinv[0, k]
        w1 = pinv[1, k]
        w2 = pinv[2, k]
        fk = frames[k]
        for c in range(cols):
            v = np.float32(fk[r, c])
            s0[c] += w0 * v
            s1[c] += w1 * v
            s2[c] += w2 * v
    if has_dark:
        d0 = np.float32(0.0)
        d1 = np.float32(0.0)
        d2 = np.float32(0.0)
        for k in range(m):
            d0 += pinv[0, k]
            d1 += pinv[1, k]
            d2 += pinv[2, k]
        for c in range(cols):
            d = dark[r, c]
            s0[c] -= d0 * d
            s1[c] -= d1 * d
            s2[c] -= d2 * d
    return s0, s1, s2


@numba.njit(parallel=True, fastmath=True, cache=True)
def _fit_kernel(frames, dark, has_dark, pinv, a0_out, c1_out):  # type: ignore[no-untyped-def]
    rows, cols = frames[0].shape
    for r in numba.prange(rows):
        s0, s1, s2 = _row_sums(frames, dark, has_dark, pinv, r)
        for c in range(cols):
            a0_out[r, c] = s0[c]
            c1_out[r, c] = complex(np.float32(0.5) * s1[c], np.float32(-0.5) * s2[c])


@numba.njit(parallel=True, fastmath=True, cache=True)
def _retrieve_kernel(frames, dark, has_dark, pinv, ref_a0, ref_c1, t_out, p_out, d_out):  # type: ignore[no-untyped-def]
    rows, cols = frames[0].shape
    for r in numba.prange(rows):
        s0, s1, s2 = _row_sums(frames, dark, has_dark, pinv, r)
        for c in range(cols):
            a0 = s0[c]
            re = np.float32(0.5) * s1[c]
            im = np.float32(-0.5) * s2[c]
            ra0 = ref_a0[r, c]
            rre = ref_c1[r, c].real
            rim = ref_c1[r, c].imag
            # c1_s * conj(c1_r)
            xr = re * rre + im * rim
            xi = im * rre - re * rim
            t_out[r, c] = a0 / ra0
            p_out[r, c] = _atan2f(xi, xr)
            d_out[r, c] = (
                math.sqrt(re * re + im * im) * ra0 / (a0 * math.sqrt(rre * rre + rim * rim))
            )


# --------------------------------------------------------------------------------------------
# public API


def fit_stepping(
    frames: Frames,
    theta_rad: ArrayLike,
    dark: ArrayLike | None = None,
    *,
    backend: str = "numba",
) -> StepFit:
    """Least-squares fit of ``I_k = a0 [1 + V cos(theta_k + phi)]`` in every pixel.

    Parameters
    ----------
    frames
        Phase-stepping series (steps M, rows, columns) [counts], any integer or float dtype, or
        the M frames (rows, columns) as a sequence (read where they are, not stacked).
    theta_rad
        Step phases (M,) [rad], ``2 pi x_k / p2`` from the measured grating positions; may span
        several periods. At least 3 steps spread over the circle.
    dark
        Dark image (rows, columns) [counts] subtracted from every frame first, or None.
    backend
        ``"numba"`` (fused parallel kernel) or ``"numpy"`` (chunked GEMM); equal results.

    Returns
    -------
    StepFit with ``a0`` (float32) and ``c1 = a0 V/2 e^{i phi}`` (complex64), (rows, columns).
    """
    theta = np.asarray(theta_rad, dtype=np.float64)
    return _fit_with(frames, _pseudo_inverse(theta), theta.size, dark, backend)


def _fit_with(
    frames: Frames,
    pinv: NDArray[np.float64],
    steps: int,
    dark: ArrayLike | None,
    backend: str = "numba",
    out: StepFit | None = None,
) -> StepFit:
    """The fit with a given (3, M) pseudo-inverse (dose scaling folded in by the caller), into
    ``out`` when given (C-contiguous arrays of the frame shape; returned)."""
    kframes, shape = _kernel_frames(frames, steps)
    d = _check_dark(dark, shape)
    if out is None:
        out = StepFit(np.empty(shape, np.float32), np.empty(shape, np.complex64))
    elif (
        out.a0.shape != shape
        or (out.a0.dtype, out.c1.dtype) != (np.float32, np.complex64)
        or not all(a.flags.c_contiguous and a.flags.writeable for a in (out.a0, out.c1))
    ):
        raise ValueError(
            f"out must be a writeable C-contiguous float32/complex64 fit of the frame shape "
            f"{shape}, got {out.a0.shape} {out.a0.dtype}/{out.c1.dtype}"
        )
    if backend == "numba" and len(kframes) > NUMBA_MAX_FRAMES:
        backend = "numpy"
    if backend == "numba":
        dd = d if d is not None else np.zeros((1, 1), np.float32)
        _fit_kernel(kframes, dd, d is not None, pinv.astype(np.float32), out.a0, out.c1)
        return out
    if backend == "numpy":
        return _fit_numpy(np.stack(kframes), pinv, d, out)
    raise ValueError(f"backend must be 'numba' or 'numpy', got {backend!r}")


def fit_dose_normalised(
    frames: Frames,
    theta_rad: ArrayLike,
    dark: ArrayLike | None,
    current_ma: ArrayLike,
    dose_ref_ma: float,
    *,
    out: StepFit | None = None,
) -> StepFit:
    """``fit_stepping`` with each dark-subtracted frame scaled by ``dose_ref_ma / current_ma[k]``
    (beam-monitor normalisation, docs/physics.md), so that dose changes between steps
    do not leak into phase or visibility. Falls back to the plain fit when a monitor reading is
    not positive or every scale is 1. ``current_ma`` (M,) [mA]. ``out``: a fit to overwrite
    (a buffer kept for reuse, ``recon.fitpool``) instead of new arrays."""
    current = np.asarray(current_ma, dtype=np.float64)
    if current.shape != (len(frames),):
        raise ValueError(f"current_ma must have one value per frame, got shape {current.shape}")
    theta = np.asarray(theta_rad, dtype=np.float64)
    pinv = _pseudo_inverse(theta)
    if np.all(current > 0):
        # pinv @ diag(scale) @ (I - dark): the scale folds into the pseudo-inverse, no copy
        pinv = pinv * (dose_ref_ma / current)[None, :]
    return _fit_with(frames, pinv, theta.size, dark, out=out)


def _fit_numpy(
    frames: NDArray[np.generic], pinv: NDArray[np.float64], dark: F32 | None, out: StepFit
) -> StepFit:
    m, rows, cols = frames.shape
    a0, c1 = out.a0, out.c1
    chunk = max(1, _CHUNK_BYTES // max(1, 4 * m * cols))
    p32 = pinv.astype(np.float32)
    for r0 in range(0, rows, chunk):
        r1 = min(rows, r0 + chunk)
        x = frames[:, r0:r1, :].astype(np.float32)
        if dark is not None:
            x -= dark[None, r0:r1, :]
        sol = p32 @ x.reshape(m, -1)  # (3, pixels)
        a0[r0:r1] = sol[0].reshape(r1 - r0, cols)
        c1[r0:r1] = (0.5 * (sol[1] - 1j * sol[2])).reshape(r1 - r0, cols)
    return out


def retrieve(sample: StepFit, reference: StepFit) -> Signals:
    """Transmission, differential phase and dark-field of a sample fit against a reference fit.

    ``T = a0_s/a0_r``, ``dphi = arg(c1_s conj(c1_r))`` [rad] in (-pi, pi],
    ``D = (|c1_s|/a0_s)/(|c1_r|/a0_r)``; all (rows, columns) float32. Pixels where a0 or |c1| is
    zero give inf/NaN (no silent clipping).
    """
    if sample.a0.shape != reference.a0.shape:
        raise ValueError(
            f"reference shape {reference.a0.shape} must equal sample shape {sample.a0.shape}"
        )
    with np.errstate(divide="ignore", invalid="ignore"):
        t = sample.a0 / reference.a0
        dphi = np.angle(sample.c1 * np.conj(reference.c1))
        d = (np.abs(sample.c1) * reference.a0) / (sample.a0 * np.abs(reference.c1))
    return Signals(t.astype(np.float32), dphi.astype(np.float32), d.astype(np.float32))


def retrieve_frames(
    frames: Frames,
    theta_rad: ArrayLike,
    reference: StepFit,
    dark: ArrayLike | None = None,
) -> Signals:
    """Fused retrieval: raw sample frames (M, rows, columns) straight to T, dphi, D (float32).

    Equal to ``retrieve(fit_stepping(frames, theta_rad, dark), reference)`` but one pass over the
    data in a parallel numba kernel (the streaming hot path).
    """
    theta = np.asarray(theta_rad, dtype=np.float64)
    if theta.size > NUMBA_MAX_FRAMES:
        return retrieve(fit_stepping(frames, theta, dark), reference)
    pinv = _pseudo_inverse(theta)
    kframes, shape = _kernel_frames(frames, theta.size)
    d = _check_dark(dark, shape)
    if reference.a0.shape != shape:
        raise ValueError(f"reference shape {reference.a0.shape} must equal the frame shape {shape}")
    t = np.empty(shape, np.float32)
    p = np.empty(shape, np.float32)
    dfield = np.empty(shape, np.float32)
    dd = d if d is not None else np.zeros((1, 1), np.float32)
    with np.errstate(divide="ignore", invalid="ignore"):
        _retrieve_kernel(
            kframes,
            dd,
            d is not None,
            pinv.astype(np.float32),
            np.ascontiguousarray(reference.a0, dtype=np.float32),
            np.ascontiguousarray(reference.c1, dtype=np.complex64),
            t,
            p,
            dfield,
        )
    return Signals(t, p, dfield)


def interpolate_reference(fits: Sequence[StepFit], times_s: ArrayLike, t_s: float) -> StepFit:
    """Reference fit at time ``t_s`` from reference series taken at ``times_s`` [s].

    Linear in time between the two bracketing series (held constant outside the span). ``a0`` is
    interpolated linearly; ``c1`` as a complex number in polar form: ``|c1|`` linearly and its phase
    along the shorter arc, ``arg c1_a + w arg(c1_b conj(c1_a))``, so a drifting reference phase is
    followed exactly (a linear drift is reproduced to rounding) and the amplitude does not dip.
    """
    j, k, w = _bracket(len(fits), times_s, t_s)
    if w == 0.0:
        return fits[j]
    fa, fb = fits[j], fits[k]
    a0 = (1.0 - w) * fa.a0 + w * fb.a0
    amp = (1.0 - w) * np.abs(fa.c1) + w * np.abs(fb.c1)
    turn = np.angle(fb.c1 * np.conj(fa.c1))
    phase = np.angle(fa.c1) + w * turn
    c1 = amp * np.exp(1j * phase)
    return StepFit(a0.astype(np.float32), c1.astype(np.complex64))


def _bracket(n_fits: int, times_s: ArrayLike, t_s: float) -> tuple[int, int, float]:
    """The reference series bracketing ``t_s`` and the weight of the later one: (j, k, w) with
    the reference ``(1 - w) fit_j + w fit_k``; w = 0 (and k = j) outside the span."""
    times = np.asarray(times_s, dtype=np.float64)
    if times.ndim != 1 or times.size != n_fits:
        raise ValueError(
            f"times_s must be 1-D with one time per fit ({n_fits}), got shape {times.shape}"
        )
    if times.size == 0:
        raise ValueError("fits must not be empty")
    if not np.all(np.isfinite(times)) or not math.isfinite(t_s):
        raise ValueError("times_s and t_s must be finite")
    if np.any(np.diff(times) <= 0):
        raise ValueError("times_s must be strictly increasing")
    if times.size == 1 or t_s <= times[0]:
        return 0, 0, 0.0
    if t_s >= times[-1]:
        return times.size - 1, times.size - 1, 0.0
    j = int(np.searchsorted(times, t_s, side="right")) - 1
    return j, j + 1, float((t_s - times[j]) / (times[j + 1] - times[j]))


@numba.njit(inline="always")
def _lookup(z, a0, rotation, mean):  # type: ignore[no-untyped-def]
    """(c1, a0) of a first-harmonic fit (c1 = z, a0) through an alias table (``recon.curve``):
    c1 rotation(arg z), a0 - |c1| mean(arg z), both interpolated on the table's grid."""
    k = rotation.size - 1
    x = (_atan2f(z.imag, z.real) + np.float32(np.pi)) * np.float32(k / (2.0 * np.pi))
    i = min(max(int(x), 0), k - 1)
    w = x - np.float32(i)
    rot = rotation[i] * (np.float32(1.0) - w) + rotation[i + 1] * w
    g = mean[i] * (np.float32(1.0) - w) + mean[i + 1] * w
    zz = z * rot
    return zz, a0 - g * math.sqrt(zz.real * zz.real + zz.imag * zz.imag)


@numba.njit(parallel=True, cache=True)
def _retrieve_interpolated_kernel(  # type: ignore[no-untyped-def]
    sa0, sc1, a0a, c1a, a0b, c1b, w, t_out, p_out, d_out, has_table, rotation, mean
):
    # no fastmath: a zero a0 or |c1| must give inf/NaN as in retrieve()
    rows, cols = sa0.shape
    v = np.float32(w)
    u = np.float32(1.0) - v
    two_pi = np.float32(2.0 * np.pi)
    for r in numba.prange(rows):
        for c in range(cols):
            ar, ai = c1a[r, c].real, c1a[r, c].imag
            br, bi = c1b[r, c].real, c1b[r, c].imag
            z = sc1[r, c]
            s0 = sa0[r, c]
            if has_table:
                z, s0 = _lookup(z, s0, rotation, mean)
            sr, si = z.real, z.imag
            ra0 = u * a0a[r, c] + v * a0b[r, c]
            amp = u * math.sqrt(ar * ar + ai * ai) + v * math.sqrt(br * br + bi * bi)
            # arg(c1_s conj(c1_a)) - w arg(c1_b conj(c1_a)), wrapped to (-pi, pi]
            p = _atan2f(si * ar - sr * ai, sr * ar + si * ai)
            if w != 0.0:
                p -= v * _atan2f(bi * ar - br * ai, br * ar + bi * ai)
                if p > np.float32(np.pi):
                    p -= two_pi
                elif p <= -np.float32(np.pi):
                    p += two_pi
            t_out[r, c] = s0 / ra0
            p_out[r, c] = p
            d_out[r, c] = math.sqrt(sr * sr + si * si) * ra0 / (s0 * amp)


#: An alias table (``recon.curve.AliasTable``) as the kernels take it: (rotation (K + 1,)
#: complex64, mean (K + 1,) float32).
Lookup = tuple[NDArray[np.complex64], F32]

#: What the kernel takes for "no table" (not read).
_NO_LOOKUP: Lookup = (np.ones(2, np.complex64), np.zeros(2, np.float32))


def retrieve_interpolated(
    sample: StepFit,
    references: Sequence[StepFit],
    times_s: ArrayLike,
    t_s: float,
    out: Signals | None = None,
    lookup: Lookup | None = None,
) -> Signals:
    """``retrieve(sample, interpolate_reference(references, times_s, t_s))`` in one parallel
    pass, without making the reference image (a full-detector retrieval per projection is the
    largest part of the projections of a scan's final volume). ``out``: float32 arrays of the
    fit's shape to write into (e.g. one projection of the sinogram stacks), returned.
    ``dphi`` as the fused kernel of ``retrieve_frames`` (|error| < 3e-7 rad against np.angle).
    ``lookup``: the sample's alias table (``recon.curve``), applied to the sample's fit in the
    same pass (the references given already unbiased).
    """
    j, k, w = _bracket(len(references), times_s, t_s)
    fa, fb = references[j], references[k]
    shape = sample.a0.shape
    if fa.a0.shape != shape or fb.a0.shape != shape:
        raise ValueError(f"reference shape {fa.a0.shape} must equal sample shape {shape}")
    if out is None:
        out = Signals(*(np.empty(shape, np.float32) for _ in range(3)))
    elif any(
        a.shape != shape or a.dtype != np.float32 or not a.flags.c_contiguous
        for a in (out.transmission, out.dphi, out.darkfield)
    ):
        raise ValueError(f"out must hold three C-contiguous float32 arrays of shape {shape}")

    def a0(f: StepFit) -> F32:
        return np.ascontiguousarray(f.a0, dtype=np.float32)

    def c1(f: StepFit) -> C64:
        return np.ascontiguousarray(f.c1, dtype=np.complex64)

    rotation, mean = lookup if lookup is not None else _NO_LOOKUP
    _retrieve_interpolated_kernel(
        a0(sample), c1(sample), a0(fa), c1(fa), a0(fb), c1(fb), w,
        out.transmission, out.dphi, out.darkfield, lookup is not None, rotation, mean,
    )  # fmt: skip
    return out


def unwrap_rows(dphi: ArrayLike, axis: int = -1) -> F32:
    """1-D (Itoh) unwrapping of a wrapped differential phase along the shear direction.

    Starts at index 0 of ``axis`` (air at the left edge of the field: its value is kept) and
    integrates the wrapped neighbour differences. Valid when the true phase changes by less than
    pi between neighbouring pixels (docs/physics.md). Input (..., columns) [rad].
    """
    p = np.asarray(dphi)
    if p.ndim == 0:
        raise ValueError("dphi must have at least one axis")
    if not np.all(np.isfinite(p)):
        raise ValueError("dphi contains NaN or inf")
    moved = np.moveaxis(p, axis, -1)
    rows = np.ascontiguousarray(moved.reshape(-1, moved.shape[-1]))
    out = np.empty(rows.shape, np.float32)
    if rows.shape[-1] > 0:
        _unwrap_kernel(rows, out)
    return np.moveaxis(out.reshape(moved.shape), -1, axis)


@numba.njit(parallel=True, cache=True)
def _unwrap_kernel(p, out):  # type: ignore[no-untyped-def]
    """Itoh unwrapping of every row of ``p`` (rows, n) into ``out`` (float64 running sum)."""
    two_pi = 2.0 * np.pi
    rows, n = p.shape
    for r in numba.prange(rows):
        prev = np.float64(p[r, 0])
        acc = prev
        out[r, 0] = acc
        for c in range(1, n):
            v = np.float64(p[r, c])
            d = v - prev
            acc += d - two_pi * math.floor((d + np.pi) / two_pi)  # wrapped to [-pi, pi)
            out[r, c] = acc
            prev = v
