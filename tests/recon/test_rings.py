"""Sorting-based stripe (ring) suppression (Vo et al. 2018) on analytic sinograms."""

from __future__ import annotations

import numpy as np
import pytest

from recon.fbp import fbp
from recon.rings import remove_stripes_sorting, ring_index
from tests.recon.analytic import angles_180, detector_s, ellipse_projection

# The median across columns rejects a stripe only where it exceeds the column-to-column change of
# the sorted object profile, so the object is wide (as at the beamline, in pixels).
N = 256
OBJECTS = [
    (10.0, -8.0, 100.0, 100.0, 0.0, 1.0),
    (-30.0, 40.0, 12.0, 8.0, 0.4, 0.5),
    (40.0, 16.0, 10.0, 10.0, 0.0, -0.3),
]
RADIUS = 50.0  # ring-index region: homogeneous part of the big disk around the rotation axis


@pytest.fixture(scope="module")
def sinograms() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    ang = angles_180(360)
    clean = ellipse_projection(OBJECTS, ang, detector_s(N)).astype(np.float32)
    rng = np.random.default_rng(1)
    cols = rng.choice(np.arange(70, 186), 12, replace=False)  # defective pixels
    striped = clean.copy()  # offsets 0.5-1.5 % of the largest line integral (200)
    striped[:, cols] += (rng.choice([-1, 1], 12) * rng.uniform(1.0, 3.0, 12))[None, :]
    return ang, clean, striped


def test_stripes_from_defective_pixels_are_suppressed(sinograms) -> None:
    ang, clean, striped = sinograms
    before = ring_index(fbp(striped, ang, "ramp"), RADIUS)
    after = ring_index(fbp(remove_stripes_sorting(striped, size=5), ang, "ramp"), RADIUS)
    reference = ring_index(fbp(clean, ang, "ramp"), RADIUS)
    assert before > 20 * reference
    assert after < before / 8


def test_clean_sinogram_is_essentially_unchanged(sinograms) -> None:
    ang, clean, _ = sinograms
    out = remove_stripes_sorting(clean, size=5)
    assert np.sqrt(np.mean((out - clean) ** 2) / np.mean(clean**2)) < 2e-3
    rec, ref = fbp(out, ang, "ramp"), fbp(clean, ang, "ramp")
    c = np.arange(N) - (N - 1) / 2.0
    x, y = np.meshgrid(c, c)
    inside = np.hypot(x - 10, y + 8) < 85
    assert np.sqrt(np.mean((rec - ref)[inside] ** 2)) < 0.01  # object value 1
    assert ring_index(rec, RADIUS) < 1.2 * ring_index(ref, RADIUS)


def test_stack_is_processed_row_by_row(sinograms) -> None:
    _, _, striped = sinograms
    stack = np.stack([striped, 2.0 * striped], axis=1)
    out = remove_stripes_sorting(stack, size=5)
    np.testing.assert_allclose(out[:, 0], remove_stripes_sorting(striped, size=5), rtol=1e-6)
    np.testing.assert_allclose(out[:, 1], 2.0 * out[:, 0], rtol=1e-5, atol=1e-5)


def test_bad_input_names_the_parameter() -> None:
    with pytest.raises(ValueError, match="size"):
        remove_stripes_sorting(np.ones((10, 32)), size=4)
    with pytest.raises(ValueError, match="sinogram"):
        remove_stripes_sorting(np.ones(10))
