"""The Redis client every store part shares, and the one place Redis errors become ours."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from dispatcher.core.errors import StoreUnavailable


class StoreBase:
    """A Redis client and ``call``, which every Redis command of the engine goes through.

    The engine's ``Store`` owns the client; the features' stores (SMS, drills) borrow it.
    """

    def __init__(self, client: aioredis.Redis) -> None:
        self.redis = client

    @staticmethod
    async def call(awaitable: Any) -> Any:
        """Await a Redis command; ``StoreUnavailable`` if Redis did not answer."""
        task = asyncio.current_task()
        try:
            result = await awaitable
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


def hash_fields(mapping: Mapping[str, Any]) -> Mapping[Any, Any]:
    """redis-py's hset wants an invariant key type; ours are always str."""
    return mapping
