"""FBP (ramp and Hilbert) against analytic objects with exact line integrals, in physical units."""

from __future__ import annotations

import numpy as np
import pytest

from recon.fbp import (
    GriddingBackprojector,
    accumulate_projection,
    backproject,
    backproject_rows,
    fbp,
    filter_sinogram,
    reconstruct_darkfield,
    reconstruct_delta,
    reconstruct_mu,
    transform_counts,
)
from tests.recon.analytic import (
    angles_180,
    detector_s,
    ellipse_image,
    ellipse_projection,
    gaussian_image,
    gaussian_projection,
)

WAVELENGTH = 1.0e-10  # m
PIXEL = 0.5e-6  # m
K = 2 * np.pi / WAVELENGTH


def _radius(n: int, x0: float = 0.0, y0: float = 0.0) -> np.ndarray:
    c = np.arange(n) - (n - 1) / 2.0
    x, y = np.meshgrid(c, c)
    return np.hypot(x - x0, y - y0)


def _rel_rms(a: np.ndarray, b: np.ndarray, mask: np.ndarray) -> float:
    return float(np.sqrt(np.mean((a - b)[mask] ** 2) / np.mean(b[mask] ** 2)))


@pytest.mark.parametrize("method", ["gridding", "direct"])
@pytest.mark.parametrize(("n", "n_angles", "radius"), [(128, 180, 40.0), (96, 90, 30.0)])
def test_ramp_fbp_recovers_disk_value(method, n, n_angles, radius) -> None:
    mu = 2.5e3  # 1/m
    ang = angles_180(n_angles)
    line = ellipse_projection([(0, 0, radius, radius, 0, 1.0)], ang, detector_s(n))
    trans = np.exp(-mu * PIXEL * line)
    rec = reconstruct_mu(trans, ang, pixel_m=PIXEL, method=method)
    inner = _radius(n) < 0.75 * radius
    assert rec[inner].mean() == pytest.approx(mu, rel=0.01)
    ring = (_radius(n) > radius + 6) & (_radius(n) < n / 2 - 2)
    assert np.abs(rec[ring]).max() < 0.05 * mu


@pytest.mark.parametrize("method", ["gridding", "direct"])
def test_hilbert_fbp_of_finite_shear_differences_gives_delta_with_sign(method) -> None:
    n, ang = 128, angles_180(180)
    delta = 3.0e-6
    hole = -1.0e-6  # a lacuna-like region with lower delta
    objs = [(0, 0, 44, 44, 0, delta), (12, -8, 9, 9, 0, hole)]
    s = detector_s(n)
    # dphi = k (int delta(s + xi/2) - int delta(s - xi/2)), xi = 1 px (exact differences)
    dphi = (
        K
        * PIXEL
        * (ellipse_projection(objs, ang, s + 0.5) - ellipse_projection(objs, ang, s - 0.5))
    )
    rec = reconstruct_delta(
        dphi, ang, shear_px=1.0, wavelength_m=WAVELENGTH, pixel_m=PIXEL, method=method
    )
    central = (_radius(n) < 30) & (_radius(n, 12, -8) > 13)
    assert rec[central].mean() == pytest.approx(delta, rel=0.01)
    assert rec[_radius(n, 12, -8) < 6].mean() == pytest.approx(delta + hole, rel=0.02)
    assert np.abs(rec[(_radius(n) > 52) & (_radius(n) < 62)]).max() < 0.05 * delta


def test_absolute_scaling_independent_of_angles_and_size() -> None:
    means = []
    for n, n_angles in [(64, 60), (128, 180), (160, 400)]:
        ang = angles_180(n_angles)
        r = 0.3 * n
        line = ellipse_projection([(0, 0, r, r, 0, 1.0)], ang, detector_s(n))
        rec = fbp(line, ang, "ramp")
        means.append(rec[_radius(n) < 0.7 * r].mean())
    np.testing.assert_allclose(means, 1.0, rtol=0.01)


def test_gridding_equals_direct_backprojection() -> None:
    n, ang, off = 128, angles_180(180), 2.7
    objs = [(8, -5, 40, 30, 0.3, 1.0), (-20, 10, 8, 8, 0, 0.5)]
    q = filter_sinogram(ellipse_projection(objs, ang, detector_s(n, off)), "ramp")
    # with 2x zero padding the periodic (Dirichlet) interpolant is close to the band-limited one,
    # which oversampled direct backprojection approaches
    fast = GriddingBackprojector(n, ang, center_offset=off, pad_factor=2.0)(q)
    direct = backproject(q, ang, center_offset=off, oversample=8)
    fov = _radius(n) < n / 2 - 4
    assert _rel_rms(fast, direct, fov) < 1e-3
    plain = backproject(q, ang, center_offset=off)
    assert _rel_rms(fast, plain, fov) < 0.05  # linear interpolation alone differs more


