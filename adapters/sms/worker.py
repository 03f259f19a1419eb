"""The SMS worker: takes chunks of a job's recipients from the SMS outbox and sends them.

Chunks wait in two lanes (``adapters.sms.store.Lane``): actual red and orange warnings in the
urgent one, everything else in the routine one. Urgent chunks are read first and their batches
go first at the gateway's gate and in its shared pace, on every instance; routine batches go
whenever no urgent one is waiting (strict priority: a drill finishes once the warning is out).

For each request it waits for room in the gateway's shared pace, marks the recipients
``submitting`` (the write-ahead step), makes the request and records the answer. A chunk leaves
the outbox only when none of its recipients is queued any more. A worker that dies leaves its
chunks pending; they are claimed again (at once when its instance's liveness lease lapsed, see
``use_liveness``) and what is queued is sent, while what was in flight is in the doubt set for
the settler, never sent blindly again.
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import structlog

from adapters.sms.gateway import Message, SmsGateway, SubmitResult, SubmitStatus, out_id
from adapters.sms.pool import GatewayPool
from adapters.sms.settings import SmsSettings
from adapters.sms.store import Chunk, Lane, Pending, SmsStore
from dispatcher.core.errors import StoreUnavailable
from dispatcher.core.gate import PriorityGate
from dispatcher.store.liveness import LivenessStore

log = structlog.get_logger(__name__)

# Chunks worked on at once, in each lane.
CHUNKS_AT_ONCE = 16
# A batch whose recording took longer than this after the pace let it go (Redis slow, or
# reconnecting after a restart) takes its room in the pace again before it is sent: sent late
# on its old room, it would land on top of the batches paced after it and take the gateway's
# one-second window over the contract.
STALE_TAKE = 0.05


def now_ms() -> int:
    return int(time.time() * 1000)


def message_of(job: str, meta: Mapping[str, str], info: Mapping[str, Any]) -> Message:
    """The message of one recipient of a job: its text variant, from the job's description."""
    phone = str(info["phone"])
    variant = str(info.get("v", "zh"))
    return Message(
        job_id=job,
        out_id=out_id(job, phone),
        phone=phone,
        signature=meta.get("signature", ""),
        body=meta.get(f"{variant}.body", ""),
        text=meta.get(f"{variant}.text", ""),
        segments=int(meta.get(f"{variant}.segments", 1)),
    )


