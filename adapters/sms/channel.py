"""The SMS channel as the engine sees it: one object built from the settings that plans jobs,
runs the worker and the settler, takes receipts and answers delivery questions."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

import structlog

from adapters.sms.gateway import (
    Receipt,
    SmsGateway,
    split_out_id,
)
from adapters.sms.planner import SmsPlanner, escalation_job
from adapters.sms.pool import GatewayPool
from adapters.sms.recipients import mask
from adapters.sms.registry import build_gateway
from adapters.sms.settings import SmsSettings
from adapters.sms.settler import SmsSettler
from adapters.sms.store import STATES, SmsStore
from adapters.sms.worker import SmsWorker, now_ms
from dispatcher.core.errors import NotFound, ReceiptMalformed, ReceiptRejected
from dispatcher.core.models import Alert
from dispatcher.core.regions import RegionTree
from dispatcher.store.store import Store

log = structlog.get_logger(__name__)

RECEIPTS_PATH = "/api/v1/sms/receipts/{gateway}"


class SmsChannel:
    def __init__(
        self,
        settings: SmsSettings,
        store: Store,
        tree: RegionTree,
        *,
        signatures: Mapping[str, str],
        callback_base: str,
        consumer: str,
        claim_idle_seconds: float,
        gateways: Sequence[SmsGateway] | None = None,
    ) -> None:
        """``signatures``: the 【signature】 of each office's texts, by office id;
        ``callback_base``: the engine's address as the gateways see it, for receipts."""
        self.settings = settings
        base = settings.callback_base or callback_base
        if gateways is None:
            gateways = [
                build_gateway(g, base + RECEIPTS_PATH.format(gateway=g.name))
                for g in settings.gateways
            ]
        self.store = SmsStore(store)
        self.pool = GatewayPool(gateways, settings)
        self.planner = SmsPlanner(self.store, tree, settings, signatures)
        self.worker = SmsWorker(
            self.store,
            self.pool,
            settings,
            consumer=consumer,
            claim_idle_seconds=claim_idle_seconds,
        )
        self.settler = SmsSettler(self.store, self.pool, settings)
        self.receipts_taken = 0

    @property
    def enabled(self) -> bool:
        return bool(self.pool)

    async def start(self) -> None:
        for gateway in self.pool:
            await gateway.start()

    async def close(self) -> None:
        for gateway in self.pool:
            await gateway.close()

    async def plan_alert(self, alert: Alert) -> int:
        return await self.planner.plan_alert(alert)

    async def notify(self, alert: Alert, records: Sequence[dict[str, str]]) -> None:
        """The sweeper's escalation hook: text the contacts of the villages that failed."""
        await self.planner.plan_escalation(alert, records)

    async def take_receipts(
        self, gateway_name: str, *, url: str, headers: Any, body: bytes
    ) -> tuple[int, str, bytes]:
        """Check, read and apply a receipt callback; the answer the gateway expects."""
        gateway = self.pool.get(gateway_name)
        if gateway is None:
            raise NotFound(f"no SMS gateway {gateway_name!r} is configured")
        try:
            receipts = gateway.parse_receipts(url=url, headers=headers, body=body)
        except ReceiptRejected:
            log.warning("sms.receipt_rejected", gateway=gateway_name, bytes=len(body))
            raise
        except ReceiptMalformed:
            log.warning("sms.receipt_malformed", gateway=gateway_name, bytes=len(body))
            raise
        signature, ttl = gateway.receipt_replay_key(headers)
        if not await self.store.first_receipt_post(gateway_name, signature, ttl):
            log.warning("sms.receipt_replayed", gateway=gateway_name, bytes=len(body))
            raise ReceiptRejected("this signed receipt post was taken before: a replay")
        try:
            outcomes = await self._apply_receipts(gateway_name, receipts)
        except Exception:
            # Nothing (or not all) was applied: the gateway's retry of this post must count.
            await self.store.forget_receipt_post(gateway_name, signature)
            raise
        if receipts and outcomes.get("wrong_gateway", 0) == len(receipts):
            raise ReceiptRejected(
                f"gateway {gateway_name!r} does not hold the messages of these receipts; "
                "nothing was changed"
            )
        return gateway.receipt_answer()

    async def _apply_receipts(
        self, gateway_name: str, receipts: Sequence[Receipt]
    ) -> dict[str, int]:
        by_job: dict[str, list[tuple[str, Receipt]]] = defaultdict(list)
        foreign = 0
        for receipt in receipts:
            try:
                job, key = split_out_id(receipt.out_id)
            except ValueError:
                foreign += 1
                continue
            by_job[job].append((key, receipt))
        outcomes: dict[str, int] = defaultdict(int)
        for job, items in by_job.items():
            due = now_ms() + int(self.settings.receipt_wait * 1000)
            applied = await self.store.apply_receipts(
                job, items, receipt_due_ms=due, gateway=gateway_name
            )
            for outcome in applied:
                outcomes[outcome] += 1
        self.receipts_taken += len(receipts)
        log.info(
            "sms.receipts",
            gateway=gateway_name,
            receipts=len(receipts),
            outcomes=dict(outcomes),
            foreign=foreign or None,
        )
        if outcomes.get("wrong_gateway"):
            log.warning(
                "sms.receipts_wrong_gateway", gateway=gateway_name, count=outcomes["wrong_gateway"]
            )
        return outcomes

    async def summary(self, alert_id: str) -> dict[str, Any] | None:
        """SMS counts of an alert (and of its escalation texts), or None if it had none."""
        counts = await self.store.counts(alert_id)
        escalation = await self.store.counts(escalation_job(alert_id))
        if not counts and not escalation:
            return None
        out: dict[str, Any] = _counts(counts)
        if escalation:
            out["escalation"] = _counts(escalation)
        return out

    async def recipients(self, job: str) -> list[dict[str, Any]]:
        rows = []
        meta = await self.store.job(job)
        for pending in await self.store.all_recipients(job):
            info = pending.info
            variant = str(info.get("v", "zh"))
            rows.append(
                {
                    "recipient": pending.key,
                    "phone": info.get("phone"),
                    "phone_masked": mask(str(info.get("phone", ""))),
                    "state": pending.state,
                    "language": variant.partition(":")[0],
                    "segments": int(info.get("segments", meta.get(f"{variant}.segments", 1))),
                    "gateway": info.get("gateway"),
                    "attempts": int(info.get("attempts", 0)),
                    "message_id": info.get("message_id"),
                    "parts_delivered": len(info.get("ok") or []),
                    "error": info.get("error"),
                }
            )
        return rows


def _counts(counts: dict[str, int]) -> dict[str, int]:
    out = {"recipients": counts.get("recipients", 0), "segments": counts.get("segments", 0)}
    for state in STATES:
        out[state] = counts.get(state, 0)
    return out