@pytest.mark.parametrize(("n", "off"), [(128, 2.7), (160, -6.0)])
def test_shortest_gridding_period_reconstructs_as_well_as_2x_padding(n: int, off: float) -> None:
    from recon.fbp import gridding_length

    ang = angles_180(180)
    assert gridding_length(n, n, off) < 2 * n
    objs = [(8, -5, 0.3 * n, 0.22 * n, 0.3, 1.0), (-0.2 * n, 0.1 * n, 6, 6, 0, 0.5)]
    q = filter_sinogram(ellipse_projection(objs, ang, detector_s(n, off)), "ramp")
    short = GriddingBackprojector(n, ang, center_offset=off)(q)
    padded = GriddingBackprojector(n, ang, center_offset=off, pad_factor=2.0)(q)
    truth = ellipse_image(objs, n)
    fov = _radius(n) < n / 2 - 2
    err_short = np.sqrt(np.mean((short - truth)[fov] ** 2))
    err_padded = np.sqrt(np.mean((padded - truth)[fov] ** 2))
    assert err_short <= 1.01 * err_padded
    assert _rel_rms(short, padded, fov) < 3e-3
    # no wrapped copy of the data reaches the image: the corners differ no more than the disc
    diff = np.abs(short - padded)
    assert np.sqrt(np.mean(diff[~fov] ** 2)) < 2 * np.sqrt(np.mean(diff[fov] ** 2))


def test_gridding_packs_slices_and_batches() -> None:
    n, ang = 64, angles_180(72)
    blobs = [(5, -3, 4, 1.0), (-12, 10, 2.5, 0.6)]
    base = filter_sinogram(gaussian_projection(blobs, ang, detector_s(n)), "ramp")
    scales = np.array([1.0, -2.0, 0.5, 3.0, 0.25])  # odd count: last pair half empty
    stack = base[:, None, :] * scales[None, :, None]
    # the packing and batching logic, checked well below the NUFFT tolerance
    vol = GriddingBackprojector(n, ang, batch=2, eps=1e-6)(stack)
    single = GriddingBackprojector(n, ang, batch=1, eps=1e-6)(base)
    assert vol.shape == (5, n, n)
    for z, sc in enumerate(scales):
        np.testing.assert_allclose(vol[z], sc * single, atol=1e-5 * np.abs(single).max())


