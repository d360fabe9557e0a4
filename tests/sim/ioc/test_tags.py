"""Scan-tag, operator-status and detector fault PVs: written and read back by a client."""

from __future__ import annotations

import uuid

import epics
import pytest

from contracts.frames import ImageKey
from tests.conftest import IocHandle
from tests.sim.ioc.test_motor import get


def test_frame_type_enum_matches_image_key(sim_ioc: IocHandle) -> None:
    pv = epics.PV(sim_ioc.pv("tags", "FrameType"))
    assert pv.wait_for_connection(timeout=5.0)
    pv.get_ctrlvars(timeout=5.0)
    strings = pv.enum_strs
    assert strings is not None
    assert strings.index("projection") == ImageKey.PROJECTION
    assert strings.index("reference") == ImageKey.FLAT
    assert strings.index("dark") == ImageKey.DARK
    assert pv.put("dark", wait=True) == 1
    assert epics.caget(pv.pvname, use_monitor=False) == ImageKey.DARK


@pytest.mark.parametrize(
    ("suffix", "value"),
    [("AngleIndex", 17), ("SeriesIndex", 2), ("StepIndex", 4), ("Attempt", 1)],
)
def test_index_tags_round_trip(sim_ioc: IocHandle, suffix: str, value: int) -> None:
    name = sim_ioc.pv("tags", suffix)
    assert epics.caput(name, value, wait=True) == 1
    assert get(name) == value


def test_monitor_of_a_tag_is_current_when_its_put_completes(sim_ioc: IocHandle) -> None:
    """Events read the tags from monitors right after the plan's puts complete."""
    name = sim_ioc.pv("tags", "StepIndex")
    monitor = epics.PV(name, auto_monitor=True)
    writer = epics.PV(name)
    assert monitor.wait_for_connection(timeout=5.0)
    assert writer.wait_for_connection(timeout=5.0)
    monitor.get()
    seen = []
    for k in range(40):
        assert writer.put(k % 7, wait=True) == 1
        seen.append(monitor.get(use_monitor=True))
    monitor.disconnect()
    assert seen == [k % 7 for k in range(40)]


def test_scan_uid_round_trip(sim_ioc: IocHandle) -> None:
    uid = str(uuid.uuid4())
    name = sim_ioc.pv("tags", "ScanUid")
    assert epics.caput(name, uid, wait=True) == 1
    assert epics.caget(name, use_monitor=False) == uid


def test_operator_status_round_trip(sim_ioc: IocHandle) -> None:
    message = "angle 12/90: phase stepping"
    assert epics.caput(sim_ioc.pv("status", "Message"), message, wait=True) == 1
    assert epics.caget(sim_ioc.pv("status", "Message"), as_string=True) == message
    assert epics.caput(sim_ioc.pv("status", "State"), "Running", wait=True) == 1
    assert epics.caget(sim_ioc.pv("status", "State"), as_string=True) == "Running"
    for suffix, value in [("Progress", 13.3), ("ETA", 431.0), ("Angle", 24.0)]:
        assert epics.caput(sim_ioc.pv("status", suffix), value, wait=True) == 1
        assert get(sim_ioc.pv("status", suffix)) == pytest.approx(value)


def test_detector_fault_pvs(sim_ioc: IocHandle) -> None:
    for suffix, value in [
        ("DropFrames", 3),
        ("LateFrames", 2),
        ("LateFrameDelay", 0.25),
        ("SlowWriter", 0.1),
    ]:
        name = sim_ioc.pv("faults", suffix)
        assert epics.caput(name, value, wait=True) == 1
        assert get(name) == pytest.approx(value)
        assert epics.caput(name, 0, wait=True) == 1
