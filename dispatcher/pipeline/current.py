"""Catching up a terminal that comes back without its session: the alerts in force, again.

A terminal whose broker session survived gets what it missed from the broker's queue, and
its brain plays only what is still in force (``receiver.brain``, catching up). One whose
session was lost (a new terminal, a session that expired, a broker restarted without its
store) gets nothing from the broker. When its online state says ``"session": "new"`` (or says
nothing of it: a terminal of another make), this sends it the alerts in force for its
registered region (``CurrentStore.in_force``: the newest version of each chain, not
cancelled, not expired) on its cmd topic, signed like every payload, with the MQTT 5 expiry
of each. Once per online event (``CurrentStore.claim``): the retained state every engine gets
again on each reconnect is a repeat. A terminal handles an alert id once, so an alert it had
from its backlog or a resend as well plays once; one it already acked to an end is not sent.

It never delays dispatch: the MQTT link's callback only queues the state (bounded; what does
not fit is counted and logged), and one background task answers them in batches, reading the
alerts in force once for many terminals (never a list read before a terminal's state came:
an alert dispatched after that read reaches it live, since it subscribed before it said it is
online) and signing each once per read.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter, deque
from dataclasses import dataclass

import structlog

from dispatcher.core.errors import StoreUnavailable
from dispatcher.core.models import Alert, utcnow
from dispatcher.core.wire import TERMINAL_ID, terminal_of
from dispatcher.pipeline.ports import AlertEncoder, Publisher
from dispatcher.pipeline.to_terminals import publish_each
from dispatcher.store.current import CurrentStore

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class _InForce:
    read_at: float  # time.monotonic()
    alerts: list[tuple[Alert, bytes]]  # each with its signed payload


class CatchUp:
    """Feed it every state message (``observe``); ``run`` answers the online ones."""

    def __init__(
        self,
        store: CurrentStore,
        link: Publisher,
        *,
        encode: AlertEncoder,
        queue_max: int = 100_000,
        batch: int = 500,
    ) -> None:
        self._store = store
        self._link = link
        self._encode = encode
        # (terminal, at of its online state, time.monotonic() it came)
        self._queue: deque[tuple[str, str, float]] = deque()
        self._queue_max = queue_max
        self._batch = batch
        self._arrived = asyncio.Event()
        self._cached: _InForce | None = None
        self.totals: Counter[str] = Counter()

    def observe(self, topic: str, payload: bytes) -> None:
        """Called for every message on the terminals' topics; never blocks, never raises."""
        # Cheap looks first: most messages are acks, and a resumed session needs nothing.
        if b'"online"' not in payload or b'"resumed"' in payload:
            return
        parsed = terminal_of(topic)
        if parsed is None or parsed[1] != "state" or not TERMINAL_ID.fullmatch(parsed[0]):
            return
        try:
            body = json.loads(payload)
        except ValueError:
            return
        if (
            not isinstance(body, dict)
            or body.get("state") != "online"
            or body.get("session") not in (None, "new")
            or "rejected" in body  # a report of a refused message, not a connect
            or not isinstance(body.get("at"), str)  # no way to tell one connect from another
        ):
            return
        if len(self._queue) >= self._queue_max:
            self.totals["overflow"] += 1
            if self.totals["overflow"] == 1 or self.totals["overflow"] % 1000 == 0:
                log.warning("catch_up.overflow", dropped=self.totals["overflow"])
            return
        self._queue.append((parsed[0], str(body["at"])[:64], time.monotonic()))
        self._arrived.set()

    @property
    def backlog(self) -> int:
        return len(self._queue)

    async def run(self) -> None:
        while True:
            while not self._queue:
                self._arrived.clear()
                await self._arrived.wait()
            await self._link.connected.wait()
            items = [self._queue.popleft() for _ in range(min(self._batch, len(self._queue)))]
            try:
                await self.answer([(t, at) for t, at, _ in items], seen=items[0][2])
            except StoreUnavailable as exc:
                # Not retried: a terminal of the batch still gets its alerts by resends, and
                # by the next connect of its own.
                log.warning("catch_up.store_down", error=exc.message, terminals=len(items))
                self.totals["store_down"] += len(items)
                await asyncio.sleep(1.0)

    async def answer(self, events: list[tuple[str, str]], *, seen: float | None = None) -> int:
        """Send each (terminal, online ``at``) new to the engines its alerts in force; how
        many messages went out. ``seen``: ``time.monotonic()`` when the first of these states
        came (now if None): a list of the alerts in force read before then is not used."""
        seen = time.monotonic() if seen is None else seen
        claimed = await self._store.claim(events)
        terminals = list(
            dict.fromkeys(t for (t, _), new in zip(events, claimed, strict=True) if new)
        )
        self.totals["repeats"] += len(events) - len(terminals)
        if not terminals:
            return 0
        in_force = await self._in_force(seen)
        regions = await self._store.regions_of(terminals)
        owed: list[tuple[str, Alert, bytes]] = []
        for terminal in terminals:
            region = regions.get(terminal)
            if region is None:
                self.totals["unregistered"] += 1
                continue
            owed.extend(
                (terminal, alert, payload)
                for alert, payload in in_force
                if any(region.startswith(area) for area in alert.areas)
            )
        if not owed:
            return 0
        done = await self._store.finished(
            list(dict.fromkeys(alert.id for _, alert, _ in owed)),
            list(dict.fromkeys(terminal for terminal, _, _ in owed)),
        )
        owed = [item for item in owed if (item[1].id, item[0]) not in done]
        sent = await self._publish(owed)
        self.totals["sent"] += sent
        if owed:
            log.info("catch_up.sent", terminals=len(terminals), messages=sent, owed=len(owed))
        return sent

    async def _in_force(self, seen: float) -> list[tuple[Alert, bytes]]:
        cached = self._cached
        if cached is not None and cached.read_at >= seen:
            return cached.alerts
        read_at = time.monotonic()
        alerts = await self._store.in_force(utcnow())
        cached = _InForce(read_at, [(a, self._encode(a)) for a in alerts])
        self._cached = cached
        return cached.alerts

    async def _publish(self, owed: list[tuple[str, Alert, bytes]]) -> int:
        items = [(terminal, payload, alert.seconds_left()) for terminal, alert, payload in owed]
        results = await publish_each(self._link, items)
        if not all(results) and not self._link.connected.is_set():
            # Those terminals still have the deadline sweeper's resends, and their next connect.
            log.warning("catch_up.link_down", unsent=results.count(False))
        return sum(results)
