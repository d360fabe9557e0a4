"""Motor records of the simulated IOC against stock pyepics clients (caput / PV)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator

import epics
import pytest

from sim.ioc.motor import MSTA_DONE, MSTA_MOVING
from tests.conftest import IocHandle


def wait_until(predicate: Callable[[], bool], timeout_s: float = 10.0) -> bool:
    """Poll ``predicate`` until it is true or the timeout passes (no fixed sleeps)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        epics.poll(evt=1e-3, iot=0.01)
    return predicate()


def get(pvname: str) -> float:
    value = epics.caget(pvname, use_monitor=False, timeout=5.0)
    assert value is not None, pvname
    return float(value)


@pytest.fixture
def g0x(sim_ioc: IocHandle) -> Iterator[str]:
    """The G0 x record (um, VELO 500 um/s), parked at 0 after the test."""
    name = sim_ioc.pvs.motor_records()["g0_x"]
    yield name
    epics.caput(f"{name}.STOP", 1, wait=True)
    epics.caput(f"{name}.HLM", 2000.0, wait=True)
    epics.caput(f"{name}.VELO", 500.0, wait=True)
    epics.caput(name, 0.0, wait=True, timeout=30)


class DmovRecorder:
    """Collects every DMOV monitor value of one record."""

    def __init__(self, record: str) -> None:
        self.values: list[int] = []
        self._lock = threading.Lock()
        self.pv = epics.PV(f"{record}.DMOV", auto_monitor=True)
        assert self.pv.wait_for_connection(timeout=5.0)
        self.pv.get()
        self.pv.add_callback(self._on_value)

    def _on_value(self, value: int | None = None, **kwargs: object) -> None:
        with self._lock:
            self.values.append(int(value) if value is not None else -1)

    def saw_blink(self) -> bool:
        with self._lock:
            return any(
                a == 0 and b == 1 for a, b in zip(self.values, self.values[1:], strict=False)
            )

    def close(self) -> None:
        self.pv.clear_callbacks()
        self.pv.disconnect()


def test_metadata_published(sim_ioc: IocHandle, g0x: str) -> None:
    ctrl = epics.PV(g0x).get_ctrlvars(timeout=5.0)
    assert ctrl is not None
    assert (ctrl["lower_ctrl_limit"], ctrl["upper_ctrl_limit"]) == (-2000.0, 2000.0)
    assert epics.caget(f"{g0x}.EGU", as_string=True) == "um"
    assert epics.caget(f"{g0x}.DESC", as_string=True).startswith("G0 source grating x")
    assert get(f"{g0x}.HLM") == 2000.0
    assert get(f"{g0x}.LLM") == -2000.0
    assert get(f"{g0x}.PREC") == 3
    assert get(f"{g0x}.LVIO") == 0
    assert int(get(f"{g0x}.MSTA")) & MSTA_DONE


def test_caput_wait_returns_at_end_of_move(sim_ioc: IocHandle, g0x: str) -> None:
    start = get(f"{g0x}.RBV")
    target = start + 150.0  # 150 um at 500 um/s = 0.3 s of motion
    t0 = time.monotonic()
    assert epics.caput(g0x, target, wait=True, timeout=30) == 1
    elapsed = time.monotonic() - t0
    assert get(f"{g0x}.DMOV") == 1
    assert get(f"{g0x}.MOVN") == 0
    assert get(f"{g0x}.RBV") == pytest.approx(target, abs=1e-3)
    assert elapsed >= 150.0 / 500.0 * 0.95  # completion waited for the motion


def test_rbv_updates_during_move(sim_ioc: IocHandle, g0x: str) -> None:
    seen: list[float] = []
    rbv = epics.PV(f"{g0x}.RBV", auto_monitor=True)
    assert rbv.wait_for_connection(timeout=5.0)
    rbv.add_callback(lambda value=None, **kw: seen.append(float(value)))
    try:
        assert epics.caput(g0x, 200.0, wait=True, timeout=30) == 1
        assert wait_until(lambda: bool(seen) and seen[-1] == pytest.approx(200.0))
    finally:
        rbv.clear_callbacks()
        rbv.disconnect()
    intermediate = [v for v in seen if 1.0 < v < 199.0]
    assert len(intermediate) >= 5  # 0.4 s of motion, RBV every 10 ms
    assert intermediate == sorted(intermediate)


