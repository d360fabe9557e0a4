"""The stepping curve's shape: measured once per scan, used to unbias few-step fits.

A binary analyser grating makes the stepping curve nearly a triangle wave, not a sinusoid. With
M steps the first-harmonic least-squares fit (``recon.retrieval``) then sees harmonic n folded
onto the mean (n = 0 mod M) and onto the first harmonic (n = +-1 mod M): refraction leaks into
the transmission and the differential phase is distorted (docs/physics.md, the folding table).

Model (docs/reconstruction.md): every pixel's curve, with and without the sample, is a shifted,
scaled and damped copy of one shape,

    I(theta) = c0 + 2 Re sum_{n>=1} c_n e^{i n theta},   c_n = v beta_n u^n,

with u = e^{i chi} the curve's phase, v = |c_1| its first-harmonic amplitude and
beta_n = c_n |c_1|^(n-1) / c_1^n (beta_1 = 1) its shape, independent of shift and scale. The
dark-field damps every harmonic alike in this model (exactly, a Gaussian scattering blur damps
harmonic n by D^(n^2); the difference is below 1 % of T for D > 0.99 with the presets' curves).

1. :func:`measure_shape`: the calibration series (reference series 0 with
   ``ScanPlan.calibration_steps`` steps) is fitted with every harmonic it resolves; beta_n is
   the |c_1|^2-weighted mean over the field (one shape for the detector: the reference phase
   and amplitude stay per pixel), with its spread over the field.
2. :class:`AliasTable`: for the measured step phases of one series, the first-harmonic fit of
   the model curve is ``a0_b = c0 + v G(chi)``, ``c1_b = v F(chi)``, with F and G known
   functions of chi alone (sums of beta_n u^n over the fit's response to harmonic n). The table
   inverts them on a grid of arg c1_b: ``c_1 = c1_b R(arg c1_b)``, ``c0 = a0_b - |c_1| G``.
3. :func:`unbias`: one pass per pixel (an atan2, one interpolated lookup, a complex product), so
   that the shape-aware fit streams. The result is the fit of the true curve's mean and first
   harmonic, for every series (references and projections alike): T, dphi and D follow as from
   a sinusoidal curve. Its noise is the first-harmonic estimator's, sqrt(2) / (V sqrt(N)).

Arrays: frames (steps, rows, columns) or one (rows, columns) per step; fits (rows, columns).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

import numba
import numpy as np
from numpy.typing import ArrayLike, NDArray

from recon.fitmode import FIT_MODES, FitMode
from recon.retrieval import (
    F32,
    Frames,
    Lookup,
    StepFit,
    _check_dark,
    _kernel_frames,
    _lookup,
    _pseudo_inverse,
)

#: A predicted first-harmonic bias below this (relative) keeps the fast first-harmonic path.
SINUSOIDAL_ENOUGH = 1e-3
#: A predicted bias above this (relative) is warned about.
WARN_BIAS = 1e-2
#: A calibration whose two highest harmonics reach this (relative to the first) does not resolve
#: the curve: the harmonics above fold onto them (warned about).
UNRESOLVED = 2e-3
#: Pixels below this reference visibility do not weigh in the shape (edges, dead pixels).
MIN_VISIBILITY = 0.05
#: Points of the lookup table over one turn of the curve phase (linear interpolation between
#: them is exact to ~1e-6 for the presets' curves).
TABLE_SIZE = 1024
#: Bytes of float32 work memory per chunk of rows when measuring the shape.
_CHUNK_BYTES = 64 * 2**20

C128 = NDArray[np.complex128]


@dataclass(frozen=True)
class CurveShape:
    """The measured shape of the stepping curve.

    ``beta`` (H + 1,) complex: beta_n = c_n |c_1|^(n-1) / c_1^n for n = 0..H (beta_0 = 0 unused,
    beta_1 = 1); ``spread`` (H + 1,): rms deviation of the pixels' beta_n from it, their
    photon noise (from the fit's residual) taken out;
    ``visibility``: the mean first-harmonic visibility 2|c_1|/c_0 of the calibration [1];
    ``steps``: the calibration's steps.
    """

    beta: C128
    spread: NDArray[np.float64]
    visibility: float
    steps: int

    @property
    def max_harmonic(self) -> int:
        """H, the highest harmonic measured."""
        return int(self.beta.size - 1)

    @classmethod
    def from_harmonics(
        cls, beta: dict[int, complex], visibility: float = 0.5, steps: int = 0
    ) -> CurveShape:
        """A known shape {n: beta_n} (n >= 2), e.g. from a grating model; no spread."""
        h = max(beta, default=1)
        b = np.zeros(h + 1, np.complex128)
        b[1] = 1.0
        for n, value in beta.items():
            if int(n) != n or n < 2:
                raise ValueError(f"beta keys must be integers >= 2, got {n!r}")
            b[n] = complex(value)
        return cls(b, np.zeros(h + 1), float(visibility), steps)


def _harmonic_design(
    theta: NDArray[np.float64], h: int
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """A = [1, cos theta, sin theta, ..., cos H theta, sin H theta] (N x (2H + 1)) and its
    pseudo-inverse ``(A^T A)^-1 A^T``."""
    cols = [np.ones_like(theta)]
    for n in range(1, h + 1):
        cols += [np.cos(n * theta), np.sin(n * theta)]
    a = np.stack(cols, axis=1)
    cond = np.linalg.cond(a)
    if not cond < 1e6:
        raise ValueError(
            f"theta_rad: the calibration steps do not resolve {h} harmonics (condition number "
            f"{cond:.3g}); take more steps, spread over the period"
        )
    return a, np.asarray(np.linalg.solve(a.T @ a, a.T), np.float64)


def resolvable_harmonics(steps: int) -> int:
    """The harmonics a calibration of ``steps`` equidistant steps fits: H = (steps - 1) // 2
    less one, so that the fitted harmonics are not the ones folded at the Nyquist limit."""
    return max(1, (steps - 1) // 2 - 1)


def measure_shape(
    frames: Frames,
    theta_rad: ArrayLike,
    dark: ArrayLike | None = None,
    *,
    scale: ArrayLike | None = None,
    max_harmonic: int | None = None,
) -> CurveShape:
    """The curve's shape from a calibration series (N steps, rows, columns) [counts].

    ``theta_rad`` (N,): step phases from the measured positions [rad]; ``dark`` (rows, columns)
    subtracted, or None: the shape does not depend on it (a dark only adds to c0), only the
    ``visibility`` reported does (the reconstructors leave it out, so that a slab worker, which
    has only its rows of the dark, measures what one worker does); ``scale`` (N,): per-frame
    dose factors (beam monitor) or None. Harmonics up to
    ``max_harmonic`` (default :func:`resolvable_harmonics`). ValueError when the series cannot
    resolve them or no pixel has a visibility above ``MIN_VISIBILITY``.
    """
    theta = np.asarray(theta_rad, np.float64)
    if theta.ndim != 1:
        raise ValueError(f"theta_rad must be 1-D (steps,), got shape {theta.shape}")
    h = resolvable_harmonics(theta.size) if max_harmonic is None else int(max_harmonic)
    if h < 2:
        raise ValueError(
            f"a calibration needs at least 7 steps to measure a shape, got {theta.size}"
        )
    kframes, shape = _kernel_frames(frames, theta.size)
    d = _check_dark(dark, shape)
    a, pinv = _harmonic_design(theta, h)
    s32 = None
    if scale is not None:
        s = np.asarray(scale, np.float64)
        if s.shape != theta.shape or not np.all(np.isfinite(s)):
            raise ValueError(f"scale must be finite with one value per step, got {s.shape}")
        s32 = s.astype(np.float32)[:, None]
    p32, a32 = pinv.astype(np.float32), a.astype(np.float32)
    dof = theta.size - a.shape[1]  # residual degrees of freedom per pixel
    rows, cols = shape
    chunk = max(1, _CHUNK_BYTES // max(1, 8 * theta.size * cols))
    acc = np.zeros(h + 1, np.complex128)
    acc2 = np.zeros(h + 1, np.float64)
    noise = 0.0  # sum over pixels of w E|d beta_n|^2 (the photon noise of one pixel's beta_n)
    weight = 0.0
    vis_sum = 0.0
    for r0 in range(0, rows, chunk):
        r1 = min(rows, r0 + chunk)
        x = np.stack([f[r0:r1] for f in kframes]).astype(np.float32)
        if d is not None:
            x -= d[None, r0:r1]
        x = x.reshape(theta.size, -1)
        if s32 is not None:
            x *= s32
        sol32 = p32 @ x  # (2H + 1, pixels)
        sol = sol32.astype(np.float64)
        c0 = sol[0]
        c1 = 0.5 * (sol[1] - 1j * sol[2])
        amp = np.abs(c1)
        with np.errstate(divide="ignore", invalid="ignore"):
            vis = np.where(c0 > 0, 2.0 * amp / c0, 0.0)
        ok = np.isfinite(vis) & (vis > MIN_VISIBILITY) & (amp > 0)
        if not ok.any():
            continue
        if dof > 0:  # var(c_n) = sigma^2 / N of the fit's residual: w var(beta_n) = that
            resid = x[:, ok] - a32 @ sol32[:, ok]
            noise += float(np.sum(resid.astype(np.float64) ** 2)) / dof  # sum of sigma^2
        c1, amp, w = c1[ok], amp[ok], amp[ok] ** 2
        u_conj = np.conj(c1) / amp
        turn = np.ones_like(u_conj)
        for n in range(1, h + 1):
            turn = turn * u_conj
            cn = 0.5 * (sol[2 * n - 1, ok] - 1j * sol[2 * n, ok])
            b = cn * turn / amp
            acc[n] += np.sum(w * b)
            acc2[n] += float(np.sum(w * np.abs(b) ** 2))
        weight += float(w.sum())
        vis_sum += float(np.sum(w * vis[ok]))
    if weight <= 0:
        raise ValueError(
            f"the calibration series has no pixel with a visibility above {MIN_VISIBILITY}"
        )
    beta = acc / weight
    beta[0] = 0.0
    beta[1] = 1.0
    # the pixels' photon noise taken out: what is left varies over the field. One pixel's
    # beta_n has the noise of c_n, g_n sigma^2 / |c_1|^2 with g_n the fit's gain (1/N for
    # equidistant steps), and that of the phase and amplitude of c_1 it is referred to.
    gain = np.zeros(h + 1)
    gain[1:] = 0.25 * (np.sum(pinv[1::2] ** 2, axis=1) + np.sum(pinv[2::2] ** 2, axis=1))
    order = np.arange(h + 1)
    own = noise / weight * (gain + 0.5 * gain[1] * (order**2 + 1) * np.abs(beta) ** 2)
    spread = np.sqrt(np.maximum(acc2 / weight - np.abs(beta) ** 2 - own, 0.0))
    spread[:2] = 0.0
    return CurveShape(beta, spread, vis_sum / weight, int(theta.size))


# --------------------------------------------------------------------------------------------
# the fit's response to the curve's harmonics, and its inverse


def _responses(theta: NDArray[np.float64], h: int) -> tuple[C128, C128, C128]:
    """(L0, L1p, L1m), each (H + 1,): the first-harmonic fit's (a0, c1) response to a curve
    e^{i n theta} (L0, L1p) and to e^{-i n theta} (L1m; the a0 response to it is conj L0)."""
    pinv = _pseudo_inverse(theta)
    q0 = pinv[0]
    q1 = 0.5 * (pinv[1] - 1j * pinv[2])
    n = np.arange(h + 1)[:, None]
    e = np.exp(1j * n * theta[None, :])
    return e @ q0, e @ q1, np.conj(e) @ q1


def _forward(
    beta: C128, responses: tuple[C128, C128, C128], chi: NDArray[np.float64]
) -> tuple[C128, NDArray[np.float64]]:
    """F(chi) and G(chi): the fit of the unit-amplitude model curve of phase chi gives
    ``c1_b = F`` and ``a0_b = c0 + G`` (harmonics 2..H; the fit reproduces c0 and c_1)."""
    l0, l1p, l1m = responses
    u = np.exp(1j * chi)
    f = u.copy()
    g = np.zeros(chi.shape, np.float64)
    un = u.copy()
    for n in range(2, beta.size):
        un = un * u
        cn = beta[n] * un
        f += cn * l1p[n] + np.conj(cn) * l1m[n]
        g += 2.0 * np.real(cn * l0[n])
    return f, g


@dataclass(frozen=True)
class Bias:
    """Largest relative errors of a first-harmonic fit: of the differential phase (its slope
    against the truth), of the transmission and of the visibility (dark-field)."""

    dphi: float
    transmission: float
    visibility: float

    @property
    def worst(self) -> float:
        return max(self.dphi, self.transmission, self.visibility)

    def describe(self) -> str:
        return (
            f"dphi {100 * self.dphi:.2g} %, T {100 * self.transmission:.2g} %, "
            f"dark-field {100 * self.visibility:.2g} %"
        )


def first_harmonic_bias(shape: CurveShape, theta_rad: ArrayLike) -> Bias:
    """What the first-harmonic fit of a curve of this shape, stepped at ``theta_rad`` (M,)
    [rad], gets wrong at worst over the curve phase (relative)."""
    theta = np.asarray(theta_rad, np.float64)
    chi = np.linspace(-math.pi, math.pi, TABLE_SIZE, endpoint=False)
    f, g = _forward(shape.beta, _responses(theta, shape.max_harmonic), chi)
    slope = np.gradient(np.unwrap(np.angle(f)), chi)
    return Bias(
        dphi=float(np.max(np.abs(slope - 1.0))),
        transmission=float(0.5 * shape.visibility * np.max(np.abs(g))),
        visibility=float(np.max(np.abs(np.abs(f) - 1.0))),
    )


def spread_bias(shape: CurveShape, theta_rad: ArrayLike) -> Bias:
    """The bias that the shape's spread over the field leaves after the shape-aware fit: the
    first-harmonic bias of a curve whose harmonics are the spread (an rms estimate)."""
    other = CurveShape(shape.spread.astype(np.complex128), shape.spread, shape.visibility, 0)
    return first_harmonic_bias(other, theta_rad)


@dataclass(frozen=True)
class AliasTable:
    """The inverse of the fit's response on a uniform grid of arg c1_b over [-pi, pi].

    ``rotation`` (K + 1,) complex64: c_1 = c1_b rotation(arg c1_b); ``mean`` (K + 1,) float32:
    c0 = a0_b - |c_1| mean(arg c1_b). Entry K repeats entry 0 (the grid closes the turn).
    """

    rotation: NDArray[np.complex64]
    mean: F32

    @property
    def lookup(self) -> Lookup:
        """The table as ``recon.retrieval.retrieve_interpolated`` takes it."""
        return self.rotation, self.mean

    @classmethod
    def build(cls, shape: CurveShape, theta_rad: ArrayLike, size: int = TABLE_SIZE) -> AliasTable:
        """The table for a series stepped at ``theta_rad`` (M,) [rad] (measured phases).
        ValueError when the fit's response is not one-to-one in the curve phase (a curve too
        far from a sinusoid for so few steps)."""
        theta = np.asarray(theta_rad, np.float64)
        responses = _responses(theta, shape.max_harmonic)
        fine = 4 * size
        chi = np.linspace(-math.pi, math.pi, fine, endpoint=False)
        f, _ = _forward(shape.beta, responses, chi)
        phase = np.unwrap(np.angle(f))
        if not np.all(np.diff(phase) > 0) or not abs(phase[-1] - phase[0] - 2 * math.pi) < 0.5:
            raise ValueError(
                f"the stepping curve's shape is too far from a sinusoid for {theta.size} steps "
                "(its first-harmonic phase is not one-to-one): take more steps"
            )
        # invert chi -> arg F on the grid, periodically
        ext_phase = np.concatenate([phase - 2 * math.pi, phase, phase + 2 * math.pi])
        ext_chi = np.concatenate([chi - 2 * math.pi, chi, chi + 2 * math.pi])
        grid = np.linspace(-math.pi, math.pi, size + 1)
        chi_at = np.interp(grid, ext_phase, ext_chi)
        f_at, g_at = _forward(shape.beta, responses, chi_at)
        rotation = np.exp(1j * (chi_at - grid)) / np.abs(f_at)
        return cls(rotation.astype(np.complex64), g_at.astype(np.float32))


@numba.njit(parallel=True, fastmath=True, cache=True)
def _unbias_kernel(a0, c1, rotation, mean, a0_out, c1_out):  # type: ignore[no-untyped-def]
    rows, cols = a0.shape
    for r in numba.prange(rows):
        for c in range(cols):
            c1_out[r, c], a0_out[r, c] = _lookup(c1[r, c], a0[r, c], rotation, mean)


def unbias(fit: StepFit, table: AliasTable, out: StepFit | None = None) -> StepFit:
    """The first-harmonic fit ``fit`` of a series corrected for the curve's harmonics: the true
    curve's mean and first harmonic (rows, columns), into ``out`` when given (may be ``fit``)."""
    a0 = np.ascontiguousarray(fit.a0, np.float32)
    c1 = np.ascontiguousarray(fit.c1, np.complex64)
    if out is None:
        out = StepFit(np.empty_like(a0), np.empty_like(c1))
    elif out.a0.shape != a0.shape:
        raise ValueError(f"out must have the fit's shape {a0.shape}, got {out.a0.shape}")
    _unbias_kernel(a0, c1, table.rotation, table.mean, out.a0, out.c1)
    return out


