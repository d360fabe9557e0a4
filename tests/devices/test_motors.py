"""Stock ophyd EpicsMotor and the Talbot motor devices against the simulated motor records."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from ophyd import EpicsMotor
from ophyd.utils import LimitError

from devices import AnalyzerStage, PiezoStepper, RotationStage, SampleStage, step_positions
from tests.conftest import IocHandle


@pytest.fixture
def rotation(sim_ioc: IocHandle) -> Iterator[EpicsMotor]:
    """Stock EpicsMotor on the rotation record (deg, VELO 180 deg/s), parked at 0 after."""
    motor = EpicsMotor(sim_ioc.pvs.motor_records()["rotation"], name="rot")
    motor.wait_for_connection(timeout=10)
    yield motor
    motor.velocity.put(180.0, wait=True)
    motor.move(0.0, wait=True, timeout=30)
    motor.destroy()


def test_epics_motor_connects_and_reports(rotation: EpicsMotor) -> None:
    assert rotation.limits == (-720.0, 720.0)
    assert rotation.egu == "deg"
    assert rotation.precision == 4
    reading = rotation.read()
    assert "rot" in reading
    assert "rot_user_setpoint" in reading
    assert rotation.hints == {"fields": ["rot"]}


def test_epics_motor_move_completes_at_target(rotation: EpicsMotor) -> None:
    status = rotation.move(45.0, wait=False)
    status.wait(timeout=10)
    assert status.success
    assert rotation.position == pytest.approx(45.0, abs=1e-4)
    assert rotation.motor_done_move.get(use_monitor=False) == 1
    assert rotation.user_readback.get(use_monitor=False) == pytest.approx(45.0, abs=1e-4)


def test_epics_motor_zero_length_move_completes(rotation: EpicsMotor) -> None:
    rotation.move(10.0, wait=True, timeout=10)
    for _ in range(3):
        status = rotation.move(10.0, wait=False)
        status.wait(timeout=5)
        assert status.success
    assert rotation.position == pytest.approx(10.0, abs=1e-4)


def test_epics_motor_limits_raise_before_moving(rotation: EpicsMotor) -> None:
    before = rotation.position
    with pytest.raises(LimitError):
        rotation.move(1000.0, wait=False)
    assert rotation.position == before
    assert rotation.motor_done_move.get(use_monitor=False) == 1


def test_epics_motor_limit_change_is_seen(rotation: EpicsMotor) -> None:
    rotation.high_limit_travel.put(90.0, wait=True)
    try:
        deadline = time.monotonic() + 5.0
        while rotation.limits[1] != 90.0 and time.monotonic() < deadline:
            time.sleep(0.01)  # polling ophyd's monitor-updated limits
        assert rotation.limits == (-720.0, 90.0)
        with pytest.raises(LimitError):
            rotation.move(120.0, wait=False)
    finally:
        rotation.high_limit_travel.put(720.0, wait=True)


def test_epics_motor_stop(rotation: EpicsMotor) -> None:
    rotation.velocity.put(20.0, wait=True)
    status = rotation.move(300.0, wait=False)  # 15 s of motion
    deadline = time.monotonic() + 5.0
    while rotation.position < 2.0 and time.monotonic() < deadline:
        time.sleep(0.01)  # polling the monitored readback
    rotation.stop()
    deadline = time.monotonic() + 5.0
    while not status.done and time.monotonic() < deadline:
        time.sleep(0.01)  # polling the status (ophyd finishes it from its callback thread)
    assert status.done  # the move ended well before the 15 s it was asked for
    stopped = rotation.user_readback.get(use_monitor=False)
    assert 2.0 <= stopped < 100.0
    assert rotation.motor_done_move.get(use_monitor=False) == 1


def test_piezo_stepper_steps_over_one_period(sim_ioc: IocHandle) -> None:
    g2 = AnalyzerStage(sim_ioc.pv("g2"), name="g2")
    g2.wait_for_connection(timeout=10)
    try:
        piezo: PiezoStepper = g2.x
        assert piezo.egu == "um"
        positions = piezo.step_positions(5, start=20.0)
        assert positions == pytest.approx([20.0, 20.2, 20.4, 20.6, 20.8])
        readbacks = []
        for target in positions:
            piezo.move(target, wait=True, timeout=5)
            readbacks.append(piezo.user_readback.get(use_monitor=False))
        assert readbacks == pytest.approx(positions, abs=0.015)  # tolerance + noise
        assert "g2_x" in g2.read()  # the G2 readback lands in every event
        with pytest.raises(ValueError, match="soft limits"):
            piezo.step_positions(5, start=99.3)
    finally:
        g2.destroy()


def test_step_positions_checks_inputs() -> None:
    assert step_positions(4, 3, 1.0, 1.0) == pytest.approx([1.0, 1.75, 2.5, 3.25])
    with pytest.raises(ValueError, match="steps"):
        step_positions(2, 1, 0.0, 1.0)
    with pytest.raises(ValueError, match="repeats"):
        step_positions(6, 2, 0.0, 1.0)
    with pytest.raises(ValueError, match="period"):
        step_positions(5, 1, 0.0, 0.0)


def test_sample_stage_in_and_out(sim_ioc: IocHandle) -> None:
    stage = SampleStage(sim_ioc.pv("sample"), name="sample")
    stage.wait_for_connection(timeout=10)
    try:
        stage.out_position.put(3.0)
        stage.set("out").wait(timeout=10)
        assert stage.x.user_readback.get(use_monitor=False) == pytest.approx(3.0, abs=1e-4)
        stage.set("in").wait(timeout=10)
        assert stage.x.user_readback.get(use_monitor=False) == pytest.approx(0.0, abs=1e-4)
        with pytest.raises(ValueError, match="value"):
            stage.set("sideways")
    finally:
        stage.destroy()


def test_rotation_stage_is_an_epics_motor(sim_ioc: IocHandle) -> None:
    rot = RotationStage(sim_ioc.pv("rotation"), name="rotation")
    rot.wait_for_connection(timeout=10)
    try:
        rot.move(-30.0, wait=True, timeout=10)
        assert rot.position == pytest.approx(-30.0, abs=1e-4)
        rot.move(0.0, wait=True, timeout=10)
    finally:
        rot.destroy()
