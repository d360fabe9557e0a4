"""Slow 1-D Fresnel wave-optics oracle of a phase-stepping Talbot interferometer (tests only).

Recipe of docs/physics.md: the sample exit wave (projection approximation) times a
binary phase grating G1 (phase -pi/2 or -pi: t = exp(-i k delta_g h) on the first ``g1_duty`` of
each period, 1 elsewhere), propagated over the G1-G2 distance d with the paraxial transfer function
exp(-i pi lambda d f^2) (Voelz & Roggemann, Appl. Opt. 48, 6132 (2009); plane wave, exp(+i k z)
convention), |U|^2 optionally blurred by a periodic Gaussian (the projected source, rms
``source_sigma_m`` in the G2 plane), times the analyser G2 shifted to each step position x_k along
+x, integrated over pixels. G2 is binary (open on the first ``g2_duty`` of each period, absorber
lines of intensity transmission ``g2_transmission``; with ``g2_edge`` > 0 a trapezoid whose sloped
edges, each ``g2_edge`` of a period wide, are centred on the binary edges) or sinusoidal.

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
    g1_duty: float = 0.5,
    g2_duty: float = 0.5,
    g2_transmission: float = 0.0,
    g2_edge: float = 0.0,
    source_sigma_m: float = 0.0,
) -> SteppingResult:
    """Stepping curves from Fresnel propagation (plane wave, p2 = p1/nu as the fringe period).

    ``exit_wave(x)`` gives the sample's complex transmission at x [m] (None: no sample);
    ``periods`` G1 periods in the window; ``samples_per_step`` samples per step p2/M;
    ``pixel_samples`` samples per detector pixel (None: the whole window is one pixel).

    Gratings (fractions of a period, as ``contracts.simulation.Gratings``): ``g1_duty`` the
    phase-shifting fraction of G1; ``g2_duty`` the open fraction of a binary G2,
    ``g2_transmission`` the intensity transmission of its absorber lines (0..1) and ``g2_edge``
    the width of each sloped absorber edge (0: binary; at most min(g2_duty, 1 - g2_duty)).
    ``source_sigma_m`` [m] is the rms width of the source blur IN THE G2 PLANE (a source of rms
    size sigma at a distance l before G1 blurs by sigma d / l: ``sim.gratings.projected_source_
    sigma_m``), applied to |U|^2 as a periodic Gaussian by FFT. The defaults are the ideal
    gratings of the earlier oracle, bit for bit.
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
    if not (0.0 < g1_duty < 1.0 and 0.0 < g2_duty < 1.0):
        raise ValueError(f"g1_duty and g2_duty must be in (0, 1), got {g1_duty!r}, {g2_duty!r}")
    if not 0.0 <= g2_transmission <= 1.0:
        raise ValueError(f"g2_transmission must be in [0, 1], got {g2_transmission!r}")
    if not 0.0 <= g2_edge <= min(g2_duty, 1.0 - g2_duty):
        raise ValueError(f"g2_edge must be in [0, min(g2_duty, 1 - g2_duty)], got {g2_edge!r}")
    if not source_sigma_m >= 0.0:
        raise ValueError(f"source_sigma_m must be >= 0, got {source_sigma_m!r}")
    nu = 1 if g1_phase_deg == 90.0 else 2
    per_p2 = samples_per_step * steps
    per_p1 = nu * per_p2
    n = periods * per_p1
    dx = g1_pitch_m / per_p1
    x = np.asarray((np.arange(n) - n // 2) * dx, dtype=np.float64)
    j = np.arange(n)
    g1_shift = (math.pi / 2) if nu == 1 else math.pi
    g1 = np.where((j % per_p1) < math.floor(g1_duty * per_p1), np.exp(-1j * g1_shift), 1.0 + 0.0j)
    u0 = g1 if exit_wave is None else g1 * np.asarray(exit_wave(x), dtype=np.complex128)
    f = np.fft.fftfreq(n, dx)
    u = np.fft.ifft(np.fft.fft(u0) * np.exp(-1j * math.pi * wavelength_m * distance_m * f**2))
    intensity = np.abs(u) ** 2
    if source_sigma_m > 0:
        blur = np.exp(-2.0 * math.pi**2 * source_sigma_m**2 * f**2)
        intensity = np.fft.ifft(np.fft.fft(intensity) * blur).real
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
            open_ = (
                (phase < g2_duty).astype(np.float64)
                if g2_edge == 0
                else _trapezoid(phase, g2_duty, g2_edge)
            )
            g2 = g2_transmission + (1.0 - g2_transmission) * open_
        else:
            g2 = 0.5 * (1.0 + np.cos(2.0 * math.pi * phase))
        rows.append((intensity * g2).reshape(-1, pix).mean(axis=1))
    return SteppingResult(intensity=np.asarray(rows), step_positions_m=np.asarray(positions), x_m=x)


def _trapezoid(phase: FloatArray, duty: float, edge: float) -> FloatArray:
    """Open fraction at ``phase`` in [0, 1) [periods] of slits open on [0, duty) whose edges slope
    linearly over ``edge`` (centred on 0 and duty): the binary profile convolved with a box."""
    half = edge / 2.0
    out = np.zeros_like(phase)
    for m in (-1.0, 0.0, 1.0):  # the slit of this period and of its neighbours
        lo = np.maximum(phase - half, m)
        hi = np.minimum(phase + half, m + duty)
        out += np.clip(hi - lo, 0.0, None)
    return out / edge


def shear_m(wavelength_m: float, distance_m: float, g1_pitch_m: float, nu: int) -> float:
    """Shear xi = lambda d / p2 with p2 = p1 / nu [m]."""
    return wavelength_m * distance_m * nu / g1_pitch_m
