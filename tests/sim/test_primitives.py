"""Exact chords of the analytic solids against brute-force ray marching."""

import math

import numpy as np
import pytest

from sim.phantom import _rotation_with_axis
from sim.primitives import Cylinder, Ellipsoid

UM = 1e-6


def march(solid, origins, direction, half_span, step):
    """Chord by counting samples inside along each line (midpoint rule)."""
    t = np.arange(-half_span, half_span, step) + step / 2
    pts = origins[:, None, :] + t[None, :, None] * direction
    return solid.contains(pts).sum(axis=1) * step


def random_rays(rng, n, spread):
    origins = rng.uniform(-spread, spread, size=(n, 3))
    direction = rng.normal(size=3)
    return origins, direction / np.linalg.norm(direction)


def test_ellipsoid_chord_matches_ray_marching():
    rng = np.random.default_rng(1)
    rot = _rotation_with_axis(np.array([0.3, -0.2, 1.0]), 0.7)
    ell = Ellipsoid(np.array([1, -2, 0.5]) * UM, np.array([10, 4, 2.5]) * UM, rot, 1.0, 0.0)
    for _ in range(2):
        origins, direction = random_rays(rng, 150, 6 * UM)
        origins += ell.centre
        exact = ell.chord(origins, direction)
        marched = march(ell, origins, direction, 20 * UM, 2e-9)
        assert np.count_nonzero(exact) > 20
        np.testing.assert_allclose(exact, marched, atol=6e-9)


def test_cylinder_chord_matches_ray_marching_including_caps():
    rng = np.random.default_rng(2)
    axis = np.array([1.0, 0.4, 0.3])
    cyl = Cylinder(np.array([0.5, 0, -1]) * UM, axis, 1.5 * UM, 4 * UM, 1.0, 0.0)
    for _ in range(2):
        origins, direction = random_rays(rng, 200, 5 * UM)
        origins += cyl.centre
        exact = cyl.chord(origins, direction)
        marched = march(cyl, origins, direction, 20 * UM, 2e-9)
        assert np.count_nonzero(exact) > 20
        np.testing.assert_allclose(exact, marched, atol=6e-9)


def test_cylinder_chord_along_and_across_its_axis():
    cyl = Cylinder(np.zeros(3), np.array([0, 0, 1.0]), 2 * UM, 3 * UM, 1.0, 0.0)
    inside = np.array([[0.5 * UM, 0.0, -10 * UM]])
    outside = np.array([[2.5 * UM, 0.0, -10 * UM]])
    along = np.array([0, 0, 1.0])
    assert cyl.chord(inside, along)[0] == pytest.approx(6 * UM)
    assert cyl.chord(outside, along)[0] == 0.0
    across = np.array([0, 1.0, 0])
    origin = np.array([[1 * UM, -10 * UM, 1 * UM]])
    assert cyl.chord(origin, across)[0] == pytest.approx(2 * math.sqrt(3) * UM)
    above = np.array([[1 * UM, -10 * UM, 3.5 * UM]])
    assert cyl.chord(above, across)[0] == 0.0


def test_support_bounds_the_solid():
    rng = np.random.default_rng(3)
    rot = _rotation_with_axis(np.array([0.2, 0.1, 1.0]), 1.1)
    ell = Ellipsoid(np.zeros(3), np.array([3, 2, 1]) * UM, rot, 1.0, 0.0)
    cyl = Cylinder(np.zeros(3), np.array([1.0, 2.0, 0.5]), 1 * UM, 3 * UM, 1.0, 0.0)
    pts = rng.uniform(-5 * UM, 5 * UM, size=(20000, 3))
    for solid in (ell, cyl):
        inside = pts[solid.contains(pts)]
        for e in np.eye(3):
            reach = np.abs(inside @ e).max()
            assert reach <= solid.support(e) + 1e-15
            assert reach > 0.9 * solid.support(e)


def test_bad_solids_are_rejected():
    with pytest.raises(ValueError, match="semi_axes"):
        Ellipsoid(np.zeros(3), np.array([1.0, 0.0, 1.0]), np.eye(3), 1.0, 0.0)
    with pytest.raises(ValueError, match="rotation"):
        Ellipsoid(np.zeros(3), np.ones(3), 2 * np.eye(3), 1.0, 0.0)
    with pytest.raises(ValueError, match="radius"):
        Cylinder(np.zeros(3), np.array([0, 0, 1.0]), 0.0, 1.0, 1.0, 0.0)
