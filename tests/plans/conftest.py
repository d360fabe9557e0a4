"""Fake (unconnected) devices for message-level plan tests."""

from __future__ import annotations

from typing import Any

import pytest
from bluesky.utils import Msg
from ophyd.sim import FakeEpicsSignal, SynSignal, fake_device_cache, make_fake_device

from devices import Interferometer
from devices.signals import SettingSignal

# ophyd fakes the EpicsSignal classes it knows; ours is one with a shortcut for held values
fake_device_cache[SettingSignal] = FakeEpicsSignal


@pytest.fixture
def ifm() -> Interferometer:
    """An Interferometer whose signals are fakes: plans generate messages without any IOC."""
    fake = make_fake_device(Interferometer)(name="ifm")
    fake.g2.x.user_setpoint.sim_set_limits((0.5, 99.5))  # the simulated piezo's soft limits
    return fake


@pytest.fixture
def det() -> SynSignal:
    """A triggerable stand-in detector."""
    return SynSignal(func=lambda: 1.0, name="det")


def drive(plan: Any, values: dict[str, Any] | None = None) -> list[Msg]:
    """Run a plan without a RunEngine: 'read' of a signal named in ``values`` answers that value
    (other messages get None), and return every message."""
    values = values or {}
    msgs: list[Msg] = []
    reply: Any = None
    while True:
        try:
            msg = plan.send(reply)
        except StopIteration:
            return msgs
        msgs.append(msg)
        name = getattr(msg.obj, "name", None)
        reply = None
        if msg.command == "read" and name in values:
            reply = {name: {"value": values[name], "timestamp": 0.0}}


@pytest.fixture
def area_det() -> Any:
    """An unconnected ``TalbotDetector`` (hardware-stepped series need an area detector)."""
    from devices import TalbotDetector

    return make_fake_device(TalbotDetector)("FAKE:", name="det")
