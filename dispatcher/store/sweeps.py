"""Sweeps: which alerts' acks are due a look, the resends, and escalations of the silent."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import redis.asyncio as aioredis

from dispatcher.store.base import hash_fields
from dispatcher.store.delivery import DeliveryStore
from dispatcher.store.keys import (
    ESCALATIONS,
    SWEEP_OWNERS,
    SWEEPS,
    SWEEPS_URGENT,
    alert_escalations_key,
    dispatch_key,
    lease_key,
    resends_key,
    tstate_key,
)
from dispatcher.store.liveness import LivenessStore

OPEN = "open"
RESOLVED = "resolved"
ESCALATION_STATES = (OPEN, RESOLVED)


class SweepStore(DeliveryStore):
    """Escalating marks terminals ``no_ack`` through the ack script, so it builds on delivery."""

    def __init__(self, client: aioredis.Redis) -> None:
        super().__init__(client)
        self._claim_due = self.script("dispatcher.store", "claim_due")
        self._release_dead = self.script("dispatcher.store", "release_dead_sweeps")

    async def schedule_sweep(self, alert_id: str, due_ms: int, *, urgent: bool = False) -> None:
        """Next look at the alert's acks at ``due_ms``; until then nobody owns its sweep."""
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.zadd(SWEEPS_URGENT if urgent else SWEEPS, {alert_id: due_ms})
            pipe.hdel(SWEEP_OWNERS, alert_id)
            await self.call(pipe.execute())

    async def claim_due_sweeps(
        self, now_ms: int, *, lease_ms: int, count: int, instance: str = ""
    ) -> list[str]:
        """The due sweeps, urgent first, now the caller's (``instance``) for ``lease_ms``."""
        result = await self.call(
            self._claim_due(
                keys=[SWEEPS_URGENT, SWEEPS, SWEEP_OWNERS],
                args=[now_ms, now_ms + lease_ms, count, instance],
            )
        )
        return list(result or [])

    async def release_dead_sweeps(self, liveness: LivenessStore, now_ms: int) -> int:
        """Sweeps claimed by instances whose lease lapsed become due now; how many."""
        owners = await self.call(self.redis.hvals(SWEEP_OWNERS))
        released = 0
        for dead in sorted(await liveness.dead(set(owners))):
            released += int(
                await self.call(
                    self._release_dead(
                        keys=[SWEEPS_URGENT, SWEEPS, SWEEP_OWNERS, lease_key(dead)],
                        args=[dead, now_ms],
                    )
                )
            )
        return released

    async def finish_sweep(self, alert_id: str) -> None:
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.zrem(SWEEPS_URGENT, alert_id)
            pipe.zrem(SWEEPS, alert_id)
            pipe.hdel(SWEEP_OWNERS, alert_id)
            await self.call(pipe.execute())

    async def record_resends(self, alert_id: str, terminals: Sequence[str], attempt: int) -> None:
        async with self.redis.pipeline(transaction=False) as pipe:
            for terminal in terminals:
                pipe.hincrby(resends_key(alert_id), terminal, 1)
            pipe.hincrby(dispatch_key(alert_id), "resends", len(terminals))
            pipe.hset(dispatch_key(alert_id), "sweep_attempt", attempt)
            await self.call(pipe.execute())

    async def mark_no_ack(
        self, alert_id: str, records: Sequence[dict[str, str]], *, acklog_maxlen: int
    ) -> list[dict[str, str]]:
        """Mark each record's terminal ``no_ack``; returns the records that applied.

        The state change is the ack script's, so it is atomic with acks: a terminal whose
        final ack arrived meanwhile is left alone.
        """
        keys, args = self._ack_call(
            alert_id,
            [(r["terminal_id"], "no_ack", r["at"], "") for r in records],
            acklog_maxlen=acklog_maxlen,
        )
        codes = await self.call(self._record_acks(keys=keys, args=args))
        return [r for r, code in zip(records, codes, strict=True) if int(code) == 1]

    async def escalate(
        self, alert_id: str, records: Sequence[dict[str, str]], *, acklog_maxlen: int
    ) -> list[dict[str, str]]:
        """Mark each terminal ``no_ack`` and record the escalation (state ``open``); returns
        the records that applied: a terminal whose final ack came meanwhile is not escalated."""
        applied = await self.mark_no_ack(alert_id, records, acklog_maxlen=acklog_maxlen)
        if not applied:
            return []
        async with self.redis.pipeline(transaction=False) as pipe:
            for record in applied:
                fields = dict(hash_fields(record))
                pipe.xadd(ESCALATIONS, fields, maxlen=acklog_maxlen, approximate=True)
                pipe.rpush(alert_escalations_key(alert_id), json.dumps(record, ensure_ascii=False))
            pipe.hincrby(dispatch_key(alert_id), "escalated", len(applied))
            await self.call(pipe.execute())
        return applied

    async def escalations(
        self, *, alert_id: str | None = None, limit: int = 100, state: str | None = None
    ) -> list[dict[str, Any]]:
        """Escalation records with their ``state``: ``open``, or ``resolved`` (with
        ``resolved_at``) once the terminal played after all. Those of ``alert_id`` in the
        order they were raised, else the newest first; only those in ``state`` when given."""
        records: list[dict[str, Any]]
        if alert_id is not None:
            stored = await self._alert_escalations([alert_id])
            records = [{"alert_id": alert_id, **r} for r in stored[alert_id].values()]
        else:
            entries = await self.call(self.redis.xrevrange(ESCALATIONS, count=limit))
            entries = [(i, f) for i, f in entries if f.get("alert_id") and f.get("terminal_id")]
            stored = await self._alert_escalations(list({f["alert_id"] for _, f in entries}))
            # The stream is the engine-wide index; the alert's list holds the record as last
            # written (a resolution is written there).
            records = [
                {"id": i, **f, **stored[f["alert_id"]].get(f["terminal_id"], {})}
                for i, f in entries
            ]
        await self._set_states(records)
        return [r for r in records if state is None or r["state"] == state][:limit]

    async def _alert_escalations(
        self, alert_ids: Sequence[str]
    ) -> dict[str, dict[str, dict[str, Any]]]:
        """Each alert's escalation records by terminal."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for alert_id in alert_ids:
                pipe.lrange(alert_escalations_key(alert_id), 0, -1)
            lists = await self.call(pipe.execute())
        out: dict[str, dict[str, dict[str, Any]]] = {}
        for alert_id, raws in zip(alert_ids, lists, strict=True):
            records = (json.loads(raw) for raw in raws)
            out[alert_id] = {r["terminal_id"]: r for r in records}
        return out

    async def _set_states(self, records: list[dict[str, Any]]) -> None:
        """``state`` from the terminal's state now, which the ack script moves atomically: a
        played ack recorded before its resolution was written still reads as resolved."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for r in records:
                pipe.hget(tstate_key(r["alert_id"]), r["terminal_id"])
            states = await self.call(pipe.execute())
        for record, now in zip(records, states, strict=True):
            if now == "played":
                record["state"] = RESOLVED
                record.setdefault("resolved_at", None)
                record.setdefault("played_at", None)
            else:
                record["state"] = OPEN
                record.pop("resolved_at", None)
                record.pop("played_at", None)
