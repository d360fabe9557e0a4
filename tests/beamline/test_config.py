"""Geometry, schedule and profile validation in beamline.config."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from beamline.config import (
    ConfigError,
    Geometry,
    Schedule,
    load_profile,
    preset,
    wavelength_m,
)


def _geometry(**override: object) -> Geometry:
    base = preset("tiny").geometry.model_dump()
    base.update(override)
    return Geometry.model_validate(base)


def test_wavelength_at_12p4_kev_is_one_angstrom() -> None:
    assert wavelength_m(12.398419843320026) == pytest.approx(1.0e-10, rel=1e-12)


def test_tiny_preset_has_half_micron_shear_at_first_fractional_distance() -> None:
    g = preset("tiny").geometry
    # pi grating, p1 = 2 um: D1 = p1^2 / (8 lambda), xi = lambda D1 / p2 = p1 / 4.
    assert g.distance_m == pytest.approx(2e-6**2 / (8 * g.wavelength_m))
    assert g.shear_m == pytest.approx(0.5e-6, rel=1e-9)
    assert g.shear_px == pytest.approx(1.0, rel=1e-9)


def test_full_preset_object_shear_is_0p1_um() -> None:
    g = preset("full").geometry
    assert g.shear_m == pytest.approx(0.1e-6, rel=1e-9)
    assert g.distance_m == pytest.approx(0.080, rel=1e-3)


@pytest.mark.parametrize(
    ("override", "name"),
    [
        ({"g2_pitch_m": 1.3e-6}, "g2_pitch_m"),
        ({"distance_m": 7.0e-3}, "distance_m"),
        ({"talbot_order": 2}, "talbot_order"),
        ({"energy_kev": 0.0}, "energy_kev"),
        ({"pixel_size_m": -1e-6}, "pixel_size_m"),
    ],
)
def test_impossible_geometry_names_the_parameter(override: dict[str, object], name: str) -> None:
    with pytest.raises(ValueError, match=name):
        _geometry(**override)


def test_third_order_distance_is_accepted_and_triples_the_shear() -> None:
    g1 = preset("tiny").geometry
    g3 = _geometry(talbot_order=3, distance_m=3 * g1.distance_m)
    assert g3.shear_m == pytest.approx(3 * g1.shear_m)


def test_cone_beam_scales_distance_and_pitch() -> None:
    g = preset("tiny").geometry
    src = 1.0
    dn = g.design_distance_m
    d = src * dn / (src - dn)
    p2 = g.g1_pitch_m / 2 * (src + d) / src
    cone = _geometry(source_distance_m=src, distance_m=d, g2_pitch_m=p2)
    assert cone.cone_magnification == pytest.approx((src + d) / src)
    with pytest.raises(ValueError, match="g2_pitch_m"):
        _geometry(source_distance_m=src, distance_m=d, g2_pitch_m=g.g1_pitch_m / 2 * 1.2)


def test_talbot_lau_source_grating_pitch_is_checked() -> None:
    g = preset("tiny").geometry
    src = 1.0
    d = src * g.design_distance_m / (src - g.design_distance_m)
    p2 = g.g1_pitch_m / 2 * (src + d) / src
    ok = _geometry(source_distance_m=src, distance_m=d, g2_pitch_m=p2, g0_pitch_m=p2 * src / d)
    assert ok.g0_pitch_m == pytest.approx(p2 * src / d)
    with pytest.raises(ValueError, match="g0_pitch_m"):
        _geometry(source_distance_m=src, distance_m=d, g2_pitch_m=p2, g0_pitch_m=p2)


def test_schedule_rejects_reference_interval_larger_than_scan() -> None:
    with pytest.raises(ValueError, match="reference_every"):
        Schedule(steps=5, angles=10, reference_every=11)
    with pytest.raises(ValueError, match="steps"):
        Schedule(steps=2, angles=10, reference_every=5)


def test_schedule_angles_exclude_end_point() -> None:
    s = Schedule(steps=5, angles=4, reference_every=2)
    assert np.allclose(s.angles_deg(), [0, 45, 90, 135])


def test_unknown_preset_is_refused() -> None:
    with pytest.raises(ConfigError, match="preset"):
        preset("huge")


def test_profile_overrides_a_preset(tmp_path: Path) -> None:
    path = tmp_path / "p.toml"
    path.write_text('base = "tiny"\n[schedule]\nangles = 30\nreference_every = 10\n')
    p = load_profile(path)
    assert p.schedule.angles == 30
    assert p.geometry == preset("tiny").geometry


def test_profile_with_bad_value_names_it(tmp_path: Path) -> None:
    path = tmp_path / "p.toml"
    path.write_text("[geometry]\ndistance_m = 0.5\n")
    with pytest.raises(ConfigError, match="distance_m"):
        load_profile(path)


def test_profile_with_unknown_key_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "p.toml"
    path.write_text("[detector]\nshapee = [1, 2]\n")
    with pytest.raises(ConfigError, match="shapee"):
        load_profile(path)


def test_shear_formula_matches_fractional_distance_identity() -> None:
    # xi = lambda D_n / p2 = n p1 / (2 nu), independent of the energy.
    for energy in (9.0, 12.4, 20.0):
        lam = wavelength_m(energy)
        p1 = 4e-6
        g = Geometry(
            energy_kev=energy,
            g1_pitch_m=p1,
            g1_phase="pi/2",
            g2_pitch_m=p1,
            distance_m=p1**2 / (2 * lam),
            talbot_order=1,
            pixel_size_m=1e-6,
        )
        assert g.shear_m == pytest.approx(p1 / 2)
        assert g.wavenumber_per_m == pytest.approx(2 * math.pi / lam)