def test_zero_length_move_blinks_dmov(sim_ioc: IocHandle, g0x: str) -> None:
    here = get(g0x)
    recorder = DmovRecorder(g0x)
    try:
        assert epics.caput(g0x, here, wait=True, timeout=10) == 1
        assert wait_until(recorder.saw_blink, timeout_s=5.0), recorder.values
    finally:
        recorder.close()
    assert get(f"{g0x}.RBV") == pytest.approx(here, abs=1e-3)


def test_out_of_limit_put_is_rejected(sim_ioc: IocHandle, g0x: str) -> None:
    here = get(f"{g0x}.RBV")
    epics.caput(g0x, 5000.0, wait=True, timeout=10)  # HLM is 2000 um
    assert get(f"{g0x}.LVIO") == 1
    assert get(f"{g0x}.RBV") == pytest.approx(here, abs=1e-3)
    assert get(f"{g0x}.DMOV") == 1
    val = epics.PV(g0x).get_with_metadata(form="ctrl", use_monitor=False, timeout=5.0)
    assert val is not None
    assert val["severity"] == 2  # MAJOR alarm on VAL after the rejected put
    assert val["value"] == pytest.approx(here, abs=1e-3)
    # the next valid move clears LVIO and the alarm
    assert epics.caput(g0x, here + 1.0, wait=True, timeout=10) == 1
    assert get(f"{g0x}.LVIO") == 0
    val = epics.PV(g0x).get_with_metadata(form="ctrl", use_monitor=False, timeout=5.0)
    assert val is not None
    assert val["severity"] == 0


def test_non_finite_put_is_rejected(sim_ioc: IocHandle, g0x: str) -> None:
    here = get(f"{g0x}.RBV")
    epics.caput(g0x, float("nan"), wait=True, timeout=10)
    assert get(f"{g0x}.LVIO") == 1
    assert get(f"{g0x}.RBV") == pytest.approx(here, abs=1e-3)


def test_changed_soft_limit_is_published(sim_ioc: IocHandle, g0x: str) -> None:
    assert epics.caput(f"{g0x}.HLM", 100.0, wait=True) == 1
    ctrl = epics.PV(g0x).get_ctrlvars(timeout=5.0)
    assert ctrl is not None
    assert ctrl["upper_ctrl_limit"] == 100.0
    epics.caput(g0x, 150.0, wait=True, timeout=10)
    assert get(f"{g0x}.LVIO") == 1


def test_stop_halts_the_move(sim_ioc: IocHandle, g0x: str) -> None:
    assert epics.caput(f"{g0x}.VELO", 100.0, wait=True) == 1
    start = get(f"{g0x}.RBV")
    target = start + 1000.0  # 10 s at 100 um/s
    done = threading.Event()
    epics.PV(g0x).put(target, callback=lambda **kw: done.set())
    assert wait_until(lambda: get(f"{g0x}.MOVN") == 1)
    assert wait_until(lambda: get(f"{g0x}.RBV") > start + 5.0)
    assert int(get(f"{g0x}.MSTA")) & MSTA_MOVING
    assert epics.caput(f"{g0x}.STOP", 1, wait=True) == 1
    assert wait_until(lambda: get(f"{g0x}.DMOV") == 1)
    assert wait_until(done.is_set)  # the pending put-completion returned
    stopped = get(f"{g0x}.RBV")
    assert start + 5.0 < stopped < target - 100.0
    assert get(g0x) == pytest.approx(stopped, abs=1e-3)  # VAL := RBV
    assert get(f"{g0x}.MOVN") == 0
    assert get(f"{g0x}.STOP") == 0


