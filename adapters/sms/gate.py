"""A gate that lets one holder through at a time, urgent ones first.

The SMS worker queues every request to a gateway at its gate before it asks the shared pace
for room: a red warning's batch that arrives while a drill's batches wait goes next, behind
at most the one batch already waiting for its turn.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager


class PriorityGate:
    """One holder at a time; waiters go by priority (lower first), then in arrival order."""

    def __init__(self) -> None:
        self._held = False
        self._waiters: list[tuple[int, int, asyncio.Future[None]]] = []
        self._arrivals = itertools.count()

    @property
    def waiting(self) -> int:
        return sum(1 for _, _, f in self._waiters if not f.done())

    @asynccontextmanager
    async def hold(self, priority: int) -> AsyncIterator[None]:
        if not self._held and not self.waiting:
            self._held = True
        else:
            future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            heapq.heappush(self._waiters, (priority, next(self._arrivals), future))
            try:
                await future
            except asyncio.CancelledError:
                if future.done() and not future.cancelled():
                    # Handed the gate just as it was cancelled: pass it on, or it stays shut.
                    self._release()
                raise
        try:
            yield
        finally:
            self._release()

    def _release(self) -> None:
        while self._waiters:
            _, _, future = heapq.heappop(self._waiters)
            if not future.done():
                # Still held: ownership passes straight to the waiter.
                future.set_result(None)
                return
        self._held = False
