"""Slow 1-D Fresnel wave-optics oracle of a phase-stepping Talbot interferometer (tests only).

Recipe of docs/physics.md: the sample exit wave (projection approximation) times a
binary phase grating G1 (50 % duty, phase -pi/2 or -pi: t = exp(-i k delta_g h)), propagated over
the G1-G2 distance d with the paraxial transfer function exp(-i pi lambda d f^2) (Voelz &
Roggemann, Appl. Opt. 48, 6132 (2009); plane wave, exp(+i k z) convention), |U|^2 times the
analyser G2 (binary absorber with 50 % duty, or sinusoidal) shifted to each step position x_k
along +x, integrated over pixels.

The window is periodic (an integer number of G1 periods) and holds an integer number of samples
per step p2/M, so step positions are exact; a sample phase must be periodic over the window too
(e.g. a linear ramp with an integer number of cycles) for the FFT propagation to be exact.
Coordinates x [m] are the 1-D detector/sample column coordinate, x = (j - N/2) dx.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np
from numpy.typing import NDArray

FloatArray = NDArray[np.float64]
ComplexArray = NDArray[np.complex128]


@dataclass(frozen=True)
class SteppingResult:
    """Oracle output: ``intensity`` (steps, pixels) [relative to unit incident intensity per
    sample], ``step_positions_m`` (steps,), ``x_m`` (N,) the sample grid."""

    intensity: FloatArray
    step_positions_m: FloatArray
    x_m: FloatArray


def fresnel_stepping(
    *,
    wavelength_m: float,
    g1_pitch_m: float,
    g1_phase_deg: float,
    distance_m: float,
    steps: int,
    exit_wave: Callable[[FloatArray], ComplexArray] | None = None,
    periods: int = 32,
    samples_per_step: int = 16,
    g2_profile: Literal["binary", "sinusoidal"] = "binary",
    pixel_samples: int | None = None,
) -> SteppingResult:
    """Stepping curves from Fresnel propagation (plane wave, p2 = p1/nu as the fringe period).

    ``exit_wave(x)`` gives the sample's complex transmission at x [m] (None: no sample);
    ``periods`` G1 periods in the window; ``samples_per_step`` samples per step p2/M;
    ``pixel_samples`` samples per detector pixel (None: the whole window is one pixel).
    """
    if not wavelength_m > 0:
        raise ValueError(f"wavelength_m must be > 0, got {wavelength_m!r}")
    if not g1_pitch_m > 0:
        raise ValueError(f"g1_pitch_m must be > 0, got {g1_pitch_m!r}")
    if not distance_m >= 0:
        raise ValueError(f"distance_m must be >= 0, got {distance_m!r}")
    if steps < 3:
        raise ValueError(f"steps must be >= 3, got {steps}")
    if periods < 1 or samples_per_step < 1:
        raise ValueError("periods and samples_per_step must be >= 1")
    if g1_phase_deg not in (90.0, 180.0):
        raise ValueError(f"g1_phase_deg must be 90 or 180, got {g1_phase_deg!r}")
    if g2_profile not in ("binary", "sinusoidal"):
        raise ValueError(f"g2_profile must be 'binary' or 'sinusoidal', got {g2_profile!r}")
    nu = 1 if g1_phase_deg == 90.0 else 2
    per_p2 = samples_per_step * steps
    per_p1 = nu * per_p2
    n = periods * per_p1
    dx = g1_pitch_m / per_p1
    x = np.asarray((np.arange(n) - n // 2) * dx, dtype=np.float64)
    j = np.arange(n)
    g1_shift = (math.pi / 2) if nu == 1 else math.pi
    g1 = np.where((j % per_p1) < per_p1 // 2, np.exp(-1j * g1_shift), 1.0 + 0.0j)
    u0 = g1 if exit_wave is None else g1 * np.asarray(exit_wave(x), dtype=np.complex128)
    f = np.fft.fftfreq(n, dx)
    u = np.fft.ifft(np.fft.fft(u0) * np.exp(-1j * math.pi * wavelength_m * distance_m * f**2))
    intensity = np.abs(u) ** 2
    pix = n if pixel_samples is None else pixel_samples
    if n % pix:
        raise ValueError(f"pixel_samples={pixel_samples} must divide the window of {n} samples")
    rows = []
    positions = []
    for k in range(steps):
        shift = k * samples_per_step
        positions.append(shift * dx)
        phase = ((j - shift) % per_p2) / per_p2
        if g2_profile == "binary":
            g2 = (phase < 0.5).astype(np.float64)
        else:
            g2 = 0.5 * (1.0 + np.cos(2.0 * math.pi * phase))
        rows.append((intensity * g2).reshape(-1, pix).mean(axis=1))
    return SteppingResult(intensity=np.asarray(rows), step_positions_m=np.asarray(positions), x_m=x)


def shear_m(wavelength_m: float, distance_m: float, g1_pitch_m: float, nu: int) -> float:
    """Shear xi = lambda d / p2 with p2 = p1 / nu [m]."""
    return wavelength_m * distance_m * nu / g1_pitch_m
