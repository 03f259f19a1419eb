"""Instance liveness: each engine instance holds a short lease in Redis while it runs.

The lease is a key with a TTL (``[dispatch] lease_seconds``) that a task of its own renews
(``dispatcher.pipeline.liveness``); an instance that dies or hangs stops renewing, and its
lease lapses on the Redis clock, whatever the instance itself believes. Every instance that
ever held a lease is registered, so a consumer with pending work and no lease is known to be
dead; one never registered (an engine from before leases) is left to the idle-time fallback.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Iterable

import redis.asyncio as aioredis

from dispatcher.store.base import StoreBase
from dispatcher.store.keys import INSTANCES, lease_key


class LivenessStore(StoreBase):
    """This instance's lease, and what is known of the others'."""

    def __init__(self, client: aioredis.Redis, instance: str, *, lease_seconds: float) -> None:
        super().__init__(client)
        self.instance = instance
        self.lease_seconds = lease_seconds
        # Monotonic time until which the lease surely holds: counted from before the request
        # that set it, so it never outlives the key in Redis. CLOCK_MONOTONIC runs on while
        # the process is stopped, so a woken instance knows at once that it may have lost it.
        self._valid_until = 0.0
        # Monotonic time since which the lease has surely held without a gap.
        self._held_since = math.inf

    async def renew(self) -> None:
        sent = time.monotonic()
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.set(lease_key(self.instance), str(os.getpid()), px=int(self.lease_seconds * 1000))
            pipe.hset(INSTANCES, self.instance, str(int(time.time() * 1000)))
            await self.call(pipe.execute())
        done = time.monotonic()
        if done >= self._valid_until:
            # The old lease may have lapsed before this one reached Redis (the request was
            # sent before the reply came back, not after): continuous from now on only.
            self._held_since = done
        self._valid_until = sent + self.lease_seconds

    def held(self, margin: float = 0.0) -> bool:
        """True while the lease surely holds for ``margin`` seconds more."""
        return time.monotonic() + margin < self._valid_until

    def held_throughout(self, since: float, margin: float = 0.0) -> bool:
        """True when the lease has held without a gap since ``since`` (monotonic) and surely
        holds for ``margin`` seconds more: nobody can have taken this instance's work since."""
        return self._held_since <= since and self.held(margin)

    async def release(self) -> None:
        """Give the lease up (a clean shutdown): the others take over this instance's work
        at once instead of after the lease's time."""
        self._valid_until = 0.0
        self._held_since = math.inf
        await self.call(self.redis.delete(lease_key(self.instance)))

    async def dead(self, instances: Iterable[str]) -> set[str]:
        """Of ``instances``, those registered whose lease lapsed."""
        names = [name for name in instances if name != self.instance]
        if not names:
            return set()
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hmget(INSTANCES, names)
            for name in names:
                pipe.exists(lease_key(name))
            registered, *leases = await self.call(pipe.execute())
        return {
            name
            for name, seen, lease in zip(names, registered, leases, strict=True)
            if seen is not None and not lease
        }

    async def alive(self, instances: Iterable[str]) -> set[str]:
        """Of ``instances``, those holding a lease now (this one included)."""
        names = list(instances)
        if not names:
            return set()
        async with self.redis.pipeline(transaction=False) as pipe:
            for name in names:
                pipe.exists(lease_key(name))
            leases = await self.call(pipe.execute())
        return {name for name, lease in zip(names, leases, strict=True) if lease}
