"""The settler: finds out what became of messages in doubt, by asking their gateway.

A message is in doubt while its request is in flight (the write-ahead mark), after a request
that got no answer, and once a gateway took it until its receipt comes (a receipt can be lost,
or posted to an instance that died: after ``receipt_wait`` the gateway is asked instead).
When its time is up it is looked up: the gateway has it (submitted, delivered or failed, as
it says) or never took it (queued again, to be sent once; never a text it had said it took).
A gateway that cannot tell is asked again later; when the alert expires the message stays
``unknown``. A receipt settles a message too, whichever comes first.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict

import structlog

from adapters.sms.gateway import Message
from adapters.sms.pool import GatewayPool
from adapters.sms.settings import SmsSettings
from adapters.sms.store import SmsStore
from adapters.sms.worker import message_of, now_ms
from dispatcher.core.errors import StoreUnavailable

log = structlog.get_logger(__name__)


class SmsSettler:
    def __init__(self, store: SmsStore, pool: GatewayPool, settings: SmsSettings) -> None:
        self._store = store
        self._pool = pool
        self._settings = settings
        self.settled = 0
        self.requeued = 0
        # Hidden from other instances while this one asks: as long as a lookup can take.
        slowest = max((g.settings.timeout + g.settings.connect_timeout for g in pool), default=10)
        self._lease_ms = int((slowest * 2 + 5) * 1000)

    async def run(self, interval: float = 1.0) -> None:
        while True:
            try:
                await self.settle_due()
            except StoreUnavailable as exc:
                log.warning("sms.settle_store_down", error=exc.message)
            await asyncio.sleep(interval)

    async def settle_due(self) -> int:
        """Look up every message whose doubt time has come; returns how many were settled."""
        members = await self._store.claim_doubts(now_ms(), lease_ms=self._lease_ms, count=500)
        by_job: dict[str, list[str]] = defaultdict(list)
        for member in members:
            job, _, key = member.rpartition("|")
            by_job[job].append(key)
        settled = 0
        for job, keys in by_job.items():
            try:
                settled += await self._settle_job(job, keys)
            except StoreUnavailable:
                raise
            except Exception:
                # The lease runs out and they are tried again.
                log.exception("sms.settle_crashed", job=job)
        return settled

    async def _settle_job(self, job: str, keys: list[str]) -> int:
        meta = await self._store.job(job)
        members = [f"{job}|{k}" for k in keys]
        if not meta:
            await self._store.drop_doubt(members)
            return 0
        pending = await self._store.pending(job, keys)
        if now_ms() >= int(meta.get("expires_ms", 0)):
            # Too late to send again anyway: what is not known stays unknown.
            await self._store.drop_doubt(members)
            return 0
        by_gateway: dict[str, list[Message]] = defaultdict(list)
        for p in pending:
            if p.state not in ("submitting", "unknown", "submitted"):
                continue
            by_gateway[str(p.info.get("gateway", ""))].append(message_of(job, meta, p.info))
        in_doubt = {m.key for ms in by_gateway.values() for m in ms}
        # Settled meanwhile (a receipt, a late answer): nothing to ask.
        await self._store.drop_doubt([f"{job}|{k}" for k in keys if k not in in_doubt])
        settled = 0
        for name, messages in by_gateway.items():
            gateway = self._pool.get(name)
            glog = log.bind(job=job, gateway=name)
            answers = await gateway.query(messages) if gateway is not None else {}
            known = [(m.key, answers[m.out_id]) for m in messages if m.out_id in answers]
            if known:
                outcomes = await self._store.settle(
                    job,
                    known,
                    now_ms=now_ms(),
                    recheck_ms=now_ms() + int(self._settings.receipt_wait * 1000),
                )
                settled += len(known)
                requeued = sum(1 for o in outcomes if o == "not_found")
                self.requeued += requeued
                glog.info("sms.settled", answers=len(known), requeued=requeued)
            unanswered = [m for m in messages if m.out_id not in answers]
            if unanswered:
                wait = min(600.0, self._settings.settle_after * 2)
                await self._store.reschedule_doubt(
                    [f"{job}|{m.key}" for m in unanswered],
                    now_ms() + int(wait * 1000),
                )
                glog.warning("sms.settle_unanswered", messages=len(unanswered), ask_again_in=wait)
        self.settled += settled
        return settled
