"""Work streams read through a consumer group (the outbox pattern), and the dispatch outbox."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError, ResponseError

from dispatcher.core.errors import StoreRefused, StoreUnavailable
from dispatcher.store.base import StoreBase
from dispatcher.store.keys import OUTBOX, OUTBOX_GROUP, OUTBOX_URGENT, lease_key
from dispatcher.store.liveness import LivenessStore

Entries = list[tuple[str, dict[str, str]]]


class WorkStream:
    """A Redis stream of work read through a consumer group: the outbox pattern of dispatch
    and of the SMS channel. An entry stays pending until ``done``; a consumer re-reads its own
    pending entries after a restart; another takes over the entries of a consumer whose
    liveness lease lapsed at once (``claim_dead``), and those of a consumer with no lease once
    they sat idle too long (``claim``)."""

    def __init__(self, store: StoreBase, stream: str, group: str) -> None:
        self._store = store
        self._redis = store.redis
        self.stream = stream
        self.group = group
        self._claim_dead = store.script("dispatcher.store", "claim_dead")

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
        self,
        consumer: str,
        *,
        min_idle_ms: int,
        count: int = 100,
        liveness: LivenessStore | None = None,
    ) -> Entries:
        """Take over entries another consumer left pending longer than ``min_idle_ms``; with
        ``liveness``, never those of a consumer holding its lease (it is slow, not gone)."""
        if liveness is not None:
            return await self._claim_idle_spared(consumer, min_idle_ms, count, liveness)
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

    async def _claim_idle_spared(
        self, consumer: str, min_idle_ms: int, count: int, liveness: LivenessStore
    ) -> Entries:
        try:
            idle = await self._store.call(
                self._redis.xpending_range(
                    self.stream, self.group, "-", "+", count, idle=min_idle_ms
                )
            )
        except StoreUnavailable as exc:
            if "NOGROUP" not in _reply(exc):
                raise
            await self.ensure()
            return []
        by_owner: dict[str, list[str]] = defaultdict(list)
        for row in idle:
            if row["consumer"] != consumer:
                by_owner[row["consumer"]].append(row["message_id"])
        spared = await liveness.alive(by_owner)
        ids = [eid for owner, eids in by_owner.items() if owner not in spared for eid in eids]
        if not ids:
            return []
        # XCLAIM's own idle test: an entry its owner touched meanwhile stays with it.
        result = await self._store.call(
            self._redis.xclaim(self.stream, self.group, consumer, min_idle_ms, list(ids))
        )
        return [(eid, fields) for eid, fields in result if fields]

    async def claim_dead(
        self, consumer: str, liveness: LivenessStore, *, count: int = 100
    ) -> tuple[Entries, set[str]]:
        """Take over every pending entry of registered consumers whose lease lapsed, however
        long they have been idle; the entries and the consumers they came from."""
        try:
            consumers = await self._store.call(self._redis.xinfo_consumers(self.stream, self.group))
        except StoreUnavailable as exc:
            if "NOGROUP" not in _reply(exc):
                raise
            await self.ensure()
            return [], set()
        holding = [c["name"] for c in consumers if int(c["pending"]) and c["name"] != consumer]
        dead = await liveness.dead(holding)
        entries: Entries = []
        taken_from = set()
        for name in sorted(dead):
            result = await self._store.call(
                self._claim_dead(
                    keys=[self.stream, lease_key(name)],
                    args=[self.group, name, consumer, count],
                )
            )
            claimed = _entries(result)
            if claimed:
                entries += claimed
                taken_from.add(name)
        return entries, taken_from

    async def owner(self, entry_id: str) -> str | None:
        """The consumer the entry is pending at; None once it is done (or unknown)."""
        rows = await self._store.call(
            self._redis.xpending_range(self.stream, self.group, entry_id, entry_id, 1)
        )
        return str(rows[0]["consumer"]) if rows else None

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


@dataclass(frozen=True, slots=True)
class OutboxEntry:
    """One alert waiting to be dispatched: its entry in the urgent stream or the other one."""

    id: str
    alert_id: str
    urgent: bool = False


class OutboxStore(StoreBase):
    """The dispatch outbox: alert ids the API accepted, taken by the dispatch workers.

    Two streams with the same consumer group: actual red and orange warnings go to the urgent
    one (``Alert.urgent``), everything else to the other, and workers serve the urgent one
    first, so a red warning never waits behind a queue of drills or blue notices.
    """

    def __init__(self, client: aioredis.Redis) -> None:
        super().__init__(client)
        self.outbox = WorkStream(self, OUTBOX, OUTBOX_GROUP)
        self.outbox_urgent = WorkStream(self, OUTBOX_URGENT, OUTBOX_GROUP)

    def _streams(self) -> tuple[WorkStream, WorkStream]:
        return self.outbox_urgent, self.outbox

    async def ensure_outbox(self) -> None:
        for stream in self._streams():
            await stream.ensure()

    async def outbox_read(
        self, consumer: str, *, count: int, block_ms: int, pending: bool = False
    ) -> list[OutboxEntry]:
        """New entries, or (``pending``) this consumer's own unfinished ones; urgent first.
        One read of both streams: it returns as soon as either has something."""
        streams = {stream.stream: "0" if pending else ">" for stream in self._streams()}
        try:
            result = await self.call(
                self.redis.xreadgroup(
                    OUTBOX_GROUP,
                    consumer,
                    streams,  # type: ignore[arg-type]  # redis-py's stubs want a narrower dict
                    count=count,
                    block=None if pending else block_ms,
                )
            )
        except StoreUnavailable as exc:
            if "NOGROUP" not in _reply(exc):
                raise
            # Redis lost a stream (a restart without persistence, a FLUSHALL): make it again
            # rather than stop working for good.
            await self.ensure_outbox()
            return []
        entries = [
            OutboxEntry(eid, fields.get("alert_id", ""), name == OUTBOX_URGENT)
            for name, rows in _by_stream(result)
            for eid, fields in rows
        ]
        return sorted(entries, key=lambda e: not e.urgent)

    async def outbox_read_urgent(self, consumer: str, *, count: int) -> list[OutboxEntry]:
        """New urgent entries now, without waiting: looked at between two other dispatches."""
        try:
            result = await self.call(
                self.redis.xreadgroup(OUTBOX_GROUP, consumer, {OUTBOX_URGENT: ">"}, count=count)
            )
        except StoreUnavailable as exc:
            if "NOGROUP" not in _reply(exc):
                raise
            await self.ensure_outbox()
            return []
        return [
            OutboxEntry(eid, fields.get("alert_id", ""), True)
            for _, rows in _by_stream(result)
            for eid, fields in rows
        ]

    async def outbox_claim(
        self, consumer: str, *, min_idle_ms: int, liveness: LivenessStore | None = None
    ) -> list[OutboxEntry]:
        """Take over entries another worker left pending longer than ``min_idle_ms`` (with
        ``liveness``: not those of a worker holding its lease)."""
        out: list[OutboxEntry] = []
        for stream in self._streams():
            entries = await stream.claim(consumer, min_idle_ms=min_idle_ms, liveness=liveness)
            out += _outbox_entries(stream, entries)
        return out

    async def outbox_claim_dead(
        self, consumer: str, liveness: LivenessStore
    ) -> tuple[list[OutboxEntry], set[str]]:
        """Take over the entries of workers whose lease lapsed; and which workers those were."""
        out: list[OutboxEntry] = []
        taken_from: set[str] = set()
        for stream in self._streams():
            entries, dead = await stream.claim_dead(consumer, liveness)
            out += _outbox_entries(stream, entries)
            taken_from |= dead
        return out, taken_from

    async def outbox_owner(self, entry: OutboxEntry) -> str | None:
        return await self._stream_of(entry).owner(entry.id)

    async def outbox_done(self, entry: OutboxEntry) -> None:
        await self._stream_of(entry).done(entry.id)

    def _stream_of(self, entry: OutboxEntry) -> WorkStream:
        return self.outbox_urgent if entry.urgent else self.outbox


def _outbox_entries(stream: WorkStream, entries: Entries) -> list[OutboxEntry]:
    urgent = stream.stream == OUTBOX_URGENT
    return [OutboxEntry(eid, fields.get("alert_id", ""), urgent) for eid, fields in entries]


def _by_stream(reply: Any) -> list[tuple[str, Entries]]:
    """XREADGROUP's reply: [stream, entries] pairs."""
    return [(str(name), list(rows)) for name, rows in reply or []]


def _entries(reply: Any) -> Entries:
    """XCLAIM's reply as a script returns it: [id, [field, value, …]] pairs; an entry deleted
    meanwhile comes without its fields and is left out."""
    out: Entries = []
    for eid, flat in reply or []:
        if flat:
            out.append((str(eid), dict(zip(flat[::2], flat[1::2], strict=True))))
    return out


def _reply(exc: StoreUnavailable) -> str:
    """What Redis said, where it said something (``StoreRefused``)."""
    return exc.reply if isinstance(exc, StoreRefused) else exc.message
