"""The stepping curve's shape and the shape-aware fit (recon.curve), against curves of known
harmonics: a binary analyser's near-triangle curve, blurred as a finite source blurs it."""

from __future__ import annotations

import math

import numpy as np
import pytest
from numpy.typing import NDArray

from recon.curve import (
    AliasTable,
    CurveShape,
    choose_fit,
    first_harmonic_bias,
    measure_shape,
    unbias,
)
from recon.retrieval import fit_stepping, retrieve

SHAPE = (48, 64)
A0 = 2.0e4  # counts in open beam
V = 0.4  # first-harmonic visibility


def triangle_beta(n_max: int = 61, blur_rad: float = 0.08) -> NDArray[np.complex128]:
    """beta_n of a triangle wave (odd harmonics 1/n^2) blurred by a Gaussian of ``blur_rad``
    rms in grating phase."""
    n = np.arange(n_max + 1)
    beta = np.where(n % 2 == 1, 1.0 / np.maximum(n, 1) ** 2, 0.0)
    beta = beta * np.exp(-0.5 * (n**2 - 1) * blur_rad**2)
    beta[0] = 0.0
    return beta.astype(np.complex128)


def curve_frames(
    beta: NDArray[np.complex128],
    theta: NDArray[np.float64],
    chi: NDArray[np.float64],
    transmission: NDArray[np.float64] | float = 1.0,
    damping: NDArray[np.float64] | float = 1.0,
) -> NDArray[np.float64]:
    """Frames (steps, rows, columns) of I = a0 T [1 + V D (sum_n beta_n e^{i n (theta + chi)}
    + c.c.)] with unit-normalised beta (beta_1 = 1)."""
    x = theta[:, None, None] + chi[None]
    amp = A0 * np.asarray(transmission) * V / 2.0 * np.asarray(damping)
    out = np.broadcast_to(A0 * np.asarray(transmission), x.shape).astype(np.float64)
    for n in range(1, beta.size):
        if beta[n] != 0:
            out = out + 2.0 * amp * np.real(beta[n] * np.exp(1j * n * x))
    return out


def stepped(m: int, rng: np.random.Generator, jitter_rad: float = 0.02) -> NDArray[np.float64]:
    """M equidistant phases over one period with the encoder-measured jitter."""
    return 2 * math.pi * np.arange(m) / m + jitter_rad * rng.normal(size=m)


@pytest.fixture(scope="module")
def fields() -> dict[str, NDArray[np.float64]]:
    rng = np.random.default_rng(7)
    return {
        "chi_ref": rng.uniform(-math.pi, math.pi, SHAPE),
        "dphi": rng.uniform(-1.5, 1.5, SHAPE),
        "t": rng.uniform(0.3, 1.0, SHAPE),
        "d": rng.uniform(0.7, 1.0, SHAPE),
    }


def test_a_calibration_series_measures_the_shape() -> None:
    rng = np.random.default_rng(1)
    beta = triangle_beta()
    theta = stepped(64, rng)
    chi = rng.uniform(-math.pi, math.pi, SHAPE)
    shape = measure_shape(curve_frames(beta, theta, chi), theta)
    assert shape.max_harmonic == 30
    assert shape.visibility == pytest.approx(V, rel=1e-3)
    for n in (3, 5, 7, 9, 11):
        assert shape.beta[n] == pytest.approx(beta[n], rel=0.02, abs=2e-5), n
    assert abs(shape.beta[2]) < 1e-5  # no even harmonics in the curve
    assert shape.spread[3:12].max() < 1e-4  # one shape over the field


def test_the_spread_says_when_the_shape_varies_over_the_field() -> None:
    rng = np.random.default_rng(2)
    theta = stepped(32, rng)
    left = curve_frames(triangle_beta(blur_rad=0.05), theta, rng.uniform(-3, 3, (8, 16)))
    right = curve_frames(triangle_beta(blur_rad=0.3), theta, rng.uniform(-3, 3, (8, 16)))
    shape = measure_shape(np.concatenate([left, right], axis=2), theta)
    assert shape.spread[3] > 0.1 * abs(shape.beta[3])


@pytest.mark.parametrize(("steps", "calibration"), [(5, 48), (8, 48), (5, 32)])
def test_shape_aware_fit_unbiases_few_steps(
    fields: dict[str, NDArray[np.float64]], steps: int, calibration: int
) -> None:
    """Noise-free: the first-harmonic fit of a near-triangle curve is off by percent; unbiased
    with the shape a calibration measured, it is right to ~1e-3 (bounded by the harmonics the
    calibration resolves)."""
    rng = np.random.default_rng(steps + calibration)
    beta = triangle_beta()
    chi_r, dphi, t, d = fields["chi_ref"], fields["dphi"], fields["t"], fields["d"]
    cal = stepped(calibration, rng)
    shape = measure_shape(curve_frames(beta, cal, chi_r), cal)
    th_r, th_s = stepped(steps, rng), stepped(steps, rng)
    ref = fit_stepping(curve_frames(beta, th_r, chi_r), th_r)
    obj = fit_stepping(curve_frames(beta, th_s, chi_r + dphi, t, d), th_s)
    plain = retrieve(obj, ref)
    fixed = retrieve(
        unbias(obj, AliasTable.build(shape, th_s)), unbias(ref, AliasTable.build(shape, th_r))
    )

    def errors(s):  # type: ignore[no-untyped-def]
        return (
            float(np.abs(s.dphi - dphi).max()),
            float(np.abs(s.transmission / t - 1).max()),
            float(np.abs(s.darkfield / d - 1).max()),
        )

    e_plain, e_fixed = errors(plain), errors(fixed)
    assert max(e_plain) > 5e-3  # the bias the shape-aware fit is for
    tol = 2e-3 if calibration >= 48 else 5e-3
    assert max(e_fixed) < tol, (e_plain, e_fixed)
    assert max(e_fixed) < 0.25 * max(e_plain)


