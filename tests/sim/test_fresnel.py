"""The fast fringe model against the 1-D Fresnel wave-optics oracle (docs/physics.md)."""

import math

import numpy as np
import pytest

from contracts.profile import builtin_profile
from sim.forward import ReferencePattern, expected_counts, fields_from_integrals
from sim.fresnel import fresnel_stepping

STEPS = 5


def harmonic(intensity):
    """Local first-harmonic FFT over the step axis (axis 0)."""
    k = np.arange(intensity.shape[0])
    return np.tensordot(np.exp(-2j * np.pi * k / intensity.shape[0]), intensity, axes=(0, 0))


def oracle_kwargs(geometry, **extra):
    kw = {
        "wavelength_m": geometry.wavelength_m,
        "g1_pitch_m": geometry.g1_pitch_m,
        "g1_phase_deg": geometry.g1_phase_deg,
        "distance_m": geometry.distance_m,
        "steps": STEPS,
        "periods": 32,
        "samples_per_step": 16,
    }
    kw.update(extra)
    return kw


@pytest.mark.parametrize("name", ["tiny", "full"])
def test_visibility_peaks_at_the_fractional_talbot_distance(name):
    geometry = builtin_profile(name).instrument.geometry
    scale = np.linspace(0.5, 1.5, 21)
    vis = []
    for s in scale:
        kw = oracle_kwargs(geometry, distance_m=s * geometry.talbot_distance_m, periods=8)
        i = fresnel_stepping(**kw, g2_profile="sinusoidal").intensity[:, 0]
        vis.append(2 * abs(harmonic(i)) / i.sum())
    assert int(np.argmax(vis)) == 10
    assert vis[10] > 1.3 * vis[0]


def wedge(geometry, cycles=4, periods=32):
    """A wedge int delta = g x whose exit wave is periodic over the oracle window."""
    k = geometry.wavenumber_per_m
    window = periods * geometry.g1_pitch_m
    g = 2 * math.pi * cycles / (k * window)
    return g, (lambda x: np.exp(-1j * k * g * x))


@pytest.mark.parametrize(("profile", "tolerance"), [("sinusoidal", 1e-9), ("binary", 0.02)])
def test_wedge_shift_matches_the_refraction_angle_and_the_fast_model(profile, tolerance):
    geometry = builtin_profile("tiny").instrument.geometry
    g, exit_wave = wedge(geometry)
    kw = oracle_kwargs(geometry, g2_profile=profile)
    ref = fresnel_stepping(**kw)
    obj = fresnel_stepping(**kw, exit_wave=exit_wave)
    shift = float(np.angle(harmonic(obj.intensity)[0] * np.conj(harmonic(ref.intensity)[0])))
    # Refraction toward the thin side: alpha = (1/k) dPhi/dx = -g; the analyser stepped along +x
    # sees the fringe (moved by d alpha) at phase -2 pi d alpha / p2.
    alpha = -g
    expected = -2 * math.pi * geometry.distance_m * alpha / geometry.g2_pitch_m
    assert shift == pytest.approx(expected, rel=tolerance)
    # The fast model's finite-shear phase for the same wedge has the same sign and value. The
    # oracle has no objective: its wedge lies in the G1 plane, where the shear is lambda d / p2.
    xi = geometry.shear_m * geometry.magnification
    s = np.linspace(-10e-6, 10e-6, 5)[None, :]
    fast = fields_from_integrals(
        np.zeros_like(s),
        np.zeros_like(s),
        g * (s - xi / 2),
        g * (s + xi / 2),
        geometry.wavenumber_per_m,
        1,
    ).dphase
    assert np.sign(fast).tolist() == [[np.sign(shift)] * 5]
    np.testing.assert_allclose(fast, shift, rtol=tolerance)


def test_fast_stepping_frames_reproduce_the_oracle_shift():
    geometry = builtin_profile("tiny").instrument.geometry
    g, exit_wave = wedge(geometry)
    kw = oracle_kwargs(geometry, g2_profile="sinusoidal")
    ref = fresnel_stepping(**kw)
    obj = fresnel_stepping(**kw, exit_wave=exit_wave)
    oracle = np.angle(harmonic(obj.intensity)[0] * np.conj(harmonic(ref.intensity)[0]))
    xi = geometry.shear_m * geometry.magnification  # in the G1 plane, as the oracle's wedge
    s = np.linspace(-10e-6, 10e-6, 8)[None, :]
    fields = fields_from_integrals(
        np.zeros_like(s),
        np.zeros_like(s),
        g * (s - xi / 2),
        g * (s + xi / 2),
        geometry.wavenumber_per_m,
        1,
    )
    reference = ReferencePattern(np.full(s.shape, 0.3), np.full(s.shape, 0.5), 1)
    thetas = 2 * np.pi * obj.step_positions_m / geometry.g2_pitch_m
    frames_s = np.stack([expected_counts(fields, reference, t, 1e4) for t in thetas])
    frames_r = np.stack([expected_counts(None, reference, t, 1e4) for t in thetas])
    fast = np.angle(harmonic(frames_s) * np.conj(harmonic(frames_r)))
    np.testing.assert_allclose(fast, oracle, rtol=1e-9)


