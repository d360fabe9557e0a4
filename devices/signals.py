"""Signal classes shared by the devices."""

from __future__ import annotations

import math
from typing import Any

from ophyd import EpicsSignal
from ophyd.status import Status, StatusBase


def _same(held: Any, value: Any) -> bool:
    if isinstance(held, str) or isinstance(value, str):
        return str(held) == str(value)
    try:
        a, b = float(held), float(value)
    except (TypeError, ValueError):
        return False
    return a == b or (math.isnan(a) and math.isnan(b))


class SettingSignal(EpicsSignal):
    """A monitored setting of a plain record (one whose put does nothing but hold the value: a
    scan tag, a sequencer step size). ``set`` to the value the record already holds completes
    at once: the monitor says what it holds, so the put would change nothing and only cost a
    Channel Access round trip (1-20 ms under a scan's load). Other values are put with
    completion, as ``EpicsSignal(put_complete=True)`` does.

    Not for PVs whose put acts (an arming or a command): those must be put every time.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("auto_monitor", True)
        kwargs.setdefault("put_complete", True)
        super().__init__(*args, **kwargs)

    def set(self, value: Any, **kwargs: Any) -> StatusBase:
        """Put ``value`` unless the record already holds it (then a finished status)."""
        if self.connected and _same(self.get(), value):
            status = Status(obj=self)
            status.set_finished()
            return status
        return super().set(value, **kwargs)
