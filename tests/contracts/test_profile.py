"""TOML profiles: built-ins, overrides of a base, old layout and bad values named."""

from __future__ import annotations

from pathlib import Path

import pytest

from contracts.profile import (
    BUILTIN,
    ConfigError,
    builtin_profile,
    load_profile,
    resolve_profile,
)


def test_builtin_profiles_have_an_instrument_a_plan_and_a_simulation() -> None:
    for name in BUILTIN:
        p = builtin_profile(name)
        assert p.name == name
        assert p.scan_plan().steps == 5
        assert p.simulated().phantom.rod_diameter_m > 0
    assert builtin_profile("tiny").instrument.detector.shape == (32, 96)


def test_a_profile_overrides_its_base_table_by_table(tmp_path: Path) -> None:
    path = tmp_path / "p.toml"
    path.write_text('base = "tiny"\n[plan]\nangles = 30\nreference_every = 10\n')
    p = load_profile(path)
    assert (p.scan_plan().angles, p.scan_plan().steps) == (30, 5)
    assert p.instrument == builtin_profile("tiny").instrument


def test_a_beamline_profile_needs_no_simulation(tmp_path: Path) -> None:
    path = tmp_path / "bl.toml"
    path.write_text(
        '[instrument]\nname = "bl20xu"\n[instrument.geometry]\nenergy_kev = 20.0\n'
        "g1_pitch_m = 4e-6\ng1_phase_deg = 90.0\ng2_pitch_m = 4e-6\ntalbot_order = 1\n"
        "pixel_size_m = 6.5e-6\n[instrument.detector]\nshape = [2048, 2048]\n"
        '[instrument.pvs]\nprefix = "BL20XU:"\n'
    )
    p = resolve_profile(path)
    assert p.instrument.pvs.full("rotation") == "BL20XU:ROT"
    assert p.plan is None
    assert p.simulation is None
    with pytest.raises(ConfigError, match=r"no \[simulation\]"):
        p.simulated()
    with pytest.raises(ConfigError, match=r"no \[plan\]"):
        p.scan_plan()


@pytest.mark.parametrize(
    ("text", "name"),
    [
        ('base = "tiny"\n[instrument.geometry]\ndistance_m = -0.5\n', "instrument.geometry"),
        ('base = "tiny"\n[instrument.detector]\nshapee = [1, 2]\n', "shapee"),
        ('base = "tiny"\n[plan]\nsteps = 2\n', "plan.steps"),
        (
            'base = "tiny"\n[simulation.fringes]\nvisibility = 1.5\n',
            "simulation.fringes.visibility",
        ),
        ('base = "huge"\n', "huge"),
        ("[plan\n", "p.toml"),
    ],
)
def test_a_bad_profile_names_the_field(tmp_path: Path, text: str, name: str) -> None:
    path = tmp_path / "p.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=name):
        load_profile(path)


@pytest.mark.parametrize("table", ["geometry", "schedule", "phantom", "pvs", "interferometer"])
def test_the_old_layout_is_refused_naming_the_new_table(tmp_path: Path, table: str) -> None:
    path = tmp_path / "old.toml"
    path.write_text(f'base = "tiny"\n[{table}]\n')
    with pytest.raises(ConfigError, match=rf"\[{table}\] is from the old profile layout"):
        load_profile(path)


def test_unknown_profile_names_and_missing_files_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="one of"):
        resolve_profile("huge")
    with pytest.raises(ConfigError, match=r"missing\.toml"):
        resolve_profile(tmp_path / "missing.toml")
