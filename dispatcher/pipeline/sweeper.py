"""The deadline sweeper: terminals that did not acknowledge in time get the alert again on
their own ``cmd`` topic, a few times with growing waits, and are then failed and escalated.

A resend is also how acks lost on the way are recovered: a terminal that already handled the
alert answers by repeating its latest ack, without playing again. Several engine instances
sweep together; each due alert is claimed by one of them (``Store.claim_due_sweeps``), actual
red and orange warnings first; the sweeps of an instance whose liveness lease lapsed are due
again at once (``Store.release_dead_sweeps``), not when its claim runs out.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import structlog

from dispatcher.core.config import ResendSettings
from dispatcher.core.errors import StoreUnavailable
from dispatcher.core.models import Alert, MsgType, utcnow
from dispatcher.core.regions import RegionTree
from dispatcher.pipeline.ports import AlertEncoder, EscalationNotifier, Publisher
from dispatcher.pipeline.to_terminals import publish_each
from dispatcher.store.liveness import LivenessStore
from dispatcher.store.store import Store

log = structlog.get_logger(__name__)

# While one instance sweeps an alert, no other takes it. A sweep is short (a province's
# resends take seconds, and a dead link ends it at the first failed publish). An instance that
# dies mid-sweep hands it over as its liveness lease lapses; this is for engines without one.
LEASE_MS = 30_000


@dataclass(frozen=True, slots=True)
class SweepOutcome:
    alert_id: str
    action: str  # done | resent | escalated | given_up (a cancel's silent terminals) | stopped
    terminals: int = 0


def now_ms() -> int:
    return int(utcnow().timestamp() * 1000)


class DeadlineSweeper:
    def __init__(
        self,
        store: Store,
        link: Publisher,
        tree: RegionTree,
        settings: ResendSettings,
        *,
        encode: AlertEncoder,
        acklog_maxlen: int,
        notifiers: Sequence[EscalationNotifier] = (),
        acks_settled: Callable[[], bool] = lambda: True,
        liveness: LivenessStore | None = None,
    ) -> None:
        self._store = store
        self._liveness = liveness
        self._notifiers = list(notifiers)
        self._link = link
        self._encode = encode
        self._acks_settled = acks_settled
        self._tree = tree
        self._settings = settings
        self._acklog_maxlen = acklog_maxlen
        self.resent = 0
        self.escalated = 0

    async def run(self) -> None:
        instance = self._liveness.instance if self._liveness is not None else ""
        while True:
            try:
                if self._liveness is not None:
                    released = await self._store.release_dead_sweeps(self._liveness, now_ms())
                    if released:
                        log.warning("sweep.taken_over", sweeps=released)
                for alert_id in await self._store.claim_due_sweeps(
                    now_ms(), lease_ms=LEASE_MS, count=20, instance=instance
                ):
                    await self._sweep_logged(alert_id)
            except StoreUnavailable as exc:
                log.warning("sweep.store_down", error=exc.message)
            await asyncio.sleep(self._settings.sweep_interval)

    async def _sweep_logged(self, alert_id: str) -> None:
        with structlog.contextvars.bound_contextvars(alert_id=alert_id):
            try:
                await self.sweep(alert_id)
            except StoreUnavailable:
                raise
            except Exception:
                # The lease runs out and the alert is swept again; others go on meanwhile.
                log.exception("sweep.crashed")

    async def sweep(self, alert_id: str) -> SweepOutcome:
        """Check one alert whose deadline has come: resend, escalate, or finish."""
        alert = await self._store.get_alert(alert_id)
        if alert is None:
            await self._store.finish_sweep(alert_id)
            return SweepOutcome(alert_id, "stopped")
        dispatch = await self._store.dispatch_state(alert_id)
        stop_reason = self._stop_reason(alert, dispatch)
        if stop_reason:
            await self._store.finish_sweep(alert_id)
            log.info("sweep.stopped", reason=stop_reason)
            return SweepOutcome(alert_id, "stopped")
        missing = await self._store.unfinished(alert_id)
        if not missing:
            await self._store.finish_sweep(alert_id)
            return SweepOutcome(alert_id, "done")
        if not self._acks_settled():
            # Acks the broker kept for the engine are still coming in (it just reconnected,
            # or the ingester is behind): those terminals answered, don't resend or escalate.
            await self._store.schedule_sweep(alert_id, now_ms() + 1000, urgent=alert.urgent)
            return SweepOutcome(alert_id, "stopped")
        attempt = int(dispatch.get("sweep_attempt", 0)) + 1
        if attempt > self._settings.max_attempts and alert.msg_type is MsgType.CANCEL:
            await self._give_up_cancel(alert, missing, attempt - 1)
            await self._store.finish_sweep(alert_id)
            return SweepOutcome(alert_id, "given_up", len(missing))
        if attempt > self._settings.max_attempts:
            await self._escalate(alert, missing, attempt - 1)
            await self._store.finish_sweep(alert_id)
            return SweepOutcome(alert_id, "escalated", len(missing))
        if not self._link.connected.is_set():
            # Resending into a dead link would spend the attempts without reaching anyone.
            await self._store.schedule_sweep(alert_id, now_ms() + 5000, urgent=alert.urgent)
            return SweepOutcome(alert_id, "stopped")
        sent = await self._resend(alert, sorted(missing))
        if len(sent) < len(missing):
            # The broker went away mid-way: same attempt again soon, for all of them.
            await self._store.schedule_sweep(alert_id, now_ms() + 5000, urgent=alert.urgent)
            log.warning("sweep.resend_incomplete", sent=len(sent), missing=len(missing))
            return SweepOutcome(alert_id, "resent", len(sent))
        await self._store.record_resends(alert_id, sent, attempt)
        await self._store.schedule_sweep(
            alert_id,
            now_ms() + int(self._settings.wait_after(attempt) * 1000),
            urgent=alert.urgent,
        )
        self.resent += len(sent)
        log.info("sweep.resent", attempt=attempt, terminals=len(sent), missing=len(missing))
        return SweepOutcome(alert_id, "resent", len(sent))

    @staticmethod
    def _stop_reason(alert: Alert, dispatch: dict[str, str]) -> str | None:
        if alert.expired():
            return "expired"
        if alert.msg_type is not MsgType.CANCEL and dispatch.get("cancelled_by"):
            return "cancelled"
        if dispatch.get("superseded_by"):
            return "superseded"
        return None

    async def _resend(self, alert: Alert, terminals: list[str]) -> list[str]:
        payload = self._encode(alert)
        expiry = alert.seconds_left()
        results = await publish_each(self._link, [(t, payload, expiry) for t in terminals])
        return [t for t, ok in zip(terminals, results, strict=True) if ok]

    def _records(
        self, alert: Alert, missing: dict[str, tuple[str, str | None]], resends: int
    ) -> list[dict[str, str]]:
        """What an office reads of each silent terminal: which warning, where, and why."""
        now = utcnow().isoformat()
        records = []
        for terminal, (region, state) in sorted(missing.items()):
            path = self._tree.path(region) if region in self._tree else []
            records.append(
                {
                    "alert_id": alert.id,
                    "terminal_id": terminal,
                    "region": region,
                    "region_name": "".join(r.name for r in path[1:]) or region,
                    "headline": alert.headline,
                    "event": alert.event,
                    "severity": alert.severity.value,
                    "severity_label": alert.severity.label_zh,
                    "reason": (
                        f"no acknowledgement after {resends} resends"
                        if state is None
                        else f"no played ack after {resends} resends (last state: {state})"
                    ),
                    "at": now,
                    "status": alert.status.value,
                    "state": "open",
                }
            )
        return records

    async def _give_up_cancel(
        self, alert: Alert, missing: dict[str, tuple[str, str | None]], resends: int
    ) -> None:
        """A cancel nobody confirmed after its resends: its terminals are marked ``no_ack`` so
        its delivery stops showing them pending, but nobody is escalated to. The warning it
        cancels was escalated on its own if it went unheard; a village texted that a warning
        is called off, about a warning it may never have heard, would only be confused."""
        records = self._records(alert, missing, resends)
        marked = await self._store.mark_no_ack(alert.id, records, acklog_maxlen=self._acklog_maxlen)
        log.info("sweep.cancel_unconfirmed", terminals=len(marked), resends=resends)

    async def _escalate(
        self, alert: Alert, missing: dict[str, tuple[str, str | None]], resends: int
    ) -> None:
        records = self._records(alert, missing, resends)
        # Notifiers first: once the terminals are marked no_ack no sweep comes back to them, so
        # a notification that could not be queued (Redis away) would be lost for good. Failing
        # here instead leaves the sweep to be retried; the SMS channel queues each person once
        # per alert, so a retry texts nobody twice.
        for notifier in self._notifiers:
            try:
                await notifier.notify(alert, records)
            except StoreUnavailable:
                raise
            except Exception:
                # A broken channel must not keep the escalation from being recorded.
                log.exception("sweep.notify_failed", notifier=type(notifier).__name__)
        records = await self._store.escalate(alert.id, records, acklog_maxlen=self._acklog_maxlen)
        if not records:
            return
        self.escalated += len(records)
        log.warning("sweep.escalated", terminals=len(records), resends=resends)