# --------------------------------------------------------------------------------------------
# which fit runs


@dataclass(frozen=True)
class FitChoice:
    """The fit a scan's series get, and why: what recon.h5 and the log report.

    ``method`` "first-harmonic" or "shape-aware"; ``shape`` the measured curve (None without a
    calibration series); ``bias`` the first-harmonic fit's predicted bias at the scan's steps;
    ``residual`` what the shape's spread over the field leaves after the shape-aware fit.
    """

    method: Literal["first-harmonic", "shape-aware"]
    steps: int
    shape: CurveShape | None = None
    bias: Bias | None = None
    residual: Bias | None = None
    warnings: tuple[str, ...] = field(default=())

    def table(self, theta_rad: ArrayLike) -> AliasTable | None:
        """The alias table of a series stepped at ``theta_rad`` (None on the first-harmonic
        path)."""
        if self.method != "shape-aware" or self.shape is None:
            return None
        return AliasTable.build(self.shape, theta_rad)

    def describe(self) -> str:
        """One log line."""
        if self.shape is None:
            return (
                f"{self.method} fit at {self.steps} steps (no calibration series: the curve's "
                "harmonics are not measured)"
            )
        assert self.bias is not None
        return (
            f"{self.method} fit at {self.steps} steps; curve shape from a {self.shape.steps}-step "
            f"calibration, |beta_2..5| = "
            + ", ".join(f"{abs(b):.3g}" if abs(b) >= 1e-4 else "0" for b in self.shape.beta[2:6])
            + f"; a first-harmonic fit would be off by up to {self.bias.describe()}"
        )

    def attrs(self) -> dict[str, object]:
        """recon.h5 attributes."""
        out: dict[str, object] = {
            "fit_method": self.method,
            "fit_steps": self.steps,
            "calibration_steps": 0 if self.shape is None else self.shape.steps,
        }
        if self.shape is not None and self.bias is not None:
            out["curve_beta_abs"] = np.abs(self.shape.beta).astype(np.float64)
            out["curve_beta_arg_rad"] = np.angle(self.shape.beta).astype(np.float64)
            out["first_harmonic_bias_dphi"] = self.bias.dphi
            out["first_harmonic_bias_transmission"] = self.bias.transmission
            out["first_harmonic_bias_visibility"] = self.bias.visibility
        if self.residual is not None:
            out["residual_bias_worst"] = self.residual.worst
        out["fit_warnings"] = list(self.warnings) or ""
        return out


