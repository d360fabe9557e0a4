"""Simulated scans: frame table layout, readbacks, truth and one-frame rendering."""

import numpy as np
import pytest

from contracts.frames import ImageKey
from contracts.profile import builtin_profile
from sim.scan import FRAME_OVERHEAD_S, FrameRenderer, FrameState
from tests.profiles import simulate, with_plan, with_simulation


def clean(psf_sigma_px):
    """tiny without step, encoder, dose or drift errors, and a sinusoidal stepping curve (the
    first-harmonic FFT of its M steps is then exact; the gratings' harmonics fold into it)."""
    return with_simulation(
        builtin_profile("tiny"),
        fringes={"step_error_m": 0.0, "encoder_noise_m": 0.0, "curve": "sinusoidal"},
        detector={"psf_sigma_px": psf_sigma_px},
    )


@pytest.fixture(scope="module")
def noisy():
    return simulate(builtin_profile("tiny"), seed=0, noise=True)


@pytest.fixture(scope="module")
def noise_free():
    return simulate(clean(0.7), seed=1, noise=False)


def series_harmonics(scan, key, index_field, index):
    rows = scan.table.rows
    sel = (rows["image_key"] == key) & (rows[index_field] == index)
    frames = scan.frames[sel].astype(float) - scan.simulation.detector.dark_offset_adu
    steps = rows["step_index"][sel]
    theta = 2 * np.pi * rows["g2_position_m"][sel] / scan.instrument.geometry.g2_pitch_m
    kind = "reference" if key == ImageKey.FLAT else "projection"
    assert steps.tolist() == list(range(scan.plan.series_steps((kind, index))))
    return frames.mean(axis=0), np.tensordot(np.exp(-1j * theta), frames, axes=(0, 0)) / len(theta)


def test_frame_table_layout(noisy):
    rows = noisy.table.rows
    sched = noisy.plan
    key = rows["image_key"]
    # darks, the 48-step calibration series (reference series 0), 2 more references, 90 angles
    assert noisy.frames.shape == (5 + 48 + 2 * 5 + 90 * 5, 32, 96)
    assert noisy.frames.shape[0] == sched.frames_planned()
    assert noisy.frames.dtype == np.uint16
    assert (key[:5] == ImageKey.DARK).all()
    assert (rows["step_index"][:5] == -1).all()
    flats = key == ImageKey.FLAT
    assert sorted(set(rows["series_index"][flats].tolist())) == [0, 1, 2]
    assert rows["step_index"][5:53].tolist() == list(range(48))
    assert (rows["series_index"][5:53] == 0).all()
    first, second = np.flatnonzero(flats)[[0, 48]]
    assert first == 5
    # reference series after angle 44 (reference_every = 45) and at the end
    assert rows["angle_index"][second - 1] == sched.reference_every - 1
    assert (key[-5:] == ImageKey.FLAT).all()
    proj = key == ImageKey.PROJECTION
    assert rows["angle_index"][proj].tolist() == np.repeat(np.arange(90), 5).tolist()
    assert np.allclose(rows["rotation_deg"][proj], np.repeat(np.arange(90) * 2.0, 5))
    assert (rows["attempt"] == 0).all()
    assert (rows["series_index"][~flats] == -1).all()
    dt = np.diff(rows["timestamp_s"])
    assert np.allclose(dt, noisy.plan.exposure_s + FRAME_OVERHEAD_S)
    assert np.allclose(rows["ring_current_ma"], 200.0)


def test_encoder_readback_differs_from_the_true_position(noisy):
    rows = noisy.table.rows
    itf = noisy.simulation.fringes
    stepped = rows["step_index"] >= 0
    p2 = noisy.instrument.geometry.g2_pitch_m
    calibration = (rows["image_key"] == ImageKey.FLAT) & (rows["series_index"] == 0)
    steps = np.where(calibration, noisy.plan.calibration_steps, noisy.plan.steps)[stepped]
    commanded = rows["step_index"][stepped] * p2 / steps
    encoder_error = rows["g2_position_m"][stepped] - commanded
    step_error = rows["g2_position_m"][stepped] - noisy.true_g2_position_m[stepped]
    assert encoder_error.std() == pytest.approx(itf.encoder_noise_m, rel=0.15)
    assert step_error.std() == pytest.approx(itf.step_error_m, rel=0.15)


