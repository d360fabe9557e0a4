"""Fast fringe model and detector against exact stepping-curve algebra and noise statistics."""

import math

import numpy as np
import pytest

from contracts.profile import builtin_profile
from sim.forward import (
    ReferencePattern,
    apply_psf,
    bin_pixels,
    dark_frame,
    detect,
    detector_axes,
    drift_phase,
    expected_counts,
    fields_from_integrals,
    first_harmonic,
    make_reference,
    noiseless,
    projection_fields,
    step_curve,
)
from sim.gratings import stepping_harmonics
from sim.phantom import make_bone_phantom

UM = 1e-6


@pytest.fixture(scope="module")
def tiny():
    return builtin_profile("tiny")


@pytest.fixture(scope="module")
def reference(tiny):
    return make_reference(
        tiny.simulated().fringes,
        tiny.instrument.detector.shape,
        tiny.simulated().phantom.supersample,
        3,
    )


@pytest.fixture(scope="module")
def fields(tiny):
    ph = make_bone_phantom(
        tiny.simulated().phantom, tiny.instrument.geometry, 0, fov_height_m=16 * UM
    )
    return projection_fields(
        ph,
        tiny.instrument.geometry,
        tiny.instrument.detector.shape,
        0.3,
        tiny.simulated().phantom.supersample,
    )


def fft_harmonic(frames, n, steps):
    k = np.arange(steps)
    return np.tensordot(np.exp(-2j * np.pi * n * k / steps), frames, axes=(0, 0)) / steps


def test_detector_axes_follow_the_convention():
    s, v = detector_axes((4, 6), 2.0, supersample=2, center_offset_px=0.5)
    np.testing.assert_allclose(bin_pixels(s[None, :].repeat(2, 0), 2)[0], [-6, -4, -2, 0, 2, 4])
    np.testing.assert_allclose(v.reshape(4, 2).mean(axis=1), [-3, -1, 1, 3])
    assert s[1] - s[0] == pytest.approx(1.0)


def test_fields_from_integrals_are_the_documented_functions():
    k = 2 * math.pi / 1e-10
    g = 1e-3  # d(int delta)/ds: a wedge
    s = np.linspace(-5, 5, 11) * UM
    xi = 0.5 * UM
    f = fields_from_integrals(
        np.full((1, 11), 2e-12),
        np.full((1, 11), 0.1),
        g * (s - xi / 2)[None],
        g * (s + xi / 2)[None],
        k,
        1,
    )
    np.testing.assert_allclose(f.dphase, k * g * xi)  # = -xi dPhi/ds with Phi = -k int delta
    np.testing.assert_allclose(f.transmission, math.exp(-2 * k * 2e-12))
    np.testing.assert_allclose(f.darkfield, math.exp(-0.1))


def test_first_harmonic_is_the_fft_of_the_stepping_curve(tiny, fields, reference):
    steps = 5
    thetas = 2 * np.pi * np.arange(steps) / steps
    harmonics = {2: 0.3}
    frames = np.stack(
        [expected_counts(fields, reference, t, 2e4, harmonics=harmonics) for t in thetas]
    )
    a0, c1 = first_harmonic(fields, reference, 2e4)
    np.testing.assert_allclose(frames.mean(axis=0), a0, rtol=1e-12)
    np.testing.assert_allclose(fft_harmonic(frames, 1, steps), c1, rtol=1e-9, atol=1e-9)
    # With 3 steps the second harmonic aliases onto the first: the check can fail.
    frames3 = np.stack(
        [
            expected_counts(fields, reference, t, 2e4, harmonics=harmonics)
            for t in thetas[:3] * 5 / 3
        ]
    )
    assert np.abs(fft_harmonic(frames3, 1, 3) - c1).max() > 100


