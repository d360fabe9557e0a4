"""PV-name contract: defaults, prefixes, TOML [pvs] profiles, errors naming the entry."""

from __future__ import annotations

from pathlib import Path

import pytest

from contracts.pvnames import SIM_PVNAMES, PVNameError, PVNames, load_pvnames


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
    path.write_text('base = "tiny"\n[pvs]\nprefix = ""\nbeam = "SR:DCCT:"\n')
    pvs = load_pvnames(path)
    assert pvs.full("beam", "Current") == "SR:DCCT:Current"
    assert pvs.g2 == PVNames().g2


def test_profile_without_pvs_gives_defaults(tmp_path: Path) -> None:
    path = tmp_path / "p.toml"
    path.write_text('base = "tiny"\n')
    assert load_pvnames(path) == SIM_PVNAMES


def test_profile_errors_name_the_key(tmp_path: Path) -> None:
    path = tmp_path / "p.toml"
    path.write_text("[pvs]\nshuter = 'S:'\n")
    with pytest.raises(PVNameError, match="shuter"):
        load_pvnames(path)
    with pytest.raises(PVNameError, match=r"missing\.toml"):
        load_pvnames(tmp_path / "missing.toml")
