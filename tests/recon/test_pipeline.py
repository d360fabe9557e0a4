"""Acceptance of the whole offline chain on simulated scans: sim frames -> recon volumes vs truth.

The simulator and the reconstructor are written independently (recon never imports sim); these
tests join them and score against the phantom's ground truth in physical units.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.ndimage import median_filter

from contracts.frames import FrameTable, ImageKey
from contracts.instrument import Geometry
from contracts.profile import Profile, builtin_profile
from recon.fbp import reconstruct_delta
from recon.pipeline import Projections, reconstruct_volumes, retrieve_projections
from sim.scan import SimulatedScan
from tests.profiles import simulate, with_plan, with_simulation


def _ideal(base: Profile, *, curve: str = "gratings", **plan: object) -> Profile:
    """The tiny profile with an ideal detector and stage: no PSF, read noise or step errors;
    ``curve``: the gratings' stepping curve (the default) or a sinusoid."""
    ideal = with_simulation(
        base,
        detector={"psf_sigma_px": 0.0, "read_noise_e": 0.0},
        fringes={
            "step_error_m": 0.0,
            "encoder_noise_m": 0.0,
            "dose_fluctuation": 0.0,
            "curve": curve,
        },
    )
    return with_plan(ideal, **plan)


@pytest.fixture(scope="module")
def noise_free() -> tuple[SimulatedScan, Projections]:
    """A sinusoidal stepping curve: the first-harmonic fit is exact."""
    p = _ideal(builtin_profile("tiny"), curve="sinusoidal")
    scan = simulate(p, seed=3, noise=False)
    return scan, retrieve_projections(scan.frames, scan.table, p.instrument.geometry)


@pytest.fixture(scope="module")
def gratings_scan() -> SimulatedScan:
    """The gratings' near-triangle stepping curve (a binary G2), 5 steps, a 48-step
    calibration series."""
    return simulate(_ideal(builtin_profile("tiny")), seed=3, noise=False)


def test_noise_free_retrieval_equals_the_model(noise_free: tuple[SimulatedScan, Projections]):
    scan, proj = noise_free
    truth = scan.truth_projections
    # arg(c1_obj conj c1_ref) of the exact binned model, wrapped difference
    err = np.angle(np.exp(1j * (proj.dphi - truth.dphase)))
    assert np.max(np.abs(err)) < 1e-6
    np.testing.assert_allclose(proj.transmission, truth.transmission, rtol=1e-5)
    np.testing.assert_allclose(proj.darkfield, truth.darkfield, rtol=1e-5)
    np.testing.assert_allclose(np.rad2deg(proj.angles_rad), scan.angles_deg, atol=1e-9)
    assert proj.fit is not None
    assert proj.fit.method == "first-harmonic"


def test_shape_aware_retrieval_of_the_gratings_curve(gratings_scan: SimulatedScan) -> None:
    """With the gratings' harmonics, 5 steps bias the first-harmonic fit; the calibration's
    shape removes it where the phase is smooth within a pixel. (At the rod's edge a pixel mixes
    shifted curves, which damps the higher harmonics more than the first, as a dark-field
    does: the fit's model damps all alike, and a residual remains there.)"""
    scan = gratings_scan
    truth = scan.truth_projections
    smooth = np.abs(np.gradient(truth.dphase, axis=2)) < 0.01  # rad per pixel
    errors = {}
    for mode in ("first-harmonic", "auto"):
        proj = retrieve_projections(scan.frames, scan.table, scan.instrument.geometry, fit=mode)
        dphi = np.abs(np.angle(np.exp(1j * (proj.dphi - truth.dphase))))[smooth]
        t = np.abs(proj.transmission / truth.transmission - 1)[smooth]
        errors[mode] = (float(np.median(dphi)), float(t.max()), proj)
    fh, sa = errors["first-harmonic"], errors["auto"]
    assert sa[2].fit is not None
    assert sa[2].fit.method == "shape-aware"
    assert sa[2].fit.shape is not None
    assert sa[2].fit.shape.steps == 48
    assert fh[1] > 0.01  # refraction leaks into T through the 5th harmonic
    assert sa[1] < 3e-3
    assert sa[0] < 0.1 * fh[0]