def test_model_values_in_air_and_behind_the_rod(tiny, fields, reference):
    a0_r, c1_r = first_harmonic(None, reference, 2e4)
    _, c1_s = first_harmonic(fields, reference, 2e4)
    np.testing.assert_allclose(a0_r, 2e4)
    vis = 2 * np.abs(c1_r) / a0_r
    assert vis.mean() == pytest.approx(0.35, abs=0.01)
    # air columns: the sample changes nothing
    np.testing.assert_allclose(c1_s[:, :3], c1_r[:, :3], rtol=1e-12)
    # rod only: T = exp(-mu 2R) at the centre, mu of bone matrix at 12.4 keV (beta ~ 2.7e-8)
    rod = make_bone_phantom(
        tiny.simulated().phantom.model_copy(update={"lacunae": 0}), tiny.instrument.geometry, 0
    )
    rod_fields = projection_fields(
        rod, tiny.instrument.geometry, tiny.instrument.detector.shape, 0.3, 4
    )
    a0_rod, _ = first_harmonic(rod_fields, reference, 2e4)
    t_centre = (a0_rod / a0_r)[:, 47:49].mean()
    mu = 4 * math.pi * 2.7e-8 / tiny.instrument.geometry.wavelength_m
    assert t_centre == pytest.approx(math.exp(-mu * 40 * UM), rel=0.005)


def test_darkfield_damps_harmonic_n_by_d_to_the_n_squared():
    """Small-angle scattering blurs the fringe with a Gaussian: harmonic n falls by D^(n^2)."""
    shape = (2, 3)
    reference = ReferencePattern(np.full(shape, 0.4), np.full(shape, 0.5), 1)
    d = np.array([[1.0, 0.9, 0.7], [0.5, 0.95, 0.8]])
    fields = fields_from_integrals(
        np.zeros(shape), -np.log(d), np.zeros(shape), np.zeros(shape), 1.0, 1
    )
    for beta in ({2: 0.1 - 0.05j, 3: 0.11, 5: -0.04}, {3: 0.11, 5: 0.04, 9: 0.012, 21: 1e-3}):
        ref = step_curve(None, reference, 1e4, beta)
        obj = step_curve(fields, reference, 1e4, beta)
        np.testing.assert_allclose(obj.c1 / ref.c1, d, rtol=1e-12)
        for n in beta:
            expected = d ** (n**2)
            np.testing.assert_allclose(obj.harmonics[n] / ref.harmonics[n], expected, rtol=1e-11)
            np.testing.assert_allclose(
                ref.harmonics[n], beta[n] * ref.c1**n / np.abs(ref.c1) ** (n - 1)
            )
    beta = {2: 0.1 - 0.05j}
    ref = step_curve(None, reference, 1e4, beta)
    # complex ratios: c_n = beta_n |c_1| e^{i n psi} (psi = 0.4, |c_1| = 1e4 0.5 / 2)
    np.testing.assert_allclose(ref.harmonics[2], (0.1 - 0.05j) * 2500 * np.exp(0.8j), rtol=1e-12)


def test_fringes_give_the_curve_shape_to_step_curve(tiny, fields, reference):
    geometry = tiny.instrument.geometry
    fringes = tiny.simulated().fringes
    via_fringes = step_curve(fields, reference, 2e4, fringes=fringes, geometry=geometry)
    beta = stepping_harmonics(geometry, fringes.gratings)
    explicit = step_curve(fields, reference, 2e4, beta)
    assert set(via_fringes.harmonics) == set(explicit.harmonics) == {1, *beta}
    for n, cn in explicit.harmonics.items():
        np.testing.assert_array_equal(via_fringes.harmonics[n], cn)
    sinusoidal = fringes.model_copy(update={"curve": "sinusoidal"})
    assert set(
        step_curve(None, reference, 2e4, fringes=sinusoidal, geometry=geometry).harmonics
    ) == {1}
    with pytest.raises(ValueError, match="geometry"):
        step_curve(None, reference, 2e4, fringes=fringes)


def test_psf_is_applied_to_the_harmonics(tiny, fields, reference):
    a0, c1 = first_harmonic(fields, reference, 2e4, psf_sigma_px=0.7)
    curve = step_curve(fields, reference, 2e4)
    np.testing.assert_allclose(a0, apply_psf(curve.a0, 0.7))
    np.testing.assert_allclose(c1.real, apply_psf(curve.c1.real, 0.7))
    assert not np.allclose(c1, curve.c1)


def test_reference_pattern_has_the_configured_moire_and_visibility(tiny, reference):
    assert reference.shape == tiny.instrument.detector.shape
    u = (np.arange(96 * 4) + 0.5) / 4 / 96 - 0.5
    slope = np.polyfit(u, reference.phase.mean(axis=0), 1)[0]
    assert slope == pytest.approx(2 * np.pi * tiny.simulated().fringes.moire_fringes, rel=1e-6)
    assert reference.visibility.mean() == pytest.approx(0.35, abs=1e-9)
    assert reference.visibility.std() == pytest.approx(0.03, rel=1e-6)
    again = make_reference(tiny.simulated().fringes, tiny.instrument.detector.shape, 4, 3)
    np.testing.assert_array_equal(again.phase, reference.phase)