def hour_of(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y%m%d%H")


class SmsWorker:
    def __init__(
        self,
        store: SmsStore,
        pool: GatewayPool,
        settings: SmsSettings,
        *,
        consumer: str,
        claim_idle_seconds: float = 60.0,
    ) -> None:
        self._store = store
        self._pool = pool
        self._settings = settings
        self._consumer = consumer
        self._claim_idle_ms = int(claim_idle_seconds * 1000)
        self._slots = {g.name: asyncio.Semaphore(g.settings.concurrency) for g in pool}
        self._gates = {g.name: PriorityGate() for g in pool}
        self._active: dict[tuple[Lane, str], asyncio.Task[None]] = {}
        self._recover = set(Lane)
        self._liveness: LivenessStore | None = None
        self.sent = 0
        self.requests = 0

    def use_liveness(self, liveness: LivenessStore) -> None:
        """Take over the chunks of an instance as soon as its liveness lease lapses, instead
        of once they sat idle ``claim_idle_seconds``."""
        self._liveness = liveness

    async def run(self) -> None:
        await self._store.ensure_outbox()
        self._recover = set(Lane)
        last_claim = last_touch = last_dead = time.monotonic()
        try:
            while True:
                try:
                    busy = Counter(lane for lane, _ in self._active)
                    rooms = {lane: CHUNKS_AT_ONCE - busy[lane] for lane in Lane}
                    entries: list[Chunk] = []
                    for lane in sorted(self._recover):
                        if rooms[lane] <= 0:
                            continue
                        # Own unfinished chunks (after a restart, a Redis error): all of them,
                        # a room's worth at a time, before anything new of that lane.
                        pending = await self._store.outbox_pending(
                            self._consumer, lane, count=rooms[lane] + busy[lane]
                        )
                        fresh = [c for c in pending if (lane, c.entry_id) not in self._active]
                        entries += fresh[: rooms[lane]]
                        if len(fresh) < rooms[lane]:
                            self._recover.discard(lane)
                    readable = {
                        lane: room
                        for lane, room in rooms.items()
                        if room > 0 and lane not in self._recover
                    }
                    if readable and not entries:
                        # Blocking on both lanes at once: an urgent chunk wakes the reader at
                        # once. With the routine lane full, only briefly, to see its chunks end.
                        entries = await self._store.outbox_read_lanes(
                            self._consumer,
                            readable,
                            block_ms=500 if len(readable) == len(Lane) else 100,
                        )
                    room = max(rooms.values())
                    liveness = self._liveness
                    if (
                        room > 0
                        and liveness is not None
                        and time.monotonic() - last_dead > liveness.lease_seconds / 6
                    ):
                        taken, dead = await self._store.outbox_claim_dead(
                            self._consumer, liveness, count=room
                        )
                        if taken:
                            log.warning(
                                "sms.taken_over", chunks=len(taken), from_instances=sorted(dead)
                            )
                        entries += taken
                        last_dead = time.monotonic()
                    if room > 0 and time.monotonic() - last_claim > self._claim_idle_ms / 4000:
                        entries += await self._store.outbox_claim(
                            self._consumer, min_idle_ms=self._claim_idle_ms
                        )
                        last_claim = time.monotonic()
                    if room <= 0:
                        await asyncio.wait(
                            set(self._active.values()), return_when=asyncio.FIRST_COMPLETED
                        )
                    for chunk in sorted(entries, key=lambda c: c.lane):
                        ref = (chunk.lane, chunk.entry_id)
                        if ref not in self._active:
                            self._active[ref] = asyncio.create_task(
                                self._chunk_logged(chunk), name=f"sms-{chunk.entry_id}"
                            )
                    if time.monotonic() - last_touch > self._claim_idle_ms / 3000:
                        # Long chunks (a slow gateway, retries) must not look abandoned.
                        await self._store.outbox_touch(self._consumer, list(self._active))
                        last_touch = time.monotonic()
                except StoreUnavailable as exc:
                    log.warning("sms.store_down", error=exc.message)
                    self._recover = set(Lane)
                    await asyncio.sleep(1.0)
        finally:
            for task in self._active.values():
                task.cancel()
            if self._active:
                await asyncio.wait(set(self._active.values()), timeout=5)

    async def _chunk_logged(self, chunk: Chunk) -> None:
        try:
            with structlog.contextvars.bound_contextvars(job=chunk.job):
                if await self.send_chunk(chunk.job, chunk.keys, lane=chunk.lane):
                    await self._store.outbox_done(chunk.lane, chunk.entry_id)
        except StoreUnavailable as exc:
            # Left pending: this consumer re-reads its pending chunks at its next read.
            log.warning("sms.chunk_store_down", error=exc.message)
            self._recover.add(chunk.lane)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("sms.chunk_crashed", entry=chunk.entry_id)
        finally:
            self._active.pop((chunk.lane, chunk.entry_id), None)

    async def send_chunk(self, job: str, keys: Sequence[str], *, lane: Lane = Lane.URGENT) -> bool:
        """Send a chunk's queued recipients until none is queued; True when it is done."""
        meta = await self._store.job(job)
        if not meta:
            log.error("sms.unknown_job", recipients=len(keys))
            return True
        with structlog.contextvars.bound_contextvars(
            alert_id=meta.get("alert_id"), office=meta.get("office")
        ):
            while True:
                if meta.get("closed"):
                    await self._store.close_job(
                        job, to_state="cancelled", reason=meta["closed"], keys=keys
                    )
                    return True
                if now_ms() >= int(meta.get("expires_ms", 0)):
                    closed = await self._store.close_job(
                        job,
                        to_state="expired",
                        reason="the alert expired before it was sent",
                        keys=keys,
                    )
                    log.warning("sms.expired_unsent", recipients=closed)
                    return True
                queued = [p for p in await self._store.pending(job, keys) if p.state == "queued"]
                if not queued:
                    return True
                now = now_ms()
                due = [p for p in queued if int(p.info.get("retry_at", 0)) <= now]
                if not due:
                    wait = min(int(p.info.get("retry_at", 0)) for p in queued) - now
                    await asyncio.sleep(min(max(wait, 10), 1000) / 1000)
                else:
                    await self._send_due(job, meta, due, lane)
                meta = await self._store.job(job) or meta

    async def _send_due(
        self, job: str, meta: dict[str, str], due: list[Pending], lane: Lane
    ) -> None:
        by_variant: dict[str, list[Pending]] = defaultdict(list)
        for pending in due:
            by_variant[str(pending.info.get("v", "zh"))].append(pending)
        batches: list[tuple[str, list[Pending]]] = []
        gateway = self._pool.pick()
        size = self._pool.paces[gateway.name].batch
        for variant, items in by_variant.items():
            for start in range(0, len(items), size):
                batches.append((variant, items[start : start + size]))
        await asyncio.gather(*(self._request(job, meta, v, b, lane) for v, b in batches))

    async def _request(
        self, job: str, meta: dict[str, str], variant: str, batch: list[Pending], lane: Lane
    ) -> None:
        gateway = self._pool.pick()
        pace = self._pool.paces[gateway.name]
        batch = batch[: pace.batch]
        slots = self._slots[gateway.name]
        # The batches of every chunk queue at the gateway's gate, urgent ones first. The one
        # through it takes a request slot, then waits for room in the pace: a slot is taken
        # first so that once the pace lets a batch go, it leaves at once (a batch that waited
        # for a slot after its pace would reach the gateway late, bunched with later ones).
        # A routine holder outranked while it waits for the pace steps back behind the urgent
        # batch (and gives up its slot, which the urgent one may need).
        urgent = lane is Lane.URGENT
        passed = False
        while not passed:
            async with self._gates[gateway.name].hold(lane) as holder:
                await slots.acquire()
                try:
                    passed = await self._take_tokens(
                        gateway, len(batch), urgent=urgent, outranked=holder.outranked
                    )
                except BaseException:
                    slots.release()
                    raise
                if not passed:
                    slots.release()
        paced = time.monotonic()
        try:
            started = now_ms()
            owner = f"{self._consumer}:{uuid.uuid4().hex[:10]}"
            timeout_ms = int((gateway.settings.timeout + gateway.settings.connect_timeout) * 1000)
            taken = set(
                await self._store.begin_submit(
                    job,
                    [p.key for p in batch],
                    now_ms=started,
                    owner=owner,
                    gateway=gateway.name,
                    # Past this the request has certainly ended: ask the gateway.
                    doubt_due_ms=started + timeout_ms + int(self._settings.settle_after * 1000),
                    limit=self._settings.per_recipient_per_hour,
                    exempt=meta.get("exempt") == "1",
                    hour=hour_of(started),
                )
            )
            messages = [message_of(job, meta, p.info) for p in batch if p.key in taken]
            if not messages:
                return
            late = time.monotonic() - paced
            if late > STALE_TAKE:
                log.info("sms.paced_again", gateway=gateway.name, late_ms=round(late * 1000))
                await self._take_tokens(gateway, len(messages), urgent=urgent)
            results = await gateway.submit(messages)
        finally:
            slots.release()
        self.requests += 1
        attempts = {p.key: int(p.info.get("attempts", 0)) + 1 for p in batch}
        await self._record(job, gateway, owner, messages, results, attempts)

    async def _take_tokens(
        self,
        gateway: SmsGateway,
        n: int,
        *,
        urgent: bool,
        outranked: asyncio.Future[None] | None = None,
    ) -> bool:
        """Room for ``n`` messages in the gateway's pace: True once taken, False when
        ``outranked`` came first (nothing taken then)."""
        pace = self._pool.paces[gateway.name]
        while True:
            if outranked is not None and outranked.done():
                return False
            wait_ms = await self._store.take_tokens(gateway.name, n, pace=pace, urgent=urgent)
            if wait_ms <= 0:
                return True
            if outranked is None:
                await asyncio.sleep(wait_ms / 1000)
            else:
                await asyncio.wait({outranked}, timeout=wait_ms / 1000)

    async def _record(
        self,
        job: str,
        gateway: SmsGateway,
        owner: str,
        messages: list[Message],
        results: list[SubmitResult],
        attempts: dict[str, int],
    ) -> None:
        by_id = {r.out_id: r for r in results}
        now = now_ms()
        rows: list[tuple[str, SubmitResult, int]] = []
        retry = 0
        for message in messages:
            result = by_id.get(message.out_id) or SubmitResult(
                message.out_id, SubmitStatus.RETRY, error="the gateway's answer left it out"
            )
            retry_at = 0
            if result.status is SubmitStatus.RETRY:
                retry += 1
                retry_at = now + int(self._backoff(result, attempts.get(message.key, 1)) * 1000)
            rows.append((message.key, result, retry_at))
        if retry == len(messages):
            self._pool.failed(gateway)
        else:
            self._pool.succeeded(gateway, len(messages) - retry)
        outcomes = await self._store.finish_submit(
            job,
            rows,
            now_ms=now,
            owner=owner,
            settle_due_ms=now + int(self._settings.settle_after * 1000),
            receipt_due_ms=now + int(self._settings.receipt_wait * 1000),
            max_attempts=self._settings.max_attempts,
            hour=hour_of(now),
        )
        tally: dict[str, int] = defaultdict(int)
        for outcome in outcomes:
            tally[outcome] += 1
        self.sent += tally.get("submitted", 0) + tally.get("unknown", 0)
        errors = sorted({r.error for r in results if r.error})[:3]
        log.info(
            "sms.request",
            gateway=gateway.name,
            messages=len(messages),
            outcomes=dict(tally),
            errors=errors or None,
        )

    def _backoff(self, result: SubmitResult, attempt: int) -> float:
        """Exponential, with jitter so chunks and instances that failed together do not all
        come back together; a gateway's own Retry-After is honoured as the floor."""
        ceiling = min(self._settings.backoff_max, self._settings.backoff * 2 ** (attempt - 1))
        wait = random.uniform(ceiling / 2, ceiling)  # noqa: S311  jitter, not crypto
        if result.retry_after is not None:
            # The gateway knows when it will take more: never sooner, even past backoff_max.
            wait = max(wait, result.retry_after)
        return wait
