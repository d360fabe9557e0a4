"""Beam shutter and beam monitor devices."""

from __future__ import annotations

from typing import Any

from ophyd import Component as Cpt
from ophyd import Device, EpicsSignal, EpicsSignalRO
from ophyd.status import StatusBase

_SHUTTER_COMMANDS = {"open": "Open", "close": "Close", "closed": "Close"}


class Shutter(Device):
    """Beam shutter: ``set("open" | "close")`` completes when the readback has followed."""

    command = Cpt(EpicsSignal, "Open", string=True, put_complete=True, kind="omitted")
    state = Cpt(EpicsSignalRO, "Open_RBV", string=True, kind="normal", auto_monitor=True)

    def set(self, value: Any, **kwargs: Any) -> StatusBase:
        """Open or close (``"open"``/``"close"``, case-insensitive)."""
        try:
            command = _SHUTTER_COMMANDS[str(value).lower()]
        except KeyError:
            raise ValueError(f"value must be 'open' or 'close', got {value!r}") from None
        return self.command.set(command, **kwargs)

    def open(self) -> StatusBase:
        """Open the shutter."""
        return self.set("open")

    def close(self) -> StatusBase:
        """Close the shutter."""
        return self.set("close")

    @property
    def is_open(self) -> bool:
        """Whether the readback says Open."""
        return bool(self.state.get() == "Open")


class BeamMonitor(Device):
    """Storage-ring current (mA): in every event for dose normalisation and suspenders."""

    current = Cpt(EpicsSignalRO, "Current", kind="hinted", auto_monitor=True)
