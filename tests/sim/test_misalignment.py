"""G2 roll and G1-G2 distance in the fringe model, against closed forms and the Fresnel oracle."""

from __future__ import annotations

import math

import numpy as np
import pytest

from contracts.profile import builtin_profile
from recon.alignment import fringe_frequency
from sim.fresnel import fresnel_stepping
from sim.misalignment import (
    plane_wave_distance_m,
    roll_moire_frequency,
    roll_moire_phase,
    talbot_visibility_factor,
)
from sim.scan import FrameRenderer, FrameState
from tests.profiles import with_simulation
from tests.sim.test_fresnel import harmonic, oracle_kwargs


def test_pi_half_grating_follows_the_closed_form() -> None:
    # pi/2 grating: |I_1(z)| = (2/pi) |sin(pi lambda z / p1^2)|, peak at D1 = p1^2 / (2 lambda)
    g = builtin_profile("full").instrument.geometry
    assert g.g1_phase_deg == 90.0

    def closed(z: float) -> float:
        return abs(math.sin(math.pi * g.wavelength_m * z / g.g1_pitch_m**2))

    for scale in (0.3, 0.7, 1.0, 1.2, 1.9):
        z = scale * g.distance_m
        expected = closed(z) / closed(g.distance_m)
        assert talbot_visibility_factor(g, z) == pytest.approx(expected, abs=2e-4)


@pytest.mark.parametrize("name", ["tiny", "full"])
def test_visibility_versus_distance_matches_the_fresnel_oracle(name: str) -> None:
    g = builtin_profile(name).instrument.geometry

    def oracle_visibility(z: float) -> float:
        kw = oracle_kwargs(g, distance_m=z, periods=8, steps=8)
        i = fresnel_stepping(**kw, g2_profile="sinusoidal").intensity[:, 0]
        return float(2 * abs(harmonic(i)) / i.sum())

    at_design = oracle_visibility(g.distance_m)
    for scale in (0.6, 0.85, 1.25, 1.6):
        z = scale * g.distance_m
        assert talbot_visibility_factor(g, z) == pytest.approx(
            oracle_visibility(z) / at_design, abs=0.01
        )
    assert talbot_visibility_factor(g, g.distance_m) == pytest.approx(1.0)


def test_cone_beam_distance_scales_to_the_plane_wave_distance() -> None:
    g = builtin_profile("tiny").instrument.geometry
    assert plane_wave_distance_m(g, 0.004) == 0.004  # plane wave
    l_m = 1.0
    cone = g.model_copy(update={"source_distance_m": l_m})
    assert plane_wave_distance_m(cone, 0.004) == pytest.approx(l_m * 0.004 / (l_m + 0.004))
    with pytest.raises(ValueError, match="distance_m"):
        plane_wave_distance_m(g, 0.0)


def test_roll_gives_moire_along_the_rows_with_the_predicted_frequency() -> None:
    # a sinusoidal curve: with 4 steps the gratings' 3rd harmonic folds onto the first
    p = with_simulation(builtin_profile("tiny"), fringes={"curve": "sinusoidal"})
    g = p.instrument.geometry
    # 10 mrad: f_y = 0.01 * 1.5 um / 1 um = 1.5e-2 cycles/px (the pixel in the G2 plane)
    assert roll_moire_frequency(g, 0.01) == pytest.approx(0.01 * 1.5e-6 / g.g2_pitch_m)
    phase, loss = roll_moire_phase(g, 0.01, p.instrument.detector.shape)
    assert phase.shape == (p.instrument.detector.shape[0], 1)
    assert loss == pytest.approx(np.sinc(1.5e-2))
    renderer = FrameRenderer(p.instrument, p.simulated(), seed=1)
    steps = 4
    positions = [k * g.g2_pitch_m / steps for k in range(steps)]

    def c1(roll_rad: float) -> np.ndarray:
        frames = np.stack(
            [
                renderer.expected(FrameState(0.0, x, sample_in=False, g2_roll_rad=roll_rad))
                for x in positions
            ]
        )
        k = np.arange(steps)[:, None, None]
        return np.sum(frames * np.exp(-2j * math.pi * k / steps), axis=0)

    flat_y, flat_x = fringe_frequency(c1(0.0))
    for roll in (-0.02, 0.01):
        f_y, f_x = fringe_frequency(c1(roll))
        assert f_y - flat_y == pytest.approx(roll_moire_frequency(g, roll), abs=1e-6)
        assert f_x == pytest.approx(flat_x, abs=1e-9)


def test_distance_lowers_the_rendered_visibility_by_the_factor() -> None:
    # a sinusoidal curve: the first harmonic of 5 steps then is the visibility, no folding
    p = with_simulation(builtin_profile("tiny"), fringes={"curve": "sinusoidal"})
    g = p.instrument.geometry
    renderer = FrameRenderer(p.instrument, p.simulated(), seed=1)
    steps = 5

    def visibility(distance_m: float | None) -> np.ndarray:
        frames = np.stack(
            [
                renderer.expected(
                    FrameState(0.0, k * g.g2_pitch_m / steps, sample_in=False,
                               g2_distance_m=distance_m)
                )
                for k in range(steps)
            ]
        )  # fmt: skip
        k = np.arange(steps)[:, None, None]
        c = np.sum(frames * np.exp(-2j * math.pi * k / steps), axis=0)
        return 2 * np.abs(c) / frames.sum(axis=0)

    design = visibility(None)
    np.testing.assert_allclose(visibility(g.distance_m), design, rtol=1e-9)
    z = 0.7 * g.distance_m
    np.testing.assert_allclose(visibility(z), design * talbot_visibility_factor(g, z), rtol=1e-9)
