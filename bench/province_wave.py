"""Province wave: the engine against the raw broker, in the same run.

    .venv/bin/python bench/province_wave.py               # 1,000, 5,000, 17,498 terminals, 3 runs
    .venv/bin/python bench/province_wave.py --sizes 1000 --runs 1

For each size it starts its own mosquitto and redis-server (``dispatcher.embedded``) in a
temporary folder and one simulated terminal per village for that many villages, spread evenly
over Fujian (17,498 is every village), in a child process so the terminals have a core of their
own. Then, with the same terminals:

    raw      no engine: one QoS 1 publish of a red alert to the province topic; every terminal
             acks, and a minimal subscriber (``eb/v1/term/+/ack``: asyncio and the ``mqtt5``
             codec, each message confirmed at once) writes each ``played`` ack to Redis,
             pipelined (HSET + XADD in RESP built by hand on one socket, replies counted by
             hiredis; flushed every 500 acks or 5 ms).
             Timed from the publish until Redis has confirmed N acks written.
    engine   ``python -m dispatcher serve`` (a fresh process per run): POST /api/v1/alerts for
             the province, timed until the engine recorded the last of N played acks: the
             ``last_ack_at`` it stamps on the batch holding it, read once a poll of
             GET /api/v1/alerts/{id} (every 200 ms) shows played == N; the poll's own time
             is printed beside it. Also the engine's CPU seconds (/proc/PID/stat utime +
             stime, in the timed window and since its start) and its peak RSS
             (/proc/PID/status VmHWM).

Raw and engine runs of a size alternate (raw, engine, raw, …), and each window opens only once
every process of the run is nearly idle (``CpuProbe.settle``: a fresh engine has just registered
the terminals, the last run's trailing traffic may still flow). Each run is a new alert id (a
terminal handles an id once). Prints every run, then a Markdown table of the medians and the
ratio engine / raw, and writes everything to ``--out`` (JSON).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import json
import os
import secrets
import sys
import time
import uuid
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any, cast
from urllib.parse import unquote, urlsplit

import hiredis
import mqtt5
import orjson
import redis.asyncio as aioredis
from figures import fmt, median
from harness import (
    PROVINCE,
    REGISTER_PART,
    SimChild,
    engine_listener_account,
    fujian,
    grant_terminals,
    issue,
    new_alert,
    pick_terminals,
    province_api,
    province_engine,
    throwaway_client,
)
from skeleton import Benchmark, main, say

from adapters.loudspeaker.payload import encode_alert
from dispatcher.core.regions import RegionTree
from dispatcher.embedded.processes import MosquittoServer, RedisServer
from receiver.mqtt_lite import MqttConnection, parse_mqtt_url
from tests.support.broker import TEST_SIGNER
from tests.support.engine_process import cpu_seconds

# One process may hold at most 20,000 open files here: past this many terminals a broker of
# its own (bridged to the first) and a simulator process of its own take the rest.
PER_BROKER = 17_498
TARGET_RATIO = 1.2  # the trust-chain issue: with TLS, accounts and signatures on
TARGET_SIZE = 17_498
# Issue 15, "small alerts at the raw pace": a county-sized alert costs at most this much over the
# raw round trip, and the first terminal hears it this soon after the 201.
SMALL_SIZE = 1_000
SMALL_EXTRA_MS = 30.0
FIRST_HEARD_MS = 20.0
FLUSH_EVERY = 500
FLUSH_AFTER = 0.005
# The engine's end is read from its record (the time it stamped the batch holding the last
# ack), not from when a poll saw it: polling often would cost the engine the CPU it is being
# measured on (a county-detail GET every 50 ms was a fifth of its CPU in the window), and
# polling rarely would add up to a poll interval to every run.
POLL = 0.2
SIM_TIMEOUT = 600.0
# Idle is under 40 ms of CPU in 0.5 s across every process of the run (a core is 500 ms).
SETTLE_STEP = 0.5
SETTLE_IDLE = 0.04
SETTLE_MAX = 20.0


# What the second broker's bridge may do on the main one (its engine listener refuses anyone
# without an account): take alerts and commands, bring back acks and states, and post its own
# connection state (mosquitto's bridge notification; refused, the bridge hangs up at once).
BRIDGE_USER = "ebd-wave-bridge"
BRIDGE_ACL = (
    "topic read eb/v1/alert/#\ntopic read eb/v1/term/+/cmd\n"
    "topic write eb/v1/term/+/ack\ntopic write eb/v1/term/+/state\n"
    "topic write $SYS/broker/connection/+/state\n"
)


def bridge_config(name: str, main_port: int, password: str) -> str:
    """Mosquitto config that bridges a second broker to the main one: alerts and commands
    come in from it, acks and states go out to it, as a county broker would forward to the
    province's. MQTT 5 and a kept session, so nothing is lost across a bridge reconnect."""
    return "\n".join(
        [
            f"connection {name}",
            f"address 127.0.0.1:{main_port}",
            "bridge_protocol_version mqttv50",
            f"remote_username {BRIDGE_USER}",
            f"remote_password {password}",
            "cleansession false",
            f"remote_clientid {name}",
            f"local_clientid {name}-local",
            "try_private true",
            "topic eb/v1/alert/# in 1",
            "topic eb/v1/term/+/cmd in 1",
            "topic eb/v1/term/+/ack out 1",
            "topic eb/v1/term/+/state out 1",
            "",
        ]
    )


