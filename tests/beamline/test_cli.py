"""The `talbot` command hands `sim` over to the simulated beamline server's own options."""

from __future__ import annotations

import pytest

from beamline.cli import main


def test_talbot_sim_lists_the_served_pvs(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["sim", "--list-pvs", "--prefix", "XY:"]) == 0
    out = capsys.readouterr().out
    names = [line.split("\t")[0] for line in out.splitlines()]
    assert "XY:G2:X.RBV" in names
    assert "XY:ROT.DMOV" in names
    assert all(name.startswith("XY:") for name in names)


def test_talbot_help_lists_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for command in ("demo", "sim"):
        assert command in out


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--steps", "2"], "steps must be >= 3"),
        (["--angles", "10", "--reference-every", "20"], "reference_every=20"),
        (["--exposure", "-1"], "exposure_s"),
        (["--grating", "g0"], "g0_pitch_m"),
        (["--profile", "missing.toml"], "missing.toml"),
    ],
)
def test_a_bad_scan_argument_exits_2_before_anything_connects(
    args: list[str], needle: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # no simulated beamline is asked: the plan and the profile are checked first
    assert main(["scan", "ct", *args]) == 2
    err = capsys.readouterr().err
    assert needle in err
    assert len(err.strip().splitlines()) == 1
