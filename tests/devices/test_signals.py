"""``SettingSignal`` against the simulated IOC: a set to the held value costs no put."""

from __future__ import annotations

import time

import epics
import pytest

from devices.signals import SettingSignal
from tests.conftest import IocHandle


def _stamp(pvname: str) -> float:
    pv = epics.PV(pvname, form="time", auto_monitor=False)
    try:
        assert pv.wait_for_connection(timeout=5.0)
        assert pv.get(timeout=5.0) is not None
        return float(pv.timestamp)
    finally:
        pv.disconnect()


@pytest.mark.parametrize(
    ("suffix", "first", "second"), [("AngleIndex", 7, 8), ("ScanUid", "a", "b")]
)
def test_a_set_to_the_held_value_puts_nothing(
    sim_ioc: IocHandle, suffix: str, first: object, second: object
) -> None:
    pvname = sim_ioc.pv("tags", suffix)
    signal = SettingSignal(pvname, name="tag", string=isinstance(first, str))
    signal.wait_for_connection(timeout=10.0)
    signal.set(first).wait(timeout=5.0)
    before = _stamp(pvname)
    time.sleep(0.01)  # a put now would carry a later timestamp
    status = signal.set(first)
    assert status.done
    assert status.success
    assert _stamp(pvname) == before  # the record was not processed again
    signal.set(second).wait(timeout=5.0)
    assert signal.get() == second
    assert epics.caget(pvname, as_string=isinstance(first, str), use_monitor=False) == second
    assert _stamp(pvname) > before
