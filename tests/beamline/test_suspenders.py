"""Suspenders: the shutter suspender trips only on a closure the plan did not command; a resume
racing a plan's start leaves the RunEngine nothing to wait for ever."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

from bluesky import RunEngine
from bluesky.suspenders import SuspendFloor
from bluesky.utils import Msg
from ophyd import Signal

from beamline.suspenders import SuspendBeamFloor, SuspendShutterClosed


class _Shutter:
    """Stands in for the Shutter device: the suspender judges its ``state`` signal."""

    def __init__(self) -> None:
        self.state = Signal(value="Closed", name="shutter_state")


def test_shutter_suspender_trips_only_when_the_plan_wants_beam() -> None:
    shutter: Any = _Shutter()
    sus = SuspendShutterClosed(shutter)
    assert not sus._should_suspend("Closed")  # idle: nobody asked for beam
    sus.watch(Msg("set", shutter, "open"))
    assert sus._should_suspend("Closed")
    assert not sus._should_resume("Closed")
    assert sus._should_resume("Open")
    sus.watch(Msg("set", shutter, "close"))  # the dark series closes it on purpose
    assert not sus._should_suspend("Closed")
    sus.watch(Msg("set", shutter, "open"))
    sus.watch(Msg("close_run"))
    assert not sus._should_suspend("Closed")
    # a "Closed" stamped before the plan's "open" is its own closing, delivered late
    closed_at = time.time()
    sus.watch(Msg("set", shutter, "open"))
    sus._value_time = closed_at - 0.05
    assert not sus._should_suspend("Closed")
    sus._value_time = time.time()  # closed after the plan opened it: a real closure
    assert sus._should_suspend("Closed")


def _resume_during_tripped_check(suspender_cls: type, RE: RunEngine) -> Any:
    """A tripped suspender whose first read of ``tripped`` lets the beam come back at that very
    moment (from another thread, as a monitor update does); the future get_futures() returns."""
    current = Signal(value=200.0, name="current")
    resumed = threading.Event()

    class Racing(suspender_cls):  # type: ignore[misc, valid-type]
        armed = False  # race at the first read after the trip, not during it

        @property
        def tripped(self) -> bool:
            was = bool(self._tripped)
            if was and Racing.armed:
                Racing.armed = False
                beam_back = threading.Thread(target=lambda: (current.put(200.0), resumed.set()))
                beam_back.start()
                beam_back.join(timeout=0.3)  # blocks on the suspender's lock where it is taken
            return was

    suspender = Racing(current, 10.0, resume_thresh=100.0, sleep=0.0)
    RE.install_suspender(suspender)
    current.put(0.0)  # beam dump
    assert suspender._tripped
    Racing.armed = True
    futures, _why = suspender.get_futures()
    assert resumed.wait(timeout=5.0)
    return suspender, futures


def _settles(RE: RunEngine, futures: list[Any], timeout_s: float = 2.0) -> bool:
    async def wait_all() -> None:
        await asyncio.gather(*(f() for f in futures))

    waiting = asyncio.run_coroutine_threadsafe(wait_all(), RE._loop)
    try:
        waiting.result(timeout=timeout_s)
    except TimeoutError:
        waiting.cancel()
        return False
    return True


def test_a_resume_racing_get_futures_releases_what_it_handed_out() -> None:
    RE = RunEngine({})
    suspender, futures = _resume_during_tripped_check(SuspendBeamFloor, RE)
    assert not suspender.tripped
    assert futures  # tripped when asked: the caller waits, and the resume releases it
    assert _settles(RE, futures)


def test_the_stock_suspender_hangs_in_the_same_race() -> None:
    # the failure the subclass exists for (bluesky's get_futures reads `tripped` unlocked)
    RE = RunEngine({})
    suspender, futures = _resume_during_tripped_check(SuspendFloor, RE)
    assert not suspender.tripped
    assert futures
    # if this starts to settle, bluesky fixed its get_futures and ConsistentSuspender can go
    assert not _settles(RE, futures, timeout_s=0.5)
