"""Suspenders: a resume racing a plan's start leaves the RunEngine nothing to wait for ever."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from bluesky import RunEngine
from bluesky.suspenders import SuspendFloor
from ophyd import Signal

from beamline.session import SuspendBeamFloor


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