def test_noise_free_retrieval_equals_the_truth(noise_free):
    scan = noise_free
    assert scan.frames.dtype == np.float64
    np.testing.assert_allclose(scan.frames[:5], scan.simulation.detector.dark_offset_adu)
    a0_r, c1_r = series_harmonics(scan, ImageKey.FLAT, "series_index", 0)
    for angle in (0, 17, 63):
        a0_s, c1_s = series_harmonics(scan, ImageKey.PROJECTION, "angle_index", angle)
        dphase = np.angle(c1_s * np.conj(c1_r))
        np.testing.assert_allclose(dphase, scan.truth_projections.dphase[angle], atol=1e-6)
        np.testing.assert_allclose(
            a0_s / a0_r, scan.truth_projections.transmission[angle], rtol=1e-9
        )
        dark = (np.abs(c1_s) / a0_s) / (np.abs(c1_r) / a0_r)
        np.testing.assert_allclose(dark, scan.truth_projections.darkfield[angle], rtol=1e-9)
    # physically sensible truth: rod transmits ~35-90 %, phase signal at the rod edges
    assert 0.8 < scan.truth_projections.transmission.min() < 0.95
    assert np.abs(scan.truth_projections.dphase).max() > 0.3
    # 180-degree symmetry of the differential phase: g(theta + pi, s) = -g(theta, -s)
    # (checked at 0 and 178 deg, which differ by 2 deg: loose)
    assert (
        np.corrcoef(
            scan.truth_projections.dphase[0].ravel(),
            -scan.truth_projections.dphase[89][:, ::-1].ravel(),
        )[0, 1]
        > 0.9
    )


def test_phase_noise_follows_counting_statistics():
    scan = simulate(clean(0.0), seed=2, noise=True)
    _, c1_r = series_harmonics(scan, ImageKey.FLAT, "series_index", 0)
    _, c1_r2 = series_harmonics(scan, ImageKey.FLAT, "series_index", 2)
    diff = np.angle(c1_r2 * np.conj(c1_r))
    counts = scan.simulation.detector.incident_counts
    steps = [scan.plan.series_steps(("reference", i)) for i in (0, 2)]
    assert steps == [48, 5]  # the calibration series and a 5-step one
    vis = 2 * np.abs(c1_r) / counts
    # two independent series, of M counts-weighted steps each: var = 2 / (M counts vis^2)
    expected = np.sqrt(sum(2 / (m * counts * vis**2) for m in steps))
    assert diff.std() == pytest.approx(np.sqrt(np.mean(expected**2)), rel=0.1)
    assert abs(diff.mean()) < 0.01


def test_rendered_frame_matches_the_scan_frame(noise_free):
    renderer = FrameRenderer(noise_free.instrument, noise_free.simulation, seed=1)
    rows = noise_free.table.rows
    for i in (7, 120, len(rows) - 1):
        r = rows[i]
        state = FrameState(
            rotation_deg=float(r["rotation_deg"]),
            g2_position_m=float(noise_free.true_g2_position_m[i]),
            sample_in=r["image_key"] == ImageKey.PROJECTION,
            ring_current_ma=float(r["ring_current_ma"]),
            time_s=float(r["timestamp_s"]),
        )
        np.testing.assert_allclose(renderer.render(state), noise_free.frames[i], rtol=1e-12)
    base = FrameState(10.0, 0.0)
    ref_exposure = noise_free.simulation.detector.reference_exposure_s
    double = FrameState(10.0, 0.0, exposure_s=2 * ref_exposure)
    np.testing.assert_allclose(renderer.expected(double), 2 * renderer.expected(base))
    closed = renderer.render(FrameState(10.0, 0.0, shutter_open=False), np.random.default_rng(0))
    assert closed.dtype == np.uint16
    assert abs(closed.mean() - 100) < 0.5


def test_scan_is_deterministic_in_seed(noisy):
    again = simulate(builtin_profile("tiny"), seed=0, noise=True)
    np.testing.assert_array_equal(again.frames, noisy.frames)
    np.testing.assert_array_equal(again.table.rows, noisy.table.rows)


def test_the_calibration_series_is_reference_series_0_with_its_own_steps() -> None:
    profile = with_plan(clean(0.7), angles=4, reference_every=2, periods=3, calibration_steps=16)
    scan = simulate(profile, seed=3, noise=False)
    plan = scan.plan
    rows = scan.table.rows
    assert len(rows) == plan.frames_planned() == 5 + 16 + 2 * 5 + 4 * 5
    key, series = rows["image_key"], rows["series_index"]
    calibration = (key == ImageKey.FLAT) & (series == 0)
    assert np.flatnonzero(calibration).tolist() == list(range(5, 5 + 16))
    assert rows["step_index"][calibration].tolist() == list(range(16))
    # the same 3 periods in 16 equidistant steps (no encoder or step error in this profile)
    p2 = scan.instrument.geometry.g2_pitch_m
    np.testing.assert_allclose(
        rows["g2_position_m"][calibration], np.arange(16) * 3 * p2 / 16, rtol=0, atol=1e-15
    )
    np.testing.assert_allclose(scan.true_g2_position_m[calibration], np.arange(16) * 3 * p2 / 16)
    # every other series: 5 steps over the 3 periods
    for image_key, field, index in [
        (ImageKey.FLAT, "series_index", 1),
        (ImageKey.FLAT, "series_index", 2),
        *[(ImageKey.PROJECTION, "angle_index", a) for a in range(4)],
    ]:
        sel = (key == image_key) & (rows[field] == index)
        assert rows["step_index"][sel].tolist() == list(range(5)), (image_key, index)
        np.testing.assert_allclose(
            rows["g2_position_m"][sel], np.arange(5) * 3 * p2 / 5, rtol=0, atol=1e-15
        )
