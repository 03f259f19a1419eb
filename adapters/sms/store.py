"""All Redis access of the SMS channel (its keys: ``dispatcher.store.keys``).

A message is marked ``submitting`` (with an owner and an entry in the doubt set) in Redis
before its request leaves, and every later step is a script that moves it on only from the
state it expects. So a crash at any point leaves either a queued message (sent later, once) or
one in doubt (looked up at its gateway, never blindly sent again).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import IntEnum
from typing import Any, NamedTuple, cast

from adapters.sms.gateway import DeliveryStatus, Receipt, SubmitResult
from adapters.sms.pool import Pace
from dispatcher.core.errors import StoreUnavailable
from dispatcher.core.regions import code_path
from dispatcher.store.base import StoreBase, hash_fields
from dispatcher.store.keys import (
    SMS_DOUBT,
    SMS_LIMIT_PREFIX,
    SMS_OUTBOX,
    SMS_OUTBOX_GROUP,
    SMS_OUTBOX_ROUTINE,
    SMS_RECEIPT_SEEN,
    SMS_RECEIPTS,
    SMS_RECIPS,
    SMS_STATS,
    sms_bucket_key,
    sms_job_key,
    sms_job_keys,
    sms_region_recips_key,
    sms_sent_log_key,
)
from dispatcher.store.liveness import LivenessStore
from dispatcher.store.set_batch import SCRIPT as SET_CHANGES
from dispatcher.store.set_batch import SetChanges
from dispatcher.store.store import Store
from dispatcher.store.streams import WorkStream

STATES = (
    "queued",
    "submitting",
    "unknown",
    "submitted",
    "delivered",
    "failed",
    "cancelled",
    "expired",
)
# A receipt log of a few province-wide alerts' worth.
RECEIPTS_MAXLEN = 1_000_000


class Lane(IntEnum):
    """Which outbox a job's texts wait in; lower is served first (``lane_of``)."""

    URGENT = 0  # actual red and orange warnings, their updates, cancels and escalations
    ROUTINE = 1  # drills, tests, yellow and blue


class Chunk(NamedTuple):
    """An outbox entry: some recipients of one job."""

    lane: Lane
    entry_id: str
    job: str
    keys: list[str]


@dataclass(frozen=True, slots=True)
class Pending:
    """One recipient's send record as the worker needs it."""

    key: str
    state: str
    info: dict[str, Any]


