"""Shutter, ring current and beam-dump fault over Channel Access."""

from __future__ import annotations

import epics
import pytest

from tests.conftest import IocHandle
from tests.sim.ioc.test_motor import get, wait_until


def test_shutter_put_completes_with_readback(sim_ioc: IocHandle) -> None:
    cmd, rbv = sim_ioc.pv("shutter", "Open"), sim_ioc.pv("shutter", "Open_RBV")
    assert epics.caput(cmd, "Open", wait=True) == 1
    assert epics.caget(rbv, as_string=True, use_monitor=False) == "Open"
    assert epics.caput(cmd, "Close", wait=True) == 1
    assert epics.caget(rbv, as_string=True, use_monitor=False) == "Closed"
    assert epics.PV(rbv).enum_strs == ("Closed", "Open")


def test_ring_current_nominal(sim_ioc: IocHandle) -> None:
    current = sim_ioc.pv("beam", "Current")
    assert get(current) == pytest.approx(200.0, abs=0.1)
    pv = epics.PV(current)
    assert pv.wait_for_connection(timeout=5.0)
    ctrl = pv.get_ctrlvars(timeout=5.0)
    assert ctrl is not None
    assert ctrl["units"] == "mA"


def test_beam_dump_drops_and_recovers(sim_ioc: IocHandle) -> None:
    current = sim_ioc.pv("beam", "Current")
    dump = sim_ioc.pv("faults", "BeamDump")
    assert epics.caput(sim_ioc.pv("faults", "BeamDumpTime"), 0.5, wait=True) == 1
    seen: list[float] = []
    pv = epics.PV(current, auto_monitor=True)
    assert pv.wait_for_connection(timeout=5.0)
    pv.add_callback(lambda value=None, **kw: seen.append(float(value)))
    try:
        assert epics.caput(dump, "Dump", wait=True) == 1
        assert wait_until(lambda: 0.0 in seen)
        assert epics.caget(dump, as_string=True, use_monitor=False) == "Dump"
        assert wait_until(lambda: seen[-1] > 150.0)
    finally:
        pv.clear_callbacks()
        pv.disconnect()
    assert wait_until(lambda: epics.caget(dump, as_string=True, use_monitor=False) == "Off")
    after = seen[seen.index(0.0) :]
    assert after[-1] == pytest.approx(200.0, abs=0.1)