def test_hard_limit_switch(sim_ioc: IocHandle, g0x: str) -> None:
    assert epics.caput(f"{g0x}.VELO", 5000.0, wait=True) == 1
    assert epics.caput(f"{g0x}.HLM", 2100.0, wait=True) == 1  # beyond the 2010 um hard limit
    assert epics.caput(g0x, 2050.0, wait=True, timeout=10) == 1
    assert get(f"{g0x}.HLS") == 1
    assert get(f"{g0x}.LLS") == 0
    assert get(f"{g0x}.RBV") == pytest.approx(2010.0, abs=1e-3)
    assert get(f"{g0x}.TDIR") == 1
    assert epics.caput(g0x, 0.0, wait=True, timeout=10) == 1
    assert get(f"{g0x}.HLS") == 0


def test_set_mode_redefines_position(sim_ioc: IocHandle, g0x: str) -> None:
    here = get(f"{g0x}.RBV")
    assert epics.caput(f"{g0x}.SET", 1, wait=True) == 1
    try:
        assert epics.caput(g0x, here + 7.0, wait=True) == 1
    finally:
        assert epics.caput(f"{g0x}.SET", 0, wait=True) == 1
    assert get(f"{g0x}.RBV") == pytest.approx(here + 7.0, abs=1e-3)
    assert get(f"{g0x}.OFF") == pytest.approx(7.0, abs=1e-3)
    assert get(f"{g0x}.DRBV") == pytest.approx(here, abs=1e-3)
    assert epics.caput(f"{g0x}.OFF", 0.0, wait=True) == 1
    assert get(f"{g0x}.RBV") == pytest.approx(here, abs=1e-3)


def test_tweak(sim_ioc: IocHandle, g0x: str) -> None:
    here = get(f"{g0x}.RBV")
    assert epics.caput(f"{g0x}.TWV", 2.5, wait=True) == 1
    assert epics.caput(f"{g0x}.TWF", 1, wait=True, timeout=10) == 1
    assert get(f"{g0x}.RBV") == pytest.approx(here + 2.5, abs=1e-3)
    assert epics.caput(f"{g0x}.TWR", 1, wait=True, timeout=10) == 1
    assert get(f"{g0x}.RBV") == pytest.approx(here, abs=1e-3)


def test_bad_velocity_rejected(sim_ioc: IocHandle, g0x: str) -> None:
    epics.caput(f"{g0x}.VELO", -3.0, wait=True)
    assert get(f"{g0x}.VELO") == 500.0


def test_backlash_approaches_every_target_along_the_sign_of_bdst(
    sim_ioc: IocHandle, g0x: str
) -> None:
    seen: list[float] = []
    rbv = epics.PV(f"{g0x}.RBV", auto_monitor=True)
    assert rbv.wait_for_connection(timeout=5.0)
    rbv.add_callback(lambda value=None, **kw: seen.append(float(value)))
    try:
        assert epics.caput(f"{g0x}.BDST", 20.0, wait=True) == 1
        assert epics.caput(g0x, 100.0, wait=True, timeout=30) == 1  # along +: straight
        assert wait_until(lambda: bool(seen) and seen[-1] == pytest.approx(100.0))
        up = list(seen)
        seen.clear()
        assert epics.caput(g0x, 50.0, wait=True, timeout=30) == 1  # against: below, then up
        assert wait_until(lambda: bool(seen) and seen[-1] == pytest.approx(50.0))
        down = list(seen)
        epics.caput(f"{g0x}.BDST", float("nan"), wait=True)
        assert get(f"{g0x}.BDST") == 20.0  # a non-finite BDST is refused
    finally:
        epics.caput(f"{g0x}.BDST", 0.0, wait=True)
        rbv.clear_callbacks()
        rbv.disconnect()
    assert max(up) == pytest.approx(100.0)  # no overshoot along the preferred direction
    assert up == sorted(up)
    assert min(down) == pytest.approx(30.0, abs=0.01)  # 20 um beyond the target
    last = down[down.index(min(down)) :]
    assert last == sorted(last)  # then up to the target
    assert get(f"{g0x}.RBV") == pytest.approx(50.0, abs=1e-3)