@pytest.mark.parametrize("name", ["tiny", "full"])
def test_local_phase_of_a_smooth_bump_matches_the_fast_model(name):
    """Pixel by pixel (pixels of 2 G1 periods) for a Gaussian phase bump of 1 rad."""
    geometry = builtin_profile(name).instrument.geometry
    k = geometry.wavenumber_per_m
    width = 10 * geometry.g1_pitch_m
    xi = geometry.wavelength_m * geometry.distance_m / geometry.g2_pitch_m

    def int_delta(x):
        return np.exp(-(x**2) / (2 * width**2)) / k

    per_p1 = geometry.nu * 8 * STEPS
    kw = oracle_kwargs(
        geometry, periods=128, samples_per_step=8, g2_profile="sinusoidal", pixel_samples=2 * per_p1
    )
    ref = fresnel_stepping(**kw)
    obj = fresnel_stepping(**kw, exit_wave=lambda x: np.exp(-1j * k * int_delta(x)))
    oracle = np.angle(harmonic(obj.intensity) * np.conj(harmonic(ref.intensity)))
    x = ref.x_m[None, :]
    fast = (
        fields_from_integrals(
            np.zeros_like(x), np.zeros_like(x), int_delta(x - xi / 2), int_delta(x + xi / 2), k, 1
        )
        .dphase[0]
        .reshape(-1, 2 * per_p1)
        .mean(axis=1)
    )
    peak = np.abs(fast).max()
    assert peak > 0.01
    assert np.abs(oracle - fast).max() < 0.05 * peak


def test_oracle_gratings_options_follow_their_closed_forms():
    """The defaults are the ideal gratings; absorber transmission, trapezoidal edges and the
    source blur do what docs/physics.md says, checked on the raw curves."""
    geometry = builtin_profile("tiny").instrument.geometry
    kw = oracle_kwargs(geometry, periods=4)
    ideal = fresnel_stepping(**kw).intensity
    explicit = fresnel_stepping(
        **kw, g1_duty=0.5, g2_duty=0.5, g2_transmission=0.0, g2_edge=0.0, source_sigma_m=0.0
    ).intensity
    np.testing.assert_array_equal(explicit, ideal)
    # absorber lines passing tau: S_tau = tau <|U|^2> + (1 - tau) S_0 (<|U|^2> = 1)
    leaky = fresnel_stepping(**kw, g2_transmission=0.1).intensity
    np.testing.assert_allclose(leaky, 0.1 + 0.9 * ideal, rtol=1e-12)
    # a trapezoid keeps the open fraction and lowers the fringe harmonic (steps of one sample: the
    # step average is the average over every G2 position)
    fine = oracle_kwargs(geometry, periods=4, steps=80, samples_per_step=1)
    binary = fresnel_stepping(**fine).intensity
    sloped = fresnel_stepping(**fine, g2_edge=0.2).intensity
    assert binary.mean() == pytest.approx(0.5, rel=1e-12)
    assert sloped.mean() == pytest.approx(0.5, rel=1e-12)
    # first harmonic of the box the binary slit is convolved with: sinc(edge)
    ratio = abs(harmonic(sloped)[0]) / abs(harmonic(binary)[0])
    assert ratio == pytest.approx(np.sinc(0.2), rel=1e-3)
    # a Gaussian blur of the self-image multiplies the fringe harmonic by exp(-2 pi^2 s^2 / p2^2)
    sigma = 0.1 * geometry.g2_pitch_m
    sine = fresnel_stepping(**kw, g2_profile="sinusoidal").intensity
    blurred = fresnel_stepping(**kw, g2_profile="sinusoidal", source_sigma_m=sigma).intensity
    np.testing.assert_allclose(blurred.mean(), sine.mean(), rtol=1e-12)
    ratio = abs(harmonic(blurred)[0]) / abs(harmonic(sine)[0])
    assert ratio == pytest.approx(math.exp(-2 * math.pi**2 * 0.1**2), rel=1e-9)
    # G1 and G2 duties
    assert fresnel_stepping(**fine, g2_duty=0.25).intensity.mean() == pytest.approx(0.25)
    assert not np.allclose(fresnel_stepping(**kw, g1_duty=0.4).intensity, ideal)


def test_oracle_checks_its_inputs():
    with pytest.raises(ValueError, match="steps"):
        fresnel_stepping(
            wavelength_m=1e-10, g1_pitch_m=2e-6, g1_phase_deg=180.0, distance_m=5e-3, steps=2
        )
    with pytest.raises(ValueError, match="pixel_samples"):
        fresnel_stepping(
            wavelength_m=1e-10,
            g1_pitch_m=2e-6,
            g1_phase_deg=180.0,
            distance_m=5e-3,
            steps=5,
            pixel_samples=7,
        )
    base = {
        "wavelength_m": 1e-10,
        "g1_pitch_m": 2e-6,
        "g1_phase_deg": 180.0,
        "distance_m": 5e-3,
        "steps": 5,
    }
    for bad in (
        {"g2_duty": 1.0},
        {"g1_duty": 0.0},
        {"g2_transmission": 1.5},
        {"g2_edge": 0.6},
        {"source_sigma_m": -1e-9},
    ):
        with pytest.raises(ValueError, match=next(iter(bad))):
            fresnel_stepping(**base, **bad)
