"""Rotation-centre estimation on analytic sinograms with known offsets."""

from __future__ import annotations

import numpy as np
import pytest

from recon.center import center_from_opposite, center_from_sinogram
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
