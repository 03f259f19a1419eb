"""Sweeps: which alerts' acks are due a look, the resends, and escalations of the silent."""

from __future__ import annotations

import json
from collections.abc import Sequence

import redis.asyncio as aioredis

from dispatcher.store.base import hash_fields
from dispatcher.store.delivery import DeliveryStore
from dispatcher.store.keys import (
    ESCALATIONS,
    SWEEPS,
    alert_escalations_key,
    dispatch_key,
    resends_key,
)


class SweepStore(DeliveryStore):
    """Escalating marks terminals ``no_ack`` through the ack script, so it builds on delivery."""

    def __init__(self, client: aioredis.Redis) -> None:
        super().__init__(client)
        self._claim_due = self.script("dispatcher.store", "claim_due")

    async def schedule_sweep(self, alert_id: str, due_ms: int) -> None:
        await self.call(self.redis.zadd(SWEEPS, {alert_id: due_ms}))

    async def claim_due_sweeps(self, now_ms: int, *, lease_ms: int, count: int) -> list[str]:
        result = await self.call(
            self._claim_due(keys=[SWEEPS], args=[now_ms, now_ms + lease_ms, count])
        )
        return list(result or [])

    async def finish_sweep(self, alert_id: str) -> None:
        await self.call(self.redis.zrem(SWEEPS, alert_id))

    async def record_resends(self, alert_id: str, terminals: Sequence[str], attempt: int) -> None:
        async with self.redis.pipeline(transaction=False) as pipe:
            for terminal in terminals:
                pipe.hincrby(resends_key(alert_id), terminal, 1)
            pipe.hincrby(dispatch_key(alert_id), "resends", len(terminals))
            pipe.hset(dispatch_key(alert_id), "sweep_attempt", attempt)
            await self.call(pipe.execute())

    async def escalate(
        self, alert_id: str, records: Sequence[dict[str, str]], *, acklog_maxlen: int
    ) -> list[dict[str, str]]:
        """Mark each terminal ``no_ack`` and record why; returns the records that applied.

        The state change is the ack script's, so it is atomic with acks: a terminal whose
        final ack arrived meanwhile is left alone and not escalated.
        """
        keys, args = self._ack_call(
            alert_id,
            [(r["terminal_id"], "no_ack", r["at"], "") for r in records],
            acklog_maxlen=acklog_maxlen,
        )
        codes = await self.call(self._record_acks(keys=keys, args=args))
        applied = [r for r, code in zip(records, codes, strict=True) if int(code) == 1]
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
        self, *, alert_id: str | None = None, limit: int = 100
    ) -> list[dict[str, str]]:
        if alert_id is not None:
            key = alert_escalations_key(alert_id)
            raws = await self.call(self.redis.lrange(key, 0, limit - 1))
            return [json.loads(raw) for raw in raws]
        entries = await self.call(self.redis.xrevrange(ESCALATIONS, count=limit))
        return [{"id": entry_id, **fields} for entry_id, fields in entries]
