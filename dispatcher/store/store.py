"""The engine's view of Redis: one ``Store`` made of a part per concern, owning the client.

    alerts.py     alerts, idempotency, dispatch records           keys.py   every key
    delivery.py   expected terminals, acks, counts                lua.py    scripts as files
    acklog.py     the ack log                                     base.py   client, errors
    sweeps.py     deadlines, resends, escalations                 scripts/  the Lua
    terminals.py  the terminal registry
    streams.py    work streams and the dispatch outbox
    audit.py      the audit log (``Store.audit``: its own part, not mixed in)

Nothing outside ``dispatcher/store`` (and the features' own ``store.py``, on this client)
speaks to Redis.
"""

from __future__ import annotations

from typing import Self

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from dispatcher.store.acklog import AckLogStore
from dispatcher.store.alerts import AlertStore
from dispatcher.store.approvals import ApprovalStore
from dispatcher.store.audit import AuditStore
from dispatcher.store.people import PeopleStore
from dispatcher.store.streams import OutboxStore
from dispatcher.store.sweeps import SweepStore
from dispatcher.store.terminals import TerminalStore


class Store(AlertStore, SweepStore, AckLogStore, TerminalStore, OutboxStore):
    """Every part on one Redis client; ``Store.from_url`` makes one, ``close`` ends it."""

    def __init__(self, client: aioredis.Redis) -> None:
        super().__init__(client)
        # An attribute, not a mixin: its ``append`` and ``read`` would clash with the others',
        # and it keeps state of its own (the chain's head, the lock appends take turns on).
        self.audit = AuditStore(client)
        # People, their API tokens and sessions: a part of its own like the audit log.
        self.people = PeopleStore(client)
        # Submissions waiting for an approver (``get``/``add`` would clash with the others').
        self.approvals = ApprovalStore(client)

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
