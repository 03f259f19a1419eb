"""Many virtual village terminals in one process: ``ebd sim``, the demo, tests and benchmarks.

Each virtual terminal is a real MQTT 5 client with a persistent session (its own client id,
clean start off, session expiry, a retained online state and an offline Last Will) subscribed
to its exact topics, and runs the same ``TerminalBrain`` as the field agent: it acks
``received`` at once and ``played`` after ``Behaviour.play_time``. To fit one terminal per
Fujian village (17,498) beside the engine and the broker on two cores, the links are
``receiver.mqtt_lite`` protocols (no task per terminal; timers only when a delay is asked for),
spread over several loopback source addresses, and opened with bounded concurrency.

Every terminal verifies every message against the keyring, but one process verifies a given
message's bytes once (``CachingVerifier``); each terminal still checks its own clock.
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import math
import random
import resource
import socket
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import structlog

from dispatcher.core.signing import CachingVerifier, Keyring, load_keyring_from_env
from dispatcher.core.wire import ack_topic, state_topic
from receiver.brain import (
    Ack,
    Action,
    Alert,
    Dropped,
    Play,
    Rejected,
    Stop,
    TerminalBrain,
    parse_alert,
    state_payload,
)
from receiver.mqtt_lite import (
    Message,
    MqttConnection,
    MqttLiteError,
    Outgoing,
    Will,
    open_connection,
    parse_mqtt_url,
    tls_context,
)

__all__ = [
    "Behaviour",
    "SimCounts",
    "SimTerminal",
    "Simulator",
    "SimulatorError",
    "run_simulator_cli",
    "village_terminals",
]

log = structlog.get_logger(__name__)

FIRMWARE = "ebd-sim/1"
# Connections per loopback source address: far below the ~28,000 ephemeral ports, so the
# kernel finds a free one at once.
PER_SOURCE_ADDRESS = 4000
_SIMULATED_FAILURE = "simulated player failure"
_RETRY_FIRST = 0.2
_RETRY_MAX = 5.0


class SimulatorError(Exception):
    """The simulator could not bring its terminals up (``connected`` of ``total``)."""

    def __init__(self, message: str, *, connected: int, total: int) -> None:
        super().__init__(message)
        self.connected = connected
        self.total = total


@dataclass(eq=False)
class SimTerminal:
    """One virtual terminal and what happened to it."""

    id: str
    region: str
    # Its broker account's password (the user name is its id); None: the URL's credentials.
    password: str | None = field(default=None, repr=False)
    connects: int = 0
    connected: bool = False
    session_present: bool | None = None  # of the latest CONNACK
    acks_sent: int = 0
    duplicates: int = 0  # re-deliveries answered by repeating the latest ack
    plays: dict[str, int] = field(default_factory=dict)  # alert id → times playback started


@dataclass(frozen=True)
class Behaviour:
    """How the virtual terminals act.

    ``ack_delay``: seconds between a terminal's decision and its ack reaching the wire (a slow
    link); ``play_time``: seconds from the start of playback to ``played``; ``silent``: ids that
    never ack (they still play); ``fail``: ids whose playback fails (acked ``failed``);
    ``send_playing``: also ack ``playing`` when playback starts; ``lose_first_acks``: ids
    whose acks are lost on the way until the alert comes again (a resend), as when a broker
    restart drops them: they play once and answer the resend by repeating their latest ack.
    """

    ack_delay: float = 0.0
    play_time: float = 0.0
    silent: frozenset[str] = frozenset()
    fail: frozenset[str] = frozenset()
    send_playing: bool = False
    lose_first_acks: frozenset[str] = frozenset()


def village_terminals(villages: Iterable[str], per_village: int = 1) -> list[SimTerminal]:
    """``per_village`` terminals in each of ``villages`` (12-digit codes, e.g. what
    ``RegionTree.villages`` gives), ids ``sim-{village code}-{n}`` (n from 1)."""
    return [
        SimTerminal(f"sim-{code}-{n}", code) for code in villages for n in range(1, per_village + 1)
    ]


class SimCounts:
    """Totals over every virtual terminal, counted when a terminal decides (silent ones too)."""

    def __init__(self, terminals: dict[str, SimTerminal]) -> None:
        self._terminals = terminals
        self._received: Counter[str] = Counter()
        self._played: Counter[str] = Counter()
        self._failed: Counter[str] = Counter()
        self.duplicates = 0
        self.dropped = 0
        self.rejected = 0  # of the dropped, those refused (signature, replay) and reported

    def received(self, alert_id: str) -> int:
        """Terminals that accepted the alert (acked ``received``)."""
        return self._received[alert_id]

    def played(self, alert_id: str) -> int:
        """Terminals that acked ``played`` (a cancel counts once it took effect)."""
        return self._played[alert_id]

    def failed(self, alert_id: str) -> int:
        """Terminals that acked ``failed`` (expired, cancelled, superseded, player failure)."""
        return self._failed[alert_id]

    def plays_of(self, terminal_id: str) -> dict[str, int]:
        """How often each alert's playback started on that terminal (never above 1)."""
        return dict(self._terminals[terminal_id].plays)

    def record(self, ack: Ack) -> int | None:
        """Count one ack a terminal decided on; the new total for received and played."""
        if ack.repeated:
            self.duplicates += 1
            return None
        counter = {"received": self._received, "played": self._played, "failed": self._failed}
        if ack.state not in counter:
            return None
        counter[ack.state][ack.alert_id] += 1
        return None if ack.state == "failed" else counter[ack.state][ack.alert_id]

    def alert_ids(self) -> list[str]:
        return list(dict.fromkeys([*self._received, *self._failed]))


