"""What a misaligned analyser grating G2 does to the fringes: roll and G1-G2 distance.

Both follow from the paraxial (Fresnel) propagation of a binary phase grating, the model of
docs/physics.md and of the wave-optics oracle ``sim.fresnel``:

- **Distance.** G1 (pitch p1, 50 % duty, phase shift phi = pi/2 or pi) has Fourier coefficients
  a_0 = (1 + e^{-i phi})/2 and a_n = (1 - e^{-i phi}) / (i pi n) for odd n (0 for even n != 0).
  Over a distance z each order takes the phase exp(-i pi lambda z n^2 / p1^2), and the intensity
  harmonic the analyser (p2 = p1/nu) picks is
  I_nu(z) = sum_n b_n conj(b_{n-nu}),  b_n = a_n exp(-i pi lambda z n^2 / p1^2).
  The visibility behind G2 scales with |I_nu(z)|; at the fractional Talbot distance it peaks.
  For the pi/2 grating only two terms survive and |I_1(z)| = (2/pi) |sin(pi lambda z / p1^2)|.
  In a cone beam (source at l before G1) the Fresnel scaling theorem maps the G1-G2 distance z
  to the plane-wave distance l z / (l + z).
- **Roll.** G2 turned by a small angle alpha about the beam axis against fringes of period p2
  beats with them into moire fringes along y with spatial frequency alpha / p2 at G2. In detector
  pixels that is alpha * pixel_size * magnification * cone magnification / p2 cycles per pixel
  (the object-space pixel imaged onto the G2 plane), a phase ramp down the rows; integrating a
  fringe over a pixel's height lowers the visibility by sinc(f_y).

Pure numeric functions; SI units.
"""

from __future__ import annotations

import functools
import math

import numpy as np
from numpy.typing import NDArray

from contracts.instrument import Geometry

FloatArray = NDArray[np.float64]

#: Diffraction orders kept in the Fourier sum (|a_n| ~ 1/n: the sum is converged to ~1e-4).
ORDERS = 4000


@functools.lru_cache(maxsize=256)
def _harmonic_amplitude(
    wavelength_m: float, pitch_m: float, phase_deg: float, nu: int, distance_m: float
) -> float:
    """|I_nu(z)| for unit incident intensity (plane wave, binary 50 % phase grating)."""
    phi = math.radians(phase_deg)
    n = np.arange(-ORDERS, ORDERS + 1)
    a = np.zeros(n.size, dtype=np.complex128)
    odd = n % 2 == 1
    a[odd] = (1 - np.exp(-1j * phi)) / (1j * math.pi * n[odd])
    a[n == 0] = (1 + np.exp(-1j * phi)) / 2
    b = a * np.exp(
        -1j * math.pi * wavelength_m * distance_m * n.astype(np.float64) ** 2 / pitch_m**2
    )
    return float(abs(np.sum(b[nu:] * np.conj(b[:-nu]))))


def plane_wave_distance_m(geometry: Geometry, distance_m: float) -> float:
    """The plane-wave propagation distance [m] equivalent to a G1-G2 distance ``distance_m``
    (l z / (l + z) in a cone beam from a source at l; z for a plane wave)."""
    if not (math.isfinite(distance_m) and distance_m > 0):
        raise ValueError(f"distance_m must be > 0, got {distance_m!r}")
    l_m = geometry.source_distance_m
    return distance_m if l_m is None else l_m * distance_m / (l_m + distance_m)


def talbot_visibility_factor(geometry: Geometry, distance_m: float) -> float:
    """Fringe visibility at G1-G2 distance ``distance_m`` [m] relative to that at the design
    distance ``geometry.distance_m`` (1 there; the analyser harmonic |I_nu(z)| / |I_nu(d)|)."""
    args = (geometry.wavelength_m, geometry.g1_pitch_m, geometry.g1_phase_deg, geometry.nu)
    at_design = _harmonic_amplitude(*args, plane_wave_distance_m(geometry, geometry.distance_m))
    return _harmonic_amplitude(*args, plane_wave_distance_m(geometry, distance_m)) / at_design


def roll_moire_frequency(geometry: Geometry, roll_rad: float) -> float:
    """Moire fringe frequency along the rows [cycles/px] of G2 rolled by ``roll_rad`` [rad]
    against the fringes (small angles; signed like the roll)."""
    if not math.isfinite(roll_rad):
        raise ValueError(f"roll_rad must be finite, got {roll_rad!r}")
    return roll_rad * geometry.pixel_at_g2_m / geometry.g2_pitch_m


def roll_moire_phase(
    geometry: Geometry, roll_rad: float, shape: tuple[int, int]
) -> tuple[FloatArray, float]:
    """(phase [rad], visibility factor) of the moire from a G2 roll ``roll_rad`` [rad].

    The phase is a ramp 2 pi f_y (row - (rows - 1)/2), shape (rows, 1) so it broadcasts over the
    columns of a (rows, columns) frame; the factor sinc(f_y) is the loss from integrating the
    moire over a pixel's height.
    """
    rows = shape[0]
    f_y = roll_moire_frequency(geometry, roll_rad)
    y = np.arange(rows, dtype=np.float64) - (rows - 1) / 2
    return (2.0 * math.pi * f_y * y)[:, None], float(np.sinc(f_y))
