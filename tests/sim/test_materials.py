"""Materials against docs/physics.md (12.4 keV)."""

import math

import pytest

from contracts.profile import builtin_profile
from sim.materials import WATER, Material, bone_materials, from_formula, mix


@pytest.fixture(scope="module")
def bone():
    return bone_materials(builtin_profile("tiny").simulated().phantom, 12.4)


def test_bone_matrix_matches_reference_table(bone):
    assert bone.matrix.delta == pytest.approx(2.831e-6, rel=0.02)
    # physics.md used Henke f2 (photoabsorption); xraydb uses Chantler: a few % lower.
    assert bone.matrix.beta == pytest.approx(2.78e-8, rel=0.05)


def test_components_match_reference_table(bone):
    assert bone.water.delta == pytest.approx(1.502e-6, rel=0.01)
    assert bone.hydroxyapatite.delta == pytest.approx(4.290e-6, rel=0.01)
    assert bone.collagen.delta == pytest.approx(1.941e-6, rel=0.01)
    assert bone.soft_tissue.delta == pytest.approx(1.578e-6, rel=0.01)
    assert 0 < bone.air.delta < 2e-9


def test_halo_loses_a_quarter_of_the_mineral(bone):
    assert bone.halo.delta == pytest.approx(2.538e-6, rel=0.02)
    expected = bone.matrix.delta - 0.25 * 0.42 * (bone.hydroxyapatite.delta - bone.water.delta)
    assert bone.halo.delta == pytest.approx(expected, rel=1e-12)


def test_mu_is_4_pi_beta_over_lambda():
    water = from_formula(*WATER, 12.4)
    lam = 12.398419843320026e-10 / 12.4
    assert water.mu_per_m(lam) == pytest.approx(4 * math.pi * water.beta / lam)
    # attenuation length of water at 12.4 keV is about 3.6 mm (photoabsorption + scatter ~ 2.6 mm)
    assert 1e-3 < 1 / water.mu_per_m(lam) < 6e-3


def test_mix_checks_fractions():
    m = Material(1.0, 2.0)
    with pytest.raises(ValueError, match="sum to 1"):
        mix([(m, 0.5)])
    with pytest.raises(ValueError, match=">= 0"):
        mix([(m, 1.5), (m, -0.5)])
    with pytest.raises(ValueError, match="wavelength_m"):
        m.mu_per_m(0.0)
    with pytest.raises(ValueError, match="density_g_cc"):
        from_formula("H2O", -1.0, 12.4)
