"""Phase-stepping retrieval against the analytic stepping-curve model (docs/physics.md)."""

from __future__ import annotations

import numpy as np
import pytest

from recon.retrieval import (
    Signals,
    StepFit,
    fit_dose_normalised,
    fit_stepping,
    interpolate_reference,
    retrieve,
    retrieve_frames,
    retrieve_interpolated,
    step_phases,
    unwrap_rows,
)

ROWS, COLS = 12, 40


def _wrap(x: np.ndarray) -> np.ndarray:
    return np.angle(np.exp(1j * x))


def _curves(theta: np.ndarray, a0: np.ndarray, vis: np.ndarray, phi: np.ndarray) -> np.ndarray:
    """I_k = a0 [1 + V cos(theta_k + phi)], (steps, rows, cols) float64."""
    return a0[None] * (1.0 + vis[None] * np.cos(theta[:, None, None] + phi[None]))


@pytest.fixture
def maps() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(7)
    a0 = rng.uniform(5e3, 2e4, (ROWS, COLS))
    vis = rng.uniform(0.2, 0.5, (ROWS, COLS))
    phi = rng.uniform(-np.pi, np.pi, (ROWS, COLS))
    return a0, vis, phi


@pytest.mark.parametrize(("steps", "periods"), [(5, 1), (7, 2), (8, 3)])
def test_least_squares_equals_fft_first_harmonic(maps, steps: int, periods: int) -> None:
    a0, vis, phi = maps
    theta = 2 * np.pi * periods * np.arange(steps) / steps
    frames = _curves(theta, a0, vis, phi)
    fit = fit_stepping(frames, theta, backend="numpy")
    spec = np.fft.fft(frames, axis=0) / steps
    np.testing.assert_allclose(fit.a0, spec[0].real, rtol=1e-6)
    np.testing.assert_allclose(fit.c1, spec[periods], rtol=1e-5, atol=1e-6 * a0.max())
    # and both equal the model: c1 = a0 V/2 e^{i phi}
    np.testing.assert_allclose(fit.c1, a0 * vis / 2 * np.exp(1j * phi), rtol=1e-5)


def test_measured_uneven_steps_recover_the_model(maps) -> None:
    a0, vis, phi = maps
    p2 = 1.0e-6
    rng = np.random.default_rng(1)
    x = np.arange(5) * p2 / 5 + rng.normal(0, 30e-9, 5)  # encoder positions with 30 nm errors
    theta = step_phases(x, p2)
    fit = fit_stepping(_curves(theta, a0, vis, phi), theta)
    np.testing.assert_allclose(fit.a0, a0, rtol=1e-5)
    np.testing.assert_allclose(fit.visibility, vis, rtol=1e-4)
    np.testing.assert_allclose(_wrap(fit.phase - phi), 0.0, atol=2e-5)


def test_numba_kernel_equals_numpy_path_on_uint16_with_dark(maps) -> None:
    a0, vis, phi = maps
    theta = 2 * np.pi * np.arange(5) / 5 + 0.03
    dark = np.full((ROWS, COLS), 100.0) + np.arange(COLS)[None] * 0.5
    frames = np.round(_curves(theta, a0, vis, phi) + dark[None]).astype(np.uint16)
    fast = fit_stepping(frames, theta, dark=dark, backend="numba")
    ref = fit_stepping(frames, theta, dark=dark, backend="numpy")
    assert fast.a0.dtype == np.float32
    assert fast.c1.dtype == np.complex64
    np.testing.assert_allclose(fast.a0, ref.a0, rtol=2e-6)
    np.testing.assert_allclose(fast.c1, ref.c1, rtol=2e-5, atol=1e-5 * a0.max())
    # darks are subtracted: a0 back to the model within the uint16 rounding
    np.testing.assert_allclose(fast.a0, a0, atol=0.5)


def test_frames_given_one_per_step_equal_the_stacked_series(maps) -> None:
    """Stream buffers (read-only) and file reads (writable) mixed, sliced to a row slab."""
    a0, vis, phi = maps
    theta = 2 * np.pi * np.arange(5) / 5 + 0.1
    dark = np.full((ROWS, COLS), 90.0, np.float32)
    full = np.round(_curves(theta, a0, vis, phi) + dark[None]).astype(np.uint16)
    frames = [f.copy() for f in full]
    frames[1].flags.writeable = False
    slab = [f[2:9] for f in frames]
    current = np.array([200.0, 199.0, 201.0, 200.5, 198.0])
    stacked = fit_dose_normalised(full[:, 2:9], theta, dark[2:9], current, 200.0)
    listed = fit_dose_normalised(slab, theta, dark[2:9], current, 200.0)
    np.testing.assert_array_equal(listed.a0, stacked.a0)
    np.testing.assert_array_equal(listed.c1, stacked.c1)
    ref = fit_stepping(full, theta, dark)
    np.testing.assert_array_equal(
        retrieve_frames(frames, theta, ref, dark).dphi, retrieve_frames(full, theta, ref, dark).dphi
    )
    with pytest.raises(ValueError, match="one shape"):
        fit_stepping([full[0], full[1, :5], full[2]], theta[:3])
    with pytest.raises(ValueError, match="4 steps but theta_rad has 5"):
        fit_stepping(frames[:4], theta)


