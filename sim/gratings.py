"""The stepping curve that real gratings make: its harmonics from the gratings, analytically.

A phase-stepping curve is the cross-correlation of the self-image of G1 with the transmission of
the analyser G2. Per fringe harmonic n (frequency n / p, p = M_cone p1 / nu the fringe period at
G2, nu = 1 for a pi/2 and 2 for a pi grating):

1. **G1**, binary, phase shift phi = ``geometry.g1_phase_deg`` on the first ``g1_duty`` w1 of each
   period (t = e^{-i phi} there, 1 elsewhere; the exp(+ikz) convention of docs/physics.md):
   t(x) = sum_m a_m e^{2 pi i m x / p1} with a_0 = w1 e^{-i phi} + 1 - w1 and
   a_m = (e^{-i phi} - 1) (1 - e^{-2 pi i m w1}) / (2 pi i m).
2. **Propagation** over the actual G1-G2 distance ``geometry.distance_m`` (paraxial, as
   ``sim.fresnel``): b_m = a_m e^{-i pi lambda z m^2 / p1^2}, z the plane-wave distance
   (``sim.misalignment.plane_wave_distance_m``: l d / (l + d) in a cone beam, whose pattern the
   Fresnel scaling theorem magnifies by M_cone, which the ratios below do not see).
3. **Self-image** intensity |U|^2 = sum_q I_q e^{2 pi i q x / p1}, I_q = sum_m b_m conj(b_{m-q});
   the analyser picks q = n nu. The sum is taken by FFT over ``FIELD_SAMPLES`` orders, which
   leaves ~ 1e-5 of |U|^2 (the 1/m^2 tail of the orders) out.
4. **Source blur**: the source (rms ``source_sigma_m``, a distance l before G1) smears the
   fringe by a Gaussian of rms sigma = source_sigma_m d / l in the G2 plane, which multiplies
   harmonic n by exp(-2 pi^2 n^2 sigma^2 / p^2). l is ``gratings.source_distance_m``, or the
   geometry's own ``source_distance_m`` in a cone beam.
5. **G2**: intensity transmission tau (``g2_transmission``) in the absorber lines, 1 in the
   slits, open on the first ``g2_duty`` w2 of the period, with sloped edges of width e
   (``g2_edge``, a trapezoid: the binary profile convolved with a box of width e p, edges centred
   on the binary ones): g_0 = tau + (1 - tau) w2 and, for n != 0,
   g_n = (1 - tau) w2 e^{-i pi n w2} sinc(n w2) sinc(n e)  (sinc(x) = sin(pi x) / (pi x)).
6. **The curve**: with G2 at x (stepped along +x, theta = 2 pi x / p),
   S(theta) = (1/p) int |U|^2(u) G2(u - x) du = sum_n c_n e^{i n theta}, c_n = I_{n nu} conj(g_n),
   the FFT convention of ``sim.forward`` (c_n = (1/M) sum_k S_k e^{-i n theta_k}), the sign that
   the wave-optics oracle ``sim.fresnel`` has (tests/sim/test_gratings.py).

The **shape** of the curve is beta_n = c_n |c_1|^(n-1) / c_1^n (beta_1 = 1), independent of the
curve's shift and scale: a curve of first harmonic c_1 = |c_1| e^{i psi} has
c_n = beta_n |c_1| e^{i n psi}. ``sim.forward.step_curve`` renders that, with the first-harmonic
visibility of the profile (``Fringes.visibility``, V0, which holds every loss); the gratings give
only the ratios of the higher harmonics to the first. :func:`ideal_visibility` is what the gratings
alone would give (for the docs and the tests; it never overrides V0).

Not here: the detector blur, which acts after G2 and so leaves a pixel's curve shape alone
(``sim.forward`` applies the PSF to the frames, which damps harmonic n of a moire pattern by
itself), a Talbot-Lau G0's slit profile, and the pixel's averaging over the moire phase (done in
``sim.forward`` by binning e^{i n psi}).

Pure functions; lengths in metres, fractions of a period dimensionless.
"""

from __future__ import annotations

import functools
import math

import numpy as np
from numpy.typing import NDArray

from contracts.instrument import Geometry
from contracts.simulation import Fringes, Gratings
from sim.misalignment import plane_wave_distance_m

ComplexArray = NDArray[np.complex128]

#: Harmonics the renderer keeps at most (default ``n_max`` of :func:`stepping_harmonics`).
DEFAULT_MAX_HARMONIC = 64
#: The highest harmonic :func:`curve_coefficients` computes.
MAX_HARMONIC = 4096
#: |beta_n| below this is dropped: it changes no count of a 16-bit frame.
NEGLIGIBLE = 1e-6
#: G1 diffraction orders (and field samples per G1 period) of the self-image FFT.
FIELD_SAMPLES = 2**16


def projected_source_sigma_m(geometry: Geometry, gratings: Gratings) -> float:
    """rms blur of the fringe in the G2 plane by the source [m]: sigma_source d / l.

    l is ``gratings.source_distance_m``, or ``geometry.source_distance_m`` when the geometry is
    a cone beam (its source is the one that blurs).
    """
    l_m = geometry.source_distance_m or gratings.source_distance_m
    return gratings.source_sigma_m * geometry.distance_m / l_m


