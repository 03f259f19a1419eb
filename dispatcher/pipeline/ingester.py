"""Ack and terminal-state ingestion: validate, batch, and record in Redis without stopping.

Messages arrive from the MQTT links' callbacks and wait in a list; one task cuts them into
batches (up to ``ack_batch_size`` or ``ack_batch_wait`` seconds) and records each batch in one
pipelined round trip: the next batch is decoded while Redis records this one, and batches are
recorded and confirmed in the order they came. A bad message is counted and logged, never
raised: one broken terminal must not stop the province's acks from being counted. Why an
ack was refused (malformed, an unknown alert, an alert not addressed to that terminal) is
also kept per terminal (``Store.record_rejections``), for the office to see. Acks of link
tests (alert ids starting with ``PING_PREFIX``) are handed to the waiting ``ping`` request
(``Store.record_ping_acks``), never counted as acks of an alert.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import structlog
from pydantic import ValidationError

from dispatcher.core.ack_parse import AckRecord, parse_ack
from dispatcher.core.errors import StoreUnavailable
from dispatcher.core.models import TerminalState, utcnow
from dispatcher.core.wire import TERMINAL_ID, terminal_of
from dispatcher.pipeline.ports import PubackHandle
from dispatcher.store.store import Store

log = structlog.get_logger(__name__)

# Result codes of the ack script (Store.queue_acks).
Item = tuple[str, str, bytes, PubackHandle | None]
_RESULTS = {
    1: "acks_counted",
    0: "acks_duplicate",
    -1: "acks_unexpected",
    -2: "acks_unknown_alert",
    -3: "acks_unknown_terminal",
}
# Alert ids of link tests (``POST /api/v1/terminals/{id}/ping``); no office's alert id has a
# colon this early (they start with the office id).
PING_PREFIX = "ping:"
# Why the ack script refused an ack, as the terminal's rejections say it.
_REFUSALS = {
    -1: "alert {alert_id} was not sent to this terminal (or it was expected in another region)",
    -2: "unknown alert {alert_id}: not issued by this engine, or expired and forgotten",
}


class AckIngester:
    """Takes messages from the MQTT links and records them in batches.

    Messages wait in a plain list (a queue's get per message would cost a task switch each,
    at 35,000 acks a wave). Up to ``in_flight`` batches are under way at once: the engine
    decodes the next while Redis records the last. Batches are recorded one after the other
    in the order they came (a terminal's acks keep their order), and each is confirmed to the
    broker only once stored (MQTT also wants PUBACKs in the order the messages came).
    """

    def __init__(
        self,
        store: Store,
        *,
        batch_size: int = 500,
        batch_wait: float = 0.005,
        in_flight: int = 2,
        acklog_maxlen: int,
        confirm: Callable[[list[PubackHandle]], None] | None = None,
    ) -> None:
        self._store = store
        self._batch_size = batch_size
        self._batch_wait = batch_wait
        self._in_flight = in_flight
        self._acklog_maxlen = acklog_maxlen
        self._pending: list[Item] = []
        self._arrived = asyncio.Event()
        self._recording = 0  # messages in batches being recorded
        # Set by the app once the MQTT links exist: PUBACKs go out after the batch is stored.
        self.confirm = confirm
        self.totals: Counter[str] = Counter()
        self.fed: Counter[str] = Counter()  # messages taken from the broker, by kind
        self._states_down = False

    def feed(self, topic: str, payload: bytes, delivery: PubackHandle | None = None) -> None:
        """Called by the MQTT links for every message on the term topics; never blocks."""
        parsed = terminal_of(topic)
        if parsed is None:
            self.totals["messages_ignored"] += 1
            parsed = ("", "ignored")
        self.fed[parsed[1]] += 1
        pending = self._pending
        pending.append((parsed[0], parsed[1], payload, delivery))
        if len(pending) == 1 or len(pending) >= self._batch_size:
            self._arrived.set()

    @property
    def backlog(self) -> int:
        """Messages taken from the broker and not yet recorded."""
        return len(self._pending) + self._recording

    async def run(self) -> None:
        slots = asyncio.Semaphore(self._in_flight)
        previous: asyncio.Task[None] | None = None
        batches: set[asyncio.Task[None]] = set()
        script_link = asyncio.create_task(self._store.ack_script.run())
        try:
            while True:
                while not self._pending:
                    self._arrived.clear()
                    await self._arrived.wait()
                await slots.acquire()
                if len(self._pending) < self._batch_size:
                    # A batch of one at the head of a wave would cost a round trip for
                    # one ack: wait briefly for the rest.
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(self._batch_wait):
                            while len(self._pending) < self._batch_size:
                                self._arrived.clear()
                                await self._arrived.wait()
                batch = self._pending[: self._batch_size]
                del self._pending[: self._batch_size]
                self._recording += len(batch)
                previous = asyncio.create_task(self._handle(batch, previous, slots))
                batches.add(previous)
                previous.add_done_callback(batches.discard)
        finally:
            # Unconfirmed batches come back from the broker: nothing is lost by stopping.
            for task in batches:
                task.cancel()
            script_link.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await script_link

    async def _handle(
        self, batch: list[Item], previous: asyncio.Task[None] | None, slots: asyncio.Semaphore
    ) -> None:
        try:
            prepared = self._prepare(batch)
            # Queued before the first await: batches reach the ack script in the order they
            # came (tasks start in the order they were made), so a terminal's received is
            # recorded before its played even with several batches in Redis at once.
            results = self._queue(prepared)
            await self._record_until_done(prepared, results, len(batch))
            if previous is not None:
                await asyncio.wait([previous])  # PUBACKs in the order the messages came
        finally:
            self._recording -= len(batch)
            slots.release()
        if self.confirm is not None:
            self.confirm([item[3] for item in batch if item[3] is not None])

    def _queue(self, prepared: Prepared) -> asyncio.Future[list[int]] | None:
        if not prepared.acks:
            return None
        try:
            return asyncio.ensure_future(
                self._store.queue_acks(prepared.acks, acklog_maxlen=self._acklog_maxlen)
            )
        except Exception:
            log.exception("acks.batch_failed", batch=len(prepared.acks))
            self.totals["batches_failed"] += 1
            prepared.acks = []
            return None

    @property
    def waiting_for_store(self) -> int:
        """Messages held (not confirmed to the broker) because Redis is down."""
        down = self._store.ack_script.down or self._states_down
        return self._recording if down else 0

    async def _record_until_done(
        self, prepared: Prepared, results: asyncio.Future[list[int]] | None, size: int
    ) -> None:
        # Acks taken from the broker exist only here now: wait for Redis rather than drop
        # them (the ack script's link retries by itself; states and stats are retried here).
        if results is not None:
            try:
                self._tally(prepared, await results)
            except Exception:
                # A bug with this batch: confirming it loses it, but holding it would stop
                # the broker from sending any more acks once its window fills.
                log.exception("acks.batch_failed", batch=size)
                self.totals["batches_failed"] += 1
        backoff = 0.1
        while True:
            try:
                if prepared.states:
                    await self._store.record_terminal_states(prepared.states)
                if prepared.pings:
                    await self._store.record_ping_acks(prepared.pings)
                if prepared.rejections:
                    await self._store.record_rejections(prepared.rejections)
                    prepared.rejections = {}
                await self._store.bump_stats(dict(prepared.counts))
                self._states_down = False
                return
            except StoreUnavailable as exc:
                self._states_down = True
                log.warning("acks.store_down", error=exc.message, batch=size, retry_in=backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)

    def _prepare(self, batch: list[Item]) -> Prepared:
        """Validate a batch; what is malformed is counted and logged here, once."""
        prepared = Prepared()
        counts = prepared.counts
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
                prepared.states[terminal] = state.model_dump_json(exclude_none=True)
                refused = _refusal_reported(payload)
                if refused is not None and TERMINAL_ID.fullmatch(terminal):
                    # The other direction: the terminal refused one of the engine's messages
                    # (a bad signature, an unknown key, a replay): why a ping goes unanswered.
                    counts["terminal_refusals"] += 1
                    prepared.reject(terminal, refused[1], refused[0])
                continue
            try:
                ack = parse_ack(terminal, payload)
            except ValidationError as exc:
                counts["acks_malformed"] += 1
                log.warning(
                    "ack.malformed",
                    terminal_id=terminal,
                    error=_short(exc),
                    payload=payload[:200].decode("utf-8", "replace"),
                )
                if TERMINAL_ID.fullmatch(terminal):
                    prepared.reject(terminal, None, f"malformed ack: {_short(exc)}")
                continue
            if ack.alert_id.startswith(PING_PREFIX):
                counts["ping_acks"] += 1
                prepared.pings.setdefault(ack.alert_id, []).append(_ping_ack(ack))
            else:
                prepared.acks.append(ack)
        counts["state_messages"] += len(prepared.states)
        prepared.counts = Counter({k: v for k, v in counts.items() if v})
        self.totals.update(prepared.counts)
        return prepared

    def _tally(self, prepared: Prepared, results: list[int]) -> None:
        # Per-result stats are kept by the recording script itself, atomically with it.
        totals = self.totals
        for ack, rc in zip(prepared.acks, results, strict=True):
            totals[_RESULTS.get(rc, "acks_other")] += 1
            refusal = _REFUSALS.get(rc)
            if refusal is not None:
                prepared.reject(ack.terminal, ack.alert_id, refusal.format(alert_id=ack.alert_id))
            if rc == -2:
                log.warning("ack.unknown_alert", terminal_id=ack.terminal, alert_id=ack.alert_id)
            elif rc == -3:
                log.warning("ack.unknown_terminal", terminal_id=ack.terminal, alert_id=ack.alert_id)
            elif rc == -1:
                log.info("ack.not_targeted", terminal_id=ack.terminal, alert_id=ack.alert_id)


@dataclass(slots=True)
class Prepared:
    """A validated batch, ready for the store."""

    acks: list[AckRecord] = field(default_factory=list)
    states: dict[str, str] = field(default_factory=dict)  # terminal → state JSON
    counts: Counter[str] = field(default_factory=Counter)  # for ebd:stats
    pings: dict[str, list[str]] = field(default_factory=dict)  # ping id → its acks (JSON)
    # terminal → why its acks were refused, oldest first
    rejections: dict[str, list[dict[str, str]]] = field(default_factory=dict)

    def reject(self, terminal: str, alert_id: str | None, reason: str) -> None:
        entry = {"at": utcnow().isoformat(timespec="seconds"), "reason": reason[:300]}
        if alert_id is not None:
            entry["alert_id"] = alert_id[:80]
        self.rejections.setdefault(terminal, []).append(entry)


def _refusal_reported(payload: bytes) -> tuple[str, str | None] | None:
    """(reason, alert id) of the ``rejected`` report in a state message, if it has one
    (``receiver.brain.state_payload``): what the terminal refused, and why."""
    if b'"rejected"' not in payload:
        return None
    try:
        report = json.loads(payload).get("rejected")
    except (ValueError, AttributeError):
        return None
    if not isinstance(report, dict) or not isinstance(report.get("reason"), str):
        return None
    alert_id = report.get("alert_id")
    kid = report.get("kid")
    reason = f"the terminal refused a message from the engine: {report['reason']}"
    if isinstance(kid, str):
        reason += f" (key {kid[:64]})"
    return reason, alert_id if isinstance(alert_id, str) else None


def _ping_ack(ack: AckRecord) -> str:
    body = {"state": ack.state, "at": ack.at, "detail": ack.detail or None}
    return json.dumps(body | {"terminal_id": ack.terminal})


def _short(exc: ValidationError) -> str:
    first = exc.errors()[0]
    where = ".".join(str(p) for p in first["loc"]) or "payload"
    return f"{where}: {first['msg']}"
