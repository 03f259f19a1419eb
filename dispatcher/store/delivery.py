"""Delivery: the terminals an alert expects, the acks that come back, the counts offices read."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Collection, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

import redis.asyncio as aioredis
import structlog

from dispatcher.core.ack_parse import AckRecord
from dispatcher.core.errors import StoreUnavailable
from dispatcher.core.models import utcnow
from dispatcher.store.base import StoreBase
from dispatcher.store.keys import (
    ACKLOG,
    STATS,
    TERMS_REGION,
    TERMS_STATE,
    alert_escalations_key,
    counts_key,
    dispatch_key,
    expected_counts_key,
    expected_key,
    offline_key,
    region_terms_key,
    resends_key,
    tstate_key,
)
from dispatcher.store.ordered_script import OrderedScript

log = structlog.get_logger(__name__)


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
# Terminals per call of record_expected.lua: about 8 ms of Redis each (a province in one call
# held it 70 ms, and an office's issue request waited behind it).
EXPECTED_SLICE = 2000
# The ack script's code for an ack that moved a terminal the sweeper had given up on (no_ack):
# counted like 1, and its escalation, if it played, is answered. Told by the script, so that
# the batches of a wave, which answer no escalation, cost no round trip to find out.
ANSWERED_NO_ACK = 2


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

        In slices of ``EXPECTED_SLICE`` terminals (``record_expected.lua``), so that Redis
        serves others between them. Idempotent: a worker that died half-way and is replaced
        rewrites the same set.
        """
        keys = [
            expected_key(alert_id),
            offline_key(alert_id),
            counts_key(alert_id),
            dispatch_key(alert_id),
            TERMS_REGION,
            TERMS_STATE,
            expected_counts_key(alert_id),
            *(region_terms_key(code) for code in cover),
        ]
        cover_set, cursor = 1, "0"
        while True:
            answer = await self.call(
                self._record_expected(keys=keys, args=[cover_set, cursor, EXPECTED_SLICE])
            )
            cover_set, cursor = int(answer[0]), str(answer[1])
            if cover_set == 0:
                return int(answer[2]), int(answer[3])

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
            answered: dict[str, dict[str, str]] = {}
            for indexes, codes in zip(by_alert.values(), await replies, strict=True):
                for i, code in zip(indexes, codes, strict=True):
                    out[i] = int(code)
                    if out[i] == ANSWERED_NO_ACK:
                        out[i] = 1  # counted, as any other; the script told us more
                        if acks[i].state == "played":
                            answered.setdefault(acks[i].alert_id, {})[acks[i].terminal] = acks[i].at
            if answered:
                await self._resolve_escalations(answered)
            return out

        return results()

    async def _resolve_escalations(self, played: dict[str, dict[str, str]]) -> None:
        """Mark ``resolved`` the escalations of terminals that played after all: the ack
        script let their ``played`` replace the sweeper's ``no_ack`` (alert → terminal →
        when it played)."""
        try:
            await self._write_resolutions(played)
        except StoreUnavailable as exc:
            # The acks are recorded, and a listing reads the terminal's state anyway: only
            # the time of the resolution is lost.
            log.warning("escalations.resolve_failed", error=exc.message, alerts=len(played))

    async def _write_resolutions(self, played: dict[str, dict[str, str]]) -> None:
        async with self.redis.pipeline(transaction=False) as pipe:
            for alert_id in played:
                pipe.lrange(alert_escalations_key(alert_id), 0, -1)
            lists = await self.call(pipe.execute())
        now = utcnow().isoformat()
        resolved = 0
        async with self.redis.pipeline(transaction=False) as pipe:
            for (alert_id, terminals), raws in zip(played.items(), lists, strict=True):
                # Records are only appended, so an index read here still names its record.
                for index, raw in enumerate(raws):
                    record = json.loads(raw)
                    at = terminals.get(record.get("terminal_id"))
                    if at is None or record.get("resolved_at"):
                        continue
                    record.update(state="resolved", resolved_at=now, played_at=at)
                    pipe.lset(
                        alert_escalations_key(alert_id),
                        index,
                        json.dumps(record, ensure_ascii=False),
                    )
                    resolved += 1
            if resolved:
                await self.call(pipe.execute())
        if resolved:
            log.info("escalations.resolved", terminals=resolved)

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