def test_noise_free_delta_matrix_and_halo_contrast(gratings_scan: SimulatedScan) -> None:
    """The gratings' curve, 5 steps, the shape-aware fit: delta of the matrix within 1 %, the
    halo contrast within 10 %, mu within 2 %, the centre on the axis."""
    scan = gratings_scan
    g = scan.instrument.geometry
    proj = retrieve_projections(scan.frames, scan.table, g)
    vol = reconstruct_volumes(proj, g)
    truth = scan.phantom.voxelize(vol.delta.shape, g.pixel_size_m)
    masks = scan.phantom.region_masks(vol.delta.shape, g.pixel_size_m)
    matrix, halo = masks["matrix"], masks["halo"]
    assert matrix.sum() > 10_000
    assert halo.sum() > 500
    d_true = truth["delta"][matrix].mean()
    # physical value of the model bone matrix at 12.4 keV (docs/physics.md)
    assert d_true == pytest.approx(2.83e-6, rel=0.01)
    assert vol.delta[matrix].mean() == pytest.approx(d_true, rel=0.01)
    contrast_true = truth["delta"][halo].mean() - d_true
    contrast = vol.delta[halo].mean() - vol.delta[matrix].mean()
    assert contrast_true < 0  # mineral loss
    assert contrast == pytest.approx(contrast_true, rel=0.10)
    # the attenuation channel in physical units too
    assert vol.mu[matrix].mean() == pytest.approx(truth["mu"][matrix].mean(), rel=0.02)
    assert abs(vol.center_offset_px) < 0.05


