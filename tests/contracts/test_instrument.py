"""The instrument model: geometry in physical units, impossible values against unusual ones."""

from __future__ import annotations

import math
from typing import Any

import pytest

from contracts.instrument import Geometry, GeometryWarning, Instrument
from contracts.profile import builtin_profile
from contracts.units import wavelength_m


def _geometry(**override: Any) -> Geometry:
    base = builtin_profile("tiny").instrument.geometry.model_dump()
    base.update(override)
    return Geometry.model_validate(base)


def test_wavelength_at_12p4_kev_is_one_angstrom() -> None:
    assert wavelength_m(12.398419843320026) == pytest.approx(1.0e-10, rel=1e-12)


def test_tiny_is_a_pi_grating_at_the_third_distance_behind_a_3x_objective() -> None:
    g = builtin_profile("tiny").instrument.geometry
    # pi grating, p1 = 2 um: D3 = 3 p1^2 / (8 lambda) = 15 mm, xi = lambda D3 / (p2 M) = 0.5 um.
    assert g.distance_m == pytest.approx(3 * 2e-6**2 / (8 * g.wavelength_m))
    assert g.distance_m == pytest.approx(15.0e-3, rel=1e-3)
    assert g.shear_m == pytest.approx(0.5e-6, rel=1e-9)
    assert g.shear_px == pytest.approx(1.0, rel=1e-9)
    assert g.pixel_at_g2_m == pytest.approx(1.5e-6)  # 1.5 G2 periods: realisable


def test_full_profile_object_shear_is_0p1_um_and_its_pixel_one_period() -> None:
    g = builtin_profile("full").instrument.geometry
    assert g.shear_m == pytest.approx(0.1e-6, rel=1e-9)
    assert g.distance_m == pytest.approx(0.080, rel=1e-3)
    assert g.pixel_at_g2_m == pytest.approx(g.g2_pitch_m)


@pytest.mark.parametrize(
    ("override", "name"),
    [
        ({"g2_pitch_m": 1.3e-6}, "g2_pitch_m"),
        ({"talbot_order": 2}, "talbot_order"),
        ({"energy_kev": 0.0}, "energy_kev"),
        ({"pixel_size_m": -1e-6}, "pixel_size_m"),
        ({"distance_m": -1.0}, "distance_m"),
        ({"g1_phase_deg": 120.0}, "g1_phase_deg"),
        ({"magnification": math.nan}, "magnification"),
    ],
)
def test_impossible_geometry_names_the_parameter(override: dict[str, Any], name: str) -> None:
    with pytest.raises(ValueError, match=name):
        _geometry(**override)


def test_a_pixel_finer_than_a_g2_period_in_the_g2_plane_is_impossible() -> None:
    # 0.5 um at magnification 1 is half a period of the 1 um G2 (the former tiny preset).
    with pytest.raises(ValueError, match=r"pixel_size_m.*smaller than one G2 period"):
        _geometry(magnification=1.0, talbot_order=1, distance_m=None)
    # magnification 2: exactly one period, which works
    assert _geometry(magnification=2.0).pixel_at_g2_m == pytest.approx(1e-6)


def test_a_distance_10_percent_off_the_talbot_distance_warns_but_is_accepted() -> None:
    d = builtin_profile("tiny").instrument.geometry.distance_m
    with pytest.warns(GeometryWarning, match=r"distance_m=.*\+10% from the fractional Talbot"):
        g = _geometry(distance_m=1.1 * d)
    # the reconstruction uses the shear lambda d / p2 of the distance as it is
    assert g.shear_m == pytest.approx(1.1 * 0.5e-6, rel=1e-9)


def test_a_distance_left_out_is_the_fractional_talbot_distance() -> None:
    g = _geometry(distance_m=None, talbot_order=1)
    assert g.distance_m == pytest.approx(g.design_distance_m)


def test_cone_beam_scales_distance_and_pitch() -> None:
    g = builtin_profile("tiny").instrument.geometry
    src = 1.0
    dn = g.design_distance_m
    d = src * dn / (src - dn)
    p2 = g.g1_pitch_m / 2 * (src + d) / src
    cone = _geometry(source_distance_m=src, distance_m=d, g2_pitch_m=p2)
    assert cone.cone_magnification == pytest.approx((src + d) / src)
    with pytest.raises(ValueError, match="g2_pitch_m"):
        _geometry(source_distance_m=src, distance_m=d, g2_pitch_m=g.g1_pitch_m / 2 * 1.2)


def test_talbot_lau_source_grating_pitch_is_checked() -> None:
    g = builtin_profile("tiny").instrument.geometry
    src = 1.0
    d = src * g.design_distance_m / (src - g.design_distance_m)
    p2 = g.g1_pitch_m / 2 * (src + d) / src
    ok = _geometry(source_distance_m=src, distance_m=d, g2_pitch_m=p2, g0_pitch_m=p2 * src / d)
    assert ok.g0_pitch_m == pytest.approx(p2 * src / d)
    with pytest.raises(ValueError, match="g0_pitch_m"):
        _geometry(source_distance_m=src, distance_m=d, g2_pitch_m=p2, g0_pitch_m=p2)


def test_shear_formula_matches_fractional_distance_identity() -> None:
    # xi = lambda D_n / p2 = n p1 / (2 nu), independent of the energy.
    for energy in (9.0, 12.4, 20.0):
        lam = wavelength_m(energy)
        p1 = 4e-6
        g = Geometry(
            energy_kev=energy,
            g1_pitch_m=p1,
            g1_phase_deg=90.0,
            g2_pitch_m=p1,
            distance_m=p1**2 / (2 * lam),
            talbot_order=1,
            pixel_size_m=4e-6,
        )
        assert g.shear_m == pytest.approx(p1 / 2)
        assert g.wavenumber_per_m == pytest.approx(2 * math.pi / lam)


def test_instrument_refuses_unknown_fields_and_a_tiny_detector() -> None:
    data = builtin_profile("tiny").instrument.model_dump()
    with pytest.raises(ValueError, match="phantom"):
        Instrument.model_validate({**data, "phantom": {}})
    with pytest.raises(ValueError, match="shape"):
        Instrument.model_validate({**data, "detector": {"shape": (4, 4)}})
