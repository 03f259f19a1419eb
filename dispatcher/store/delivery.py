"""Delivery: the terminals an alert expects, the acks that come back, the counts offices read."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Collection, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

import redis.asyncio as aioredis

from dispatcher.core.ack_parse import AckRecord
from dispatcher.core.models import utcnow
from dispatcher.store.base import StoreBase
from dispatcher.store.keys import (
    ACKLOG,
    STATS,
    TERMS_REGION,
    TERMS_STATE,
    counts_key,
    dispatch_key,
    expected_key,
    offline_key,
    region_terms_key,
    resends_key,
    tstate_key,
)
from dispatcher.store.ordered_script import OrderedScript


@dataclass(slots=True)
class DeliveryCounts:
    """Terminal counts of one alert, for a region (the province when ``code`` is the root)."""

    expected: int = 0
    received: int = 0
    playing: int = 0
    played: int = 0
    failed: int = 0
    cancelled: int = 0
    no_ack: int = 0

    @property
    def acknowledged(self) -> int:
        """Terminals that confirmed receipt and have not failed (received, playing or played)."""
        return self.received + self.playing + self.played

    @property
    def pending(self) -> int:
        finished = self.failed + self.no_ack + self.cancelled
        return max(0, self.expected - self.acknowledged - finished)

    def as_dict(self) -> dict[str, int]:
        return {
            "expected": self.expected,
            "received": self.acknowledged,
            "played": self.played,
            "failed": self.failed + self.no_ack,
            "no_ack": self.no_ack,
            "cancelled": self.cancelled,
            "pending": self.pending,
        }


DELIVERY_STATES = tuple(f.name for f in fields(DeliveryCounts))


@dataclass(slots=True)
class DeliveryReport:
    dispatch: dict[str, str]
    by_region: dict[str, DeliveryCounts] = field(default_factory=dict)


class DeliveryStore(StoreBase):
    def __init__(self, client: aioredis.Redis) -> None:
        super().__init__(client)
        self._record_acks = self.script("dispatcher.store", "record_acks")
        self._record_expected = self.script("dispatcher.store", "record_expected")
        # The ingester's way to the ack script: in order, many batches in flight.
        self.ack_script = OrderedScript(
            client.connection_pool, str(self._record_acks.script), name="record_acks"
        )

    async def delivery(self, alert_id: str, codes: Collection[str] | None = None) -> DeliveryReport:
        """The alert's dispatch record and its counters, for ``codes`` only when given.

        A province-wide alert has counters for every village (~90,000 fields): an office
        polling its progress asks for the regions it shows, not for all of them.
        """
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hgetall(dispatch_key(alert_id))
            if codes is None:
                pipe.hgetall(counts_key(alert_id))
            else:
                wanted = [f"{code}|{state}" for code in codes for state in DELIVERY_STATES]
                pipe.hmget(counts_key(alert_id), wanted)
            dispatch, counts = await self.call(pipe.execute())
        if codes is not None:
            counts = {f: v for f, v in zip(wanted, counts, strict=True) if v is not None}
        report = DeliveryReport(dispatch=dispatch)
        for name, value in counts.items():
            code, _, state = name.partition("|")
            setattr(report.by_region.setdefault(code, DeliveryCounts()), state, int(value))
        return report

    # Expected set -------------------------------------------------------------------------

    async def record_expected(self, alert_id: str, cover: Sequence[str]) -> tuple[int, int]:
        """Record the terminals below the cover as expected; returns (expected, offline now).

        Idempotent: a worker that died half-way and is replaced rewrites the same set.
        """
        expected, offline = await self.call(
            self._record_expected(
                keys=[
                    expected_key(alert_id),
                    offline_key(alert_id),
                    counts_key(alert_id),
                    dispatch_key(alert_id),
                    TERMS_REGION,
                    TERMS_STATE,
                    *(region_terms_key(code) for code in cover),
                ]
            )
        )
        return int(expected), int(offline)

    # Acks ---------------------------------------------------------------------------------

    def queue_acks(self, acks: Sequence[AckRecord], *, acklog_maxlen: int) -> Awaitable[list[int]]:
        """Record a batch of acks; each ack's result code once Redis has run the batch.

        Through the ordered script link (``ack_script``, whose task the ingester runs): the
        batch is queued before this returns, so batches queued one after the other are
        recorded in that order, and it is retried until Redis has run it.
        """
        by_alert: dict[str, list[int]] = {}
        for index, ack in enumerate(acks):
            by_alert.setdefault(ack.alert_id, []).append(index)
        replies = asyncio.gather(
            *(
                self.ack_script.call(
                    *self._ack_call(
                        alert_id,
                        [(acks[i].terminal, acks[i].state, acks[i].at, acks[i].detail)
                         for i in indexes],
                        acklog_maxlen=acklog_maxlen,
                    )
                )
                for alert_id, indexes in by_alert.items()
            )
        )  # fmt: skip

        async def results() -> list[int]:
            out = [0] * len(acks)
            for indexes, codes in zip(by_alert.values(), await replies, strict=True):
                for i, code in zip(indexes, codes, strict=True):
                    out[i] = int(code)
            return out

        return results()

    def _ack_call(
        self, alert_id: str, acks: Sequence[tuple[str, str, str, str]], *, acklog_maxlen: int
    ) -> tuple[list[str], list[str | int]]:
        """The ack script's keys and arguments for a batch of one alert's acks."""
        args: list[str | int] = [int(utcnow().timestamp() * 1000), acklog_maxlen, alert_id, ""]
        lines = []
        for terminal, state, at, detail in acks:
            k = 0
            if detail:
                args.append(detail)
                k = len(args)  # Lua counts ARGV from 1
            line = f"{terminal}\t{state}\t{at}\t{k}\n"
            if line.count("\t") != 3 or line.count("\n") != 1:
                # Tabs and newlines frame the batch; the ingester and the sweeper never pass
                # them here (terminal ids and times are checked first): a bug, not bad input.
                raise ValueError(f"ack field with a tab or newline: {terminal!r} {at!r}")
            lines.append(line)
        args[3] = "".join(lines)
        keys = [
            expected_key(alert_id),
            tstate_key(alert_id),
            counts_key(alert_id),
            dispatch_key(alert_id),
            ACKLOG,
            STATS,
            TERMS_REGION,
        ]
        return keys, args

    async def bump_stats(self, counts: dict[str, int]) -> None:
        if not counts:
            return
        async with self.redis.pipeline(transaction=False) as pipe:
            for name, n in counts.items():
                pipe.hincrby(STATS, name, n)
            await self.call(pipe.execute())

    async def stats(self) -> dict[str, int]:
        raw = await self.call(self.redis.hgetall(STATS))
        return {k: int(v) for k, v in raw.items()}

    async def unfinished(self, alert_id: str) -> dict[str, tuple[str, str | None]]:
        """Expected terminals with no final ack (played, failed, cancelled):
        id → (region, last state or None)."""
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hgetall(expected_key(alert_id))
            pipe.hgetall(tstate_key(alert_id))
            expected, states = await self.call(pipe.execute())
        return {
            terminal: (region, states.get(terminal))
            for terminal, region in expected.items()
            if states.get(terminal) in (None, "received", "playing")
        }

    async def expected_of(self, alert_id: str) -> tuple[dict[str, str], set[str]]:
        """An alert's expected terminals (id → village) and those offline at its dispatch."""
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hgetall(expected_key(alert_id))
            pipe.smembers(offline_key(alert_id))
            expected, offline = await self.call(pipe.execute())
        return dict(expected), set(offline)

    async def alert_terminals(self, alert_id: str) -> list[dict[str, Any]]:
        """Every expected terminal of an alert with its state, resends and offline flag."""
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hgetall(expected_key(alert_id))
            pipe.hgetall(tstate_key(alert_id))
            pipe.hgetall(resends_key(alert_id))
            pipe.smembers(offline_key(alert_id))
            expected, states, resends, offline = await self.call(pipe.execute())
        return [
            {
                "id": terminal,
                "region": region,
                "state": states.get(terminal, "pending"),
                "resends": int(resends.get(terminal, 0)),
                "offline_at_dispatch": terminal in offline,
            }
            for terminal, region in sorted(expected.items())
        ]
