"""Fast fringe model of a phase-stepping grating interferometer and the detector.

Per super-sampled detector point and stepped-grating phase theta = 2 pi x / p2 (x = actual G2
position [m], stepped along +s), with psi = phi_ref + phi_s:

    I(theta) = I0 dose T [1 + V0 D cos(theta + psi)
                          + sum_{n>=2} V0 D^(n^2) Re(beta_n e^{i n (theta + psi)})]

with transmission T = exp(-2 k int beta), dark field D = exp(-int eps) (Bech et al., PMB 55, 5529
(2010)), the curve's shape beta_n = c_n |c_1|^(n-1) / c_1^n (complex; ``sim.gratings`` computes it
from the real gratings, or ``Fringes.harmonics`` gives it for a sinusoidal curve) and the
finite-shear differential phase (Weitkamp et al., Opt. Express 13, 6296 (2005))

    phi_s(s) = Phi(s - xi/2) - Phi(s + xi/2) = k [int delta (s + xi/2) - int delta (s - xi/2)],

Phi = -k int delta the exit-wave phase, xi = lambda d / p2 the shear. The sign is the one a
Fresnel wave-optics calculation gives (sim/fresnel.py, tests/sim/test_fresnel.py): a phase
gradient dPhi/ds tilts the wave by alpha = +(1/k) dPhi/ds, the fringe moves by +d alpha, and an
analyser stepped along +s then sees the phase -2 pi d alpha / p2 = -xi dPhi/ds.

The dark field damps harmonic n by D^(n^2), not by D: small-angle scattering blurs the fringe
with a Gaussian, which multiplies the fringe's harmonic n by exp(-2 pi^2 n^2 s^2 / p2^2) =
D^(n^2), D = exp(-int eps) being its first-harmonic reduction. A scattering sample makes the
curve more sinusoidal.

Intensities (never phases) are averaged from the super-sampled grid into pixels, then the
detector applies Poisson noise, Gaussian PSF, gain, read noise and the dark offset, in that order
(docs/physics.md).

Arrays are (rows, columns) = (v, s); super-sampled arrays have ``supersample`` points per pixel
along both axes. Harmonic coefficients follow the FFT convention of docs/physics.md:
c_n = (1/M) sum_k I_k exp(-i n theta_k) for M equidistant steps, so that
I(theta) = a0 + 2 Re sum_n c_n exp(i n theta) and c_1 = a0 V exp(i phi) / 2.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
from numpy.typing import NDArray
from scipy import ndimage

from contracts.instrument import Geometry
from contracts.simulation import DetectorResponse, Fringes
from sim.gratings import curve_harmonics

FloatArray = NDArray[np.float64]
ComplexArray = NDArray[np.complex128]

#: rms of the smooth low-order reference-phase aberration [rad].
ABERRATION_RMS_RAD = 0.15
#: Linear tilt of the reference drift across the field, as a fraction of the uniform drift.
DRIFT_TILT_FRACTION = 0.25
#: uint16 ceiling.
_UINT16_MAX = 65535


class LineIntegrator(Protocol):
    """Anything that gives exact line integrals of delta, beta and eps (e.g. a BonePhantom)."""

    def line_integrals(
        self, theta_rad: float, s_m: FloatArray, v_m: FloatArray
    ) -> tuple[FloatArray, FloatArray, FloatArray]: ...


def _check_supersample(supersample: int) -> None:
    if supersample < 1:
        raise ValueError(f"supersample must be >= 1, got {supersample}")


def detector_axes(
    shape: tuple[int, int],
    pixel_m: float,
    supersample: int = 1,
    center_offset_px: float = 0.0,
) -> tuple[FloatArray, FloatArray]:
    """Super-sampled detector coordinates (s (ncols ss,), v (nrows ss,)) [m], ascending.

    Pixel column i spans s_i +/- pixel/2 with s_i = (i - (ncols-1)/2 - center_offset_px) pixel;
    row r spans v_r +/- pixel/2 with v_r = (r - (nrows-1)/2) pixel. Sub-samples sit at the centres
    of ``supersample`` equal sub-intervals.
    """
    _check_supersample(supersample)
    if not pixel_m > 0:
        raise ValueError(f"pixel_m must be > 0, got {pixel_m!r}")
    nrows, ncols = shape
    sub = (np.arange(supersample) + 0.5) / supersample - 0.5
    cols = (np.arange(ncols)[:, None] + sub).ravel() - (ncols - 1) / 2.0 - center_offset_px
    rows = (np.arange(nrows)[:, None] + sub).ravel() - (nrows - 1) / 2.0
    return cols * pixel_m, rows * pixel_m


def bin_pixels(image: NDArray[Any], supersample: int) -> NDArray[Any]:
    """Mean over ``supersample`` x ``supersample`` blocks: (R ss, C ss) -> (R, C)."""
    _check_supersample(supersample)
    rows, cols = image.shape
    if rows % supersample or cols % supersample:
        raise ValueError(f"image shape {image.shape} is not a multiple of supersample")
    if not np.issubdtype(image.dtype, np.inexact):
        image = image.astype(np.float64)
    if supersample == 1:
        return image.copy()
    out = image[::supersample, ::supersample].copy()  # sums of strided views: no reduce
    for i in range(supersample):
        for j in range(supersample):
            if i or j:
                out += image[i::supersample, j::supersample]
    out /= supersample * supersample
    return out


@dataclass(frozen=True)
class ProjectionFields:
    """Super-sampled sample fields at one rotation angle, each (nrows ss, ncols ss).

    ``transmission`` T, ``darkfield`` D (both dimensionless) and ``dphase`` phi_s [rad].
    """

    transmission: FloatArray
    darkfield: FloatArray
    dphase: FloatArray
    supersample: int


def fields_from_integrals(
    int_beta: FloatArray,
    int_eps: FloatArray,
    int_delta_minus: FloatArray,
    int_delta_plus: FloatArray,
    wavenumber_per_m: float,
    supersample: int,
) -> ProjectionFields:
    """T = exp(-2k int beta), D = exp(-int eps), phi_s = k (int delta(s+xi/2) - int delta(s-xi/2)).

    Line integrals of beta and delta in metres, of eps dimensionless; ``int_delta_minus/plus``
    are taken at s - xi/2 and s + xi/2.
    """
    _check_supersample(supersample)
    shapes = {a.shape for a in (int_beta, int_eps, int_delta_minus, int_delta_plus)}
    if len(shapes) != 1:
        raise ValueError(f"line integrals must share one shape, got {shapes}")
    k = wavenumber_per_m
    return ProjectionFields(
        transmission=np.exp(-2.0 * k * int_beta),
        darkfield=np.exp(-int_eps),
        dphase=k * (int_delta_plus - int_delta_minus),
        supersample=supersample,
    )


def projection_fields(
    sample: LineIntegrator,
    geometry: Geometry,
    shape: tuple[int, int],
    theta_rad: float,
    supersample: int,
    center_offset_px: float = 0.0,
) -> ProjectionFields:
    """Fields of ``sample`` at rotation ``theta_rad`` on the super-sampled detector grid.

    phi_s uses exact line integrals at s +/- xi/2 (finite shear, xi = geometry.shear_m).
    """
    s, v = detector_axes(shape, geometry.pixel_size_m, supersample, center_offset_px)
    half = geometry.shear_m / 2.0
    spacing = geometry.pixel_size_m / supersample
    shift = half / spacing
    m = round(shift)
    if m >= 1 and abs(shift - m) < 1e-9:
        # s +/- xi/2 fall on the sub-sample grid: one evaluation on a grid extended by m points.
        n = s.size
        ext = s[0] + (np.arange(n + 2 * m) - m) * spacing
        d_ext, b_ext, e_ext = sample.line_integrals(theta_rad, ext, v)
        d_minus, d_plus = d_ext[:, :n], d_ext[:, 2 * m :]
        int_beta, int_eps = b_ext[:, m : m + n], e_ext[:, m : m + n]
    else:
        _, int_beta, int_eps = sample.line_integrals(theta_rad, s, v)
        d_minus, _, _ = sample.line_integrals(theta_rad, s - half, v)
        d_plus, _, _ = sample.line_integrals(theta_rad, s + half, v)
    return fields_from_integrals(
        int_beta, int_eps, d_minus, d_plus, geometry.wavenumber_per_m, supersample
    )


@dataclass(frozen=True)
class ReferencePattern:
    """Empty-interferometer fringe pattern, super-sampled (nrows ss, ncols ss).

    ``phase`` phi_ref [rad] and first-harmonic ``visibility`` V0 [1].
    """

    phase: FloatArray
    visibility: FloatArray
    supersample: int

    @property
    def shape(self) -> tuple[int, int]:
        """Detector shape (rows, columns)."""
        r, c = self.phase.shape
        return r // self.supersample, c // self.supersample


def _normalised_coords(shape: tuple[int, int], supersample: int) -> tuple[FloatArray, FloatArray]:
    """Column coordinate u in [-1/2, 1/2] across the field and row coordinate w = v / width."""
    ncols = shape[1]
    s, v = detector_axes(shape, 1.0, supersample)
    return s / ncols, v / ncols


def make_reference(
    fringes: Fringes,
    shape: tuple[int, int],
    supersample: int,
    seed: int,
) -> ReferencePattern:
    """Reference pattern: phi_ref = 2 pi moire_fringes u + smooth low-order aberration, V0 map.

    u = column position / field width in [-1/2, 1/2]. The aberration is a random combination of
    Legendre-like polynomials of order 2-3 with ``ABERRATION_RMS_RAD`` rms; V0 = visibility +
    visibility_spread g with g a smooth zero-mean unit-rms random field. Deterministic in ``seed``.
    """
    _check_supersample(supersample)
    rng = np.random.default_rng(seed)
    u, w = _normalised_coords(shape, supersample)
    uu, ww = np.meshgrid(2 * u, 2 * w)
    terms = [uu**2 - 1 / 3, uu * ww, ww**2 - 1 / 3, uu**3 - 0.6 * uu, uu**2 * ww, ww**3]
    aberr = sum(rng.normal() * t for t in terms)
    assert isinstance(aberr, np.ndarray)
    aberr = aberr - aberr.mean()
    rms = float(np.sqrt(np.mean(aberr**2)))
    if rms > 0:
        aberr *= ABERRATION_RMS_RAD / rms
    phase = 2.0 * math.pi * fringes.moire_fringes * uu / 2 + aberr
    g = np.zeros_like(uu)
    for _ in range(6):
        fu, fw = rng.uniform(0.3, 2.0, size=2)
        g += np.cos(math.pi * (fu * uu * rng.choice([-1, 1]) + fw * ww) + rng.uniform(0, 2 * np.pi))
    g -= g.mean()
    g_rms = float(np.sqrt(np.mean(g**2)))
    if g_rms > 0:
        g /= g_rms
    vis = np.clip(fringes.visibility + fringes.visibility_spread * g, 0.01, 0.99)
    return ReferencePattern(phase=phase, visibility=vis, supersample=supersample)


@dataclass(frozen=True)
class StepCurve:
    """Binned noise-free stepping curve per pixel for unit dose, (nrows, ncols) arrays.

    I(theta) = dose (a0 + 2 Re sum_n c_n exp(i n (theta + offset))) [detected e-], ``a0`` the mean
    counts and ``harmonics[n]`` = c_n in the FFT convention (c_1 = a0 V exp(i phi) / 2).
    """

    a0: FloatArray
    harmonics: dict[int, ComplexArray] = field(default_factory=dict)

    def counts(
        self,
        theta_rad: float,
        dose: float = 1.0,
        phase_offset_rad: float | FloatArray = 0.0,
        visibility_factor: float = 1.0,
    ) -> FloatArray:
        """Expected counts (nrows, ncols) at grating phase ``theta_rad`` [rad]; every harmonic
        scaled by ``visibility_factor`` (a misaligned analyser, ``sim.misalignment``)."""
        out = self.a0.copy()
        rotor = np.exp(1j * (theta_rad + np.asarray(phase_offset_rad, dtype=np.float64)))
        power, last = rotor, 1  # rotor^n by products: one exp however many harmonics
        for n in sorted(self.harmonics):
            while last < n:
                power, last = power * rotor, last + 1
            out += (2.0 * visibility_factor) * np.real(self.harmonics[n] * power)
        return dose * out

    @property
    def c1(self) -> ComplexArray:
        """First-harmonic coefficient c_1."""
        return self.harmonics[1]


def _check_harmonics(harmonics: Mapping[int, complex] | None) -> dict[int, complex]:
    given = dict(harmonics or {})
    for n in given:
        if int(n) != n or n < 2:
            raise ValueError(f"harmonics keys must be integers >= 2, got {n!r}")
    return {int(n): complex(b) for n, b in given.items()}


def step_curve(
    fields: ProjectionFields | None,
    reference: ReferencePattern,
    incident_counts: float,
    harmonics: Mapping[int, complex] | None = None,
    *,
    fringes: Fringes | None = None,
    geometry: Geometry | None = None,
) -> StepCurve:
    """Bin the super-sampled stepping curve into pixels; ``fields=None`` means no sample.

    The curve's shape is ``harmonics`` {n: beta_n} (n >= 2, complex or real; None: a sinusoid),
    or that of ``fringes`` in ``geometry`` (``sim.gratings.curve_harmonics``: the gratings'
    with ``curve="gratings"``, cached, the explicit ones with ``"sinusoidal"``). Harmonic n is
    c_n = beta_n |c_1| e^{i n psi} D^(n^2 - 1) relative to the first harmonic c_1 (module
    docstring), binned into pixels as e^{i n psi} is.
    """
    if not incident_counts > 0:
        raise ValueError(f"incident_counts must be > 0, got {incident_counts!r}")
    if fringes is not None:
        if harmonics is not None or geometry is None:
            raise ValueError("fringes needs geometry, and takes the place of harmonics")
        harmonics = curve_harmonics(fringes, geometry)
    extra = _check_harmonics(harmonics)
    ss = reference.supersample
    psi = reference.phase
    amp = incident_counts * reference.visibility
    a0_sub: FloatArray | float = incident_counts
    damping: FloatArray | None = None
    if fields is not None:
        if fields.supersample != ss or fields.dphase.shape != psi.shape:
            raise ValueError("fields and reference must share the super-sampled grid")
        psi = psi + fields.dphase
        amp = amp * fields.transmission * fields.darkfield
        a0_sub = incident_counts * fields.transmission
        damping = fields.darkfield
    a0 = bin_pixels(np.broadcast_to(np.asarray(a0_sub, dtype=np.float64), psi.shape), ss)
    half = 0.5 * amp
    rotor = np.exp(1j * psi)
    out: dict[int, ComplexArray] = {1: bin_pixels(half * rotor, ss)}
    if not extra:
        return StepCurve(a0=np.asarray(a0, dtype=np.float64), harmonics=out)
    if damping is not None and bool(np.all(damping == 1.0)):
        damping = None
    # q_n = D^(n^2 - 1) e^{i n psi} (amp holds D once) by products over n = 1, 1 + g, 1 + 2g, ...
    # (g = gcd of the n - 1: 2 for a curve of odd harmonics): q_{n+g} = q_n r_n with
    # r_n = e^{i g psi} D^(2 g n + g^2) and r_{n+g} = r_n D^(2 g^2); one exp in all.
    g = math.gcd(*(n - 1 for n in extra))
    q = rotor
    step = rotor if g == 1 else np.exp(1j * g * psi)
    growth = None
    if damping is not None:
        step = step * damping ** (2 * g + g * g)
        growth = damping ** (2 * g * g)
    last = 1
    for n in sorted(extra):
        while last < n:
            q, last = q * step, last + g
            if growth is not None:
                step = step * growth
        out[n] = extra[n] * bin_pixels(half * q, ss)
    return StepCurve(a0=np.asarray(a0, dtype=np.float64), harmonics=out)


def apply_psf(image: NDArray[Any], sigma_px: float) -> NDArray[Any]:
    """Gaussian PSF (sigma in pixels, 'nearest' edges) on a (rows, columns) image."""
    if sigma_px < 0:
        raise ValueError(f"sigma_px must be >= 0, got {sigma_px!r}")
    if sigma_px == 0:
        return image
    if np.iscomplexobj(image):
        return ndimage.gaussian_filter(image.real, sigma_px, mode="nearest") + 1j * (
            ndimage.gaussian_filter(image.imag, sigma_px, mode="nearest")
        )
    return ndimage.gaussian_filter(image, sigma_px, mode="nearest")


def expected_counts(
    fields: ProjectionFields | None,
    reference: ReferencePattern,
    theta_step_rad: float,
    incident_counts: float,
    dose: float = 1.0,
    harmonics: Mapping[int, complex] | None = None,
    phase_offset_rad: float | FloatArray = 0.0,
) -> FloatArray:
    """Binned expected detected counts (nrows, ncols) [e-] before the detector (no PSF)."""
    curve = step_curve(fields, reference, incident_counts, harmonics)
    return curve.counts(theta_step_rad, dose, phase_offset_rad)


def first_harmonic(
    fields: ProjectionFields | None,
    reference: ReferencePattern,
    incident_counts: float,
    psf_sigma_px: float = 0.0,
) -> tuple[FloatArray, ComplexArray]:
    """Exact (a0, c1) of the binned noise-free stepping curve, (nrows, ncols) each.

    FFT convention (c1 = a0 V exp(i phi) / 2); with ``psf_sigma_px`` > 0 the (linear) PSF is
    applied to both, as it is to the mean of the detected frames.
    """
    curve = step_curve(fields, reference, incident_counts)
    a0 = apply_psf(curve.a0, psf_sigma_px)
    c1 = apply_psf(curve.c1, psf_sigma_px)
    return np.asarray(a0, dtype=np.float64), np.asarray(c1, dtype=np.complex128)


def drift_phase(rate_rad_per_s: float, time_s: float, shape: tuple[int, int]) -> float | FloatArray:
    """Reference drift at ``time_s``: rate t (1 + 2 DRIFT_TILT_FRACTION u) per pixel [rad].

    u = column / field width in [-1/2, 1/2] at pixel centres; a scalar 0 when there is no drift.
    """
    if rate_rad_per_s == 0 or time_s == 0:
        return 0.0
    u, _ = _normalised_coords(shape, 1)
    tilt = 1.0 + 2.0 * DRIFT_TILT_FRACTION * u
    return np.broadcast_to(rate_rad_per_s * time_s * tilt[None, :], shape).copy()


def detect(
    expected: FloatArray, rng: np.random.Generator, detector: DetectorResponse
) -> NDArray[np.uint16]:
    """One detector frame from expected counts (rows, columns) [e-].

    Poisson, Gaussian PSF, gain [ADU/e-], Gaussian read noise, dark offset [ADU], round, clip to
    uint16 - in that order (docs/physics.md).
    """
    if expected.ndim != 2:
        raise ValueError(f"expected must be (rows, columns), got shape {expected.shape}")
    if np.any(expected < 0):
        raise ValueError("expected counts must be >= 0")
    counts = rng.poisson(expected).astype(np.float64)
    counts = np.asarray(apply_psf(counts, detector.psf_sigma_px), dtype=np.float64)
    counts *= detector.gain_adu_per_e
    return _read_out(counts, rng, detector)


def dark_frame(
    rng: np.random.Generator, detector: DetectorResponse, shape: tuple[int, int]
) -> NDArray[np.uint16]:
    """A shutter-closed frame (rows, columns): dark offset plus read noise [ADU]."""
    return _read_out(np.zeros(shape), rng, detector)


def _read_out(
    adu: FloatArray, rng: np.random.Generator, detector: DetectorResponse
) -> NDArray[np.uint16]:
    noisy = adu + detector.dark_offset_adu
    if detector.read_noise_e > 0:
        noisy = noisy + rng.normal(0.0, detector.read_noise_e * detector.gain_adu_per_e, adu.shape)
    return np.clip(np.rint(noisy), 0, _UINT16_MAX).astype(np.uint16)


def noiseless(expected: FloatArray, detector: DetectorResponse) -> FloatArray:
    """Noise-free frame in ADU: gain PSF(expected) + dark offset (float64)."""
    blurred = np.asarray(apply_psf(expected, detector.psf_sigma_px), dtype=np.float64)
    return blurred * detector.gain_adu_per_e + detector.dark_offset_adu