def g2_coefficients(gratings: Gratings, n_max: int) -> ComplexArray:
    """Fourier coefficients g_n, n = 0..n_max, of the G2 intensity transmission (open on the first
    ``g2_duty`` of each period at G2 position 0; trapezoidal edges; see the module docstring)."""
    n = np.arange(n_max + 1, dtype=np.float64)
    w2, tau = gratings.g2_duty, gratings.g2_transmission
    g = (
        (1.0 - tau)
        * w2
        * np.exp(-1j * math.pi * n * w2)
        * np.sinc(n * w2)
        * np.sinc(n * gratings.g2_edge)
    )
    g[0] = tau + (1.0 - tau) * w2
    return np.asarray(g, dtype=np.complex128)


@functools.lru_cache(maxsize=64)
def _self_image(
    wavelength_m: float,
    pitch_m: float,
    phase_deg: float,
    duty: float,
    distance_m: float,
    nu: int,
    n_max: int,
) -> tuple[complex, ...]:
    """I_{n nu}, n = 0..n_max, of the self-image of unit incident intensity (no source blur)."""
    m = np.fft.fftfreq(FIELD_SAMPLES, 1.0 / FIELD_SAMPLES)  # orders -N/2..N/2-1, FFT order
    t1 = np.exp(-1j * math.radians(phase_deg))
    a = np.empty(FIELD_SAMPLES, dtype=np.complex128)
    nz = m != 0
    a[nz] = (t1 - 1.0) * (1.0 - np.exp(-2j * math.pi * m[nz] * duty)) / (2j * math.pi * m[nz])
    a[~nz] = duty * t1 + 1.0 - duty
    b = a * np.exp(-1j * math.pi * wavelength_m * distance_m * m**2 / pitch_m**2)
    field = np.fft.ifft(b) * FIELD_SAMPLES  # U at x_j = j p1 / N
    image = np.fft.fft(np.abs(field) ** 2) / FIELD_SAMPLES  # I_q at e^{+2 pi i q x / p1}
    return tuple(complex(v) for v in image[: nu * n_max + 1 : nu])


def curve_coefficients(geometry: Geometry, gratings: Gratings, n_max: int) -> ComplexArray:
    """c_n, n = 0..n_max, of the stepping curve of unit incident intensity (FFT convention,
    G2 stepped along +x; G1's phase lines start at x = 0 and G2's slits open there at step 0)."""
    if not 1 <= n_max <= MAX_HARMONIC:
        raise ValueError(f"n_max must be in [1, {MAX_HARMONIC}], got {n_max!r}")
    image = np.asarray(
        _self_image(
            geometry.wavelength_m,
            geometry.g1_pitch_m,
            geometry.g1_phase_deg,
            gratings.g1_duty,
            plane_wave_distance_m(geometry, geometry.distance_m),
            geometry.nu,
            n_max,
        ),
        dtype=np.complex128,
    )
    n = np.arange(n_max + 1, dtype=np.float64)
    period = geometry.cone_magnification * geometry.g1_pitch_m / geometry.nu
    sigma = projected_source_sigma_m(geometry, gratings)
    blur = np.exp(-2.0 * math.pi**2 * (n * sigma / period) ** 2)
    return np.asarray(image * blur * np.conj(g2_coefficients(gratings, n_max)), np.complex128)


def stepping_harmonics(
    geometry: Geometry,
    gratings: Gratings,
    n_max: int = DEFAULT_MAX_HARMONIC,
    tol: float = NEGLIGIBLE,
) -> dict[int, complex]:
    """The curve's shape {n: beta_n}, beta_n = c_n |c_1|^(n-1) / c_1^n, for n = 2..n_max.

    Harmonics with |beta_n| < ``tol`` are left out (past the last one above it the curve has
    stopped: the list ends there). With the reference phase psi, harmonic n of a pixel of first
    harmonic |c_1| e^{i psi} is beta_n |c_1| e^{i n psi}. ValueError when the gratings make no
    first harmonic (c_1 = 0: a pi/2 grating halfway between two Talbot distances).
    """
    if n_max < 2:
        raise ValueError(f"n_max must be >= 2, got {n_max!r}")
    c = curve_coefficients(geometry, gratings, n_max)
    c1 = complex(c[1])
    if not abs(c1) > 1e-12 * abs(c[0]):
        raise ValueError(
            f"distance_m={geometry.distance_m:.6g}: the gratings make no first harmonic there "
            "(no stepping curve to shape)"
        )
    u = c1 / abs(c1)
    out: dict[int, complex] = {}
    for n in range(2, n_max + 1):
        beta = complex(c[n]) / (abs(c1) * u**n)
        if abs(beta) >= tol:
            out[n] = beta
    return out


def ideal_visibility(geometry: Geometry, gratings: Gratings) -> float:
    """First-harmonic visibility 2 |c_1| / c_0 the gratings alone would give [1] (no detector
    blur, no other loss; for the docs and the tests: the renderer uses ``Fringes.visibility``)."""
    c = curve_coefficients(geometry, gratings, 1)
    return float(2.0 * abs(c[1]) / c[0].real)


def curve_harmonics(fringes: Fringes, geometry: Geometry) -> dict[int, complex]:
    """The harmonic ratios the renderer uses: the gratings' :func:`stepping_harmonics` with
    ``curve="gratings"`` (cached per geometry and gratings), the explicit ``fringes.harmonics``
    with ``curve="sinusoidal"``."""
    if fringes.curve == "sinusoidal":
        return {int(n): complex(b) for n, b in fringes.harmonics.items()}
    return dict(_cached_harmonics(geometry, fringes.gratings))


@functools.lru_cache(maxsize=16)
def _cached_harmonics(geometry: Geometry, gratings: Gratings) -> tuple[tuple[int, complex], ...]:
    return tuple(stepping_harmonics(geometry, gratings).items())