async def wait_bridged(main_url: str, other_url: str, timeout: float = 60.0) -> None:
    """Publish probes on the main broker until one arrives through the bridge (``other_url``:
    an account that may read alerts there; the engine's may only publish them)."""
    arrived = asyncio.Event()
    probe = "eb/v1/alert/wave-bridge-probe"  # no terminal subscribes to it
    listener = await throwaway_client(
        other_url, "wave-probe", on_message=lambda message: arrived.set()
    )
    sender = await throwaway_client(main_url, "wave-probe")
    try:
        await listener.subscribe([probe], qos=0)
        async with asyncio.timeout(timeout):
            while not arrived.is_set():
                sender.publish(probe, b"probe", qos=0)
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(0.2):
                        await arrived.wait()
    finally:
        listener.disconnect()
        sender.disconnect()


# -- the raw path -----------------------------------------------------------------------------


def resp(*parts: bytes) -> bytes:
    """One Redis command in RESP, built by hand (what redis-cli --pipe sends)."""
    out = [b"*%d\r\n" % len(parts)]
    for part in parts:
        out.append(b"$%d\r\n%s\r\n" % (len(part), part))
    return b"".join(out)


class RawRedis:
    """One socket to Redis: pipelined commands written as they come, replies counted with
    hiredis. No client library in between: the lower bound of writing to Redis from Python."""

    def __init__(self) -> None:
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.waiting: collections.deque[list[Any]] = collections.deque()  # [count, future]
        self.task: asyncio.Task[None] | None = None

    async def connect(self, url: str) -> None:
        parts = urlsplit(url)
        self.reader, self.writer = await asyncio.open_connection(
            parts.hostname or "127.0.0.1", parts.port or 6379
        )
        self.task = asyncio.create_task(self._replies())
        if parts.password:
            # As the engine's user: Redis answers NOAUTH to everyone else.
            user = unquote(parts.username or "default").encode()
            await self.send(resp(b"AUTH", user, unquote(parts.password).encode()), 1)

    def send(self, commands: bytes, count: int) -> asyncio.Future[None]:
        """Write ``count`` commands; the future is done once Redis answered all of them."""
        assert self.writer is not None
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.waiting.append([count, future])
        self.writer.write(commands)
        return future

    async def _replies(self) -> None:
        assert self.reader is not None
        parser = hiredis.Reader()
        while data := await self.reader.read(65536):
            parser.feed(data)
            while (reply := parser.gets()) is not False:
                if isinstance(reply, hiredis.ReplyError):
                    raise RuntimeError(f"Redis refused a raw write: {reply}")
                head = self.waiting[0]
                head[0] -= 1
                if head[0] == 0:
                    self.waiting.popleft()
                    head[1].set_result(None)

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self.task


