"""Monitor updates out before a put-completion reply (ordering the clients rely on).

A client that completes a move or an acquisition on put-completion (``devices.Motor``,
``devices.TalbotDetector``) reads the monitored RBV, DMOV or Acquire_RBV right after. caproto
sends monitor updates from a per-circuit queue, in batches, and the write-notify reply directly,
so nothing orders the two. :func:`monitors_sent` waits, in event-loop iterations rather than
wall time, until every queued update has been handed to its socket; a putter awaits it after its
last write and before it returns. :func:`bind` registers the server's context (``serve`` does).
"""

from __future__ import annotations

import asyncio
from typing import Any

_contexts: list[Any] = []

# Loop iterations the circuit's batching loop needs, after taking the last update off its
# queue, to send the batch (wait_for(get, 0) times out, the batch is sent): measured 2-3.
_SEND_ITERATIONS = 6
_MAX_ITERATIONS = 2000


def bind(context: Any) -> None:
    """Register a running caproto server context (its ``subscription_queue`` and circuits)."""
    _contexts.append(context)


def unbind(context: Any) -> None:
    """Forget a context (server shut down)."""
    if context in _contexts:
        _contexts.remove(context)


def _pending() -> bool:
    for ctx in _contexts:
        if not ctx.subscription_queue.empty():
            return True
        if any(not c.subscription_queue.empty() for c in list(ctx.circuits)):
            return True
    return False


async def monitors_sent() -> None:
    """Return once the monitor updates queued so far have been sent (or, with no context bound,
    after a 2 ms grace that covers caproto's default batching)."""
    if not _contexts:
        await asyncio.sleep(0.002)
        return
    for _ in range(_MAX_ITERATIONS):
        if not _pending():
            break
        await asyncio.sleep(0)
    for _ in range(_SEND_ITERATIONS):
        await asyncio.sleep(0)