def test_a_fit_written_into_given_buffers_equals_a_new_one(maps) -> None:
    a0, vis, phi = maps
    theta = 2 * np.pi * np.arange(5) / 5
    frames = np.round(_curves(theta, a0, vis, phi)).astype(np.uint16)
    current = np.array([200.0, 199.0, 201.0, 200.5, 198.0])
    new = fit_dose_normalised(frames, theta, None, current, 200.0)
    out = StepFit(np.full((ROWS, COLS), np.nan, np.float32), np.zeros((ROWS, COLS), np.complex64))
    into = fit_dose_normalised(frames, theta, None, current, 200.0, out=out)
    assert into is out
    np.testing.assert_array_equal(out.a0, new.a0)
    np.testing.assert_array_equal(out.c1, new.c1)
    for bad in (
        StepFit(np.zeros((ROWS, COLS + 1), np.float32), np.zeros((ROWS, COLS + 1), np.complex64)),
        StepFit(np.zeros((ROWS, COLS)), np.zeros((ROWS, COLS), np.complex128)),
        StepFit(np.zeros((COLS, ROWS), np.float32).T, np.zeros((ROWS, COLS), np.complex64)),
    ):
        with pytest.raises(ValueError, match="out must be"):
            fit_dose_normalised(frames, theta, None, current, 200.0, out=bad)


def test_retrieve_gives_transmission_dphi_darkfield(maps) -> None:
    a0, vis, phi = maps
    theta = 2 * np.pi * np.arange(5) / 5
    rng = np.random.default_rng(3)
    t_true = rng.uniform(0.2, 1.0, (ROWS, COLS))
    d_true = rng.uniform(0.3, 1.0, (ROWS, COLS))
    dphi_true = np.linspace(-3.1, 3.1, ROWS * COLS).reshape(ROWS, COLS)  # crosses +-pi in phi_s
    ref = fit_stepping(_curves(theta, a0, vis, phi), theta)
    frames = _curves(theta, a0 * t_true, vis * d_true, phi + dphi_true)
    sig = retrieve(fit_stepping(frames, theta), ref)
    np.testing.assert_allclose(sig.transmission, t_true, rtol=1e-5)
    np.testing.assert_allclose(sig.darkfield, d_true, rtol=1e-4)
    np.testing.assert_allclose(sig.dphi, dphi_true, atol=2e-5)
    assert sig.dphi.dtype == np.float32
    # the fused kernel (uint16 counts) equals the two-step path
    counts = np.round(frames).astype(np.uint16)
    fused = retrieve_frames(counts, theta, ref)
    two_step = retrieve(fit_stepping(counts, theta, backend="numpy"), ref)
    np.testing.assert_allclose(fused.transmission, two_step.transmission, rtol=1e-5)
    np.testing.assert_allclose(fused.darkfield, two_step.darkfield, rtol=1e-4)
    np.testing.assert_allclose(_wrap(fused.dphi - two_step.dphi), 0.0, atol=1e-5)
    assert np.all(fused.dphi > -np.pi)
    assert np.all(fused.dphi <= np.pi)


def test_fused_atan2_accuracy_over_the_circle() -> None:
    n = 4000
    ang = np.linspace(-np.pi, np.pi, n, endpoint=False)[None, :] + 1e-4
    theta = 2 * np.pi * np.arange(4) / 4
    a0 = np.full((1, n), 1e4)
    ref = StepFit(a0.astype(np.float32), (a0 * 0.15 + 0j).astype(np.complex64))
    frames = _curves(theta, a0, np.full((1, n), 0.3), ang).astype(np.float32)
    sig = retrieve_frames(frames, theta, ref)
    np.testing.assert_allclose(_wrap(sig.dphi - ang), 0.0, atol=2e-6)


def test_interpolate_reference_follows_phase_drift(maps) -> None:
    a0, vis, phi = maps
    rate = 0.4  # rad/s, large on purpose
    fits = [
        StepFit(
            (a0 * (1 + 0.1 * t)).astype(np.float32),
            (a0 * vis / 2 * np.exp(1j * (phi + rate * t))).astype(np.complex64),
        )
        for t in (0.0, 5.0, 10.0)
    ]
    mid = interpolate_reference(fits, [0.0, 5.0, 10.0], 7.5)
    np.testing.assert_allclose(mid.a0, a0 * 1.75, rtol=1e-5)
    np.testing.assert_allclose(np.abs(mid.c1), a0 * vis / 2, rtol=1e-5)
    np.testing.assert_allclose(_wrap(np.angle(mid.c1) - (phi + rate * 7.5)), 0.0, atol=1e-5)
    assert interpolate_reference(fits, [0.0, 5.0, 10.0], 12.0) is fits[-1]
    with pytest.raises(ValueError, match="times_s"):
        interpolate_reference(fits, [0.0, 5.0], 1.0)


