"""Put a device back where it was after a plan, whatever happens (a ``finalize_wrapper``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from bluesky import plan_stubs as bps
from bluesky import preprocessors as bpp
from bluesky.utils import MsgGenerator, make_decorator


def restoring_wrapper(
    plan: MsgGenerator[Any],
    signal: Any,
    mover: Any,
    transform: Callable[[Any], Any] = float,
) -> MsgGenerator[Any]:
    """Read ``signal``, run ``plan``; afterwards, whatever happens, move ``mover`` to
    ``transform(value read)`` (nothing when the read gave no value). Returns what ``plan``
    returns."""
    before = yield from bps.rd(signal, default_value=None)

    def restore() -> MsgGenerator[None]:
        if before is not None:
            yield from bps.mv(mover, transform(before))

    return (yield from bpp.finalize_wrapper(plan, restore()))


#: ``restoring_decorator(signal, mover, transform)``: :func:`restoring_wrapper` as a decorator
#: of plan functions (``bluesky.utils.make_decorator``).
restoring_decorator = make_decorator(restoring_wrapper)


def shutter_command(state: Any) -> str:
    """The shutter command that restores a shutter state read before: ``open`` or ``close``."""
    return "open" if str(state) == "Open" else "close"
