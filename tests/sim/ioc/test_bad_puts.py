"""Bad puts are rejected with an alarm and never crash the server."""

from __future__ import annotations

import ctypes

import epics

from tests.conftest import IocHandle
from tests.sim.ioc.test_motor import get


def _severity(name: str) -> int:
    data = epics.PV(name).get_with_metadata(form="ctrl", use_monitor=False, timeout=5.0)
    assert data is not None
    return int(data["severity"])


def test_out_of_range_values_rejected(sim_ioc: IocHandle) -> None:
    progress = sim_ioc.pv("status", "Progress")
    assert epics.caput(progress, 50.0, wait=True) == 1
    epics.caput(progress, 250.0, wait=True)  # limits 0..100 %
    assert get(progress) == 50.0
    assert _severity(progress) == 2
    attempt = sim_ioc.pv("tags", "Attempt")
    epics.caput(attempt, -4, wait=True)
    assert get(attempt) >= 0
    drop = sim_ioc.pv("faults", "DropFrames")
    epics.caput(drop, -1, wait=True)
    assert get(drop) == 0


def test_invalid_enum_index_rejected(sim_ioc: IocHandle) -> None:
    frame_type = sim_ioc.pv("tags", "FrameType")
    assert epics.caput(frame_type, "reference", wait=True) == 1
    epics.caput(frame_type, 7, wait=True)
    assert get(frame_type) == 1


def test_wrong_type_rejected(sim_ioc: IocHandle) -> None:
    """A string sent as DBR_STRING to a DOUBLE field is refused by the server itself."""
    g0x = sim_ioc.pvs.motor_records()["g0_x"]
    before = get(f"{g0x}.VELO")
    position = get(g0x)
    for name, text in [(f"{g0x}.VELO", b"fast"), (g0x, b"far away")]:
        chid = epics.ca.create_channel(name, connect=True)
        data = (ctypes.c_char * 40)()
        data.value = text
        assert epics.ca.libca.ca_array_put(epics.dbr.STRING, 1, chid, data) == epics.dbr.ECA_NORMAL
        epics.ca.flush_io()
    assert get(f"{g0x}.VELO") == before
    assert get(g0x) == position


def test_server_survives(sim_ioc: IocHandle) -> None:
    assert sim_ioc.process.poll() is None
    assert get(sim_ioc.pv("beam", "Current")) > 100.0
