"""Every Talbot device connects, reads and acts over Channel Access."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from devices import BeamMonitor, Interferometer, ScanTags, Shutter
from tests.conftest import IocHandle


@pytest.fixture
def interferometer(sim_ioc: IocHandle) -> Iterator[Interferometer]:
    device = Interferometer(pvs=sim_ioc.pvs, name="ifm")
    device.wait_for_connection(timeout=20)
    yield device
    device.destroy()


def test_interferometer_connects_and_reads(interferometer: Interferometer) -> None:
    reading = interferometer.read()
    assert reading["ifm_g2_x"]["value"] == pytest.approx(
        interferometer.g2.x.user_setpoint.get(), abs=0.02
    )
    assert "ifm_rotation" in reading
    assert reading["ifm_beam_current"]["value"] == pytest.approx(200.0, abs=0.1)
    assert "ifm_tags_frame_type" in reading
    assert not any(key.startswith("ifm_status") for key in reading)
    config = interferometer.read_configuration()
    assert config["ifm_g0_x_velocity"]["value"] == pytest.approx(500.0)
    assert interferometer.g2.z.position == pytest.approx(15.0, abs=0.01)  # tiny: d = 15 mm


def test_prefix_argument_overrides_pvnames(sim_ioc: IocHandle) -> None:
    device = Interferometer(sim_ioc.prefix, name="ifm2")
    assert device.g2.x.prefix == f"{sim_ioc.prefix}G2:X"
    assert device.rotation.prefix == f"{sim_ioc.prefix}ROT"


def test_shutter_open_close(sim_ioc: IocHandle) -> None:
    shutter = Shutter(sim_ioc.pv("shutter"), name="shutter")
    shutter.wait_for_connection(timeout=10)
    try:
        shutter.open().wait(timeout=5)
        assert shutter.state.get(use_monitor=False) == "Open"
        shutter.close().wait(timeout=5)
        assert shutter.state.get(use_monitor=False) == "Closed"
        assert not shutter.is_open
        with pytest.raises(ValueError, match="value"):
            shutter.set("ajar")
    finally:
        shutter.destroy()


def test_beam_monitor_hinted(sim_ioc: IocHandle) -> None:
    beam = BeamMonitor(sim_ioc.pv("beam"), name="beam")
    beam.wait_for_connection(timeout=10)
    try:
        assert beam.hints == {"fields": ["beam_current"]}
        assert beam.read()["beam_current"]["value"] == pytest.approx(200.0, abs=0.1)
    finally:
        beam.destroy()


def test_scan_tags_round_trip(sim_ioc: IocHandle) -> None:
    tags = ScanTags(sim_ioc.pv("tags"), name="tags")
    tags.wait_for_connection(timeout=10)
    uid = str(uuid.uuid4())
    try:
        statuses = [
            tags.frame_type.set("reference"),
            tags.series_index.set(3),
            tags.step_index.set(2),
            tags.angle_index.set(-1),
            tags.attempt.set(1),
            tags.scan_uid.set(uid),
        ]
        for status in statuses:
            status.wait(timeout=5)
        reading = tags.read()
        assert reading["tags_frame_type"]["value"] == "reference"
        assert reading["tags_step_index"]["value"] == 2
        assert reading["tags_attempt"]["value"] == 1
        assert tags.read_configuration()["tags_scan_uid"]["value"] == uid
    finally:
        tags.destroy()
