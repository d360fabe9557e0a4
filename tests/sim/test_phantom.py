"""Bone phantom: exact projections, conservation, determinism and ground-truth volumes."""

import math

import numpy as np
import pytest

from contracts.profile import builtin_profile
from sim.phantom import BonePhantom, _rotation_with_axis, make_bone_phantom
from sim.primitives import Cylinder, Ellipsoid

UM = 1e-6


@pytest.fixture(scope="module")
def tiny():
    return builtin_profile("tiny")


@pytest.fixture(scope="module")
def phantom(tiny):
    rows = tiny.instrument.detector.shape[0]
    return make_bone_phantom(
        tiny.simulated().phantom,
        tiny.instrument.geometry,
        seed=7,
        fov_height_m=rows * tiny.instrument.geometry.pixel_size_m,
    )


def test_centred_rod_projection_is_angle_independent(tiny):
    rod_only = make_bone_phantom(
        tiny.simulated().phantom.model_copy(update={"lacunae": 0}), tiny.instrument.geometry, 0
    )
    radius = tiny.simulated().phantom.rod_diameter_m / 2
    s = np.linspace(-30 * UM, 30 * UM, 241)
    v = np.array([-5 * UM, 0.0, 7 * UM])
    expected = 2 * rod_only.rod.d_delta * np.sqrt(np.maximum(radius**2 - s**2, 0.0))
    for theta in (0.0, 0.4, math.pi / 2, 2.9):
        d, b, e = rod_only.line_integrals(theta, s, v)
        assert d.shape == (3, 241)
        np.testing.assert_allclose(
            d, np.broadcast_to(expected, d.shape), rtol=1e-12, atol=1e-7 * expected.max()
        )
        assert np.all(e == 0)
        assert b.max() == pytest.approx(2 * rod_only.rod.d_beta * radius, rel=1e-12)


def test_projected_mass_equals_volume_integral(phantom):
    """Sum over the detector of the delta line integral = analytic integral of delta dV."""
    rot = _rotation_with_axis(np.array([0.3, 0.2, 1.0]), 0.4)
    ell = Ellipsoid(np.array([1.0, -0.5, 0.3]) * UM, np.array([3.0, 1.5, 1.0]) * UM, rot, 2e-6, 0)
    cyl = Cylinder(
        np.array([-1.0, 1.0, 0.0]) * UM, np.array([1.0, -0.5, 0.4]), 0.4 * UM, 2 * UM, -1e-6, 0.0
    )
    custom = BonePhantom(cyl, (ell,), (), (), None, phantom.materials, phantom.wavelength_m)
    volume_integral = (
        2e-6 * 4 / 3 * math.pi * 3 * 1.5 * 1 * UM**3 - 1e-6 * math.pi * 0.16 * 4 * UM**3
    )
    step = 0.02 * UM
    s = np.arange(-6 * UM, 6 * UM, step) + step / 2
    v = np.arange(-4 * UM, 4 * UM, step) + step / 2
    for theta in (0.0, 0.7, 1.9, 3.0):
        d, _, _ = custom.line_integrals(theta, s, v)
        assert d.sum() * step * step == pytest.approx(volume_integral, rel=2e-3)


def test_phantom_is_deterministic_in_seed(tiny, phantom):
    rows = tiny.instrument.detector.shape[0]
    again = make_bone_phantom(
        tiny.simulated().phantom, tiny.instrument.geometry, seed=7, fov_height_m=rows * 0.5e-6
    )
    other = make_bone_phantom(
        tiny.simulated().phantom, tiny.instrument.geometry, seed=8, fov_height_m=rows * 0.5e-6
    )
    assert len(again.primitives) == len(phantom.primitives)
    for a, b in zip(again.primitives, phantom.primitives, strict=True):
        np.testing.assert_array_equal(a.centre, b.centre)
        assert (a.d_delta, a.d_beta, a.d_eps) == (b.d_delta, b.d_beta, b.d_eps)
    assert not np.array_equal(other.lacunae[0].centre, phantom.lacunae[0].centre)


