"""PV-name contract: defaults, prefixes, a profile's [instrument.pvs], errors naming the entry."""

from __future__ import annotations

from pathlib import Path

import pytest

from contracts.profile import ConfigError, load_profile
from contracts.pvnames import SIM_PVNAMES, PVNameError, PVNames


def test_default_names() -> None:
    records = SIM_PVNAMES.motor_records()
    assert records == {
        "g0_x": "TALBOT:G0:X",
        "g0_z": "TALBOT:G0:Z",
        "g2_x": "TALBOT:G2:X",
        "g2_roll": "TALBOT:G2:ROLL",
        "g2_z": "TALBOT:G2:Z",
        "rotation": "TALBOT:ROT",
        "sample_x": "TALBOT:SMP:X",
    }
    assert SIM_PVNAMES.full("beam", "Current") == "TALBOT:BEAM:Current"


def test_with_prefix() -> None:
    pvs = SIM_PVNAMES.with_prefix("T9:")
    assert pvs.full("shutter", "Open") == "T9:SHTR:Open"
    assert SIM_PVNAMES.prefix == "TALBOT:"
    with pytest.raises(PVNameError, match="prefix"):
        SIM_PVNAMES.with_prefix("bad prefix ")


def test_unknown_entry_named() -> None:
    with pytest.raises(PVNameError, match="entry"):
        SIM_PVNAMES.full("detector2")


def test_load_profile(tmp_path: Path) -> None:
    path = tmp_path / "p.toml"
    path.write_text('base = "tiny"\n[instrument.pvs]\nprefix = ""\nbeam = "SR:DCCT:"\n')
    pvs = load_profile(path).instrument.pvs
    assert pvs.full("beam", "Current") == "SR:DCCT:Current"
    assert pvs.g2 == PVNames().g2


def test_profile_without_pvs_gives_defaults(tmp_path: Path) -> None:
    path = tmp_path / "p.toml"
    path.write_text('base = "tiny"\n')
    assert load_profile(path).instrument.pvs == SIM_PVNAMES


def test_profile_errors_name_the_key(tmp_path: Path) -> None:
    path = tmp_path / "p.toml"
    path.write_text("base = 'tiny'\n[instrument.pvs]\nshuter = 'S:'\n")
    with pytest.raises(ConfigError, match=r"instrument\.pvs\.shuter"):
        load_profile(path)
    path.write_text("base = 'tiny'\n[instrument.pvs]\nshutter = 'S :'\n")
    with pytest.raises(ConfigError, match=r"instrument\.pvs\.shutter"):
        load_profile(path)
