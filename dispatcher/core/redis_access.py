"""How every Redis client of the engine reaches the primary: one server's URL, or Redis
Sentinel (``dispatcher.embedded.access.redis_access`` makes one from the settings)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import redis
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel as AsyncSentinel
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.sentinel import Sentinel as SyncSentinel

from dispatcher.core.masking import mask_secrets

# Every client of the engine is made with these: after a Redis restart or a failover the pool
# holds dead connections, and retrying on a fresh one is safe for every command here (the Lua
# scripts only move state forward).
_CLIENT_OPTIONS: dict[str, Any] = {
    "health_check_interval": 10,
    "retry_on_error": [RedisConnectionError, RedisTimeoutError],
}
# A sentinel that does not answer within this is skipped for the next one.
_SENTINEL_TIMEOUT = 1.0


@dataclass(frozen=True, slots=True)
class RedisAccess:
    """How every Redis client of the engine reaches the primary: one URL, or Redis Sentinel.

    Through the sentinels a client asks them for the primary's address on every new
    connection, so once they promoted a replica, the next connection goes to it (the engine's
    retry loops ride out the seconds in between as ``StoreUnavailable``).
    """

    # The one server's URL, credentials in it; None with sentinels.
    url: str | None
    sentinels: tuple[tuple[str, int], ...] = ()
    service: str = ""
    # The user and password for the primary and replicas, the sentinels' own password
    # (sentinel mode only).
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    sentinel_password: str | None = field(default=None, repr=False)

    def describe(self) -> str:
        """Where Redis is, for logs and messages: never a password."""
        if self.url is not None:
            return mask_secrets(self.url)
        where = ",".join(f"{host}:{port}" for host, port in self.sentinels)
        return f"sentinel://{where}/{self.service}"

    def client(self, **options: Any) -> aioredis.Redis:
        """A new asyncio client (its own pool) on the primary; ``options`` as redis-py's."""
        options = {**_CLIENT_OPTIONS, "retry": _retry(), **options}
        if self.url is not None:
            return aioredis.Redis.from_url(self.url, **options)
        sentinel = AsyncSentinel(
            self.sentinels,
            sentinel_kwargs=self._sentinel_kwargs(),
            username=self.username,
            password=self.password,
            **options,
        )
        client: aioredis.Redis = sentinel.master_for(self.service, redis_class=aioredis.Redis)
        return client

    def sync_pool(self) -> redis.ConnectionPool:
        """A blocking connection pool on the primary (APScheduler's job store wants one)."""
        if self.url is not None:
            return redis.ConnectionPool.from_url(self.url)
        sentinel = SyncSentinel(
            self.sentinels,
            sentinel_kwargs=self._sentinel_kwargs(),
            username=self.username,
            password=self.password,
        )
        pool: redis.ConnectionPool = sentinel.master_for(self.service).connection_pool
        return pool

    def _sentinel_kwargs(self) -> dict[str, Any]:
        return {
            "password": self.sentinel_password,
            "socket_timeout": _SENTINEL_TIMEOUT,
            "socket_connect_timeout": _SENTINEL_TIMEOUT,
        }


def _retry() -> Retry:
    # One per client: a Retry keeps no state across calls, but sharing one ties clients together.
    return Retry(ExponentialBackoff(cap=1.0, base=0.05), retries=3)