def test_retrieval_against_the_interpolated_reference_in_one_pass(maps) -> None:
    a0, vis, phi = maps
    rng = np.random.default_rng(5)
    refs = [
        StepFit(
            (a0 * (1 + 0.1 * t)).astype(np.float32),
            (a0 * vis / 2 * np.exp(1j * (phi + 0.9 * t))).astype(np.complex64),  # drifts
        )
        for t in (0.0, 5.0, 10.0)
    ]
    dphi_true = rng.uniform(-3.1, 3.1, (ROWS, COLS))
    sample = StepFit(
        (a0 * 0.6).astype(np.float32),
        (0.6 * a0 * vis / 2 * 0.8 * np.exp(1j * (phi + dphi_true))).astype(np.complex64),
    )
    for t in (-1.0, 2.0, 7.5, 10.0, 11.0):  # before, between, on and after the references
        want = retrieve(sample, interpolate_reference(refs, [0.0, 5.0, 10.0], t))
        out = Signals(*(np.full((ROWS, COLS), np.nan, np.float32) for _ in range(3)))
        got = retrieve_interpolated(sample, refs, [0.0, 5.0, 10.0], t, out)
        assert got is out
        np.testing.assert_allclose(got.transmission, want.transmission, rtol=1e-6)
        np.testing.assert_allclose(got.darkfield, want.darkfield, rtol=2e-6)
        np.testing.assert_allclose(_wrap(got.dphi - want.dphi), 0.0, atol=2e-6)
        assert np.all((got.dphi > -np.pi) & (got.dphi <= np.pi))
    # no silent clipping: a pixel without signal gives inf/NaN as retrieve does
    dead = StepFit(sample.a0.copy(), sample.c1.copy())
    dead.a0[0, 0], dead.c1[0, 0] = 0.0, 0.0
    got = retrieve_interpolated(dead, refs, [0.0, 5.0, 10.0], 7.5)
    assert got.transmission[0, 0] == 0.0
    assert np.isnan(got.darkfield[0, 0])
    with pytest.raises(ValueError, match="reference shape"):
        retrieve_interpolated(StepFit(a0[:3], sample.c1[:3]), refs, [0.0, 5.0, 10.0], 1.0)
    with pytest.raises(ValueError, match="out must hold"):
        retrieve_interpolated(sample, refs, [0.0, 5.0, 10.0], 1.0, Signals(a0, a0, a0))
    with pytest.raises(ValueError, match="strictly increasing"):
        retrieve_interpolated(sample, refs, [0.0, 5.0, 5.0], 1.0)


def test_unwrap_rows_restores_a_steep_phase() -> None:
    x = np.arange(200)
    true = 12.0 * np.exp(-(((x - 100) / 30.0) ** 2))  # peaks at 12 rad, |slope| < pi per px
    true = np.stack([true, -true])
    np.testing.assert_allclose(unwrap_rows(_wrap(true)), true, atol=1e-5)


@pytest.mark.parametrize(
    ("frames_shape", "theta", "match"),
    [
        ((5, 4, 4), np.arange(4) * np.pi / 2, "steps"),
        ((2, 4, 4), np.arange(2) * np.pi, "at least 3"),
        ((3, 4, 4), np.array([0.0, 0.05, 0.1]), "spread over the circle"),
        ((5, 4), 2 * np.pi * np.arange(5) / 5, "3-D"),
        ((5, 4, 4), np.array([0.0, 1.0, np.nan, 3.0, 4.0]), "theta_rad contains NaN"),
    ],
)
def test_bad_input_names_the_parameter(frames_shape, theta, match) -> None:
    with pytest.raises(ValueError, match=match):
        fit_stepping(np.ones(frames_shape), theta)


def test_nan_frames_and_wrong_dark_are_rejected() -> None:
    theta = 2 * np.pi * np.arange(5) / 5
    frames = np.ones((5, 4, 4))
    frames[2, 1, 1] = np.nan
    with pytest.raises(ValueError, match="frames contains NaN"):
        fit_stepping(frames, theta)
    with pytest.raises(ValueError, match="dark must have shape"):
        fit_stepping(np.ones((5, 4, 4), np.uint16), theta, dark=np.zeros((3, 4)))


def test_a_series_of_more_steps_than_numba_takes_is_fitted() -> None:
    """A 256-step calibration series: more frames than the numba kernels take in one parallel
    loop (``NUMBA_MAX_FRAMES``); the NumPy path fits it, and the fused retrieval follows."""
    m = 256
    theta = 2 * np.pi * np.arange(m) / m
    rows, cols = 4, 6
    phase = np.linspace(-2.0, 2.0, rows * cols).reshape(rows, cols)
    frames = (1000.0 * (1 + 0.3 * np.cos(theta[:, None, None] + phase))).astype(np.uint16)
    fit = fit_stepping(frames, theta)
    np.testing.assert_allclose(np.angle(fit.c1), phase, atol=2e-3)
    np.testing.assert_allclose(fit.a0, 1000.0, rtol=1e-3)
    s = retrieve_frames(frames, theta, fit)
    np.testing.assert_allclose(s.dphi, 0.0, atol=1e-5)
    np.testing.assert_allclose(s.transmission, 1.0, rtol=1e-5)