class SmsStore(StoreBase):
    """The SMS channel's view of Redis, on the engine store's client."""

    def __init__(self, store: Store) -> None:
        super().__init__(store.redis)
        # Each script says in its file what it does and which keys and arguments it takes.
        self._plan = self.script("adapters.sms", "plan")
        self._set_changes = self.redis.register_script(SET_CHANGES)
        self._begin = self.script("adapters.sms", "begin", prelude="move")
        self._finish = self.script("adapters.sms", "finish", prelude="move")
        self._receipts = self.script("adapters.sms", "receipts", prelude="move")
        self._settle = self.script("adapters.sms", "settle", prelude="move")
        self._close = self.script("adapters.sms", "close", prelude="move")
        self._take = self.script("adapters.sms", "take")
        self._claim = self.script("adapters.sms", "claim")
        self.outboxes = {
            Lane.URGENT: WorkStream(store, SMS_OUTBOX, SMS_OUTBOX_GROUP),
            Lane.ROUTINE: WorkStream(store, SMS_OUTBOX_ROUTINE, SMS_OUTBOX_GROUP),
        }
        # A job's lane never changes: remembered once read (the settler requeues by job).
        self._lanes: dict[str, Lane] = {}

    # Recipients ---------------------------------------------------------------------------

    async def register_persons(
        self, persons: Sequence[tuple[str, dict[str, Any]]], keep: Callable[[str], bool]
    ) -> dict[str, int]:
        """Write persons (key, person dict); all or none.

        An import speaks for the office that sends it: a person's postings in regions for
        which ``keep`` is true (outside that office's jurisdiction) stay, the rest are replaced
        by the new ones. The registry is WATCHed while the old records are read, as for
        terminals, so two imports at once cannot leave stale index entries.
        """

        def queue(pipe: Any, old: list[str | None]) -> dict[str, int]:
            tally = {"created": 0, "updated": 0, "unchanged": 0}
            # The region sets' changes and the records as a few commands, not one per person
            # and level: redis-py reads every reply on the loop (``SetChanges``).
            changes = SetChanges()
            records: dict[str, str] = {}
            for (key, person), previous in zip(persons, old, strict=True):
                raw = _merged(person, previous, keep)
                if previous == raw:
                    tally["unchanged"] += 1
                    continue
                tally["updated" if previous else "created"] += 1
                _index_changes(changes, key, previous, raw)
                records[key] = raw
            changes.queue(pipe, self._set_changes)
            if records:
                pipe.hset(SMS_RECIPS, mapping=hash_fields(records))
            return tally

        return await self.watched_update(
            SMS_RECIPS, [p[0] for p in persons], queue, what="the recipient registry"
        )

    async def first_receipt_post(self, gateway: str, signature: str, ttl: float) -> bool:
        """Remember a signed receipt post for ``ttl`` seconds (SET NX PX); False if it was
        seen before: a replay."""
        key = SMS_RECEIPT_SEEN + f"{gateway}:{hashlib.sha256(signature.encode()).hexdigest()}"
        return bool(await self.call(self.redis.set(key, "1", nx=True, px=int(ttl * 1000))))

    async def forget_receipt_post(self, gateway: str, signature: str) -> None:
        """Undo ``first_receipt_post`` for a post that could not be applied: its retry counts."""
        key = SMS_RECEIPT_SEEN + f"{gateway}:{hashlib.sha256(signature.encode()).hexdigest()}"
        await self.call(self.redis.delete(key))

    async def remove_postings(self, key: str, keep: Callable[[str], bool]) -> int | None:
        """Remove a person's postings for which ``keep`` is false (the person too when none
        is left); None if there is no such person, else how many postings were removed."""
        raw = await self.call(self.redis.hget(SMS_RECIPS, key))
        if raw is None:
            return None
        person = json.loads(raw)
        kept = [p for p in person.get("postings", []) if keep(p[0])]
        removed = len(person.get("postings", [])) - len(kept)
        async with self.redis.pipeline(transaction=True) as pipe:
            if kept:
                new = json.dumps(
                    {**person, "postings": kept}, ensure_ascii=False, separators=(",", ":")
                )
                _queue_index(pipe, key, raw, new)
                pipe.hset(SMS_RECIPS, key, new)
            else:
                _queue_index(pipe, key, raw, None)
                pipe.hdel(SMS_RECIPS, key)
            await self.call(pipe.execute())
        return removed

    async def person_keys_below(self, codes: Sequence[str]) -> list[str]:
        """Keys of every person with a posting at or below one of ``codes``, sorted."""
        if not codes:
            return []
        return sorted(await self.call(self.redis.sunion([sms_region_recips_key(c) for c in codes])))

    async def persons(self, keys: Sequence[str]) -> list[tuple[str, str]]:
        """(key, JSON) of these persons; those removed meanwhile are left out."""
        if not keys:
            return []
        raws = await self.call(self.redis.hmget(SMS_RECIPS, list(keys)))
        return [(k, raw) for k, raw in zip(keys, raws, strict=True) if raw is not None]

    async def persons_below(self, codes: Sequence[str]) -> list[str]:
        """JSON of every person with a posting at or below one of ``codes``."""
        keys = await self.person_keys_below(codes)
        out: list[str] = []
        for start in range(0, len(keys), 5000):
            out.extend(raw for _, raw in await self.persons(keys[start : start + 5000]))
        return out

    async def job(self, job: str) -> dict[str, str]:
        return cast(dict[str, str], await self.call(self.redis.hgetall(sms_job_key(job))))

    async def set_job(self, job: str, **fields: str | int) -> None:
        await self.call(self.redis.hset(sms_job_key(job), mapping=hash_fields(fields)))

    async def plan(
        self,
        job: str,
        recipients: Sequence[tuple[str, dict[str, Any]]],
        *,
        lane: Lane = Lane.URGENT,
        chunk: int = 500,
    ) -> int:
        """Queue recipients (key, info with its "segments") of a job in its lane's outbox;
        returns how many were new."""
        added = 0
        keys = [*sms_job_keys(job), self.outboxes[lane].stream]
        # One chunk per script: a longer one holds Redis, and with it every sender's pace and
        # write-ahead step, long enough to bunch their requests at the gateway.
        for start in range(0, len(recipients), chunk):
            payload = json.dumps(recipients[start : start + chunk], ensure_ascii=False)
            added += int(await self.call(self._plan(keys=keys, args=[job, chunk, payload])))
        return added

    async def lane(self, job: str) -> Lane:
        """The lane a job's texts wait in (as its planner wrote it; urgent if it did not)."""
        if job in self._lanes:
            return self._lanes[job]
        raw = await self.call(self.redis.hget(sms_job_key(job), "lane"))
        if raw not in ("0", "1"):
            return Lane.URGENT
        self._lanes[job] = Lane(int(raw))
        return self._lanes[job]

    async def counts(self, job: str) -> dict[str, int]:
        raw = await self.call(self.redis.hgetall(sms_job_keys(job)[2]))
        return {k: int(v) for k, v in raw.items()}

    async def pending(self, job: str, keys: Sequence[str]) -> list[Pending]:
        state_key, info_key, _ = sms_job_keys(job)
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hmget(state_key, list(keys))
            pipe.hmget(info_key, list(keys))
            states, infos = await self.call(pipe.execute())
        return [
            Pending(key, state, json.loads(info))
            for key, state, info in zip(keys, states, infos, strict=True)
            if state is not None and info is not None
        ]

    async def all_recipients(self, job: str) -> list[Pending]:
        state_key, info_key, _ = sms_job_keys(job)
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hgetall(state_key)
            pipe.hgetall(info_key)
            states, infos = await self.call(pipe.execute())
        return [
            Pending(key, state, json.loads(infos[key]))
            for key, state in sorted(states.items())
            if key in infos
        ]

    async def begin_submit(
        self,
        job: str,
        keys: Sequence[str],
        *,
        now_ms: int,
        owner: str,
        gateway: str,
        doubt_due_ms: int,
        limit: int,
        exempt: bool,
        hour: str,
    ) -> list[str]:
        args: list[str | int] = [
            now_ms, owner, gateway, doubt_due_ms, job, limit, "1" if exempt else "0", hour,
            SMS_LIMIT_PREFIX, *keys,
        ]  # fmt: skip
        taken = await self.call(self._begin(keys=[*sms_job_keys(job), SMS_DOUBT], args=args))
        return list(taken or [])

    async def finish_submit(
        self,
        job: str,
        results: Sequence[tuple[str, SubmitResult, int]],
        *,
        now_ms: int,
        owner: str,
        settle_due_ms: int,
        receipt_due_ms: int,
        max_attempts: int,
        hour: str,
    ) -> list[str]:
        """Record a request's results: (recipient key, result, retry-at ms) each."""
        args: list[str | int] = [
            now_ms, owner, job, settle_due_ms, max_attempts, hour, receipt_due_ms, SMS_LIMIT_PREFIX
        ]  # fmt: skip
        for key, result, retry_at in results:
            args.extend(
                (key, result.status.value, result.message_id or "", result.error or "", retry_at)
            )
        out = await self.call(self._finish(keys=[*sms_job_keys(job), SMS_DOUBT], args=args))
        return list(out or [])

    async def apply_receipts(
        self,
        job: str,
        receipts: Sequence[tuple[str, Receipt]],
        *,
        receipt_due_ms: int,
        gateway: str,
    ) -> list[str]:
        """Apply receipts (recipient key, receipt) of one job that ``gateway`` posted; returns
        each one's outcome ('wrong_gateway' for a message another gateway holds: unchanged)."""
        args: list[str | int] = [job, receipt_due_ms, gateway]
        for key, receipt in receipts:
            args.extend(
                (
                    key,
                    receipt.status.value,
                    receipt.part,
                    receipt.parts,
                    receipt.message_id or "",
                    receipt.error or "",
                    receipt.at.isoformat() if receipt.at else "",
                )
            )
        out = list(
            await self.call(self._receipts(keys=[*sms_job_keys(job), SMS_DOUBT], args=args)) or []
        )
        async with self.redis.pipeline(transaction=False) as pipe:
            for (key, receipt), outcome in zip(receipts, out, strict=True):
                pipe.xadd(
                    SMS_RECEIPTS,
                    {
                        "job": job,
                        "recipient": key,
                        "status": receipt.status.value,
                        "part": receipt.part,
                        "parts": receipt.parts,
                        "error": receipt.error or "",
                        "outcome": outcome,
                    },
                    maxlen=RECEIPTS_MAXLEN,
                    approximate=True,
                )
            pipe.hincrby(SMS_STATS, "receipts", len(receipts))
            orphans = sum(1 for o in out if o == "orphan")
            if orphans:
                pipe.hincrby(SMS_STATS, "receipts_orphan", orphans)
            wrong = sum(1 for o in out if o == "wrong_gateway")
            if wrong:
                pipe.hincrby(SMS_STATS, "receipts_wrong_gateway", wrong)
            await self.call(pipe.execute())
        return out

    async def settle(
        self,
        job: str,
        answers: Sequence[tuple[str, DeliveryStatus]],
        *,
        now_ms: int,
        recheck_ms: int,
    ) -> list[str]:
        args: list[str | int] = [now_ms, job, recheck_ms]
        for key, status in answers:
            args.extend((key, status.value))
        stream = self.outboxes[await self.lane(job)].stream
        out = await self.call(self._settle(keys=[*sms_job_keys(job), SMS_DOUBT, stream], args=args))
        return list(out or [])

    async def close_job(
        self, job: str, *, to_state: str, reason: str, keys: Sequence[str] | None = None
    ) -> int:
        """Queued recipients of a job (those of ``keys``, or all) become ``to_state``."""
        state_key = sms_job_keys(job)[0]
        closed = 0
        if keys is not None:
            for start in range(0, len(keys), 1000):
                closed += await self._close_some(job, to_state, reason, keys[start : start + 1000])
            return closed
        cursor = 0
        while True:
            cursor, page = await self.call(self.redis.hscan(state_key, cursor, count=1000))
            queued = [k for k, state in page.items() if state == "queued"]
            if queued:
                closed += await self._close_some(job, to_state, reason, queued)
            if cursor == 0:
                return closed

    async def _close_some(self, job: str, to_state: str, reason: str, keys: Sequence[str]) -> int:
        return int(
            await self.call(self._close(keys=sms_job_keys(job), args=[to_state, reason, *keys]))
        )

    # Doubt --------------------------------------------------------------------------------

    async def claim_doubts(self, now_ms: int, *, lease_ms: int, count: int) -> list[str]:
        out = await self.call(
            self._claim(keys=[SMS_DOUBT], args=[now_ms, now_ms + lease_ms, count])
        )
        return list(out or [])

    async def reschedule_doubt(self, members: Sequence[str], due_ms: int) -> None:
        if members:
            await self.call(self.redis.zadd(SMS_DOUBT, dict.fromkeys(members, due_ms)))

    async def drop_doubt(self, members: Sequence[str]) -> None:
        if members:
            await self.call(self.redis.zrem(SMS_DOUBT, *members))

    async def stats(self) -> dict[str, int]:
        """Counters of the receipts taken (``receipts``, ``receipts_orphan`` …)."""
        raw = await self.call(self.redis.hgetall(SMS_STATS))
        return {k: int(v) for k, v in raw.items()}

    async def doubt_count(self) -> int:
        return int(await self.call(self.redis.zcard(SMS_DOUBT)))

    # Throttle -----------------------------------------------------------------------------

    async def take_tokens(self, gateway: str, n: int, *, pace: Pace, urgent: bool) -> int:
        """0 when ``n`` messages may be sent now; otherwise milliseconds to wait before asking
        again. Urgent takers go first, across instances (``scripts/take.lua``)."""
        bucket = sms_bucket_key(gateway)
        # An urgent taker holds routine ones back until two batches' pacing after it asked.
        hold = max(50.0, 2 * pace.batch * pace.spacing_ms)
        args: list[str | int | float] = [
            n, pace.limit, pace.window_ms, pace.spacing_ms, "1" if urgent else "0", hold
        ]  # fmt: skip
        return int(await self.call(self._take(keys=[bucket, sms_sent_log_key(gateway)], args=args)))

    # Outbox -------------------------------------------------------------------------------

    async def ensure_outbox(self) -> None:
        for stream in self.outboxes.values():
            await stream.ensure()

    async def outbox_pending(self, consumer: str, lane: Lane, *, count: int) -> list[Chunk]:
        """This consumer's own unfinished chunks of a lane (after a restart, a Redis error)."""
        stream = self.outboxes[lane]
        entries = await stream.read(consumer, count=count, block_ms=0, pending=True)
        return [_chunk(lane, eid, fields) for eid, fields in entries]

    async def outbox_read_lanes(
        self, consumer: str, rooms: Mapping[Lane, int], block_ms: int
    ) -> list[Chunk]:
        """New chunks of the lanes with room (one XREADGROUP over their streams, so an urgent
        chunk wakes a reader blocked on a quiet routine lane at once), urgent first."""
        lanes = sorted(lane for lane, room in rooms.items() if room > 0)
        if not lanes:
            return []
        streams = {self.outboxes[lane].stream: ">" for lane in lanes}
        try:
            result = await self.call(
                self.redis.xreadgroup(
                    SMS_OUTBOX_GROUP,
                    consumer,
                    streams,  # type: ignore[arg-type]  # redis-py's annotation is too narrow
                    count=min(rooms[lane] for lane in lanes),
                    block=block_ms,
                )
            )
        except StoreUnavailable as exc:
            if "NOGROUP" not in str(exc.__cause__ or exc):
                raise
            # Redis lost a stream (a restart without persistence, a FLUSHALL): make them again.
            await self.ensure_outbox()
            return []
        by_stream = {self.outboxes[lane].stream: lane for lane in lanes}
        out = [
            _chunk(by_stream[stream], eid, fields)
            for stream, entries in result or []
            for eid, fields in entries
        ]
        return sorted(out, key=lambda c: c.lane)

    async def outbox_claim(self, consumer: str, *, min_idle_ms: int) -> list[Chunk]:
        out: list[Chunk] = []
        for lane, stream in self.outboxes.items():
            entries = await stream.claim(consumer, min_idle_ms=min_idle_ms, count=50)
            out += [_chunk(lane, eid, fields) for eid, fields in entries]
        return out

    async def outbox_claim_dead(
        self, consumer: str, liveness: LivenessStore, *, count: int
    ) -> tuple[list[Chunk], set[str]]:
        """Chunks pending with instances whose lease lapsed, taken over at once (urgent
        first); and which instances they came from."""
        out: list[Chunk] = []
        dead: set[str] = set()
        for lane, stream in self.outboxes.items():
            entries, gone = await stream.claim_dead(consumer, liveness, count=count)
            out += [_chunk(lane, eid, fields) for eid, fields in entries]
            dead |= gone
        return out, dead

    async def outbox_touch(self, consumer: str, chunks: Sequence[tuple[Lane, str]]) -> None:
        for lane, stream in self.outboxes.items():
            await stream.touch(consumer, [eid for c_lane, eid in chunks if c_lane is lane])

    async def outbox_done(self, lane: Lane, entry_id: str) -> None:
        await self.outboxes[lane].done(entry_id)


