"""The per-frame loop of a series in raw bluesky messages.

``bluesky.plan_stubs`` functions are wrapped by ``bluesky.utils.plan``, which formats the whole
call stack at every call (to warn about a plan that was never iterated): ~1.3 ms per stub at the
depth of a CT scan, and a phase step calls a dozen, more than the rest of the step's control
overhead. The inner loop therefore yields the same messages directly; everything outside the
loop uses the stock stubs.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from bluesky import Msg
from bluesky import plan_stubs as bps
from bluesky.protocols import Triggerable
from bluesky.utils import MsgGenerator, all_safe_rewind, separate_devices


def new_group(prefix: str) -> str:
    """A status-group name: ``prefix`` and 48 random bits, so that two never meet in practice.
    Random rather than a module-level counter (no state in the module): ~1 us a name, measured,
    against ~0.2 us, per status group of a frame that costs milliseconds."""
    return f"{prefix}-{os.urandom(6).hex()}"


def set_in(obj: Any, value: Any, group: str) -> MsgGenerator[Any]:
    """``bps.abs_set(obj, value, group=group)`` (no wait)."""
    return (yield Msg("set", obj, value, group=group))


def wait_for(group: str) -> MsgGenerator[Any]:
    """``bps.wait(group)``."""
    return (yield Msg("wait", None, group=group, error_on_timeout=True, timeout=None, watch=()))


class FrameReader:
    """``bps.trigger_and_read(devices, name)`` with the device checks done once per series.

    Triggers the ``detectors`` and waits, then one event in stream ``name`` with the detectors
    and the ``others`` read; an error while reading drops the event, as the stock plan does.
    The stock plan also triggers every other ophyd device, whose ``trigger`` does nothing but
    costs the RunEngine a message and a status each (~0.25 ms). Devices that are not safe to
    rewind take the stock plan, which marks the frame not rewindable.
    """

    def __init__(self, detectors: Sequence[Any], others: Sequence[Any], name: str) -> None:
        self.devices = separate_devices([*detectors, *others])
        self.triggerables = [d for d in separate_devices(detectors) if isinstance(d, Triggerable)]
        self.rewindable = all_safe_rewind(self.devices)
        self.name = name

    def __call__(self) -> MsgGenerator[dict[str, Any]]:
        if not self.rewindable:
            return (yield from bps.trigger_and_read(self.devices, name=self.name))
        if self.triggerables:
            group = new_group("trigger")
            for obj in self.triggerables:
                yield Msg("trigger", obj, group=group)
            yield from wait_for(group)
        yield Msg("create", name=self.name)
        readings: dict[str, Any] = {}
        try:
            for obj in self.devices:
                reading = yield Msg("read", obj)
                if reading is not None:
                    readings.update(reading)
        except Exception:
            yield Msg("drop")
            raise
        yield Msg("save")
        return readings