def test_shape_aware_phase_noise_is_the_first_harmonic_theory() -> None:
    """Poisson noise: the phase noise of the unbiased fit is sqrt(2) / (V sqrt(N)), N the counts
    summed over the steps (within 10 %)."""
    rng = np.random.default_rng(3)
    beta = triangle_beta()
    cal = stepped(48, rng)
    chi = rng.uniform(-math.pi, math.pi, (128, 128))
    shape = measure_shape(curve_frames(beta, cal, chi), cal)
    steps = 5
    th = stepped(steps, rng)
    table = AliasTable.build(shape, th)
    clean = curve_frames(beta, th, chi)
    truth = unbias(fit_stepping(clean, th), table)
    noisy = unbias(fit_stepping(rng.poisson(clean).astype(np.float32), th), table)
    err = np.angle(noisy.c1 * np.conj(truth.c1))
    theory = math.sqrt(2) / (V * math.sqrt(A0 * steps))
    assert float(np.std(err)) == pytest.approx(theory, rel=0.10)


def test_the_fit_is_chosen_from_the_measured_curve() -> None:
    theta5 = 2 * math.pi * np.arange(5) / 5
    sinusoid = CurveShape.from_harmonics({}, V, 32)
    assert choose_fit(sinusoid, theta5).method == "first-harmonic"
    assert choose_fit(None, theta5).method == "first-harmonic"
    shape = CurveShape(triangle_beta(15), np.zeros(16), V, 32)
    auto = choose_fit(shape, theta5)
    assert auto.method == "shape-aware"
    assert auto.bias is not None
    assert auto.bias.transmission > 0.01
    assert "shape-aware fit at 5 steps" in auto.describe()
    forced = choose_fit(shape, theta5, "first-harmonic")
    assert forced.method == "first-harmonic"
    assert any("biased by up to" in w for w in forced.warnings)
    with pytest.raises(ValueError, match="calibration"):
        choose_fit(None, theta5, "shape-aware")
    with pytest.raises(ValueError, match="fit must be one of"):
        choose_fit(shape, theta5, "best")  # type: ignore[arg-type]


def test_the_bias_prediction_matches_the_first_harmonic_fit(
    fields: dict[str, NDArray[np.float64]],
) -> None:
    """The predicted worst transmission bias is what the plain fit of a flat shows."""
    beta = triangle_beta()
    theta = 2 * math.pi * np.arange(5) / 5
    chi = fields["chi_ref"]
    fit = fit_stepping(curve_frames(beta, theta, chi), theta)
    measured = float(np.abs(fit.a0 / A0 - 1).max())
    predicted = first_harmonic_bias(CurveShape(beta, np.zeros(beta.size), V, 0), theta)
    assert predicted.transmission == pytest.approx(measured, rel=0.02)


def test_a_curve_too_far_from_a_sinusoid_for_its_steps_is_refused() -> None:
    pulses = {n: 1.0 for n in range(2, 21)}  # narrow peaks: a sampled square wave still inverts
    shape = CurveShape.from_harmonics(pulses, V, 64)
    with pytest.raises(ValueError, match="too far from a sinusoid for 3 steps"):
        AliasTable.build(shape, 2 * math.pi * np.arange(3) / 3)


def test_a_calibration_needs_enough_steps() -> None:
    theta = 2 * math.pi * np.arange(6) / 6
    with pytest.raises(ValueError, match="at least 7 steps"):
        measure_shape(np.ones((6, 4, 4)), theta)


def test_photon_noise_is_not_taken_for_a_shape_that_varies() -> None:
    """Poisson counts: each pixel's beta_n scatters by its photon noise; the spread reported is
    what remains once that noise (from the fit's residual) is taken out, so one shape over the
    field raises no warning, while a field of two shapes still does."""
    rng = np.random.default_rng(4)
    beta = triangle_beta()
    theta = stepped(48, rng)
    chi = rng.uniform(-math.pi, math.pi, (64, 64))
    noisy = rng.poisson(curve_frames(beta, theta, chi)).astype(np.float32)
    raw_scatter = math.sqrt(A0 / 48) / (A0 * V / 2)  # rms of one pixel's beta_n: sqrt(a0/N)/|c1|
    shape = measure_shape(noisy, theta)
    assert float(shape.spread[3:12].max()) < 0.3 * raw_scatter
    theta5 = 2 * math.pi * np.arange(5) / 5
    assert not any("varies over the field" in w for w in choose_fit(shape, theta5).warnings)
    left = curve_frames(triangle_beta(blur_rad=0.05), theta, chi[:, :32])
    right = curve_frames(triangle_beta(blur_rad=0.3), theta, chi[:, 32:])
    two = measure_shape(
        rng.poisson(np.concatenate([left, right], axis=2)).astype(np.float32), theta
    )
    assert two.spread[3] > 0.1 * abs(two.beta[3])