class _Virtual:
    """The runtime side of one SimTerminal: its brain, its link and what waits to be sent."""

    __slots__ = (
        "brain",
        "conn",
        "connecting",
        "dropped",
        "lost_at",
        "pending",
        "settle",
        "source",
        "subscribed_at",
        "term",
        "timers",
        "will",
    )

    def __init__(self, term: SimTerminal, brain: TerminalBrain, source: str | None) -> None:
        self.term = term
        self.brain = brain
        self.source = source
        self.conn: MqttConnection | None = None
        # time.monotonic() of the last SUBACK, and of the last link lost: whether a session
        # the broker says it kept can be trusted to hold the subscriptions (_stale_session).
        self.subscribed_at: float | None = None
        self.lost_at: float | None = None
        self.will = Will(
            state_topic(term.id), state_payload("offline", term.region, FIRMWARE, None)
        )
        # Acks produced while the link is down, sent on the next connection.
        self.pending: list[Outgoing] = []
        self.timers: dict[str, asyncio.TimerHandle] | None = None
        # Ends the catch-up burst after a reconnect (TerminalBrain.catch_up_due).
        self.settle: asyncio.TimerHandle | None = None
        self.dropped = False
        # While _connect runs, it retries by itself; a lost link must not start a second one.
        self.connecting = False


