"""Rotation-centre estimation on analytic sinograms with known offsets."""

from __future__ import annotations

import numpy as np
import pytest

from recon.center import (
    center_from_opposite,
    center_from_phase,
    center_from_projections,
    center_from_sinogram,
    fit_center,
)
from tests.recon.analytic import angles_180, detector_s, ellipse_projection, gaussian_projection

N = 128
ELLIPSES = [(10.0, -5.0, 30.0, 20.0, 0.3, 1.0), (-20.0, 10.0, 8.0, 8.0, 0.0, 0.5)]
BLOBS = [(10.0, -5.0, 6.0, 1.0), (-25.0, 20.0, 3.0, 0.5), (5.0, 30.0, 4.0, 0.7)]


@pytest.mark.parametrize("offset", [3.3, -7.6, 0.0])
def test_centre_from_whole_sinogram(offset: float) -> None:
    ang = angles_180(180)
    sino = ellipse_projection(ELLIPSES, ang, detector_s(N, offset))
    assert center_from_sinogram(sino, ang) == pytest.approx(offset, abs=0.1)


@pytest.mark.parametrize("offset", [3.3, -7.6, 1.27])
def test_centre_from_opposite_projections(offset: float) -> None:
    s = detector_s(N, offset)
    pair = np.array([0.4, 0.4 + np.pi])
    p = gaussian_projection(BLOBS, pair, s)
    assert center_from_opposite(np.exp(-0.3 * p[0]), np.exp(-0.3 * p[1])) == pytest.approx(
        offset, abs=0.1
    )
    # sharp-edged ellipses too (point-sampled edges: still well within 0.1 px)
    e = ellipse_projection(ELLIPSES, pair, s)
    assert center_from_opposite(e[0], e[1]) == pytest.approx(offset, abs=0.1)
    # differential phase: g(theta + pi, s) = -g(theta, -s)
    g = gaussian_projection(BLOBS, pair, s + 0.5) - gaussian_projection(BLOBS, pair, s - 0.5)
    assert center_from_opposite(g[0], g[1], odd=True) == pytest.approx(offset, abs=0.1)
    # several detector rows at once
    rows = np.stack([p, 0.5 * p], axis=1)  # (2 angles, 2 rows, cols)
    assert center_from_opposite(rows[0], rows[1]) == pytest.approx(offset, abs=0.1)


def test_bad_input_names_the_parameter() -> None:
    with pytest.raises(ValueError, match="angles_rad"):
        center_from_sinogram(np.ones((10, 32)), np.zeros(9))
    with pytest.raises(ValueError, match="span"):
        center_from_sinogram(np.ones((3, 32)), np.array([0.0, 1e-4, 2e-4]))
    with pytest.raises(ValueError, match="p0 and p180"):
        center_from_opposite(np.ones(32), np.ones(31))


def _cylinder_sinograms(
    offset: float, angles: np.ndarray, absorption: float
) -> tuple[np.ndarray, np.ndarray]:
    """(-ln T, dphi) of an off-axis cylinder and a smaller one (shear 1 px): strong refraction,
    ``absorption`` times as much attenuation (pixel units)."""
    cylinders = [(12.0, -6.0, 25.0, 25.0, 0.0, 1.0), (-20.0, 15.0, 6.0, 6.0, 0.0, 0.6)]
    s = detector_s(N, offset)
    dphi = ellipse_projection(cylinders, angles, s + 0.5) - ellipse_projection(
        cylinders, angles, s - 0.5
    )
    return absorption * ellipse_projection(cylinders, angles, s), dphi


@pytest.mark.parametrize("range_deg", [180.0, 360.0])
@pytest.mark.parametrize("offset", [3.3, -7.6])
def test_a_refracting_object_that_does_not_absorb_gets_its_axis_from_the_phase(
    offset: float, range_deg: float
) -> None:
    angles = np.arange(180) * np.deg2rad(range_deg) / 180
    neg_log_t, dphi = _cylinder_sinograms(offset, angles, absorption=0.0)
    assert center_from_phase(dphi, angles).offset_px == pytest.approx(offset, abs=0.1)
    assert center_from_projections(neg_log_t, dphi, angles).offset_px == pytest.approx(
        offset, abs=0.1
    )
    with pytest.raises(ValueError, match="positive total"):
        center_from_sinogram(neg_log_t, angles)  # what the attenuation alone could tell


def test_the_trusted_sinogram_wins_when_one_is_noisy() -> None:
    rng = np.random.default_rng(5)
    angles = angles_180(180)
    neg_log_t, dphi = _cylinder_sinograms(3.3, angles, absorption=0.002)
    noisy_t = neg_log_t + rng.normal(0.0, 0.02, neg_log_t.shape)  # a weak absorber's noise
    combined = center_from_projections(noisy_t, dphi + rng.normal(0, 1e-3, dphi.shape), angles)
    alone = fit_center(noisy_t, angles)
    assert combined.offset_px == pytest.approx(3.3, abs=0.1)
    assert abs(alone.offset_px - 3.3) > 3 * abs(combined.offset_px - 3.3)
    assert combined.stderr_px < alone.stderr_px


def test_a_phase_offset_of_the_reference_does_not_move_the_axis() -> None:
    angles = angles_180(120)
    _, dphi = _cylinder_sinograms(-2.4, angles, absorption=0.0)
    assert center_from_phase(dphi + 0.01, angles).offset_px == pytest.approx(-2.4, abs=0.1)
