"""The Redis client every store part shares, and the one place Redis errors become ours."""

from __future__ import annotations

import asyncio
import functools
import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

import redis.asyncio as aioredis
import structlog
from redis.commands.core import AsyncScript
from redis.exceptions import ReadOnlyError, RedisError, ResponseError, WatchError

from dispatcher.core.errors import IdempotencyKeyReused, StoreRefused, StoreUnavailable
from dispatcher.store.keys import STATS, idempotency_key
from dispatcher.store.lua import read_script

log = structlog.get_logger(__name__)

# Error replies that say Redis cannot take the command now, not that the command is wrong.
_OUTAGE_REPLIES = ("OOM", "BUSY", "MASTERDOWN", "LOADING", "NOREPLICAS", "TRYAGAIN", "CLUSTERDOWN")

T = TypeVar("T")
# Optimistic transactions give up after this many conflicts: something is rewriting the key
# in a loop, and the caller is better told to try again than kept waiting.
_WATCH_ATTEMPTS = 10

# Each script file is read once per process, whatever the number of clients registering it.
_script_text = functools.cache(read_script)


class StoreBase:
    """A Redis client and ``call``, which every Redis command of the engine goes through.

    The engine's ``Store`` owns the client; the features' stores (SMS, drills) borrow it.
    """

    def __init__(self, client: aioredis.Redis) -> None:
        self.redis = client
        # Replicas that must have a write the engine answers for before it answers (Redis
        # WAIT, see ``replicated``); 0: the primary's word is enough. Set by ``Store``.
        self.replicas_ack = 0
        self.replicas_ack_timeout_ms = 500

    async def replicated(self) -> int:
        """How many replicas have every write this primary holds now, waiting up to
        ``replicas_ack_timeout_ms`` for ``replicas_ack`` of them (0 asked: returns 0 at once).

        WAIT counts the replicas that have its own connection's last write. A marker write on
        that connection comes after everything the primary holds (replication is one ordered
        stream), so waiting for it covers writes other connections made, or other engines.
        """
        if self.replicas_ack <= 0:
            return 0
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hincrby(STATS, "replica_waits", 1)
            pipe.wait(self.replicas_ack, self.replicas_ack_timeout_ms)
            _, replicas = await self.call(pipe.execute())
        return int(replicas)

    @staticmethod
    async def call(awaitable: Any) -> Any:
        """Await a Redis command; ``StoreUnavailable`` if Redis did not answer."""
        task = asyncio.current_task()
        try:
            result = await awaitable
        except ResponseError as exc:
            # Redis answered, and refused: an outage only where it cannot take commands now
            # (a replica, out of memory, a script still running, its primary gone); anything
            # else (a script error, a wrong type) is a bug or damage, and its text (it may
            # quote a script) is for the log, not the caller.
            if isinstance(exc, ReadOnlyError) or str(exc).startswith(_OUTAGE_REPLIES):
                raise StoreUnavailable("Redis refused the command for now; retry") from exc
            log.error("store.refused", reply=str(exc)[:500])
            raise StoreRefused(str(exc)) from exc
        except (RedisError, OSError) as exc:
            if task is not None and task.cancelling():
                # redis-py can turn a cancelled read into a connection error; a retry loop
                # above would then spin forever instead of shutting down.
                raise asyncio.CancelledError from exc
            raise StoreUnavailable(f"Redis did not answer: {exc}") from exc
        if task is not None and task.cancelling():
            # Its retry-on-reconnect can also swallow a cancellation whole and succeed.
            raise asyncio.CancelledError
        return result

    async def idempotent_id(self, office_id: str, key: str, body: str) -> str | None:
        """The id first made under this office's Idempotency-Key, None if the key is new;
        ``IdempotencyKeyReused`` if it came with another body (``body``: its digest)."""
        raw = await self.call(self.redis.get(idempotency_key(office_id, key)))
        if raw is None:
            return None
        first = json.loads(raw)
        if first["body"] != body:
            raise IdempotencyKeyReused(
                "this Idempotency-Key was already used with a different request body; "
                "use a new key for a new alert",
                details={"alert_id": first["alert_id"]},
            )
        return str(first["alert_id"])

    def script(self, package: str, name: str, *, prelude: str | None = None) -> AsyncScript:
        """``package``'s ``scripts/{name}.lua`` registered on this client (see ``read_script``)."""
        return self.redis.register_script(_script_text(package, name, prelude=prelude))

    async def watched_update(
        self,
        key: str,
        fields: Sequence[str],
        queue: Callable[[Any, list[str | None]], T],
        *,
        what: str,
    ) -> T:
        """Read ``fields`` of the hash ``key`` under WATCH, let ``queue(pipe, old_values)``
        queue the writes, and run them in one transaction; again if ``key`` changed meanwhile.

        Two concurrent writers that both read the old values must not both act on them (two
        moves of one terminal would leave it in two regions' sets).
        """
        for _attempt in range(_WATCH_ATTEMPTS):
            async with self.redis.pipeline(transaction=True) as pipe:
                try:
                    await self.call(pipe.watch(key))
                    old = await self.call(pipe.hmget(key, list(fields)))
                    pipe.multi()  # type: ignore[no-untyped-call]  # redis-py lacks the hint
                    result = queue(pipe, old)
                    await self.call(pipe.execute())
                    return result
                except StoreUnavailable as exc:
                    if not isinstance(exc.__cause__, WatchError):
                        raise
        raise StoreUnavailable(f"{what} kept changing; try again")


def hash_fields(mapping: Mapping[str, Any]) -> Mapping[Any, Any]:
    """redis-py's hset wants an invariant key type; ours are always str."""
    return mapping