def _chunk(lane: Lane, entry_id: str, fields: Mapping[str, str]) -> Chunk:
    keys = fields.get("rkeys", "")
    return Chunk(lane, entry_id, fields.get("job", ""), [k for k in keys.split(",") if k])


def _regions_of(raw: str | None) -> set[str]:
    """Posting regions of a stored person (postings are [region, role] pairs)."""
    return {p[0] for p in json.loads(raw).get("postings", [])} if raw else set()


def _merged(person: dict[str, Any], previous: str | None, keep: Callable[[str], bool]) -> str:
    """The new record of a person: the office's postings replace its own old ones, postings
    ``keep`` says are another jurisdiction's stay. A person with such a posting belongs to
    that jurisdiction too: the importing office adds its postings but may not rename them
    or change their languages, so the stored name and languages stay; it may add to their
    ``needs`` (one more person texted) but not take one away."""
    postings = {(p[0], p[1]) for p in person["postings"]}
    merged = dict(person)
    if previous:
        old = json.loads(previous)
        foreign = {(p[0], p[1]) for p in old["postings"] if keep(p[0])}
        postings |= foreign
        if foreign:
            merged["name"] = old.get("name", person["name"])
            merged["languages"] = old.get("languages", person["languages"])
            needs = sorted({*old.get("needs", ()), *person.get("needs", ())})
            merged.pop("needs", None)
            if needs:  # left out when empty, as ``Person.to_dict`` does
                merged["needs"] = needs
    merged["postings"] = [list(p) for p in sorted(postings)]
    return json.dumps(merged, ensure_ascii=False, separators=(",", ":"))


def _region_moves(old: str | None, new: str | None) -> tuple[set[str], set[str]]:
    """The region sets a person leaves and joins when their postings go from old to new."""
    before = {code for region in _regions_of(old) for code in code_path(region)}
    after = {code for region in _regions_of(new) for code in code_path(region)}
    return before - after, after - before


def _index_changes(changes: SetChanges, key: str, old: str | None, new: str | None) -> None:
    """``_queue_index`` gathered into ``changes``."""
    left, joined = _region_moves(old, new)
    for code in left:
        changes.remove(sms_region_recips_key(code), key)
    for code in joined:
        changes.add(sms_region_recips_key(code), key)


def _queue_index(pipe: Any, key: str, old: str | None, new: str | None) -> None:
    """Move a person's entries in the region sets from the old postings to the new."""
    left, joined = _region_moves(old, new)
    for code in left:
        pipe.srem(sms_region_recips_key(code), key)
    for code in joined:
        pipe.sadd(sms_region_recips_key(code), key)