def test_noisy_differential_phase_noise_follows_the_photon_statistics() -> None:
    # Photon statistics alone: no PSF (it correlates pixels), no step errors (they add phase error).
    base = _ideal(builtin_profile("tiny"), reference_every=90)
    scan = simulate(base, seed=5, noise=True)
    proj = retrieve_projections(scan.frames, scan.table, base.instrument.geometry)
    air = np.s_[:, :, :4]  # outside the 40 um rod in the 48 um field
    dphi = proj.dphi[air].astype(np.float64)
    n_angles = dphi.shape[0]
    resid = dphi - dphi.mean(axis=0, keepdims=True)
    measured = float(np.sqrt(np.mean(resid**2) * n_angles / (n_angles - 1)))
    # sigma^2 = 2 / (N V^2) per series (N counts over the M steps, docs/physics.md).
    # Removing the mean over angles cancels the reference error except for its time
    # interpolation between the series at start and end: (w - mean w)(r1 - r0), variance
    # (1/12) 2 sigma^2, so the expected residual variance is sigma^2 (1 + 1/6).
    n_counts = base.simulated().detector.incident_counts * base.scan_plan().steps
    vis = scan.reference.visibility  # super-sampled V0 map; bin it to pixels
    ss = scan.reference.supersample
    v_px = vis.reshape(vis.shape[0] // ss, ss, vis.shape[1] // ss, ss).mean(axis=(1, 3))[:, :4]
    sigma2 = np.mean(2.0 / (n_counts * v_px**2))
    predicted = math.sqrt(sigma2 * (1 + 1 / 6))
    assert measured == pytest.approx(predicted, rel=0.15)
    # and it is the photon-limited value sqrt(2)/(V sqrt(N))
    v0 = base.simulated().fringes.visibility
    assert math.sqrt(sigma2) == pytest.approx(math.sqrt(2) / (v0 * math.sqrt(n_counts)), rel=0.1)


def test_opposite_projections_agree() -> None:
    # A 360-degree scan: g(theta + pi, s) = -g(theta, 2c - s) for differential phase,
    # and p(theta + pi, s) = p(theta, 2c - s) for attenuation.
    # a sinusoidal curve: the geometry's symmetry, exact (harmonics leave a residual at edges)
    p = _ideal(
        builtin_profile("tiny"),
        curve="sinusoidal",
        angles=8,
        angular_range_deg=360.0,
        reference_every=8,
    )
    p = with_simulation(p, rotation_axis_offset_px=0.0)
    scan = simulate(p, seed=1, noise=False)
    proj = retrieve_projections(scan.frames, scan.table, p.instrument.geometry)
    half = proj.dphi.shape[0] // 2
    a, b = proj.dphi[:half], proj.dphi[half:]
    # exact up to the sub-pixel averaging of the (not mirror-symmetric) moire reference pattern
    np.testing.assert_allclose(b, -a[..., ::-1], atol=3e-3)
    assert np.sqrt(np.mean((b + a[..., ::-1]) ** 2)) < 3e-4
    ta, tb = proj.transmission[:half], proj.transmission[half:]
    np.testing.assert_allclose(tb, ta[..., ::-1], rtol=1e-3)
    assert np.abs(a).max() > 0.3  # the rod edges are really there


def test_rotation_centre_offset_is_found_and_used() -> None:
    p = _ideal(builtin_profile("tiny"), angles=60, reference_every=60)
    p = with_simulation(p, rotation_axis_offset_px=2.5)
    g = p.instrument.geometry
    scan = simulate(p, seed=2, noise=False)
    proj = retrieve_projections(scan.frames, scan.table, g)
    vol = reconstruct_volumes(proj, g, rows=[16])
    assert vol.center_offset_px == pytest.approx(2.5, abs=0.1)
    masks = scan.phantom.region_masks((32, 96, 96), g.pixel_size_m)
    truth = scan.phantom.voxelize((32, 96, 96), g.pixel_size_m)
    m = masks["matrix"][16]
    assert vol.delta[0][m].mean() == pytest.approx(truth["delta"][16][m].mean(), rel=0.03)
    wrong = reconstruct_volumes(proj, g, rows=[16], center_offset_px=0.0)
    rod = truth["delta"][16] > 0  # the whole rod, edges included
    err_right = np.sqrt(np.mean((vol.delta[0][rod] - truth["delta"][16][rod]) ** 2))
    err_wrong = np.sqrt(np.mean((wrong.delta[0][rod] - truth["delta"][16][rod]) ** 2))
    assert err_wrong > 3 * err_right


def _ring_amplitude(image: np.ndarray, truth: np.ndarray, radius: float) -> float:
    """Largest sharp (high-pass) feature of the radial profile of image - truth."""
    n = image.shape[0]
    y, x = np.indices(image.shape)
    r = np.hypot(y - (n - 1) / 2, x - (n - 1) / 2)
    inside = r < radius
    bins = r[inside].astype(np.int64)
    counts = np.bincount(bins)
    prof = np.bincount(bins, weights=(image - truth)[inside]) / np.maximum(counts, 1)
    smooth = median_filter(prof, size=5, mode="nearest")
    return float(np.abs(prof - smooth)[2:].max())


def test_no_rings_for_a_defect_free_detector() -> None:
    # Realistic detector and stage (PSF, step errors, moire, V0 map, the gratings' harmonics),
    # no photon noise: any ring would come from those pixel-wise systematics. Measured against
    # the same phantom seen through an interferometer without them (a sinusoidal curve, no
    # moire, a uniform V0, exact steps; the same PSF), so that the reconstruction's own
    # departures from the voxelized truth (edges, features) cancel. A 0.06 rad column error
    # shows the metric bites.
    p = with_plan(builtin_profile("tiny"), angles=60)
    plain = with_simulation(
        p,
        fringes={
            "curve": "sinusoidal", "moire_fringes": 0.0, "visibility_spread": 0.0,
            "step_error_m": 0.0, "encoder_noise_m": 0.0,
        },
    )  # fmt: skip
    g = p.instrument.geometry
    scan = simulate(p, seed=6, noise=False)
    masks = scan.phantom.region_masks((32, 96, 96), g.pixel_size_m)
    z = int(np.argmax(masks["matrix"].sum(axis=(1, 2))))  # the row with the fewest features
    radius = 0.5 * p.simulated().phantom.rod_diameter_m / g.pixel_size_m - 2
    ideal = simulate(plain, seed=6, noise=False)
    reference = reconstruct_volumes(
        retrieve_projections(ideal.frames, ideal.table, g), g, rows=[z], center_offset_px=0.0
    ).delta[0]
    proj = retrieve_projections(scan.frames, scan.table, g)
    vol = reconstruct_volumes(proj, g, rows=[z], center_offset_px=0.0)
    clean = _ring_amplitude(vol.delta[0], reference, radius)
    assert clean < 0.004 * 2.83e-6
    bad = proj.dphi.copy()
    bad[:, :, 60] += 0.06
    broken = Projections(proj.transmission, bad, proj.darkfield, proj.angles_rad)
    ringed = reconstruct_volumes(broken, g, rows=[z], center_offset_px=0.0)
    assert _ring_amplitude(ringed.delta[0], reference, radius) > 2 * 0.004 * 2.83e-6


def test_wrapped_differential_phase_is_unwrapped_before_fbp() -> None:
    # 21st fractional Talbot order, 7 times the third's distance: shear 3.5 um = 7 px, the rod
    # edges wrap past pi.
    base = _ideal(builtin_profile("tiny"), angles=60, reference_every=60)
    g0 = base.instrument.geometry
    d21 = 7 * g0.distance_m
    g = Geometry.model_validate({**g0.model_dump(), "talbot_order": 21, "distance_m": d21})
    assert g.shear_px == pytest.approx(7.0)
    inst = base.instrument.model_copy(update={"geometry": g})
    p = base.model_copy(update={"instrument": inst})
    scan = simulate(p, seed=0, noise=False)
    proj = retrieve_projections(scan.frames, scan.table, g)
    assert np.abs(proj.dphi).max() > 3.0  # close to pi: the true phase wraps
    masks = scan.phantom.region_masks((32, 96, 96), g.pixel_size_m)
    truth = scan.phantom.voxelize((32, 96, 96), g.pixel_size_m)
    m = masks["matrix"]
    good = reconstruct_volumes(proj, g)
    assert good.delta[m].mean() == pytest.approx(truth["delta"][m].mean(), rel=0.02)
    bad = reconstruct_volumes(proj, g, unwrap=False)
    assert bad.delta[m].mean() < 0.8 * truth["delta"][m].mean()


def test_frames_and_table_must_match() -> None:
    table = FrameTable.empty(3)
    table.rows["image_key"] = ImageKey.FLAT
    with pytest.raises(ValueError, match="frames"):
        retrieve_projections(
            np.zeros((2, 4, 8)), table, builtin_profile("tiny").instrument.geometry
        )
    table.rows["step_index"] = [0, 1, 2]
    table.rows["g2_position_m"] = [0, 1 / 3 * 1e-6, 2 / 3 * 1e-6]
    with pytest.raises(ValueError, match="projections"):
        retrieve_projections(np.ones((3, 4, 8)), table, builtin_profile("tiny").instrument.geometry)


def test_latest_attempt_wins_over_a_superseded_series() -> None:
    p = _ideal(builtin_profile("tiny"), angles=6, reference_every=6)
    scan = simulate(p, seed=4, noise=False)
    proj = retrieve_projections(scan.frames, scan.table, p.instrument.geometry)
    # append a corrupted first attempt of angle 2 *before* the real one is marked attempt 1
    rows = scan.table.rows.copy()
    sel = np.flatnonzero((rows["image_key"] == ImageKey.PROJECTION) & (rows["angle_index"] == 2))
    bad = rows[sel].copy()
    rows["attempt"][sel] = 1
    frames = np.concatenate([scan.frames, np.full_like(scan.frames[sel], 7.0)])
    table = FrameTable(np.concatenate([rows, bad]))
    again = retrieve_projections(frames, table, p.instrument.geometry)
    np.testing.assert_array_equal(again.dphi, proj.dphi)


def test_hilbert_sign_gives_positive_delta_for_matter(
    noise_free: tuple[SimulatedScan, Projections],
):
    scan, proj = noise_free
    g = scan.instrument.geometry
    d = reconstruct_delta(
        proj.dphi[:, 16],
        proj.angles_rad,
        shear_px=g.shear_px,
        wavelength_m=g.wavelength_m,
        pixel_m=g.pixel_size_m,
    )
    assert d[48, 48] > 2e-6
    y, x = np.indices(d.shape)
    r = np.hypot(y - 47.5, x - 47.5)
    assert abs(d[(r > 43) & (r < 46)].mean()) < 5e-8  # air ring around the rod