def choose_fit(shape: CurveShape | None, theta_rad: ArrayLike, mode: FitMode = "auto") -> FitChoice:
    """The fit for series stepped like ``theta_rad`` (M,) [rad] (e.g. the first projection's
    measured phases), given the calibration's shape (None: no calibration series).
    ``"auto"``: shape-aware when the first-harmonic fit would be off by more than
    ``SINUSOIDAL_ENOUGH``."""
    theta = np.asarray(theta_rad, np.float64)
    steps = int(theta.size)
    if mode not in FIT_MODES:
        raise ValueError(f"fit must be one of {', '.join(FIT_MODES)}, got {mode!r}")
    if shape is None:
        if mode == "shape-aware":
            raise ValueError(
                "fit: 'shape-aware' needs a calibration series (ScanPlan.calibration_steps)"
            )
        return FitChoice("first-harmonic", steps)
    bias = first_harmonic_bias(shape, theta)
    residual = spread_bias(shape, theta)
    warnings: list[str] = []
    if mode == "first-harmonic" or (mode == "auto" and bias.worst < SINUSOIDAL_ENOUGH):
        if bias.worst > WARN_BIAS:
            warnings.append(
                f"the first-harmonic fit at {steps} steps is biased by up to {bias.describe()} "
                "for the measured curve"
            )
        return FitChoice("first-harmonic", steps, shape, bias, None, tuple(warnings))
    if residual.worst > WARN_BIAS:
        warnings.append(
            "the curve's shape varies over the field: the shape-aware fit may still be off by "
            f"up to {residual.describe()}"
        )
    top = float(np.abs(shape.beta[-2:]).max())
    if top > UNRESOLVED:
        warnings.append(
            f"the {shape.steps}-step calibration does not resolve the curve (|beta| = {top:.2g} "
            f"at harmonic {shape.max_harmonic}): take more calibration steps"
        )
    return FitChoice("shape-aware", steps, shape, bias, residual, tuple(warnings))


#: The ring current every fit is scaled to [mA]: one number for every scan and every
#: consumer, so that a series' fit does not depend on which frame arrived first (a restarted
#: or late reconstructor sees them in another order) and offline and streaming fits agree to
#: the bit. Any positive value would do: T, phase and dark-field are ratios of fits.
DOSE_REF_MA = 100.0


def frames_scale(current_ma: NDArray[np.float64], dose_ref_ma: float) -> NDArray[np.float64] | None:
    """Per-frame dose factors dose_ref / current, as ``fit_dose_normalised`` applies them
    (None when a reading is not positive)."""
    current = np.asarray(current_ma, np.float64)
    if current.size and np.all(current > 0):
        return np.asarray(dose_ref_ma / current, np.float64)
    return None