def test_detector_noise_statistics(tiny):
    det = tiny.simulated().detector.model_copy(
        update={"psf_sigma_px": 0.0, "read_noise_e": 2.0, "gain_adu_per_e": 1.5}
    )
    rng = np.random.default_rng(0)
    expected = np.full(tiny.instrument.detector.shape, 1000.0)
    frames = np.stack([detect(expected, rng, det).astype(float) for _ in range(20)])
    assert frames.mean() == pytest.approx(1.5 * 1000 + 100, rel=2e-3)
    assert frames.var() == pytest.approx(1.5**2 * 1000 + (1.5 * 2) ** 2, rel=0.03)
    # The PSF after Poisson correlates the noise and lowers the per-pixel variance.
    blurred = det.model_copy(update={"psf_sigma_px": 1.0, "read_noise_e": 0.0, "gain_adu_per_e": 1})
    frames = np.stack([detect(expected, rng, blurred).astype(float) for _ in range(20)])
    assert frames[:, 4:-4, 4:-4].var() == pytest.approx(1000 / (4 * np.pi), rel=0.1)


def test_dark_frames_and_clipping(tiny):
    det = tiny.simulated().detector
    shape = tiny.instrument.detector.shape
    rng = np.random.default_rng(1)
    dark = dark_frame(rng, det, shape)
    assert dark.dtype == np.uint16
    assert dark.mean() == pytest.approx(100.0, abs=0.1)
    assert dark.std() == pytest.approx(2.0, rel=0.1)
    assert detect(np.full(shape, 1e6), rng, det).max() == 65535
    np.testing.assert_allclose(noiseless(np.full(shape, 10.0), det), 110.0)
    with pytest.raises(ValueError, match="expected"):
        detect(np.zeros((2, 2, 2)), rng, det)


def test_drift_phase_mean_and_tilt():
    drift = drift_phase(0.01, 100.0, (4, 96))
    assert drift.mean() == pytest.approx(1.0)
    assert drift[0, -1] - drift[0, 0] == pytest.approx(0.5 * 95 / 96)
    assert drift_phase(0.0, 100.0, (4, 96)) == 0.0


def test_inputs_are_checked(reference):
    with pytest.raises(ValueError, match="incident_counts"):
        step_curve(None, reference, 0.0)
    with pytest.raises(ValueError, match="harmonics"):
        step_curve(None, reference, 1.0, {1: 0.2})
    with pytest.raises(ValueError, match="supersample"):
        detector_axes((2, 8), 1e-6, supersample=0)
    bad = ReferencePattern(reference.phase[:8], reference.visibility[:8], 4)
    with pytest.raises(ValueError, match="grid"):
        step_curve(fields_from_integrals(*(np.zeros((4, 4)),) * 4, 1.0, 4), bad, 1.0)


def test_shifted_grid_shortcut_equals_direct_evaluation(tiny):
    """tiny has xi/2 = 2 sub-samples: the one-pass path must equal three direct evaluations."""
    ph = make_bone_phantom(
        tiny.simulated().phantom, tiny.instrument.geometry, 0, fov_height_m=16 * UM
    )
    fast = projection_fields(
        ph, tiny.instrument.geometry, tiny.instrument.detector.shape, 1.1, 4, 0.3
    )
    s, v = detector_axes(
        tiny.instrument.detector.shape, tiny.instrument.geometry.pixel_size_m, 4, 0.3
    )
    half = tiny.instrument.geometry.shear_m / 2
    _, b, e = ph.line_integrals(1.1, s, v)
    dm, _, _ = ph.line_integrals(1.1, s - half, v)
    dp, _, _ = ph.line_integrals(1.1, s + half, v)
    direct = fields_from_integrals(b, e, dm, dp, tiny.instrument.geometry.wavenumber_per_m, 4)
    np.testing.assert_allclose(fast.dphase, direct.dphase, atol=1e-9)
    np.testing.assert_allclose(fast.transmission, direct.transmission, rtol=1e-12)
    assert np.abs(fast.dphase).max() > 0.1