def test_fbp_filters_and_backprojects_in_row_chunks_into_one_volume(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import recon.fbp as fbp_module

    n, ang = 64, angles_180(72)
    blobs = [(5, -3, 4, 1.0), (-12, 10, 2.5, 0.6)]
    base = gaussian_projection(blobs, ang, detector_s(n))
    stack = base[:, None, :] * np.array([1.0, -2.0, 0.5, 3.0, 0.25])[None, :, None]
    whole = fbp(stack, ang, "ramp")
    monkeypatch.setattr(fbp_module, "FILTER_CHUNK_ROWS", 2)  # chunks of 2, 2 and 1 rows
    chunked = fbp(stack, ang, "ramp")
    np.testing.assert_allclose(chunked, whole, rtol=0, atol=1e-5 * np.abs(whole).max())
    bp = GriddingBackprojector(n, ang)
    q = filter_sinogram(stack, "ramp")
    with pytest.raises(ValueError, match="out must be float32"):
        bp(q, np.empty((5, n, n + 1), np.float32))
    # into a given volume (a buffer kept from an earlier scan), for both methods and a slice
    for method, sino in (("gridding", stack), ("direct", stack), ("gridding", base)):
        want = fbp(sino, ang, "ramp", method=method)  # type: ignore[arg-type]
        out = np.full(want.shape, np.nan, np.float32)
        assert fbp(sino, ang, "ramp", method=method, out=out) is out  # type: ignore[arg-type]
        np.testing.assert_array_equal(out, want)
    with pytest.raises(ValueError, match="out must be a C-contiguous float32"):
        fbp(stack, ang, "ramp", out=np.empty((5, n, n)))


def test_transform_counts_cover_every_chunk() -> None:
    assert transform_counts(64) == {2}
    assert transform_counts(5) == {2, 1}  # three pairs: a chunk of two, then one
    assert transform_counts(1) == {1}
    assert transform_counts(7, batch=4) == {4}
    with pytest.raises(ValueError, match="n_slices"):
        transform_counts(0)


def test_measured_fft_plans_give_the_estimated_plans_image(monkeypatch: pytest.MonkeyPatch) -> None:
    import recon.fbp as fbp_module

    n, ang = 512, angles_180(90)
    assert n >= fbp_module.FFTW_MEASURE_MIN_SIZE
    objs = [(30, -20, 150, 110, 0.3, 1.0), (-60, 40, 25, 25, 0, 0.5)]
    q = filter_sinogram(ellipse_projection(objs, ang, detector_s(n)), "ramp")
    stack = q[:, None, :] * np.array([1.0, -0.5, 2.0])[None, :, None]
    fbp_module.prepare_gridding(n, 3)
    measured = GriddingBackprojector(n, ang)(stack)
    monkeypatch.setattr(fbp_module, "FFTW_MEASURE_MIN_SIZE", 10**6)
    estimated = GriddingBackprojector(n, ang)(stack)
    # two FFT algorithms in complex64: equal to the NUFFT's requested precision (eps = 1e-4)
    np.testing.assert_allclose(measured, estimated, rtol=0, atol=1e-4 * np.abs(estimated).max())
    assert np.sqrt(np.mean((measured - estimated) ** 2)) < 1e-6 * np.abs(estimated).max()
    inside = _radius(n, 30, -20) < 80
    np.testing.assert_allclose(measured[0][inside].mean(), 1.0, rtol=0.01)


def test_rotation_centre_offset_is_handled() -> None:
    n, ang, off = 96, angles_180(120), 3.3
    blobs = [(10, -5, 5, 1.0), (-18, 14, 3, 0.7)]
    truth = gaussian_image(blobs, n)
    sino = gaussian_projection(blobs, ang, detector_s(n, off))
    fov = _radius(n) < 40
    for method in ("gridding", "direct"):
        good = fbp(sino, ang, "ramp", center_offset=off, method=method)
        assert _rel_rms(good, truth, fov) < 0.02
    wrong = fbp(sino, ang, "ramp", center_offset=0.0)
    assert _rel_rms(wrong, truth, fov) > 0.2


def test_finite_shear_correction_sharpens_small_features() -> None:
    n, ang, xi = 96, angles_180(180), 1.5
    blobs = [(6, 4, 1.2, 2.0e-6)]
    s = detector_s(n)
    dphi = (
        K
        * PIXEL
        * (
            gaussian_projection(blobs, ang, s + xi / 2)
            - gaussian_projection(blobs, ang, s - xi / 2)
        )
    )
    truth = gaussian_image(blobs, n)
    kw = {"shear_px": xi, "wavelength_m": WAVELENGTH, "pixel_m": PIXEL}
    plain = reconstruct_delta(dphi, ang, **kw)
    corrected = reconstruct_delta(dphi, ang, finite_shear=True, **kw)
    near = _radius(n, 6, 4) < 6
    err_plain = _rel_rms(plain, truth, near)
    err_corr = _rel_rms(corrected, truth, near)
    assert err_corr < 0.02
    assert err_corr < err_plain / 3


def test_darkfield_units() -> None:
    eps = 800.0  # 1/m
    n, ang = 64, angles_180(90)
    line = ellipse_projection([(0, 0, 20, 20, 0, 1.0)], ang, detector_s(n))
    rec = reconstruct_darkfield(np.exp(-eps * PIXEL * line), ang, pixel_m=PIXEL)
    assert rec[_radius(n) < 14].mean() == pytest.approx(eps, rel=0.01)


def test_live_rows_and_incremental_accumulation_match_the_volume() -> None:
    n, ang = 64, angles_180(60)
    objs = [(4, -3, 18, 12, 0.4, 1.0)]
    one = ellipse_projection(objs, ang, detector_s(n))
    stack = np.stack([one, 2 * one, 3 * one], axis=1)  # (angles, rows, cols)
    full = backproject(filter_sinogram(stack, "ramp"), ang)
    live = backproject_rows(stack, ang, [2, 0], "ramp")
    np.testing.assert_allclose(live, full[[2, 0]], rtol=1e-5, atol=1e-6)
    acc = np.zeros((1, n, n), np.float32)
    q = filter_sinogram(stack[:, 1:2, :], "ramp")
    for a, theta in enumerate(ang):
        accumulate_projection(acc, q[a], theta, weight=np.pi / ang.size)
    np.testing.assert_allclose(acc[0], full[1], rtol=1e-4, atol=1e-5)
    inner = ellipse_image([(4, -3, 14, 8, 0.4, 1.0)], n) > 0
    assert full[0][inner].mean() == pytest.approx(1.0, rel=0.01)


def test_bad_input_names_the_parameter() -> None:
    ang = angles_180(10)
    sino = np.ones((10, 32))
    with pytest.raises(ValueError, match="angles_rad has 9"):
        fbp(sino, ang[:9], "ramp")
    bad = sino.copy()
    bad[3, 3] = np.inf
    with pytest.raises(ValueError, match="sinogram contains NaN"):
        fbp(bad, ang, "ramp")
    with pytest.raises(ValueError, match="kind"):
        fbp(sino, ang, "shepp")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="shear_px"):
        reconstruct_delta(
            sino, ang, shear_px=3.0, wavelength_m=1e-10, pixel_m=1e-6, finite_shear=True
        )
    with pytest.raises(ValueError, match="transmission"):
        reconstruct_mu(np.zeros((10, 32)), ang, pixel_m=1e-6)
    with pytest.raises(ValueError, match="pixel_m"):
        reconstruct_mu(sino, ang, pixel_m=-1.0)
