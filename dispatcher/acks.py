"""Ack and terminal-state ingestion: validate, batch, and record in Redis without stopping.

Messages arrive from the MQTT link's callback and are queued; one task drains the queue in
batches (up to ``ack_batch_size`` or ``ack_batch_wait`` seconds) and records each batch in one
pipelined round trip. A bad message is counted and logged, never raised: one broken terminal
must not stop the province's acks from being counted.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable

import structlog
from pydantic import ValidationError

from dispatcher.bus import Delivery
from dispatcher.errors import StoreUnavailable
from dispatcher.models import Ack, TerminalState
from dispatcher.store import Store

log = structlog.get_logger(__name__)

TERM_PREFIX = "eb/v1/term/"
ACK_TOPIC = TERM_PREFIX + "+/ack"
STATE_TOPIC = TERM_PREFIX + "+/state"
# Result codes of Store.record_acks.
Item = tuple[str, str, bytes, Delivery | None]
_RESULTS = {
    1: "acks_counted",
    0: "acks_duplicate",
    -1: "acks_unexpected",
    -2: "acks_unknown_alert",
    -3: "acks_unknown_terminal",
}


def terminal_of(topic: str) -> tuple[str, str] | None:
    """``eb/v1/term/T1/ack`` → ("T1", "ack"); anything else → None."""
    if not topic.startswith(TERM_PREFIX):
        return None
    terminal, _, kind = topic[len(TERM_PREFIX) :].partition("/")
    if not terminal or kind not in ("ack", "state"):
        return None
    return terminal, kind


class AckIngester:
    """Queues messages from the MQTT link and records them in batches."""

    def __init__(
        self,
        store: Store,
        *,
        batch_size: int = 500,
        batch_wait: float = 0.02,
        acklog_maxlen: int,
        confirm: Callable[[list[Delivery]], None] | None = None,
    ) -> None:
        self._store = store
        self._batch_size = batch_size
        self._batch_wait = batch_wait
        self._acklog_maxlen = acklog_maxlen
        self._queue: asyncio.Queue[tuple[str, str, bytes, Delivery | None]] = asyncio.Queue()
        # Set by the app once the MQTT link exists: PUBACKs go out after the batch is stored.
        self.confirm = confirm
        self.totals: Counter[str] = Counter()
        self.fed: Counter[str] = Counter()  # messages taken from the broker, by kind
        self.waiting_for_store = 0  # messages held (not confirmed to the broker): Redis is down

    def feed(self, topic: str, payload: bytes, delivery: Delivery | None = None) -> None:
        """Called by the MQTT link for every message on the term topics; never blocks."""
        parsed = terminal_of(topic)
        if parsed is None:
            self.totals["messages_ignored"] += 1
            parsed = ("", "ignored")
        self.fed[parsed[1]] += 1
        self._queue.put_nowait((parsed[0], parsed[1], payload, delivery))

    @property
    def backlog(self) -> int:
        return self._queue.qsize()

    async def run(self) -> None:
        while True:
            batch = [await self._queue.get()]
            try:
                async with asyncio.timeout(self._batch_wait):
                    while len(batch) < self._batch_size:
                        batch.append(await self._queue.get())
            except TimeoutError:
                pass
            await self._record_until_done(batch)
            if self.confirm is not None:
                self.confirm([item[3] for item in batch if item[3] is not None])

    async def _record_until_done(self, batch: list[Item]) -> None:
        # Acks taken from the broker exist only here now: retry rather than drop them.
        backoff = 0.1
        while True:
            try:
                await self._record(batch)
                self.waiting_for_store = 0
                return
            except StoreUnavailable as exc:
                self.waiting_for_store = len(batch)
                log.warning(
                    "acks.store_down", error=exc.message, batch=len(batch), retry_in=backoff
                )
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
            except Exception:
                # A bug with this batch: confirming it loses it, but holding it would stop
                # the broker from sending any more acks once its window fills.
                log.exception("acks.batch_failed", batch=len(batch))
                self.totals["batches_failed"] += 1
                self.waiting_for_store = 0
                return

    async def _record(self, batch: list[Item]) -> None:
        acks: list[tuple[str, Ack]] = []
        states: dict[str, str] = {}
        counts: Counter[str] = Counter()
        for terminal, kind, payload, _delivery in batch:
            if kind == "ignored":
                continue
            if kind == "state":
                try:
                    state = TerminalState.model_validate_json(payload)
                except ValidationError as exc:
                    counts["states_malformed"] += 1
                    log.warning("state.malformed", terminal_id=terminal, error=_short(exc))
                    continue
                states[terminal] = state.model_dump_json(exclude_none=True)
                continue
            try:
                acks.append((terminal, Ack.model_validate_json(payload)))
            except ValidationError as exc:
                counts["acks_malformed"] += 1
                log.warning(
                    "ack.malformed",
                    terminal_id=terminal,
                    error=_short(exc),
                    payload=payload[:200].decode("utf-8", "replace"),
                )
        if states:
            await self._store.record_terminal_states(states)
        if acks:
            # Per-result stats are kept by the recording script itself, atomically with it.
            results = await self._store.record_acks(acks, acklog_maxlen=self._acklog_maxlen)
            for (terminal, ack), rc in zip(acks, results, strict=True):
                self.totals[_RESULTS.get(rc, "acks_other")] += 1
                if rc == -2:
                    log.warning("ack.unknown_alert", terminal_id=terminal, alert_id=ack.alert_id)
                elif rc == -3:
                    log.warning("ack.unknown_terminal", terminal_id=terminal, alert_id=ack.alert_id)
                elif rc == -1:
                    log.info("ack.not_targeted", terminal_id=terminal, alert_id=ack.alert_id)
        counts["state_messages"] += len(states)
        counts = Counter({k: v for k, v in counts.items() if v})
        self.totals.update(counts)
        await self._store.bump_stats(dict(counts))


def _short(exc: ValidationError) -> str:
    first = exc.errors()[0]
    where = ".".join(str(p) for p in first["loc"]) or "payload"
    return f"{where}: {first['msg']}"
