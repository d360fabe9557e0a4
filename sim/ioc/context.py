"""The caproto server context of the simulated beamline: low latency, and monitors before replies.

Two things stock caproto does not give a Channel Access client that completes moves and
triggers on put-completion (``devices.Motor``, ``devices.TalbotDetector``) and reads its
monitors right after:

- **TCP_NODELAY.** asyncio turns it on only for sockets whose ``proto`` is ``IPPROTO_TCP``;
  caproto creates its listening socket with ``proto=0``, so its circuits keep Nagle on. A put to a
  monitored PV is answered with two small messages (the monitor update and the write-notify
  reply); Nagle held the second until the client's delayed ACK (40 ms on Linux), so every other
  put-completion through libca took ~42 ms instead of ~1 ms.
- **Order.** caproto sends monitor updates from a per-circuit queue, in batches, and the
  write-notify reply directly, so nothing kept a reply behind the updates its write caused (the
  final RBV/DMOV of a move, Acquire_RBV 1 -> 0, a scan tag). :class:`OrderedCircuit` waits, in
  event-loop iterations rather than wall time, until every queued update has been handed to its
  socket before it sends a write-notify reply.
"""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import caproto as ca
from caproto.asyncio.server import Context, VirtualCircuit

# Loop iterations the circuit's batching loop needs, after taking the last update off its queue,
# to send it (its wait_for(get, 0) times out, the batch goes out): 2-3 measured, 6 allowed.
_SEND_ITERATIONS = 6
_MAX_ITERATIONS = 2000


def _updates_queued(context: Any) -> bool:
    if not context.subscription_queue.empty():
        return True
    return any(not c.subscription_queue.empty() for c in list(context.circuits))


async def monitors_sent(context: Any) -> None:
    """Return once the monitor updates queued in ``context`` so far have been sent."""
    for _ in range(_MAX_ITERATIONS):
        if not _updates_queued(context):
            break
        await asyncio.sleep(0)
    for _ in range(_SEND_ITERATIONS):
        await asyncio.sleep(0)


class OrderedCircuit(VirtualCircuit):
    """A circuit that sends a write-notify reply only after the monitor updates queued before it."""

    async def send(self, *commands: Any) -> None:
        if any(isinstance(c, ca.WriteNotifyResponse) for c in commands):
            await monitors_sent(self.context)
        await super().send(*commands)


class BeamlineContext(Context):
    """caproto's asyncio server with Nagle off and ordered replies on every client circuit."""

    CircuitClass = OrderedCircuit

    async def tcp_handler(self, client: Any, addr: Any) -> Any:
        sock = client.writer.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return await super().tcp_handler(client, addr)
