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

import contextlib
from typing import Self

import redis.asyncio as aioredis
import structlog
from redis.exceptions import RedisError, ResponseError

from dispatcher.core.errors import StoreUnavailable
from dispatcher.core.redis_access import RedisAccess
from dispatcher.store.acklog import AckLogStore
from dispatcher.store.alerts import AlertStore
from dispatcher.store.approvals import ApprovalStore
from dispatcher.store.audit import AuditStore
from dispatcher.store.keys import LEGACY_PATTERNS, SCHEMA, SCHEMA_VERSION, legacy_rename
from dispatcher.store.people import PeopleStore
from dispatcher.store.streams import OutboxStore
from dispatcher.store.sweeps import SweepStore
from dispatcher.store.terminals import TerminalStore

log = structlog.get_logger(__name__)


class Store(AlertStore, SweepStore, AckLogStore, TerminalStore, OutboxStore):
    """Every part on one Redis client; ``Store.from_url`` makes one, ``close`` ends it."""

    def __init__(
        self, client: aioredis.Redis, *, replicas_ack: int = 0, replicas_ack_timeout_ms: int = 500
    ) -> None:
        super().__init__(client)
        # An accepted alert and each recorded batch of acks wait for this many replicas
        # (Redis WAIT) before the engine answers for them: docs/redis-ha.md.
        self.replicas_ack = replicas_ack
        self.replicas_ack_timeout_ms = replicas_ack_timeout_ms
        self.ack_script.wait_replicas = replicas_ack
        self.ack_script.wait_timeout_ms = replicas_ack_timeout_ms
        # An attribute, not a mixin: its ``append`` and ``read`` would clash with the others',
        # and it keeps state of its own (the chain's head, the lock appends take turns on).
        self.audit = AuditStore(client)
        # People, their API tokens and sessions: a part of its own like the audit log.
        self.people = PeopleStore(client)
        # Submissions waiting for an approver (``get``/``add`` would clash with the others').
        self.approvals = ApprovalStore(client)

    @classmethod
    def from_url(cls, url: str) -> Self:
        return cls.from_access(RedisAccess(url=url))

    @classmethod
    def from_access(
        cls, access: RedisAccess, *, replicas_ack: int = 0, replicas_ack_timeout_ms: int = 500
    ) -> Self:
        """A store on the primary that ``access`` reaches: one URL, or through Sentinel."""
        return cls(
            access.client(decode_responses=True),
            replicas_ack=replicas_ack,
            replicas_ack_timeout_ms=replicas_ack_timeout_ms,
        )

    async def close(self) -> None:
        # Through Sentinel the client's pool also holds a client of each sentinel.
        sentinels = getattr(self.redis.connection_pool, "sentinel_manager", None)
        await self.redis.aclose()
        if sentinels is not None:
            with contextlib.suppress(RedisError, OSError):
                await sentinels.aclose()

    async def ping(self) -> bool:
        try:
            return bool(await self.redis.ping())
        except (RedisError, OSError):
            return False

    async def rename_legacy_keys(self) -> int:
        """Rename the keys an older engine named without hash tags; how many it renamed.

        Run at every start, it reads one key once done. Two engines starting at once both
        scan; RENAMENX leaves a key the other renamed first alone. Engines of the old version
        must all be stopped first: they would go on writing the old names.
        """
        try:
            if int(await self.redis.get(SCHEMA) or 0) >= SCHEMA_VERSION:
                return 0
            renamed = 0
            for pattern in LEGACY_PATTERNS:
                async for key in self.redis.scan_iter(match=pattern, count=1000):
                    new = legacy_rename(key)
                    if new is None:
                        continue
                    with contextlib.suppress(ResponseError):  # gone: renamed by another
                        renamed += int(await self.redis.renamenx(key, new))
            await self.redis.set(SCHEMA, SCHEMA_VERSION)
        except (RedisError, OSError) as exc:
            raise StoreUnavailable(f"could not rename the old keys: {exc}") from exc
        if renamed:
            log.info("store.keys_renamed", keys=renamed, schema=SCHEMA_VERSION)
        return renamed
