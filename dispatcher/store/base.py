"""The connection to Redis every store shares, and the one place Redis errors become ours."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any, Self

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from dispatcher.core.errors import StoreUnavailable


class StoreBase:
    """A Redis client and ``call``, which every Redis command of the engine goes through."""

    def __init__(self, client: aioredis.Redis) -> None:
        self.redis = client

    @classmethod
    def from_url(cls, url: str) -> Self:
        # After a Redis restart the pool holds dead connections; retrying on a fresh one is
        # safe for every command here (the Lua scripts only move state forward).
        return cls(
            aioredis.Redis.from_url(
                url,
                decode_responses=True,
                health_check_interval=10,
                retry=Retry(ExponentialBackoff(cap=1.0, base=0.05), retries=3),
                retry_on_error=[RedisConnectionError, RedisTimeoutError],
            )
        )

    async def close(self) -> None:
        await self.redis.aclose()

    async def ping(self) -> bool:
        try:
            return bool(await self.redis.ping())
        except (RedisError, OSError):
            return False

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
