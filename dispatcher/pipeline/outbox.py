"""The dispatch worker: takes alerts from the outbox stream and sends them out.

An entry leaves the outbox (XACK) only after every publish of its alert was accepted by the
broker. A worker that dies leaves its entries pending; on restart it reads its own pending
entries first. With liveness leases (``dispatcher.store.liveness``) the others take over a
dead or hung worker's entries as soon as its lease lapses; entries of a worker with no lease
are claimed once idle longer than ``claim_idle_seconds``. A worker checks that an entry is
still its own before it writes the dispatch state and again before it publishes, so one that
wakes from a hang after its entries were taken sends nothing. Sending twice (a hang between
that check and the publish) is safe: terminals handle an alert id once and the ack store
counts a terminal once.

Actual red and orange warnings have an outbox stream of their own (``OutboxStore``), read
first and looked at again before every other dispatch: a red warning waits for at most the
one dispatch in progress, never for a queue of drills.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from dataclasses import dataclass

import structlog

from dispatcher.core.errors import PublishFailed, StoreUnavailable
from dispatcher.core.models import Alert, Channel, MsgType, utcnow
from dispatcher.core.regions import RegionTree
from dispatcher.pipeline.ports import AlertEncoder, Publisher, SmsPlanning
from dispatcher.store.liveness import LivenessStore
from dispatcher.store.store import Store
from dispatcher.store.streams import OutboxEntry

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class DispatchOutcome:
    alert_id: str
    state: str  # dispatched | expired | skipped | partial | lost (another instance took it)
    topics: int = 0
    failed_topics: tuple[str, ...] = ()
    expected: int = 0

    @property
    def done(self) -> bool:
        return self.state not in ("partial", "lost")


class DispatchWorker:
    def __init__(
        self,
        store: Store,
        link: Publisher,
        tree: RegionTree,
        *,
        encode: AlertEncoder,
        consumer: str,
        claim_idle_seconds: float = 60.0,
        ack_deadline: Callable[[Alert], float] | None = None,
        sms: SmsPlanning | None = None,
        liveness: LivenessStore | None = None,
    ) -> None:
        self._store = store
        self._link = link
        self._encode = encode
        self._tree = tree
        self._consumer = consumer
        self._claim_idle_ms = int(claim_idle_seconds * 1000)
        self._ack_deadline = ack_deadline
        self._sms = sms
        self._liveness = liveness
        self.dispatched = 0
        self.taken_over = 0
        self.lost = 0

    async def run(self) -> None:
        await self._store.ensure_outbox()
        # Own entries left pending by a previous life of this consumer (or by a failed attempt
        # in this one) come first; new entries after.
        recover = True
        last_claim = last_dead = time.monotonic()
        # A dead worker's entries are looked for this often; a read blocks no longer.
        dead_every = self._liveness.lease_seconds / 6 if self._liveness else 1.0
        block_ms = int(min(1.0, dead_every) * 1000)
        while True:
            try:
                before = time.monotonic()
                if recover:
                    entries = await self._store.outbox_read(
                        self._consumer, count=100, block_ms=0, pending=True
                    )
                else:
                    entries = await self._store.outbox_read(
                        self._consumer, count=20, block_ms=block_ms
                    )
                if self._liveness is not None and time.monotonic() - last_dead > dead_every:
                    entries += await self._claim_dead(self._liveness)
                    last_dead = time.monotonic()
                if time.monotonic() - last_claim > self._claim_idle_ms / 4000:
                    entries += await self._store.outbox_claim(
                        self._consumer, min_idle_ms=self._claim_idle_ms, liveness=self._liveness
                    )
                    last_claim = time.monotonic()
                recover = not await self._handle(entries, read_at=self._read_mark(before))
            except StoreUnavailable as exc:
                log.warning("outbox.store_down", error=exc.message)
                recover = True
                await asyncio.sleep(1.0)

    async def _claim_dead(self, liveness: LivenessStore) -> list[OutboxEntry]:
        entries, dead = await self._store.outbox_claim_dead(self._consumer, liveness)
        if entries:
            self.taken_over += len(entries)
            log.warning(
                "outbox.taken_over",
                entries=len(entries),
                alert_ids=[entry.alert_id for entry in entries][:20],
                from_instances=sorted(dead),
            )
        return entries

    def _read_mark(self, before: float) -> float | None:
        """Taken right after entries were read (the read began at ``before``): a time by
        which they surely were this worker's, if its lease held throughout the read and holds
        long enough from now on to vouch for them without asking Redis (``_still_ours``);
        None when it does not."""
        liveness = self._liveness
        if liveness is None or not liveness.held_throughout(before, liveness.lease_seconds / 3):
            return None
        return time.monotonic()

    async def _still_ours(self, entry: OutboxEntry | None, read_at: float | None = None) -> bool:
        """True when the entry is still this worker's to send. False when another instance
        took it over, or when this one cannot be sure (the check itself outlasted a third of
        the lease: it may have hung meanwhile); the entry is then looked at again."""
        liveness = self._liveness
        if liveness is None or entry is None:
            return True
        asked = time.monotonic()
        margin = liveness.lease_seconds / 3
        if read_at is not None and asked - read_at < margin:
            # The lease held a third of its time beyond the read, which was less than that
            # ago: it has held without a gap since, and nobody takes the entries of an
            # instance holding its lease. No round trip on the way of a fresh alert.
            return True
        if not liveness.held(margin):
            # Hung, or cut off from Redis, about as long as the lease: renew it first, so a
            # takeover either happened already (and shows below) or cannot happen now.
            await liveness.renew()
        owner = await self._store.outbox_owner(entry)
        if owner != self._consumer:
            self.lost += 1
            log.warning("outbox.entry_lost", entry=entry.id, owner=owner)
            return False
        if time.monotonic() - asked < margin and liveness.held(margin):
            return True
        log.warning("outbox.check_stale", entry=entry.id)
        return False

    async def _handle(self, entries: list[OutboxEntry], read_at: float | None) -> bool:
        """Dispatch each entry, urgent ones first; True when every one is done and left the
        outbox. Before each other entry, urgent ones that came meanwhile go ahead of it."""
        all_done = True
        for entry in sorted(entries, key=lambda e: not e.urgent):
            if not entry.urgent:
                before = time.monotonic()
                urgent = await self._store.outbox_read_urgent(self._consumer, count=20)
                if urgent and not await self._handle(urgent, self._read_mark(before)):
                    all_done = False
            if not await self._handle_one(entry, read_at):
                all_done = False
        return all_done

    async def _handle_one(self, entry: OutboxEntry, read_at: float | None) -> bool:
        try:
            outcome = await self.dispatch(entry.alert_id, entry=entry, read_at=read_at)
        except StoreUnavailable:
            raise
        except Exception:
            # A bug with one alert must not hold back the others: it stays pending and is
            # tried again when claimed.
            log.exception("dispatch.crashed", alert_id=entry.alert_id)
            return True
        if not outcome.done:
            return False
        await self._store.outbox_done(entry)
        return True

    async def dispatch(
        self, alert_id: str, *, entry: OutboxEntry | None = None, read_at: float | None = None
    ) -> DispatchOutcome:
        """Send one alert: record who must ack, then one publish per region of its cover.

        With ``entry`` (its outbox entry) nothing is written or sent once the entry is no
        longer this worker's (outcome ``lost``); ``read_at`` is when it was read (``_read_mark``).
        """
        started = time.monotonic()
        with structlog.contextvars.bound_contextvars(alert_id=alert_id):
            # Two connections, one round trip: this is on the way of every alert.
            alert, state = await asyncio.gather(
                self._store.get_alert(alert_id), self._store.dispatch_state(alert_id)
            )
            if alert is None:
                log.error("dispatch.unknown_alert")
                return DispatchOutcome(alert_id, "skipped")
            with structlog.contextvars.bound_contextvars(office=alert.sender):
                if state.get("state") == "dispatched":
                    # Sent by an instance that took the entry over (this one hung), or sent
                    # and killed before its XACK.
                    log.info("dispatch.already_done")
                    return DispatchOutcome(alert_id, "skipped")
                if alert.expired():
                    await self._store.set_dispatch(alert_id, state="expired")
                    log.warning("dispatch.expired_before_send")
                    return DispatchOutcome(alert_id, "expired")
                if alert.msg_type is not MsgType.CANCEL and state.get("cancelled_by"):
                    await self._store.set_dispatch(alert_id, state="cancelled")
                    log.info("dispatch.cancelled_before_send", cancelled_by=state["cancelled_by"])
                    return DispatchOutcome(alert_id, "skipped")
                if not await self._still_ours(entry, read_at):
                    return DispatchOutcome(alert_id, "lost")
                return await self._send(alert, started, entry, read_at)

    async def _send(
        self, alert: Alert, started: float, entry: OutboxEntry | None, read_at: float | None
    ) -> DispatchOutcome:
        cover = self._tree.cover(alert.areas)
        loudspeaker = Channel.LOUDSPEAKER in alert.channels
        # Terminals are expected to ack only what was sent to them. Both writes at once: a
        # crash between them leaves the entry pending, and its retry writes both again.
        (expected, offline), _ = await asyncio.gather(
            self._store.record_expected(alert.id, cover if loudspeaker else []),
            self._store.set_dispatch(alert.id, state="dispatching", cover=json.dumps(cover)),
        )
        recorded = time.monotonic()
        failed: list[str] = []
        # Recording a province's expected set takes a while: look again right before sending.
        if not await self._still_ours(entry, read_at):
            return DispatchOutcome(alert.id, "lost")
        if loudspeaker:
            payload = self._encode(alert)
            expiry = alert.seconds_left()
            results = await asyncio.gather(
                *(
                    self._link.publish(self._tree.topic(code), payload, expiry=expiry)
                    for code in cover
                ),
                return_exceptions=True,
            )
            for code, result in zip(cover, results, strict=True):
                if isinstance(result, PublishFailed):
                    failed.append(self._tree.topic(code))
                elif isinstance(result, BaseException):
                    raise result
        published = time.monotonic()
        sms_added = await self._plan_sms(alert)
        if failed:
            await self._store.set_dispatch(
                alert.id, state="partial", failed_topics=json.dumps(failed)
            )
            log.error("dispatch.partial", failed_topics=failed, topics=len(cover))
            return DispatchOutcome(alert.id, "partial", len(cover), tuple(failed), expected)
        dispatched_at = utcnow()
        due_ms = None
        if self._ack_deadline is not None and expected:
            due_ms = int((dispatched_at.timestamp() + self._ack_deadline(alert)) * 1000)
        replaced = (
            {"cancelled_at": dispatched_at.isoformat()}
            if alert.msg_type is MsgType.CANCEL
            else {"superseded_by": alert.id}
        )
        # One transaction: a crash cannot leave an alert "dispatched" with no deadline to
        # sweep or with the alerts it replaces still looking current.
        await self._store.finish_dispatch(
            alert.id,
            dispatched_at=dispatched_at.isoformat(),
            sweep_due_ms=due_ms,
            references={ref: replaced for ref in alert.references},
            urgent=alert.urgent,
        )
        self.dispatched += 1
        log.info(
            "dispatch.done",
            msg_type=alert.msg_type.value,
            status=alert.status.value,
            severity=alert.severity.value,
            topics=len(cover),
            expected=expected,
            offline_at_dispatch=offline,
            expected_ms=round((recorded - started) * 1000, 1),
            publish_ms=round((published - recorded) * 1000, 1),
            sms_queued=sms_added,
        )
        return DispatchOutcome(alert.id, "dispatched", len(cover), (), expected)

    async def _plan_sms(self, alert: Alert) -> int | None:
        # A loudspeaker alert is planned too: the SMS channel texts it to the people who
        # cannot hear the loudspeaker (``needs: ["text"]``), and to nobody else.
        if self._sms is None:
            if Channel.SMS in alert.channels:
                # The engine was restarted without gateways after accepting the alert.
                log.error("dispatch.sms_not_configured")
            return None
        return await self._sms.plan_alert(alert)
