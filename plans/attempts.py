"""Attempt numbers of phase-stepping series that survive a RunEngine rewind.

A suspension (beam dump) or a pause rewinds the RunEngine to the checkpoint at the start of the
series and *replays the cached messages*: a ``Msg('set', tags.attempt, 0)`` would replay with the
same 0. So the attempt is not carried in a message. Instead the first message after a series'
checkpoint is ``Msg('set', attempts, key)`` and :meth:`SeriesAttempts.set` counts, at execution
time, how often that series has been started: 0 on the first take, 1 on the first re-take, ...
It writes the number to the attempt tag PV before any frame of the take is triggered. How re-takes
look from the beamline: ``docs/operating.md``, "Beam dumps and re-takes".
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any

from ophyd import Signal
from ophyd.status import Status, StatusBase


class SeriesAttempts:
    """Counts the takes of every series key and writes the attempt tag (a bluesky Movable).

    ``attempt_signal`` is the scan-tag signal to write (``ScanTags.attempt``) or None to only
    count (message-level tests, dry runs).
    """

    def __init__(self, attempt_signal: Signal | None = None, *, name: str = "attempts") -> None:
        self.name = name
        self.parent = None
        self._signal = attempt_signal
        self._counts: dict[Hashable, int] = {}

    def attempt(self, key: Hashable) -> int:
        """The attempt number of the latest take of ``key`` (-1 if it was never started)."""
        return self._counts.get(key, 0) - 1

    def started_elsewhere(self, key: Hashable, attempt: int) -> None:
        """A take of ``key`` with ``attempt`` was started outside the plan (the IOC's series
        queue starts a hardware-stepped series before its plan reaches it) and then abandoned,
        say by a pause at that series' checkpoint: its frames may be in the file, so the next
        take of ``key`` counts after ``attempt``."""
        self._counts[key] = max(self._counts.get(key, 0), attempt + 1)

    @property
    def retakes(self) -> dict[Hashable, int]:
        """Keys taken more than once -> number of re-takes."""
        return {k: n - 1 for k, n in self._counts.items() if n > 1}

    def set(self, value: Any, **kwargs: Any) -> StatusBase:
        """Start a take of series ``value`` (a hashable key): bump its attempt, write the tag."""
        if not isinstance(value, Hashable):
            raise TypeError(f"value must be a hashable series key, got {value!r}")
        self._counts[value] = self._counts.get(value, 0) + 1
        attempt = self._counts[value] - 1
        if self._signal is None:
            status = Status(obj=self)
            status.set_finished()
            return status
        return self._signal.set(attempt)

    def read(self) -> dict[str, Any]:
        """Nothing to read: the attempt is in the tags of every event."""
        return {}

    def describe(self) -> dict[str, Any]:
        """Nothing to describe."""
        return {}