class RawSubscriber(asyncio.Protocol):
    """The leanest MQTT 5 subscriber this machine runs in Python: packets decoded by the
    ``mqtt5`` codec straight from the socket buffer, each PUBLISH confirmed at once (a limit
    to measure against, not a durable consumer)."""

    def __init__(self, on_message: Callable[[str, bytes], None]) -> None:
        self.on_message = on_message
        self.buffer = bytearray()
        self.transport: asyncio.Transport | None = None
        self.replies: asyncio.Queue[mqtt5.Packet] = asyncio.Queue()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        buffer = self.buffer
        buffer += data
        used, acks = 0, []
        view = memoryview(buffer)
        try:
            while used < len(buffer):
                try:
                    packet, size = mqtt5.read(view[used:])
                except IndexError:
                    break
                used += size
                if type(packet) is mqtt5.PublishPacket:
                    if packet.packet_id:
                        acks.append(mqtt5.PubAckPacket(packet.packet_id).write())
                    self.on_message(packet.topic, packet.payload)
                else:
                    self.replies.put_nowait(packet)
        finally:
            view.release()
            del buffer[:used]
        if acks and self.transport is not None:
            self.transport.write(b"".join(acks))

    async def start(
        self, client_id: str, topic: str, username: str | None, password: str | None
    ) -> None:
        assert self.transport is not None
        secret = password.encode() if password is not None else None
        connect = mqtt5.ConnectPacket(
            client_id, clean_start=True, username=username, password=secret
        )
        self.transport.write(connect.write())
        connack = await asyncio.wait_for(self.replies.get(), 10)
        if not isinstance(connack, mqtt5.ConnAckPacket) or connack.reason_code != 0:
            raise RuntimeError(f"raw subscriber refused: {connack}")
        qos1 = mqtt5.TopicFilter(topic, max_qos=mqtt5.QoS.AT_LEAST_ONCE)
        self.transport.write(mqtt5.SubscribePacket(1, [qos1]).write())
        suback = await asyncio.wait_for(self.replies.get(), 10)
        if not isinstance(suback, mqtt5.SubAckPacket) or suback.reason_codes != [1]:
            raise RuntimeError(f"raw subscription refused: {suback}")

    def close(self) -> None:
        if self.transport is not None:
            self.transport.write(mqtt5.DisconnectPacket().write())
            self.transport.close()