def test_phantom_layout_follows_the_preset(tiny, phantom):
    radius = tiny.simulated().phantom.rod_diameter_m / 2
    lo, hi = tiny.simulated().phantom.canaliculi_per_lacuna
    assert len(phantom.lacunae) == tiny.simulated().phantom.lacunae
    assert lo - 2 <= len(phantom.canaliculi) <= hi
    assert len(phantom.halos) == len(phantom.canaliculi)
    lacuna = phantom.lacunae[0]
    long_axis = lacuna.rotation[:, 0]
    assert abs(long_axis[2]) >= math.cos(math.radians(15)) - 1e-12
    assert abs(lacuna.centre[2]) <= 8 * UM
    for (start, end), canal, halo in zip(
        phantom.canaliculus_axes, phantom.canaliculi, phantom.halos, strict=True
    ):
        q = ((start - lacuna.centre) @ lacuna.rotation) / lacuna.semi_axes
        assert np.linalg.norm(q) == pytest.approx(1.0, abs=1e-9)  # starts on the lacuna surface
        assert np.hypot(end[0], end[1]) + halo.radius < radius  # stays inside the rod
        assert abs(canal.axis @ long_axis) < math.sin(math.radians(21))
        assert canal.radius == pytest.approx(0.15 * UM)
        assert halo.radius == pytest.approx(1.5 * UM)
        assert canal.d_eps == tiny.simulated().phantom.canaliculus_darkfield_per_m


def test_voxelized_rois_hold_the_material_values(tiny, phantom):
    rows, cols = tiny.instrument.detector.shape
    vol = phantom.voxelize((rows, cols, cols), tiny.instrument.geometry.pixel_size_m)
    masks = phantom.region_masks((rows, cols, cols), tiny.instrument.geometry.pixel_size_m)
    mats = phantom.materials
    assert vol["delta"].dtype == np.float32
    assert vol["delta"].shape == (rows, cols, cols)
    assert masks["matrix"].sum() > 50_000
    assert masks["halo"].sum() > 100
    assert masks["lacuna"].sum() > 100
    rel = mats.matrix - mats.air
    np.testing.assert_allclose(vol["delta"][masks["matrix"]], rel.delta, rtol=1e-6)
    np.testing.assert_allclose(
        vol["mu"][masks["matrix"]], 4 * math.pi * rel.beta / phantom.wavelength_m, rtol=1e-6
    )
    np.testing.assert_allclose(vol["delta"][masks["halo"]], (mats.halo - mats.air).delta, rtol=1e-5)
    np.testing.assert_allclose(
        vol["delta"][masks["lacuna"]], (mats.water - mats.air).delta, rtol=1e-5
    )
    assert vol["darkfield"].max() > 0
    assert vol["delta"][0, 0, 0] == 0.0  # air corner


def test_voxelized_volume_reproduces_the_projection(tiny, phantom):
    """Summing the ground-truth volume along y equals the exact projection at theta = 0."""
    rows, cols = tiny.instrument.detector.shape
    px = tiny.instrument.geometry.pixel_size_m
    vol = phantom.voxelize((rows, cols, cols), px, supersample=4)
    s = (np.arange(cols) - (cols - 1) / 2) * px
    v = (np.arange(rows) - (rows - 1) / 2) * px
    d, _, _ = phantom.line_integrals(0.0, s, v)
    projected = vol["delta"].sum(axis=1) * px
    assert projected.sum() == pytest.approx(d.sum(), rel=2e-3)


def test_bad_arguments_name_the_parameter(phantom):
    with pytest.raises(ValueError, match="ascending"):
        phantom.line_integrals(0.0, np.array([1.0, 0.0]), np.zeros(1))
    with pytest.raises(ValueError, match="shape_zyx"):
        phantom.voxelize((4, 4), 1e-6)
    with pytest.raises(ValueError, match="voxel_m"):
        phantom.voxelize((4, 4, 4), 0.0)
