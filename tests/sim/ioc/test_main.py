"""``python -m sim.ioc``: PV listing, profiles, loopback start-up and clean SIGTERM shutdown."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from contracts.pvnames import MOTOR_RECORDS, SIM_PVNAMES
from sim.ioc.__main__ import main
from sim.ioc.launch import free_port, start_ioc, stop_ioc
from sim.ioc.server import build_beamline, server_environment


def test_list_pvs_names_every_served_pv(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--list-pvs", "--prefix", "X1:"]) == 0
    listed = {line.split("\t")[0] for line in capsys.readouterr().out.splitlines()}
    beamline = build_beamline(pvs=SIM_PVNAMES.with_prefix("X1:"))
    assert set(beamline.pvdb) <= listed  # every record, plus the motor fields with behaviour
    for name in ("X1:G2:X.RBV", "X1:ROT.DMOV", "X1:BEAM:Current", "X1:FAULT:PiezoStall"):
        assert name in listed
    assert len(beamline.motors) == len(MOTOR_RECORDS)


def test_profile_pvs_table(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    profile = tmp_path / "bl.toml"
    profile.write_text(
        'base = "tiny"\n[instrument.pvs]\nprefix = "BL20:"\nrotation = "SMP:THETA"\n'
    )
    assert main(["--list-pvs", "--profile", str(profile)]) == 0
    out = capsys.readouterr().out
    assert "BL20:SMP:THETA.RBV" in out
    assert "BL20:G0:X\t" in out


def test_bad_profile_is_an_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    profile = tmp_path / "bad.toml"
    profile.write_text('base = "tiny"\n[instrument.pvs]\nrotaton = "ROT"\n')
    assert main(["--list-pvs", "--profile", str(profile)]) == 2
    assert "instrument.pvs.rotaton" in capsys.readouterr().err


def test_old_profile_layout_names_the_new_table(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    profile = tmp_path / "old.toml"
    profile.write_text('base = "tiny"\n[pvs]\nrotation = "ROT"\n')
    assert main(["--list-pvs", "--profile", str(profile)]) == 2
    err = capsys.readouterr().err
    assert "[pvs]" in err
    assert "[instrument.pvs]" in err


def test_a_profile_without_a_simulation_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    profile = tmp_path / "beamline.toml"
    text = (Path(__file__).parents[3] / "contracts/profiles/tiny.toml").read_text()
    profile.write_text(text.split("[simulation.phantom]")[0])
    assert main(["--list-pvs", "--profile", str(profile)]) == 2
    assert "[simulation]" in capsys.readouterr().err


def test_duplicate_names_refused() -> None:
    pvs = SIM_PVNAMES.model_copy(update={"g0": "G:", "g2": "G:"})
    with pytest.raises(ValueError, match="served twice"):
        _ = build_beamline(pvs=pvs).pvdb


def test_server_environment_is_loopback() -> None:
    env = server_environment("127.0.0.1", 5077)
    assert env["EPICS_CA_SERVER_PORT"] == "5077"
    assert env["EPICS_CAS_INTF_ADDR_LIST"] == "127.0.0.1"
    with pytest.raises(ValueError, match="port"):
        server_environment("127.0.0.1", 0)


def test_sigterm_shuts_down_cleanly(tmp_path: Path) -> None:
    port = free_port()
    log = tmp_path / "ioc.log"
    process = start_ioc("SIGT:", port, log)
    try:
        deadline = time.monotonic() + 30.0
        while "ready:" not in log.read_text() and time.monotonic() < deadline:
            assert process.poll() is None, log.read_text()
            time.sleep(0.05)  # polling the log for readiness, not waiting for state
        assert f"on port {port}" in log.read_text()
    finally:
        code = stop_ioc(process)
    text = log.read_text()
    assert code == 0, text
    assert "Traceback" not in text, text


def test_free_port_is_outside_the_ephemeral_range_and_never_repeats() -> None:
    from sim.ioc.launch import _ephemeral_low

    ports = [free_port() for _ in range(50)]
    assert len(set(ports)) == len(ports)
    assert all(1024 < port < max(_ephemeral_low(), 21000) for port in ports)


def test_a_second_server_on_a_port_in_use_exits_2_naming_the_port(tmp_path: Path) -> None:
    import subprocess
    import sys

    port = free_port()
    first = start_ioc("PORTA:", port, tmp_path / "a.log")
    try:
        deadline = time.monotonic() + 120
        while "ready:" not in (tmp_path / "a.log").read_text() and time.monotonic() < deadline:
            time.sleep(0.1)
        second = subprocess.run(
            [sys.executable, "-m", "sim.ioc", "--port", str(port), "--prefix", "PORTB:"],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
    finally:
        assert stop_ioc(first) == 0
    assert second.returncode == 2
    assert f"port {port} on 127.0.0.1 is in use" in second.stderr
    assert "ready:" not in second.stdout
