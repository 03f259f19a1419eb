"""Work streams read through a consumer group (the outbox pattern), and the dispatch outbox."""

from __future__ import annotations

from collections.abc import Sequence

import redis.asyncio as aioredis
from redis.exceptions import RedisError, ResponseError

from dispatcher.core.errors import StoreRefused, StoreUnavailable
from dispatcher.store.base import StoreBase
from dispatcher.store.keys import OUTBOX, OUTBOX_GROUP


class WorkStream:
    """A Redis stream of work read through a consumer group: the outbox pattern of dispatch
    and of the SMS channel. An entry stays pending until ``done``; a consumer re-reads its own
    pending entries after a restart, and entries idle too long are claimed by another."""

    def __init__(self, store: StoreBase, stream: str, group: str) -> None:
        self._store = store
        self._redis = store.redis
        self.stream = stream
        self.group = group

    async def ensure(self) -> None:
        try:
            await self._redis.xgroup_create(self.stream, self.group, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise StoreUnavailable(f"cannot create the group of {self.stream}: {exc}") from exc
        except (RedisError, OSError) as exc:
            raise StoreUnavailable(f"cannot create the group of {self.stream}: {exc}") from exc

    async def read(
        self, consumer: str, *, count: int, block_ms: int, pending: bool = False
    ) -> list[tuple[str, dict[str, str]]]:
        """New entries, or (``pending``) this consumer's own unfinished ones."""
        try:
            result = await self._store.call(
                self._redis.xreadgroup(
                    self.group,
                    consumer,
                    {self.stream: "0" if pending else ">"},
                    count=count,
                    block=None if pending else block_ms,
                )
            )
        except StoreUnavailable as exc:
            if "NOGROUP" not in _reply(exc):
                raise
            # Redis lost the stream (a restart without persistence, a FLUSHALL): make it
            # again rather than stop working for good.
            await self.ensure()
            return []
        return [(eid, fields) for _, entries in result or [] for eid, fields in entries]

    async def claim(
        self, consumer: str, *, min_idle_ms: int, count: int = 100
    ) -> list[tuple[str, dict[str, str]]]:
        """Take over entries another consumer left pending longer than ``min_idle_ms``."""
        try:
            result = await self._store.call(
                self._redis.xautoclaim(self.stream, self.group, consumer, min_idle_ms, count=count)
            )
        except StoreUnavailable as exc:
            if "NOGROUP" not in _reply(exc):
                raise
            await self.ensure()
            return []
        return [(eid, fields) for eid, fields in result[1] if fields]

    async def touch(self, consumer: str, entry_ids: Sequence[str]) -> None:
        """Reset the idle time of entries still being worked on, so no one else claims them."""
        if entry_ids:
            await self._store.call(
                self._redis.xclaim(
                    self.stream, self.group, consumer, 0, list(entry_ids), justid=True
                )
            )

    async def done(self, entry_id: str) -> None:
        await self._store.call(self._redis.xack(self.stream, self.group, entry_id))


class OutboxStore(StoreBase):
    """The dispatch outbox: alert ids the API accepted, taken by the dispatch workers."""

    def __init__(self, client: aioredis.Redis) -> None:
        super().__init__(client)
        self.outbox = WorkStream(self, OUTBOX, OUTBOX_GROUP)

    async def ensure_outbox(self) -> None:
        await self.outbox.ensure()

    async def outbox_read(
        self, consumer: str, *, count: int, block_ms: int, pending: bool = False
    ) -> list[tuple[str, str]]:
        """(entry id, alert id) pairs: new entries, or this consumer's own pending ones."""
        entries = await self.outbox.read(consumer, count=count, block_ms=block_ms, pending=pending)
        return [(eid, fields.get("alert_id", "")) for eid, fields in entries]

    async def outbox_claim(self, consumer: str, *, min_idle_ms: int) -> list[tuple[str, str]]:
        """Take over entries another worker left pending longer than ``min_idle_ms``."""
        entries = await self.outbox.claim(consumer, min_idle_ms=min_idle_ms)
        return [(eid, fields.get("alert_id", "")) for eid, fields in entries]

    async def outbox_done(self, entry_id: str) -> None:
        await self.outbox.done(entry_id)


def _reply(exc: StoreUnavailable) -> str:
    """What Redis said, where it said something (``StoreRefused``)."""
    return exc.reply if isinstance(exc, StoreRefused) else exc.message
