"""Alerts, their idempotency and dispatch records; storing one queues it in the same step."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import cast

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from dispatcher.core.errors import Conflict, IdempotencyKeyReused, StoreUnavailable
from dispatcher.core.models import Alert, utcnow
from dispatcher.store.base import StoreBase, hash_fields
from dispatcher.store.keys import (
    ALERTS,
    IDEMPOTENCY_TTL,
    OUTBOX,
    OUTBOX_URGENT,
    PREFIX,
    SWEEPS,
    SWEEPS_URGENT,
    alert_key,
    dispatch_key,
    idempotency_key,
)


class AlertStore(StoreBase):
    def __init__(self, client: aioredis.Redis) -> None:
        super().__init__(client)
        # Stores the alert, its dispatch record, its outbox entry and the idempotency record in
        # one atomic step, so a 201 means all of them exist (with appendfsync always, on disk).
        self._create_alert = self.script("dispatcher.store", "create_alert")

    async def create_alert(
        self,
        alert: Alert,
        *,
        office_id: str,
        idempotency: tuple[str, str] | None = None,
        cancels: str | None = None,
    ) -> tuple[Alert, bool]:
        """Store ``alert`` and queue it; returns the stored alert and whether it is new.

        ``idempotency`` is (key, canonical body): a replay with the same body returns the first
        alert, with another body it is a ``Conflict``. ``cancels`` names the alert a cancel
        replaces; a second cancel of it is a ``Conflict``.
        """
        idem_key = idempotency_key(office_id, idempotency[0]) if idempotency else f"{PREFIX}-"
        idem_value = (
            json.dumps({"alert_id": alert.id, "body": idempotency[1]}) if idempotency else ""
        )
        try:
            # The WAIT on the script's own connection covers exactly its writes; if the
            # connection dies first, the client's retry runs both again on the primary it
            # finds next (the script is safe to run twice: a replay or the same writes).
            async with self.redis.pipeline(transaction=False) as pipe:
                await self._create_alert(  # queued in the pipeline, run by execute
                    keys=[
                        alert_key(alert.id),
                        ALERTS,
                        dispatch_key(alert.id),
                        OUTBOX_URGENT if alert.urgent else OUTBOX,
                        idem_key,
                        dispatch_key(cancels) if cancels else f"{PREFIX}-",
                    ],
                    args=[
                        alert.model_dump_json(),
                        int(alert.sent.timestamp() * 1000),
                        alert.id,
                        idem_value,
                        IDEMPOTENCY_TTL,
                        "1" if idempotency else "0",
                        utcnow().isoformat(),
                        "1" if cancels else "0",
                    ],
                    client=pipe,
                )
                if self.replicas_ack > 0:
                    pipe.wait(self.replicas_ack, self.replicas_ack_timeout_ms)
                result, *waited = await pipe.execute()
        except (RedisError, OSError) as exc:
            raise StoreUnavailable(f"could not store the alert: {exc}") from exc
        outcome, value = cast(list[str], result)
        if outcome == "created":
            self._check_replicas(alert.id, int(waited[0]) if waited else 0)
            return alert, True
        if outcome == "cancelled":
            raise Conflict(
                f"alert {cancels} is already cancelled by {value}", details={"cancelled_by": value}
            )
        first = json.loads(value)
        if idempotency is None or first["body"] != idempotency[1]:
            raise IdempotencyKeyReused(
                "this Idempotency-Key was already used with a different request body; "
                "use a new key for a new alert",
                details={"alert_id": first["alert_id"]},
            )
        stored = await self.get_alert(first["alert_id"])
        if stored is None:  # pragma: no cover - the key and the alert are written together
            raise Conflict("the alert of this Idempotency-Key is gone")
        self._check_replicas(stored.id, await self.replicated())
        return stored, False

    async def replay(self, office_id: str, key: str, body: str) -> Alert | None:
        """The alert first stored under this Idempotency-Key, or None if the key is new."""
        first = await self.idempotent_id(office_id, key, body)
        stored = None if first is None else await self.get_alert(first)
        if stored is not None:
            # A retry after a 503 for too few replicas is answered 201 only once they have it.
            self._check_replicas(stored.id, await self.replicated())
        return stored

    def _check_replicas(self, alert_id: str, replicas: int) -> None:
        """``StoreUnavailable`` (503) when fewer replicas than ``replicas_ack`` confirmed.

        The alert is stored and queued on the primary, and goes out unless the primary dies
        before a replica has it; a 201 must not promise more. The office retries with the same
        Idempotency-Key (a replay, answered 201 once replicas confirm), never as a new alert.
        """
        if replicas >= self.replicas_ack:
            return
        raise StoreUnavailable(
            f"alert {alert_id} is stored and queued on the Redis primary, but {replicas} of "
            f"the {self.replicas_ack} replicas asked for confirmed it within "
            f"{self.replicas_ack_timeout_ms} ms, so a failover now could lose it: retry with "
            "the same Idempotency-Key to confirm it; do not issue it again as a new alert",
            details={
                "alert_id": alert_id,
                "replicas": replicas,
                "replicas_wanted": self.replicas_ack,
            },
        )

    async def get_alert(self, alert_id: str) -> Alert | None:
        raw = await self.call(self.redis.get(alert_key(alert_id)))
        return Alert.model_validate_json(raw) if raw else None

    async def list_alerts(self, *, limit: int, before_ms: int | None = None) -> list[Alert]:
        high: int | str = f"({before_ms}" if before_ms is not None else "+inf"
        ids = await self.call(self.redis.zrevrangebyscore(ALERTS, high, "-inf", start=0, num=limit))
        if not ids:
            return []
        raws = await self.call(self.redis.mget([alert_key(i) for i in ids]))
        return [Alert.model_validate_json(raw) for raw in raws if raw]

    async def dispatch_state(self, alert_id: str) -> dict[str, str]:
        return cast(dict[str, str], await self.call(self.redis.hgetall(dispatch_key(alert_id))))

    async def set_dispatch(self, alert_id: str, **fields: str | int) -> None:
        await self.call(self.redis.hset(dispatch_key(alert_id), mapping=hash_fields(fields)))

    async def finish_dispatch(
        self,
        alert_id: str,
        *,
        dispatched_at: str,
        sweep_due_ms: int | None,
        references: Mapping[str, Mapping[str, str]],
        urgent: bool = False,
    ) -> None:
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(
                dispatch_key(alert_id),
                mapping={"state": "dispatched", "dispatched_at": dispatched_at},
            )
            if sweep_due_ms is not None:
                pipe.zadd(SWEEPS_URGENT if urgent else SWEEPS, {alert_id: sweep_due_ms})
            for ref, fields in references.items():
                pipe.hset(dispatch_key(ref), mapping=hash_fields(fields))
            await self.call(pipe.execute())
