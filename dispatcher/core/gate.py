"""A gate that lets one holder through at a time, urgent ones first.

The SMS worker queues every request to a gateway at its gate before it asks the shared pace
for room, and the loudspeaker's announcer queues its renders at one. The holder may be waiting
(for the pace); a red warning's batch that arrives meanwhile outranks it: the holder is told
(``Holder.outranked``), steps back into the queue and the red batch takes the next room in
the pace, behind only the batch already sent on its way.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field


@dataclass
class Holder:
    """Who holds the gate; ``outranked`` is done once a waiter of a higher rank arrives."""

    priority: int
    outranked: asyncio.Future[None] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


class PriorityGate:
    """One holder at a time; waiters go by priority (lower first), then in arrival order."""

    def __init__(self) -> None:
        self._held = False
        self._holder: Holder | None = None
        self._waiters: list[tuple[int, int, asyncio.Future[None]]] = []
        self._arrivals = itertools.count()

    @property
    def waiting(self) -> int:
        return sum(1 for _, _, f in self._waiters if not f.done())

    @asynccontextmanager
    async def hold(self, priority: int) -> AsyncIterator[Holder]:
        if not self._held and not self.waiting:
            self._held = True
        else:
            future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            heapq.heappush(self._waiters, (priority, next(self._arrivals), future))
            holder = self._holder
            if holder is not None and priority < holder.priority and not holder.outranked.done():
                holder.outranked.set_result(None)
            try:
                await future
            except asyncio.CancelledError:
                if future.done() and not future.cancelled():
                    # Handed the gate just as it was cancelled: pass it on, or it stays shut.
                    self._release()
                raise
        self._holder = Holder(priority)
        try:
            yield self._holder
        finally:
            self._holder = None
            self._release()

    def _release(self) -> None:
        while self._waiters:
            _, _, future = heapq.heappop(self._waiters)
            if not future.done():
                # Still held: ownership passes straight to the waiter.
                future.set_result(None)
                return
        self._held = False
