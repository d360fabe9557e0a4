"""Suspenders: a scan waits out a beam dump or a shutter closed by someone else, then re-takes.

A suspender installed on the RunEngine stops the scan when its signal trips; the scan rewinds to
the checkpoint at the start of the current phase-stepping series and, once the signal has
recovered, re-takes that series with ``attempt + 1`` (see ``docs/operating.md``).
"""

from __future__ import annotations

import math
import time
from typing import Any

from bluesky.suspenders import SuspenderBase, SuspendFloor
from bluesky.utils import Msg

from devices import Shutter


class ConsistentSuspender(SuspenderBase):
    """A suspender whose ``get_futures`` reads the tripped state under its lock.

    bluesky's reads ``tripped`` before it takes the lock: a resume that lands in between clears
    the suspender and its event, and ``get_futures`` then makes a fresh event that no later
    monitor update sets. The RunEngine, starting a plan, waits on it for ever (seen in CI as a
    hang with an empty justification). Here the resume waits for the lock, then sets the event
    that ``get_futures`` handed out.
    """

    def get_futures(self) -> tuple[list[Any], str]:
        """The futures to wait on and why, consistent with the tripped state."""
        with self._lock:
            if not self.tripped:
                return [], ""
            make_event = getattr(self, "_SuspenderBase__make_event")  # noqa: B009 (name-mangled)
            return [make_event().wait], self._get_justification()


class SuspendBeamFloor(ConsistentSuspender, SuspendFloor):
    """``SuspendFloor`` on the ring current, with :class:`ConsistentSuspender`'s futures."""


class SuspendShutterClosed(ConsistentSuspender):
    """Suspend while the shutter is closed although the plan last commanded it open.

    The plan's own closing (dark series) does not trip it; a closure by the PSS, an operator or a
    fault does, and the scan resumes (re-taking the series) when the shutter is open again.
    Feed every message to :meth:`watch` (the session does it through ``RE.msg_hook``).
    """

    def __init__(self, shutter: Shutter, **kwargs: Any) -> None:
        super().__init__(shutter.state, **kwargs)
        self.shutter = shutter
        self.wanted_open = False
        self._commanded_at = -math.inf  # when the plan last commanded the shutter [unix s]
        self._value_time: float | None = None  # the IOC's timestamp of the value being judged

    def watch(self, msg: Msg) -> None:
        """Track the plan's shutter commands (and forget them at the end of a run)."""
        if msg.command == "set" and msg.obj is self.shutter and msg.args:
            self.wanted_open = str(msg.args[0]).lower() == "open"
            self._commanded_at = time.time()
        elif msg.command == "close_run":
            self.wanted_open = False

    def __call__(self, value: Any, **kwargs: Any) -> None:
        """Monitor callback: judge ``value`` together with its timestamp."""
        stamp = kwargs.get("timestamp")
        self._value_time = float(stamp) if stamp is not None else None
        super().__call__(value, **kwargs)

    def _should_suspend(self, value: Any) -> bool:
        if not (self.wanted_open and str(value) == "Closed"):
            return False
        # A "Closed" the IOC stamped before the plan commanded "open" is the plan's own earlier
        # closing (a dark series), delivered late by a busy monitor thread: not a closure.
        return self._value_time is None or self._value_time >= self._commanded_at

    def _should_resume(self, value: Any) -> bool:
        return str(value) == "Open" or not self.wanted_open

    def _get_justification(self) -> str:
        if not self.tripped:
            return ""
        return "the shutter closed while the scan needs beam"
