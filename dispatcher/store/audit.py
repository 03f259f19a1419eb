"""The audit log in Redis: appending a record to the chain, reading it back by seq or time.

Records live in a hash by seq, with a zset of their times for ranges and the chain's head
(seq, hash) in a hash of its own (keys in ``keys.py``). Redis's Lua has no SHA-256, so an append
is optimistic: read the head, build and hash the record here, and let ``audit_append.lua`` write
it only if the head is still the one it was built on; otherwise build again on the new head.
Appends of one process take turns behind a lock and remember the head they wrote, so the usual
append is one round trip and conflicts come only from another engine instance.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from typing import Unpack

import redis.asyncio as aioredis
import structlog

from dispatcher.core.audit import (
    GENESIS,
    AuditEntry,
    AuditRecord,
    ChainVerifier,
    Checkpoint,
    Problem,
    Unreadable,
)
from dispatcher.core.errors import EbdError, StoreUnavailable
from dispatcher.core.models import utcnow
from dispatcher.store.base import StoreBase
from dispatcher.store.keys import AUDIT_BY_TIME, AUDIT_HEAD, AUDIT_RECORDS

log = structlog.get_logger(__name__)

# Conflicts mean other instances appended meanwhile; each retry reads their head, so this many
# in a row means something rewrites the head in a loop.
_APPEND_ATTEMPTS = 50
_PAGE = 500


@dataclass(frozen=True, slots=True)
class Verification:
    """A walk of the whole log: its problems, how many records it read, the head it ended on."""

    problems: list[Problem]
    records: int
    head: Checkpoint

    @property
    def ok(self) -> bool:
        return not self.problems


class AuditStore(StoreBase):
    def __init__(self, client: aioredis.Redis) -> None:
        super().__init__(client)
        self._append = self.script("dispatcher.store", "audit_append")
        self._lock = asyncio.Lock()
        self._head: Checkpoint | None = None  # what this process last wrote or read
        self.append_failures = 0  # records lost: Redis refused them (see ``record``)

    async def head(self) -> Checkpoint:
        seq, hash_ = await self.call(self.redis.hmget(AUDIT_HEAD, ["seq", "hash"]))
        return Checkpoint(int(seq or 0), hash_ or GENESIS)

    async def append(
        self, *, at: datetime | None = None, **entry: Unpack[AuditEntry]
    ) -> AuditRecord:
        """Append a record to the chain and return it; ``StoreUnavailable`` if Redis did not
        take it. For callers outside HTTP (CLI, start-up): who, from where and what, given."""
        async with self._lock:
            head = self._head or await self.head()
            for _attempt in range(_APPEND_ATTEMPTS):
                record = AuditRecord.build(after=head, at=at or utcnow(), **entry)
                answer = await self.call(
                    self._append(
                        keys=[AUDIT_HEAD, AUDIT_RECORDS, AUDIT_BY_TIME],
                        args=[
                            head.seq,
                            head.hash,
                            record.seq,
                            record.hash,
                            record.to_json(),
                            int(record.at.timestamp() * 1000),
                        ],
                    )
                )
                if answer == 1:
                    self._head = record.checkpoint
                    return record
                self._head = None
                head = Checkpoint(int(answer[1]), str(answer[2]))
            raise StoreUnavailable("the audit log's head kept changing; try again")

    async def record(self, **entry: Unpack[AuditEntry]) -> AuditRecord | None:
        """``append`` after an action has happened: if Redis refuses the record, log an error
        and count it (``append_failures``, the ``ebd_audit_append_failures`` metric) instead of
        raising. The action is done and cannot be taken back; answering its caller with an
        error would make them retry an alert that went out, and refusing life-safety actions
        because the log is down is worse than a gap an operator is alarmed about."""
        try:
            return await self.append(**entry)
        except EbdError as exc:
            self.append_failures += 1
            log.error(
                "audit.append_failed",
                office=entry["office"],
                action=str(entry["action"]),
                target=entry["target"],
                error=exc.message,
            )
            return None

    async def read(self, after: int, count: int) -> list[AuditRecord | Unreadable]:
        """The records in slots ``after+1`` … ``after+count`` that exist, in slot order."""
        if count <= 0:
            return []
        slots = list(range(after + 1, after + count + 1))
        raws = await self.call(self.redis.hmget(AUDIT_RECORDS, [str(s) for s in slots]))
        out: list[AuditRecord | Unreadable] = []
        for slot, raw in zip(slots, raws, strict=True):
            if raw is None:
                continue
            try:
                out.append(AuditRecord.from_json(raw))
            except ValueError as exc:
                out.append(Unreadable(slot, str(exc)))
        return out

    async def _seq_at(self, ms: int, *, first_after: bool) -> int | None:
        """The first seq at or after ``ms`` (``first_after``), else the last at or before."""
        if first_after:
            found = self.redis.zrangebyscore(AUDIT_BY_TIME, ms, "+inf", start=0, num=1)
        else:
            found = self.redis.zrevrangebyscore(AUDIT_BY_TIME, ms, "-inf", start=0, num=1)
        seqs = await self.call(found)
        return int(seqs[0]) if seqs else None

    async def _bounds(
        self, since: datetime | None, until: datetime | None, after: int
    ) -> tuple[int, int]:
        """The slots to scan, (after this, up to this), for a time range."""
        end = (await self.head()).seq
        if since is not None:
            first = await self._seq_at(_ms(since), first_after=True)
            after = max(after, (first - 1) if first is not None else end)
        if until is not None:
            last = await self._seq_at(_ms(until), first_after=False)
            end = min(end, last if last is not None else 0)
        return after, end

    async def query(
        self,
        *,
        since: datetime | None = None,
        until: datetime | None = None,
        office: str | None = None,
        action: str | None = None,
        after: int = 0,
        limit: int = 100,
        scan: int = 20 * _PAGE,
    ) -> tuple[list[AuditRecord], int | None]:
        """Up to ``limit`` records after seq ``after`` that match, and the cursor to go on
        from (None at the end). At most ``scan`` records are looked at per call, so a filter
        that matches little answers promptly with fewer records and a cursor."""
        start, end = await self._bounds(since, until, after)
        found: list[AuditRecord] = []
        cursor = start
        while cursor < end and cursor - start < scan:
            page = await self.read(cursor, min(_PAGE, end - cursor))
            scanned_to = min(cursor + _PAGE, end)
            for record in page:
                if not isinstance(record, AuditRecord) or not _matches(
                    record, since, until, office, action
                ):
                    continue
                found.append(record)
                if len(found) == limit:
                    return found, (record.seq if record.seq < end else None)
            cursor = scanned_to
        return found, (cursor if cursor < end else None)

    async def export(
        self, *, since: datetime | None = None, until: datetime | None = None
    ) -> AsyncIterator[list[AuditRecord]]:
        """The records of a time range (all by default), a page at a time."""
        cursor, end = await self._bounds(since, until, 0)
        while cursor < end:
            page = await self.read(cursor, min(_PAGE, end - cursor))
            cursor = min(cursor + _PAGE, end)
            records = [
                r
                for r in page
                if isinstance(r, AuditRecord) and _matches(r, since, until, None, None)
            ]
            if records:
                yield records

    async def verify(self, start: Checkpoint | None = None) -> Verification:
        """Walk the chain from ``start`` (the beginning by default), a page at a time, and
        check its end against the head kept beside it."""
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hmget(AUDIT_HEAD, ["seq", "hash"])
            pipe.hlen(AUDIT_RECORDS)
            (seq, hash_), stored = await self.call(pipe.execute())
        head = Checkpoint(int(seq or 0), hash_ or GENESIS)
        verifier = ChainVerifier(at=start or Checkpoint())
        # Records past the head (the head was rolled back) are read too: HLEN bounds them,
        # unless records were also removed below, which the walk reports anyway.
        end = max(head.seq, int(stored))
        problems: list[Problem] = []
        cursor = verifier.at.seq
        while cursor < end:
            problems.extend(verifier.feed(await self.read(cursor, min(_PAGE, end - cursor))))
            cursor += _PAGE
        problems.extend(verifier.finish(head))
        return Verification(problems=problems, records=verifier.records, head=head)


def _ms(at: datetime) -> int:
    return int(at.timestamp() * 1000)


def _matches(
    record: AuditRecord,
    since: datetime | None,
    until: datetime | None,
    office: str | None,
    action: str | None,
) -> bool:
    # The time index only finds where to start and stop; engines' clocks may differ a little,
    # so each record's own time decides.
    return (
        (since is None or record.at >= since)
        and (until is None or record.at <= until)
        and (office is None or record.office == office)
        and (action is None or record.action == action)
    )