class RawAckSink:
    """Subscribes to every terminal's acks and writes each ``played`` ack of the alert it
    waits for to Redis: pipelined HSET alert:{id}:tstate + XADD alert:{id}:acks, in RESP built
    by hand on one socket, flushed every 500 acks or 5 ms."""

    def __init__(self, mqtt_url: str, redis_url: str) -> None:
        self.mqtt_url = parse_mqtt_url(mqtt_url)
        self.redis_url = redis_url
        self.rdb = aioredis.Redis.from_url(redis_url)  # outside the timed path: checks only
        self.raw = RawRedis()
        self.conn: RawSubscriber | None = None
        self.alert_id = ""
        self.expected = 0
        self.seen: set[str] = set()
        self.pending: list[bytes] = []
        self.written = 0
        self.timer: asyncio.TimerHandle | None = None
        self.writes: set[asyncio.Task[None]] = set()
        self.done: asyncio.Future[float] | None = None

    async def connect(self) -> None:
        await self.raw.connect(self.redis_url)
        url = self.mqtt_url
        _, self.conn = await asyncio.get_running_loop().create_connection(
            lambda: RawSubscriber(self._on_message), url.host, url.port
        )
        await self.conn.start(
            f"wave-raw-{uuid.uuid4().hex[:8]}", "eb/v1/term/+/ack", url.username, url.password
        )

    def expect(self, alert_id: str, n: int) -> asyncio.Future[float]:
        self.alert_id, self.expected = alert_id, n
        self.seen, self.pending, self.written = set(), [], 0
        self.done = asyncio.get_running_loop().create_future()
        return self.done

    def _on_message(self, topic: str, payload: bytes) -> None:
        try:
            body = orjson.loads(payload)
        except orjson.JSONDecodeError:
            return
        if (
            not isinstance(body, dict)
            or body.get("alert_id") != self.alert_id
            or body.get("state") != "played"
        ):
            return
        terminal = topic.split("/")[3]
        if terminal in self.seen:
            return
        self.seen.add(terminal)
        alert = self.alert_id.encode()
        term = terminal.encode()
        self.pending.append(
            resp(b"HSET", b"alert:%s:tstate" % alert, term, b"played")
            + resp(
                b"XADD", b"alert:%s:acks" % alert, b"*", b"terminal_id", term,
                b"state", b"played", b"at", str(body.get("at", "")).encode(),
            )
        )  # fmt: skip
        if len(self.pending) >= FLUSH_EVERY:
            self._flush()
        elif self.timer is None:
            self.timer = asyncio.get_running_loop().call_later(FLUSH_AFTER, self._flush)

    def _flush(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        batch, self.pending = self.pending, []
        if batch:
            written = self.raw.send(b"".join(batch), 2 * len(batch))
            task = asyncio.create_task(self._count(self.alert_id, len(batch), written))
            self.writes.add(task)
            task.add_done_callback(self.writes.discard)

    async def _count(self, alert_id: str, n: int, written: asyncio.Future[None]) -> None:
        await written
        if alert_id != self.alert_id:
            return
        self.written += n
        if self.written >= self.expected and self.done is not None and not self.done.done():
            self.done.set_result(time.monotonic())

    async def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
        for task in list(self.writes):
            with contextlib.suppress(Exception):
                await task
        await self.raw.close()
        await self.rdb.aclose()


class CpuProbe:
    """CPU seconds of the processes that share the cores with the one measured (simulators,
    brokers, Redis), so a run shows where the time went."""

    def __init__(self, pids: dict[str, list[int]]) -> None:
        self.pids = pids
        self.start: dict[str, float] = {}

    def _now(self) -> dict[str, float]:
        return {name: sum(cpu_seconds(pid) for pid in pids) for name, pids in self.pids.items()}

    def begin(self, **measured: int | None) -> None:
        """The window opens. With ``WAVE_HOOK`` set, the pids of every process (those shared
        and ``measured``) go to that file as JSON, for a profiler to attach to them for the
        window alone (py-spy record -p PID)."""
        self.start = self._now()
        if os.environ.get("WAVE_HOOK"):
            pids = {**self.pids, **{k: [v] for k, v in measured.items() if v is not None}}
            Path(os.environ["WAVE_HOOK"]).write_text(json.dumps(pids))

    def end(self) -> dict[str, float]:
        return {k: round(v - self.start.get(k, 0.0), 3) for k, v in self._now().items()}

    async def settle(self, *also: int | None) -> float:
        """Wait until every process here (and ``also``) is nearly idle: a freshly started
        engine still registering terminals, or the terminals' trailing traffic of the last
        run, must not spend the cores inside the next window. Returns the seconds waited."""
        pids = [pid for group in self.pids.values() for pid in group]
        pids += [pid for pid in also if pid is not None]
        started = time.monotonic()
        before = sum(cpu_seconds(pid) for pid in pids)
        while time.monotonic() - started < SETTLE_MAX:
            await asyncio.sleep(SETTLE_STEP)
            now = sum(cpu_seconds(pid) for pid in pids)
            if now - before < SETTLE_IDLE:
                break
            before = now
        return time.monotonic() - started


async def first_heard(sims: list[SimChild], marks: list[int], alert_id: str) -> float | None:
    """When (``time.monotonic()``, the children's clock too) the first terminal of any
    simulator accepted ``alert_id``; looked up once the run is over, so the events are in."""

    async def one(sim: SimChild, mark: int) -> float:
        event = await sim.wait_event(
            lambda e: e["event"] == "heard" and e.get("alert_id") == alert_id, mark, 10.0
        )
        return float(event["t"])

    found = await asyncio.gather(
        *(one(sim, mark) for sim, mark in zip(sims, marks, strict=True)), return_exceptions=True
    )
    times = [t for t in found if isinstance(t, float)]
    return min(times) if times else None


async def raw_run(
    sink: RawAckSink,
    publisher: MqttConnection,
    tree: RegionTree,
    n: int,
    timeout: float,
    probe: CpuProbe,
    sims: list[SimChild],
) -> dict[str, Any]:
    alert = new_alert("wave-raw")
    marks = [len(sim.events) for sim in sims]
    done = sink.expect(alert.id, n)
    # Signed like the engine's, once: the terminals verify it, as they do the engine's.
    payload = TEST_SIGNER.sign(encode_alert(alert))
    await probe.settle()
    probe.begin()
    started = time.monotonic()
    publisher.publish(tree.topic(PROVINCE), payload, qos=1)
    try:
        finished = await asyncio.wait_for(asyncio.shield(done), timeout)
    except TimeoutError:
        return {"alert_id": alert.id, "seconds": None, "written": sink.written}
    others = probe.end()
    # Check what Redis holds, outside the timed window.
    stored = await sink.rdb.hlen(f"alert:{alert.id}:tstate")
    heard = await first_heard(sims, marks, alert.id)
    return {
        "alert_id": alert.id,
        "seconds": finished - started,
        "written": stored,
        "cpu_others_s": others,
        # From the publish: the broker's own pace to the first terminal.
        "first_heard_ms": None if heard is None else (heard - started) * 1000,
    }


async def raw_run_connected(
    mqtt_url: str,
    redis_url: str,
    tree: RegionTree,
    n: int,
    timeout: float,
    probe: CpuProbe,
    sims: list[SimChild],
) -> dict[str, Any]:
    """A raw run with its own subscriber and publisher, gone before the next engine run (a
    raw subscriber left on the ack topics would take the engine's acks too)."""
    sink = RawAckSink(mqtt_url, redis_url)
    publisher = await throwaway_client(mqtt_url, "wave-pub")
    try:
        await sink.connect()
        return await raw_run(sink, publisher, tree, n, timeout, probe, sims)
    finally:
        publisher.disconnect()
        await sink.close()


# -- the engine path --------------------------------------------------------------------------


def _recorded_after(delivery: dict[str, Any], started_wall: float, polled: float) -> float:
    """Seconds from the POST to the engine's recording of the last counted ack
    (``last_ack_at``, stamped just before the batch goes to Redis); the poll's time if the
    engine gave none or it is out of the window."""
    at = delivery.get("last_ack_at")
    if not isinstance(at, str):
        return polled
    try:
        seconds = datetime.fromisoformat(at).timestamp() - started_wall
    except ValueError:
        return polled
    return seconds if 0 < seconds <= polled else polled


async def engine_run(
    folder: Path,
    redis_url: str,
    mqtt_url: str,
    terminals: list[dict[str, str]],
    timeout: float,
    probe: CpuProbe,
    sims: list[SimChild],
    engines: int = 1,
) -> dict[str, Any]:
    """One wave through ``engines`` engine processes sharing Redis; with more than one they
    share the acks through an MQTT 5 shared subscription and their outbox through its
    consumer group, and the office talks to the first."""
    fleet = [
        province_engine(
            folder,
            redis_url=redis_url,
            mqtt_url=mqtt_url,
            instance=f"ebd-wave-{k + 1}" if engines > 1 else "ebd-wave",
            log_level="warning",
            shared_subscription=engines > 1,
        )
        for k in range(engines)
    ]
    engine = fleet[0]
    n = len(terminals)
    try:
        for member in fleet:
            await member.start()
        async with province_api(engine) as api:
            await api.register(terminals, part=REGISTER_PART)
            settled = await probe.settle(*(member.pid for member in fleet))
            cpu_before = [member.cpu_seconds() for member in fleet]
            probe.begin(engine=engine.pid)
            marks = [len(sim.events) for sim in sims]
            started, started_wall = time.monotonic(), time.time()
            alert_id = await issue(api)
            answered = time.monotonic()
            played, seconds, polled, expected = 0, None, None, None
            deadline = started + timeout
            while time.monotonic() < deadline:
                delivery = await api.try_delivery(alert_id, timeout=60, detail="city")
                if delivery is not None:
                    played = int(delivery.get("played", 0))
                    if played >= n:
                        polled = time.monotonic() - started
                        expected = delivery.get("expected")
                        seconds = _recorded_after(delivery, started_wall, polled)
                        break
                await asyncio.sleep(POLL)
            cpu_after = [member.cpu_seconds() for member in fleet]
            others = probe.end()
            heard = await first_heard(sims, marks, alert_id)
            return {
                "answer_ms": (answered - started) * 1000,
                # From the 201 (negative: a terminal heard it before the answer was read).
                "first_heard_ms": None if heard is None else (heard - answered) * 1000,
                "cpu_others_s": others,
                "alert_id": alert_id,
                "seconds": seconds,
                "seconds_polled": polled,
                "played": played,
                "expected": expected,
                "engines": engines,
                "settled_s": round(settled, 1),
                "cpu_s": sum(cpu_after) - sum(cpu_before),
                "cpu_total_s": sum(cpu_after),
                # Each engine's own peak: the figure that must fit one machine's budget.
                "peak_rss_mb": max(member.memory_kb()[1] for member in fleet) / 1024,
            }
    finally:
        for member in fleet:
            await member.stop()


# -- one size ---------------------------------------------------------------------------------


async def one_size(
    base: Path, script: Path, tree: RegionTree, n: int, runs: int, timeout: float, engines: int
) -> dict[str, Any]:
    folder = base / f"n{n}"
    folder.mkdir(parents=True)
    terminals = pick_terminals(n)
    brokers = -(-n // PER_BROKER)
    mqtt = MosquittoServer(folder / "mosquitto")
    main_port = parse_mqtt_url(mqtt.url).port
    bridge_password = secrets.token_urlsafe(24)
    bridged = [
        MosquittoServer(
            folder / f"mosquitto-{k}",
            extra_config=bridge_config(f"wave-bridge-{k}", main_port, bridge_password),
        )
        for k in range(1, brokers)
    ]
    rds = RedisServer(folder / "redis")
    sims: list[SimChild] = []
    result: dict[str, Any] = {"terminals": n, "brokers": brokers, "raw": [], "engine": []}
    try:
        await asyncio.to_thread(mqtt.start)
        if bridged:
            await engine_listener_account(mqtt, BRIDGE_USER, BRIDGE_ACL, bridge_password)
        for other in bridged:
            await asyncio.to_thread(other.start)
            reader = await engine_listener_account(other, BRIDGE_USER, BRIDGE_ACL, bridge_password)
            await wait_bridged(mqtt.url, reader)
        await asyncio.to_thread(rds.start)
        share = -(-n // brokers)
        say(f"… {n} terminals on {brokers} broker(s): connecting the simulator")
        started = time.monotonic()
        for k, broker in enumerate([mqtt, *bridged]):
            part = terminals[k * share : (k + 1) * share]
            await grant_terminals(broker, part)
            sims.append(SimChild(folder / f"sim-{k}", part, broker.url, SIM_TIMEOUT, script))
        await asyncio.gather(*(sim.start(SIM_TIMEOUT) for sim in sims))
        result["sim_connect_s"] = round(time.monotonic() - started, 1)
        say(f"  connected in {result['sim_connect_s']} s")
        probe = CpuProbe(
            {
                "simulators": [sim.pid for sim in sims if sim.pid is not None],
                "brokers": [b.pid for b in [mqtt, *bridged] if b.pid is not None],
                "redis": [rds.pid] if rds.pid is not None else [],
                # The raw subscriber in raw runs; the HTTP polling in engine runs.
                "bench": [os.getpid()],
            }
        )

        # Raw and engine runs alternate, so that a machine whose pace drifts during the
        # size (another tenant, thermal limits) weighs on both sides alike.
        for i in range(runs):
            row = await raw_run_connected(mqtt.url, rds.url, tree, n, timeout, probe, sims)
            result["raw"].append(row)
            shown = "TIMEOUT" if row["seconds"] is None else f"{row['seconds']:.3f} s"
            say(
                f"  raw    #{i + 1}: {shown}  ({row['written']} acks in Redis;"
                f" CPU s {row.get('cpu_others_s')}; first terminal"
                f" {fmt(row.get('first_heard_ms'), 1)} ms after the publish)"
            )
            row = await engine_run(
                folder / f"engine-{i + 1}",
                rds.url,
                mqtt.url,
                terminals,
                timeout,
                probe,
                sims,
                engines,
            )
            result["engine"].append(row)
            shown = "TIMEOUT" if row["seconds"] is None else f"{row['seconds']:.3f} s"
            if row["seconds_polled"] is not None:
                shown += f" (poll saw it at {row['seconds_polled']:.3f} s)"
            say(
                f"  engine #{i + 1}: {shown}  (played {row['played']}/{row['expected']},"
                f" CPU {row['cpu_s']:.2f} s in the window, {row['cpu_total_s']:.2f} s total,"
                f" peak RSS {row['peak_rss_mb']:.0f} MB, idle after {row['settled_s']} s;"
                f" others CPU s {row.get('cpu_others_s')}; 201 after"
                f" {fmt(row.get('answer_ms'), 1)} ms, first terminal"
                f" {fmt(row.get('first_heard_ms'), 1)} ms after the 201)"
            )
    finally:
        for sim in sims:
            await sim.stop()
        await asyncio.to_thread(rds.stop)
        for broker in [*bridged, mqtt]:
            await asyncio.to_thread(broker.stop)

    raw = median([r["seconds"] for r in result["raw"]])
    eng = median([r["seconds"] for r in result["engine"]])
    result["median"] = {
        "raw_s": raw,
        "engine_s": eng,
        "ratio": eng / raw if raw and eng else None,
        "engine_cpu_s": median([r["cpu_s"] for r in result["engine"]]),
        "engine_cpu_total_s": median([r["cpu_total_s"] for r in result["engine"]]),
        "engine_peak_rss_mb": median([r["peak_rss_mb"] for r in result["engine"]]),
        "extra_ms": (eng - raw) * 1000 if raw and eng else None,
        "raw_first_heard_ms": median([r.get("first_heard_ms") for r in result["raw"]]),
        "engine_first_heard_ms": median([r.get("first_heard_ms") for r in result["engine"]]),
        "answer_ms": median([r.get("answer_ms") for r in result["engine"]]),
    }
    return result


def table(results: list[dict[str, Any]]) -> str:
    lines = [
        "| terminals | brokers | engines | raw s | engine s | engine / raw | engine − raw ms"
        " | first terminal ms (raw: after publish / engine: after 201) | engine 201 ms"
        " | engine ms per 1,000 terminals | engine CPU s (window / total)"
        " | engine peak RSS MB | runs |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        m = r["median"]
        per_1000 = m["engine_s"] * 1e6 / r["terminals"] if m["engine_s"] else None
        engines = r["engine"][0].get("engines", 1) if r["engine"] else 1
        lines.append(
            f"| {r['terminals']:,} | {r.get('brokers', 1)} | {engines}"
            f" | {fmt(m['raw_s'], 3)} | {fmt(m['engine_s'], 3)}"
            f" | {fmt(m['ratio'], 2)} | {fmt(m.get('extra_ms'), 0)}"
            f" | {fmt(m.get('raw_first_heard_ms'), 1)} / {fmt(m.get('engine_first_heard_ms'), 1)}"
            f" | {fmt(m.get('answer_ms'), 1)} | {fmt(per_1000, 0)}"
            f" | {fmt(m['engine_cpu_s'], 2)} / {fmt(m['engine_cpu_total_s'], 2)}"
            f" | {fmt(m['engine_peak_rss_mb'], 0)} | {len(r['engine'])} |"
        )
    for r in results:
        ratio = r["median"]["ratio"]
        # The target is the province's: one terminal per village.
        if ratio is not None and r["terminals"] == TARGET_SIZE:
            verdict = "met" if ratio <= TARGET_RATIO else "NOT met"
            lines.append(
                f"\n{r['terminals']:,} terminals: engine / raw {ratio:.2f}"
                f" (target ≤ {TARGET_RATIO}): {verdict}"
            )
        extra, heard = r["median"].get("extra_ms"), r["median"].get("engine_first_heard_ms")
        if r["terminals"] == SMALL_SIZE and extra is not None:
            verdict = "met" if extra <= SMALL_EXTRA_MS else "NOT met"
            lines.append(
                f"\n{SMALL_SIZE:,} terminals: engine − raw {extra:.0f} ms"
                f" (target ≤ {SMALL_EXTRA_MS:.0f} ms): {verdict}"
            )
        if r["terminals"] == SMALL_SIZE and heard is not None:
            verdict = "met" if heard <= FIRST_HEARD_MS else "NOT met"
            lines.append(
                f"\n{SMALL_SIZE:,} terminals: first terminal {heard:.1f} ms after the 201"
                f" (target ≤ {FIRST_HEARD_MS:.0f} ms): {verdict}"
            )
    return "\n".join(lines)


class Wave(Benchmark, name="wave", out="bench-wave.json"):
    def __init__(self, args: argparse.Namespace) -> None:
        super().__init__(args)
        self.sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
        self.results_: list[dict[str, Any]] = []
        self.failed = False

    @classmethod
    def arguments(cls, parser: argparse.ArgumentParser) -> None:
        parser.add_argument(
            "--sizes", default="1000,5000,17498,34996", help="terminal counts, comma-separated"
        )
        parser.add_argument("--runs", type=int, default=3, help="repetitions of each point")
        parser.add_argument("--engines", type=int, default=1, help="engines sharing acks ($share)")
        parser.add_argument("--timeout", type=float, default=300.0, help="seconds a run may take")

    async def measure(self, folder: Path) -> None:
        tree, args = fujian(), self.args
        for n in self.sizes:
            try:
                self.results_.append(
                    await one_size(
                        folder, self.script, tree, n, args.runs, args.timeout, args.engines
                    )
                )
            except Exception as exc:  # one broken size must not hide the others
                say(f"! {n} terminals failed: {exc!r}; logs in {folder / f'n{n}'}")
                self.failed = True

    def results(self) -> dict[str, Any]:
        return {"runs": self.args.runs, "results": self.results_}

    def table(self) -> str:
        return table(self.results_)

    def complete(self) -> bool:
        finished = all(r["median"]["ratio"] is not None for r in self.results_)
        return bool(self.results_) and finished and not self.failed


if __name__ == "__main__":
    sys.exit(main(Wave))