class Simulator:
    """Virtual terminals on one broker; ``async with Simulator(...) as sim:`` starts them all."""

    def __init__(
        self,
        terminals: list[SimTerminal],
        mqtt_url: str,
        *,
        behaviour: Behaviour | None = None,
        concurrency: int = 500,
        source_addresses: int | None = None,
        session_expiry: int = 86400,
        keepalive: int = 60,
        keyring: Keyring | None = None,
        ca_pem: str | None = None,
    ) -> None:
        self.terminals = terminals
        # Without a keyring every alert would be refused: fail here (KeyringError) instead.
        self.keyring = keyring if keyring is not None else load_keyring_from_env()
        # One signature check for every copy of a message, like the decoder below.
        self._verify = CachingVerifier(self.keyring)
        self.behaviour = behaviour or Behaviour()
        self._url = parse_mqtt_url(mqtt_url)
        self.mqtt_url, self.ca_pem = mqtt_url, ca_pem
        # mqtts://: the broker is verified against ``ca_pem`` (the CA the engine hands out
        # with the terminals' credentials), or the system's CAs without one.
        self._tls = tls_context(ca_pem) if self._url.tls else None
        self._concurrency = concurrency
        self._session_expiry = session_expiry
        self._keepalive = keepalive
        self._by_id = {term.id: term for term in terminals}
        if len(self._by_id) != len(terminals):
            raise ValueError("terminal ids must be unique")
        self.counts = SimCounts(self._by_id)
        self._source_addresses = source_addresses
        # One decoded Alert for every copy of a payload: 17,498 terminals parse it once.
        self._decode = functools.lru_cache(maxsize=256)(parse_alert)
        self._virtuals: dict[str, _Virtual] = {}
        self._host = ""
        self._semaphore = asyncio.Semaphore(concurrency)
        self._tasks: set[asyncio.Task[None]] = set()
        self._waiters: dict[tuple[str, str], list[tuple[int, asyncio.Future[None]]]] = {}
        self._stopping = False
        self._started = False
        # Called with an alert's id when the first terminal accepts it: how soon after the
        # engine's 201 a village hears a warning (bench/province_wave.py).
        self.on_first_received: Callable[[str], None] | None = None

    # -- lifecycle --------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def start(self, timeout: float = 120.0) -> None:
        """Connect every terminal, subscribe it (unless the broker kept its session from an
        earlier run: same ids, same topics) and publish its online state; SimulatorError (after
        closing what did connect) if not all are up within ``timeout`` seconds."""
        if self._started:
            raise RuntimeError("a Simulator starts once")
        self._started = True
        _raise_open_files_limit(len(self.terminals))
        loop = asyncio.get_running_loop()
        infos = await loop.getaddrinfo(self._url.host, self._url.port, type=socket.SOCK_STREAM)
        self._host = str(infos[0][4][0])
        sources = self._sources()
        for index, term in enumerate(self.terminals):
            brain = TerminalBrain(
                term.id,
                term.region,
                ack_playing=self.behaviour.send_playing,
                decode=self._decode,
                verify=self._verify,
            )
            source = sources[index % len(sources)] if sources else None
            self._virtuals[term.id] = _Virtual(term, brain, source)
        started = time.monotonic()
        log.info("sim.connecting", terminals=len(self.terminals), sources=len(sources))
        queue = list(reversed(self._virtuals.values()))

        async def worker() -> None:
            while queue:
                await self._connect(queue.pop(), gate=False)

        try:
            async with asyncio.timeout(timeout), asyncio.TaskGroup() as group:
                for n in range(min(self._concurrency, len(queue))):
                    group.create_task(worker(), name=f"sim-connect-{n}")
        except TimeoutError:
            connected = self.connected
            await self._close_all()
            raise SimulatorError(
                f"only {connected} of {len(self.terminals)} terminals connected and "
                f"subscribed within {timeout:g} s",
                connected=connected,
                total=len(self.terminals),
            ) from None
        except BaseException:
            await self._close_all()
            raise
        log.info(
            "sim.connected",
            terminals=len(self.terminals),
            seconds=round(time.monotonic() - started, 2),
        )

    async def stop(self) -> None:
        """Publish every terminal's offline state, then DISCONNECT normally (no Will)."""
        self._stopping = True
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(self._tasks)
        acked: list[asyncio.Future[int]] = []
        now = datetime.now(UTC)
        for virtual in self._virtuals.values():
            self._cancel_timers(virtual)
            conn = virtual.conn
            if conn is not None and conn.is_open:
                payload = state_payload("offline", virtual.term.region, FIRMWARE, now)
                packet_id = conn.publish(virtual.will.topic, payload, retain=True)
                assert packet_id is not None  # noqa: S101  QoS 1
                acked.append(conn.wait_puback(packet_id))
        if acked:
            await asyncio.wait(acked, timeout=10.0)
            for puback in acked:
                if puback.done() and not puback.cancelled():
                    puback.exception()  # a link lost meanwhile is fine at shutdown
                else:
                    puback.cancel()
        for virtual in self._virtuals.values():
            if virtual.conn is not None:
                virtual.conn.disconnect()
        await self._close_all()
        for waiters in self._waiters.values():
            for _, future in waiters:
                future.cancel()

    async def drop(self, ids: Iterable[str]) -> None:
        """Cut these terminals' links without DISCONNECT (the broker publishes their Will and
        keeps their sessions); they stay down until ``reconnect``."""
        closing: list[asyncio.Future[None]] = []
        for terminal_id in ids:
            virtual = self._virtuals[terminal_id]
            virtual.dropped = True
            if virtual.conn is not None:
                closing.append(virtual.conn.closed)
                virtual.conn.abort()
        if closing:
            await asyncio.wait(closing)

    async def reconnect(self, ids: Iterable[str], timeout: float = 30.0) -> None:
        """Bring dropped terminals back with their persistent sessions; see
        ``SimTerminal.session_present``."""
        virtuals = [self._virtuals[terminal_id] for terminal_id in ids]
        for virtual in virtuals:
            virtual.dropped = False
        async with asyncio.timeout(timeout), asyncio.TaskGroup() as group:
            for virtual in virtuals:
                if virtual.conn is None:
                    group.create_task(self._connect(virtual, gate=True))

    # -- counts and waiting -----------------------------------------------------------------

    @property
    def connected(self) -> int:
        return sum(1 for term in self.terminals if term.connected)

    def received(self, alert_id: str) -> int:
        return self.counts.received(alert_id)

    def played(self, alert_id: str) -> int:
        return self.counts.played(alert_id)

    def plays_of(self, terminal_id: str) -> dict[str, int]:
        return self.counts.plays_of(terminal_id)

    @property
    def duplicates(self) -> int:
        return self.counts.duplicates

    async def wait_played(self, alert_id: str, n: int, timeout: float) -> None:
        """Until ``n`` terminals acked ``played`` (TimeoutError saying how many did)."""
        await self._wait("played", alert_id, n, timeout)

    async def wait_received(self, alert_id: str, n: int, timeout: float) -> None:
        """Until ``n`` terminals acked ``received``."""
        await self._wait("received", alert_id, n, timeout)

    async def _wait(self, kind: str, alert_id: str, n: int, timeout: float) -> None:
        count = self.counts.played if kind == "played" else self.counts.received
        if count(alert_id) >= n:
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry = (n, future)
        waiters = self._waiters.setdefault((kind, alert_id), [])
        waiters.append(entry)
        try:
            async with asyncio.timeout(timeout):
                await future
        except TimeoutError:
            raise TimeoutError(
                f"alert {alert_id}: {count(alert_id)} of {n} terminals {kind} within {timeout:g} s"
            ) from None
        finally:
            waiters.remove(entry)

    def _notify(self, kind: str, alert_id: str, count: int) -> None:
        for n, future in self._waiters.get((kind, alert_id), ()):
            if count >= n and not future.done():
                future.set_result(None)

    # -- links ------------------------------------------------------------------------------

    def _sources(self) -> list[str]:
        try:
            loopback = ipaddress.ip_address(self._host).is_loopback and ":" not in self._host
        except ValueError:
            loopback = False
        wanted = self._source_addresses
        if wanted is None:
            wanted = math.ceil(len(self.terminals) / PER_SOURCE_ADDRESS) if loopback else 0
        if wanted and not loopback:
            raise ValueError("source_addresses needs a broker on an IPv4 loopback address")
        # 127.0.0.2 on: every 127/8 address is local on Linux, no setup needed.
        return [f"127.0.0.{2 + n}" for n in range(min(wanted, 250))]

    async def _connect(self, virtual: _Virtual, *, gate: bool) -> None:
        """Connect (retrying with backoff until cancelled), subscribe unless the broker kept
        the session, publish the online state and whatever waited to be sent."""
        term = virtual.term
        delay = _RETRY_FIRST
        virtual.connecting = True
        try:
            while True:
                try:
                    if gate:
                        async with self._semaphore:
                            await self._connect_once(virtual)
                    else:
                        await self._connect_once(virtual)
                    return
                except (OSError, MqttLiteError, TimeoutError) as exc:
                    conn, virtual.conn = virtual.conn, None
                    if conn is not None:
                        self._keep_unacked(virtual, conn)
                        conn.abort()
                    log.debug("sim.connect_failed", terminal_id=term.id, error=repr(exc))
                # Jitter spreads a reconnect storm; this is not cryptography.
                await asyncio.sleep(delay * (0.5 + random.random()))  # noqa: S311
                delay = min(delay * 2, _RETRY_MAX)
        except BaseException:
            conn, virtual.conn = virtual.conn, None
            if conn is not None:
                conn.abort()
            raise
        finally:
            virtual.connecting = False

    async def _connect_once(self, virtual: _Virtual) -> None:
        term = virtual.term
        # A kept session's queue comes in the same reads as the CONNACK, before this returns:
        # hold its Plays from the start, decide below whether there is a burst to wait for.
        virtual.brain.start_catch_up(datetime.now(UTC))
        try:
            conn, connack = await open_connection(
                self._host,
                self._url.port,
                term.id,
                source_address=virtual.source,
                timeout=15.0,
                on_message=functools.partial(self._on_message, virtual),
                on_lost=functools.partial(self._on_lost, virtual),
                keepalive=self._keepalive,
                clean_start=False,
                session_expiry=self._session_expiry,
                will=virtual.will,
                username=term.id if term.password is not None else self._url.username,
                password=term.password if term.password is not None else self._url.password,
                ssl=self._tls,
                server_hostname=self._url.host if self._tls is not None else None,
            )
        except BaseException:
            self._end_catch_up(virtual)
            raise
        virtual.conn = conn
        term.connects += 1
        term.session_present = connack.session_present
        if connack.session_present:
            # What the broker queued meanwhile is coming: play only what is still in force
            # once the burst settled (the window starts now). A new session has no backlog.
            virtual.brain.start_catch_up(datetime.now(UTC))
            self._arm_settle(virtual)
        else:
            self._end_catch_up(virtual)
        # A kept session keeps its subscriptions, and skipping them matters: mosquitto 2.0 adds
        # a subscriber by walking the topic's whole subscriber list, so 17,498 terminals
        # subscribing to eb/v1/alert/35 cost it time that grows with the square of their number.
        if not connack.session_present or _stale_session(virtual):
            async with asyncio.timeout(15.0):
                codes = await conn.subscribe(virtual.brain.topics, qos=1)
            if any(code >= 0x80 for code in codes):
                raise MqttLiteError(f"{term.id}: subscription refused: {codes}")
            virtual.subscribed_at = time.monotonic()
        online = state_payload(
            "online",
            term.region,
            FIRMWARE,
            datetime.now(UTC),
            session="resumed" if connack.session_present else "new",
        )
        conn.publish(virtual.will.topic, online, retain=True)
        pending, virtual.pending = virtual.pending, []
        for message in pending:
            conn.publish(message.topic, message.payload, retain=message.retain)
        term.connected = True

    def _on_lost(self, virtual: _Virtual, conn: MqttConnection, exc: BaseException | None) -> None:
        if conn is not virtual.conn:
            return
        virtual.conn = None
        virtual.term.connected = False
        virtual.lost_at = time.monotonic()
        self._keep_unacked(virtual, conn)
        if self._stopping or virtual.dropped or virtual.connecting:
            return
        log.debug("sim.link_down", terminal_id=virtual.term.id, error=repr(exc))
        task = asyncio.get_running_loop().create_task(
            self._connect(virtual, gate=True),
            name=f"sim-reconnect-{virtual.term.id}",
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    @staticmethod
    def _keep_unacked(virtual: _Virtual, conn: MqttConnection) -> None:
        # Acks the broker never confirmed go out again on the next link; the old online state
        # does not (the Will has spoken since, and a fresh one follows the reconnect).
        unacked = [m for m in conn.unacked() if m.topic != virtual.will.topic]
        virtual.pending = unacked + virtual.pending

    async def _close_all(self) -> None:
        closing: list[asyncio.Future[None]] = []
        for virtual in self._virtuals.values():
            conn = virtual.conn
            if conn is not None:
                if conn.is_open:
                    conn.abort()
                closing.append(conn.closed)
        if closing:
            await asyncio.wait(closing, timeout=10.0)

    # -- what a terminal does ---------------------------------------------------------------

    def _on_message(self, virtual: _Virtual, message: Message) -> None:
        now = datetime.now(UTC)
        try:
            actions = virtual.brain.handle(message.topic, message.payload, now)
            self._perform(virtual, actions, now)
        except Exception:
            # One terminal's bug must not take the other 17,000 down with its link.
            log.exception("sim.message_failed", terminal_id=virtual.term.id)

    def _arm_settle(self, virtual: _Virtual) -> None:
        if virtual.settle is not None:
            virtual.settle.cancel()
        due = virtual.brain.catch_up_due()
        if due is None:
            virtual.settle = None
            return
        wait = max((due - datetime.now(UTC)).total_seconds(), 0.0)
        virtual.settle = asyncio.get_running_loop().call_later(wait, self._settle, virtual)

    def _end_catch_up(self, virtual: _Virtual) -> None:
        if virtual.brain.catching_up:
            now = datetime.now(UTC)
            self._perform(virtual, virtual.brain.end_catch_up(now), now)

    def _settle(self, virtual: _Virtual) -> None:
        """The catch-up timer: end the burst if it settled, else wait until it may have."""
        virtual.settle = None
        due = virtual.brain.catch_up_due()
        if due is None:
            return
        now = datetime.now(UTC)
        if now < due:
            self._arm_settle(virtual)
            return
        try:
            self._perform(virtual, virtual.brain.end_catch_up(now), now)
        except Exception:
            log.exception("sim.catch_up_failed", terminal_id=virtual.term.id)

    def _perform(self, virtual: _Virtual, actions: list[Action], now: datetime) -> None:
        acks: list[Ack] = []
        for action in actions:
            if isinstance(action, Ack):
                acks.append(action)
            elif isinstance(action, Play):
                self._play(virtual, action.alert, now, acks)
            elif isinstance(action, Stop):
                if virtual.timers is not None:
                    timer = virtual.timers.pop(action.alert_id, None)
                    if timer is not None:
                        timer.cancel()
            elif isinstance(action, Dropped):
                self.counts.dropped += 1
                if isinstance(action, Rejected):
                    self.counts.rejected += 1
                    self._report(virtual, action)
                log.debug(
                    "sim.message_dropped",
                    terminal_id=virtual.term.id,
                    topic=action.topic,
                    reason=action.reason,
                    alert_id=action.alert_id,
                )
        self._send(virtual, acks)

    def _play(self, virtual: _Virtual, alert: Alert, now: datetime, acks: list[Ack]) -> None:
        plays = virtual.term.plays
        plays[alert.id] = plays.get(alert.id, 0) + 1
        acks.extend(a for a in virtual.brain.begin(alert.id, now) if isinstance(a, Ack))
        # A cancel's announcement is one short sentence (【解除】…), not a warning's length.
        if self.behaviour.play_time <= 0 or alert.msg_type == "cancel":
            # No timer per terminal when playback takes no time: 17,498 would be 17,498 timers.
            acks.extend(self._finish(virtual, alert.id, now))
            return
        if virtual.timers is None:
            virtual.timers = {}
        virtual.timers[alert.id] = asyncio.get_running_loop().call_later(
            self.behaviour.play_time, self._finish_later, virtual, alert.id
        )

    def _finish_later(self, virtual: _Virtual, alert_id: str) -> None:
        if virtual.timers is not None:
            virtual.timers.pop(alert_id, None)
        self._send(virtual, self._finish(virtual, alert_id, datetime.now(UTC)))

    def _finish(self, virtual: _Virtual, alert_id: str, now: datetime) -> list[Ack]:
        error = _SIMULATED_FAILURE if virtual.term.id in self.behaviour.fail else None
        return [a for a in virtual.brain.finished(alert_id, now, error=error) if isinstance(a, Ack)]

    def _send(self, virtual: _Virtual, acks: list[Ack]) -> None:
        if not acks:
            return
        for ack in acks:
            self._count(ack)
        if virtual.term.id in self.behaviour.silent:
            return
        if virtual.term.id in self.behaviour.lose_first_acks and not any(
            ack.repeated for ack in acks
        ):
            return
        if self.behaviour.ack_delay > 0:
            # One timer for the batch keeps received before played.
            asyncio.get_running_loop().call_later(
                self.behaviour.ack_delay, self._publish_acks, virtual, acks
            )
        else:
            self._publish_acks(virtual, acks)

    def _report(self, virtual: _Virtual, rejected: Rejected) -> None:
        """A refused message, said on the state topic, not retained."""
        term = virtual.term
        report = state_payload("online", term.region, FIRMWARE, rejected.at, rejected=rejected)
        conn = _ready(virtual)
        if conn is not None:
            conn.publish(virtual.will.topic, report)
        else:
            virtual.pending.append(Outgoing(virtual.will.topic, report))

    def _count(self, ack: Ack) -> None:
        count = self.counts.record(ack)
        if count is not None:
            self._notify(ack.state, ack.alert_id, count)
            if count == 1 and ack.state == "received" and self.on_first_received is not None:
                self.on_first_received(ack.alert_id)

    def _publish_acks(self, virtual: _Virtual, acks: list[Ack]) -> None:
        topic = ack_topic(virtual.term.id)
        conn = _ready(virtual)
        for ack in acks:
            if ack.repeated:
                virtual.term.duplicates += 1
            virtual.term.acks_sent += 1
            if conn is not None:
                conn.publish(topic, ack.payload())
            else:
                virtual.pending.append(Outgoing(topic, ack.payload()))

    def _cancel_timers(self, virtual: _Virtual) -> None:
        if virtual.settle is not None:
            virtual.settle.cancel()
            virtual.settle = None
        if virtual.timers:
            for timer in virtual.timers.values():
                timer.cancel()
            virtual.timers.clear()


def _raise_open_files_limit(connections: int) -> None:
    """Each terminal holds a socket: raise the soft limit of open files to the hard one."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    limit = hard if hard != resource.RLIM_INFINITY else connections * 2
    if connections + 64 > limit:
        raise SimulatorError(
            f"{connections} terminals need more open files than this process may have ({limit})",
            connected=0,
            total=connections,
        )


async def run_simulator_cli(
    terminals: list[SimTerminal],
    label: str,
    mqtt_url: str,
    *,
    ready_file: Path | None = None,
    interval: float = 5.0,
    connect_timeout: float = 600.0,
    **options: Any,
) -> None:
    """``ebd sim``: start the terminals, write ``ready_file`` once all are up, then print a
    status line every ``interval`` seconds until cancelled (Ctrl-C). ``options`` are the
    ``Simulator``'s (``behaviour``, ``keyring``, ``ca_pem``); without a ``keyring``, the one
    the file named by ``EBD_KEYRING`` holds."""
    print(f"connecting {len(terminals)} terminals of {label} to {mqtt_url}", flush=True)
    started = time.monotonic()
    sim = Simulator(terminals, mqtt_url, **options)
    await sim.start(timeout=connect_timeout)
    try:
        print(
            f"{len(terminals)} terminals connected in {time.monotonic() - started:.1f} s",
            flush=True,
        )
        if ready_file is not None:
            await asyncio.to_thread(
                ready_file.write_text, f"{len(terminals)} terminals connected\n", encoding="utf-8"
            )
        while True:
            await asyncio.sleep(interval)
            print(_status_line(sim), flush=True)
    finally:
        await sim.stop()


def _status_line(sim: Simulator) -> str:
    counts = sim.counts
    alerts = counts.alert_ids()[-3:]
    described = "; ".join(
        f"{alert_id}: received {counts.received(alert_id)} played {counts.played(alert_id)}"
        f" failed {counts.failed(alert_id)}"
        for alert_id in alerts
    )
    stamp = datetime.now(UTC).strftime("%H:%M:%S")
    return (
        f"{stamp} connected {sim.connected}/{len(sim.terminals)}"
        f" | alerts {len(counts.alert_ids())}: {described or 'none yet'}"
        f" | duplicates {counts.duplicates}"
    )


# A broker that dies keeps the sessions of its last save (mosquitto's autosave_interval, 5 s in
# the shipped config): a terminal that subscribed shortly before the link went down may find
# its session "present" but restored from a save made between its CONNECT and its SUBSCRIBE,
# without the subscriptions, and would be deaf. Within this window (three save intervals) it
# subscribes again whatever the broker says; after it, a save holds them. The reference agent
# subscribes on every connection: it cannot know its broker's save interval.
RESUBSCRIBE_WINDOW = 15.0


def _stale_session(virtual: _Virtual) -> bool:
    """Whether a session the broker kept may lack this terminal's subscriptions."""
    if virtual.subscribed_at is None:
        return True
    lost = virtual.lost_at if virtual.lost_at is not None else time.monotonic()
    return lost - virtual.subscribed_at < RESUBSCRIBE_WINDOW


def _ready(virtual: _Virtual) -> MqttConnection | None:
    """The link to publish on now, or None to queue: a link still subscribing has older acks
    waiting (sent once it is up), and what comes meanwhile must go after them, or a terminal's
    played could reach the engine before its received."""
    conn = virtual.conn
    if conn is not None and conn.is_open and virtual.term.connected:
        return conn
    return None
