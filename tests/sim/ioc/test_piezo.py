"""The G2 closed-loop piezo record: nm steps, settle, tolerance, encoder noise, stall."""

from __future__ import annotations

import threading
import time

import epics
import numpy as np
import pytest

from sim.ioc.motor import MSTA_DONE
from sim.ioc.piezo import PiezoSpec
from tests.conftest import IocHandle
from tests.sim.ioc.test_motor import get, wait_until

PIEZO = PiezoSpec()  # the server's defaults: settle 5 ms, tolerance 5 nm, noise 2 nm rms


def test_phase_steps_settle_within_tolerance(sim_ioc: IocHandle) -> None:
    g2 = sim_ioc.pvs.motor_records()["g2_x"]
    assert epics.caget(f"{g2}.EGU", as_string=True) == "um"
    assert get(f"{g2}.MRES") == pytest.approx(0.001)  # 1 nm
    start = 10.0
    assert epics.caput(g2, start, wait=True, timeout=10) == 1
    targets = [start + k * 0.2 for k in range(5)]  # 5 steps over a 1 um G2 period
    errors = []
    durations = []
    for target in targets:
        t0 = time.monotonic()
        assert epics.caput(g2, target, wait=True, timeout=10) == 1
        durations.append(time.monotonic() - t0)
        assert get(f"{g2}.DMOV") == 1
        errors.append(get(f"{g2}.RBV") - target)
    # encoder reading = true position (within tolerance) + 2 nm rms noise
    assert np.max(np.abs(errors)) < PIEZO.tolerance + 5 * PIEZO.encoder_noise
    # a step: DMOV only after the settle time (targets[0] is where the piezo already holds, a
    # zero-length move, in position at once)
    assert min(durations[1:]) >= PIEZO.settle_s
    assert int(get(f"{g2}.MSTA")) & MSTA_DONE


def test_encoder_noise_on_readback(sim_ioc: IocHandle) -> None:
    g2 = sim_ioc.pvs.motor_records()["g2_x"]
    readings = []
    for k in range(12):
        target = 12.0 + 0.05 * k
        assert epics.caput(g2, target, wait=True, timeout=10) == 1
        readings.append(get(f"{g2}.RBV") - target)
    spread = float(np.std(readings))
    assert 0.2 * PIEZO.encoder_noise < spread < 3 * PIEZO.encoder_noise


def test_stall_keeps_dmov_low_until_cleared(sim_ioc: IocHandle) -> None:
    g2 = sim_ioc.pvs.motor_records()["g2_x"]
    stall = sim_ioc.pv("faults", "PiezoStall")
    assert epics.caput(g2, 15.0, wait=True, timeout=10) == 1
    assert epics.caput(stall, "Stall", wait=True) == 1
    done = threading.Event()
    try:
        epics.PV(g2).put(15.2, callback=lambda **kw: done.set())
        # the servo never gets in position: MSTA shows SLIP_STALL and DMOV stays 0
        assert wait_until(lambda: int(get(f"{g2}.MSTA")) & (1 << 6) != 0)
        assert not wait_until(lambda: get(f"{g2}.DMOV") == 1, timeout_s=0.3)
        assert not done.is_set()
        error = abs(get(f"{g2}.RBV") - 15.2)
        assert error > PIEZO.tolerance
    finally:
        assert epics.caput(stall, "Off", wait=True) == 1
    assert wait_until(done.is_set)
    assert get(f"{g2}.DMOV") == 1
    assert abs(get(f"{g2}.RBV") - 15.2) < PIEZO.tolerance + 5 * PIEZO.encoder_noise
    assert int(get(f"{g2}.MSTA")) & (1 << 6) == 0


def test_final_monitors_arrive_before_put_completion(sim_ioc: IocHandle) -> None:
    """A client that completes a move on put-completion (``devices.Motor``) reads the monitored
    RBV and DMOV right after: the server must have sent their final values first."""
    g2 = sim_ioc.pvs.motor_records()["g2_x"]
    rbv = epics.PV(f"{g2}.RBV", auto_monitor=True)
    dmov = epics.PV(f"{g2}.DMOV", auto_monitor=True)
    rdbd = get(f"{g2}.RDBD")
    assert PIEZO.tolerance <= rdbd < PIEZO.tolerance + 5 * PIEZO.encoder_noise
    assert rbv.wait_for_connection(timeout=5.0)
    assert dmov.wait_for_connection(timeout=5.0)
    rbv.get()
    dmov.get()
    misses = []
    writer = epics.PV(g2)
    done = threading.Event()
    try:
        for k in range(30):
            target = 20.0 + 0.2 * (k % 5) + 0.013 * k
            done.clear()
            writer.put(target, callback=lambda **kw: done.set())
            assert done.wait(10.0)
            # the values held by the monitors at the moment of completion, no network read
            seen = (rbv.get(use_monitor=True), dmov.get(use_monitor=True))
            if not (seen[1] == 1 and abs(seen[0] - target) <= rdbd):
                misses.append((target, seen))
    finally:
        rbv.disconnect()
        dmov.disconnect()
    assert misses == [], misses
