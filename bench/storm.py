"""Ack ingestion: how fast the engine alone takes in a recorded storm of terminal acks, against
``mosquitto_sub`` draining the very same storm from the same broker, in the same run.

    .venv/bin/python bench/storm.py                      # 17,498 terminals × 2 acks, 3 runs
    .venv/bin/python bench/storm.py --terminals 1000 --runs 1
    .venv/bin/python bench/storm.py --terminals 2000 --acks-per-terminal 3 --keep

It starts its own redis-server, and a mosquitto per run (``dispatcher.embedded``, the project's
configs as they are), in a temporary folder. N terminals, one per village spread evenly over
Fujian (``harness.pick_terminals``), are registered but never connected: the acks they would send
are recorded once per run and replayed. The storm is what the simulator's terminals publish
(``receiver.brain.Ack.payload()`` on ``eb/v1/term/{id}/ack``): per terminal ``received`` then
``played`` (``--acks-per-terminal 1``: ``played`` only; ``3``: ``received``, ``playing``,
``played``). A run:

1. ``mosquitto_sub -V mqttv5 -c -x 600 -q 1 -t 'eb/v1/term/+/ack' -E`` makes a persistent
   MQTT 5 session and exits.
2. A fresh ``python -m dispatcher serve`` (instance ``ebd-storm-K``; its MQTT sessions persist
   for 600 s) comes up; the N terminals are registered, a province red alert is issued (nobody
   receives it) and, once it is dispatched, the engine is stopped (SIGTERM).
3. The storm is published once, at QoS 1 from one ``receiver.mqtt_lite`` connection, until the
   broker has confirmed every message: it has then queued one copy for the engine and one for
   mosquitto_sub, the very same bytes.
4. The two drain in turn, engine first in odd runs and mosquitto_sub first in even ones (each
   drain finds the other's copy still queued, or already taken).

   engine          started again (the same client ids), it is timed until GET
                   /api/v1/alerts/{id} (polled every 50 ms) shows played == N. Rate: the
                   alert's acks in the ack log stream (``ebd:acklog``, one entry per recorded
                   batch, whose auto id carries Redis's millisecond clock at that write) over
                   the window from the first entry to the last: (acks − the first entry's) /
                   window, since the first batch left the broker before the window opened
                   (the JSON also has the rate with it, which matters only at small sizes).
                   Also the wall time from
                   the restart to played == N, and the restarted engine's CPU seconds (/proc
                   utime + stime, start-up included) and peak RSS (VmHWM).
   mosquitto_sub   ``-C <count> -F '%U %t'`` resumes the session and writes a timestamped line
                   per message to a file. Rate: (messages − 1) over its first → last
                   timestamp; also its wall time (spawn to exit) and CPU seconds. Every
                   terminal's acks must have come, each once.

mosquitto_sub asks for the Receive Maximum the engine's ack link asks for (``-D connect
receive-maximum 65535``; the broker caps what it has in flight to a client at its
max_inflight_messages, 10,000). Why a broker per run: the engine's sessions (how many it opens,
and under which client ids, is its own business) would otherwise outlive the run and queue a
copy of every later storm. The resend deadline of red alerts is raised to an hour in the
engine's config so the deadline sweeper never resends during a run on a loaded machine: what is
timed is ingestion alone. The engine share is engine acks/s ÷ mosquitto_sub msgs/s; the target
is ≥ 0.70.

Prints every run, then a Markdown table of the medians, and writes everything to ``--out``
(JSON). Exit status 0 when every run completed (whatever the share), 1 otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import os
import resource
import subprocess
import sys
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import redis.asyncio as aioredis
from figures import fmt, median, per_second
from harness import (
    CHILDREN,
    REGISTER_PART,
    engine_listener_account,
    issue,
    pick_terminals,
    province_api,
    province_engine,
    throwaway_client,
)
from skeleton import Benchmark, main, say

from dispatcher.core.models import new_alert_id
from dispatcher.embedded.processes import MosquittoServer, RedisServer, find_binary
from dispatcher.embedded.secrets import write_private
from dispatcher.store.acklog import acklog_rows
from dispatcher.store.keys import ACKLOG
from receiver.brain import Ack, AckState, ack_topic
from receiver.mqtt_lite import parse_mqtt_url
from tests.support.engine_process import EngineProcess, cpu_seconds

ACK_FILTER = "eb/v1/term/+/ack"
STATES: dict[int, tuple[AckState, ...]] = {
    1: ("played",),
    2: ("received", "played"),
    3: ("received", "playing", "played"),
}
# What the engine's ack link asks the broker for; mosquitto_sub asks the same so neither waits
# on a smaller window of messages in flight than the other.
RECEIVE_MAXIMUM = 65535  # what the engine's ack link asks for
SESSION_EXPIRY = 600
POLL = 0.05
XRANGE_PART = 10_000
# PUBACK reason code: the message matched no subscription, so it reached no session.
NO_SUBSCRIBERS = 0x10

Storm = list[tuple[str, bytes]]
# Rates run to hundreds of thousands a second: the figures are grouped by thousands.
_fmt = functools.partial(fmt, grouped=True)


def _pid(server: MosquittoServer | RedisServer) -> int:
    pid = server.pid
    if pid is None:
        raise RuntimeError(f"{server!r} is not running")
    return pid


# -- the storm --------------------------------------------------------------------------------


def build_storm(terminals: list[dict[str, str]], alert_id: str, per_terminal: int) -> Storm:
    """Every terminal's acks of ``alert_id``, each terminal's in the order it sends them."""
    now = datetime.now(UTC)
    states = STATES[per_terminal]
    storm: Storm = []
    for terminal in terminals:
        topic = ack_topic(terminal["id"])
        # As the simulator's terminals do with no play time: all their acks at one moment.
        storm.extend((topic, Ack(alert_id, state, now).payload()) for state in states)
    return storm


# The storm stands for 17,498 terminals' acks, but the broker lets a terminal's account publish
# only its own: the replay has an account of its own on the engine listener, allowed to
# publish acks and nothing else, so that the one connection the storm needs is authorised.
REPLAY_USER = "ebd-storm-replay"


async def replay_url(mqtt: MosquittoServer) -> str:
    """The replay account's URL (publish acks, nothing else), once the broker accepts it."""
    return await engine_listener_account(mqtt, REPLAY_USER, "topic write eb/v1/term/+/ack\n")


async def publish_storm(mqtt_url: str, storm: Storm, timeout: float) -> float:
    """Publish every message at QoS 1 from one lean connection; return once the broker has
    confirmed them all (seconds taken). Fails if any was refused or reached no session."""
    conn = await throwaway_client(mqtt_url, "storm-pub")
    started = time.monotonic()
    try:
        # The waiter is taken right after each publish, before its packet id can be reused.
        pubacks = []
        for topic, payload in storm:
            packet_id = conn.publish(topic, payload, qos=1)
            assert packet_id is not None  # QoS 1
            pubacks.append(conn.wait_puback(packet_id))
        async with asyncio.timeout(timeout):
            codes = await asyncio.gather(*pubacks)
    finally:
        conn.disconnect()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(conn.closed), 10)
    bad = Counter(code for code in codes if code != 0)
    if bad.get(NO_SUBSCRIBERS):
        raise RuntimeError(f"{bad[NO_SUBSCRIBERS]} acks reached no session: nobody subscribed")
    if bad:
        raise RuntimeError(f"the broker did not take the whole storm: PUBACK codes {dict(bad)}")
    return time.monotonic() - started


# -- the engine ---------------------------------------------------------------------------------


async def issue_alert(
    engine: EngineProcess, terminals: list[dict[str, str]], timeout: float
) -> str:
    """Register the terminals, issue a province red alert and wait until it is dispatched to
    all of them; its id."""
    n = len(terminals)
    async with province_api(engine) as api:
        await api.register(terminals, part=REGISTER_PART)
        alert_id = await issue(api)
        deadline = time.monotonic() + timeout
        delivery: dict[str, Any] = {}
        while time.monotonic() < deadline:
            delivery = await api.try_delivery(alert_id, timeout=60) or delivery
            if delivery.get("state") == "dispatched":
                if delivery.get("expected") != n:
                    raise RuntimeError(f"the alert expects {delivery.get('expected')}, not {n}")
                return alert_id
            await asyncio.sleep(POLL)
    raise RuntimeError(f"alert {alert_id} not dispatched in time: {delivery.get('state')}")


async def last_stream_id(rdb: aioredis.Redis, key: str) -> str:
    newest = await rdb.xrevrange(key, count=1)
    return str(newest[0][0]) if newest else "0-0"


async def acklog_window(rdb: aioredis.Redis, alert_id: str, after: str) -> dict[str, Any]:
    """The alert's acks in the ack log entries written after stream id ``after``: how many,
    the first and last entry ids, the window between them in ms, and how many acks the first
    entry holds (an entry is one recorded batch)."""
    count, first, last = 0, None, None
    first_batch = 0
    start = f"({after}"
    while True:
        entries = cast(
            list[tuple[str, dict[str, str]]],
            await rdb.xrange(ACKLOG, min=start, count=XRANGE_PART),
        )
        if not entries:
            break
        for entry_id, fields in entries:
            if fields.get("alert_id") == alert_id:
                rows = len(acklog_rows(entry_id, fields))
                count += rows
                if first is None:
                    first, first_batch = entry_id, rows
                last = entry_id
        start = f"({entries[-1][0]}"
    window_ms = None
    if first is not None and last is not None:
        window_ms = int(last.split("-")[0]) - int(first.split("-")[0])
    return {
        "entries": count,
        "first_id": first,
        "last_id": last,
        "window_ms": window_ms,
        "first_batch": first_batch,
    }


async def engine_drain(
    engine: EngineProcess,
    mqtt: MosquittoServer,
    rds: RedisServer,
    rdb: aioredis.Redis,
    alert_id: str,
    n: int,
    acks: int,
    after: str,
    timeout: float,
) -> dict[str, Any]:
    """Start the stopped engine again and time it until played == ``n``."""
    row: dict[str, Any] = {}
    broker_cpu, redis_cpu = cpu_seconds(_pid(mqtt)), cpu_seconds(_pid(rds))
    started = time.monotonic()
    await engine.start()
    row["ready_s"] = time.monotonic() - started
    row["cpu_at_ready_s"] = engine.cpu_seconds()
    played, seconds = 0, None
    async with province_api(engine) as api:
        # Asked at least once: a slow start-up may already have used up the timeout.
        while True:
            delivery = await api.try_delivery(alert_id, timeout=60)
            if delivery is not None:
                played = int(delivery.get("played", 0))
                if played >= n:
                    seconds = time.monotonic() - started
                    break
            if time.monotonic() > started + timeout:
                break
            await asyncio.sleep(POLL)
    row.update(
        wall_s=seconds,
        played=played,
        cpu_s=engine.cpu_seconds(),
        peak_rss_mb=engine.memory_kb()[1] / 1024,
        broker_cpu_s=cpu_seconds(_pid(mqtt)) - broker_cpu,
        redis_cpu_s=cpu_seconds(_pid(rds)) - redis_cpu,
    )
    await engine.stop()
    window = await acklog_window(rdb, alert_id, after)
    row.update(window)
    window_s = None if window["window_ms"] is None else window["window_ms"] / 1000
    complete = seconds is not None and window["entries"] >= acks
    # The first batch was taken from the broker before the window opened (its write opens
    # it): the main figure leaves it out, the other keeps it in.
    row["acks_per_s"] = (
        per_second(window["entries"] - window["first_batch"], window_s) if complete else None
    )
    row["acks_per_s_with_first_batch"] = (
        per_second(window["entries"] - 1, window_s) if complete else None
    )
    return row


# -- mosquitto_sub ------------------------------------------------------------------------------


def sub_command(mqtt: MosquittoServer, client_id: str) -> list[str]:
    return [
        find_binary("mosquitto_sub"),
        *("-h", mqtt.host, "-p", str(mqtt.port), "-V", "mqttv5", "-i", client_id),
        *("-c", "-x", str(SESSION_EXPIRY), "-q", "1", "-t", ACK_FILTER),
        *("-D", "connect", "receive-maximum", str(RECEIVE_MAXIMUM)),
    ]


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def sub_env(mqtt: MosquittoServer) -> dict[str, str]:
    """mosquitto_sub's environment: its config file (``$XDG_CONFIG_HOME/mosquitto_sub``, private)
    holds the engine account, so that no password shows in the process list."""
    home = Path(mqtt.files.engine_passwd).parent.parent / "sub-config"
    home.mkdir(mode=0o700, exist_ok=True)
    url = parse_mqtt_url(mqtt.url)
    write_private(home / "mosquitto_sub", f"-u {url.username}\n-P {url.password}\n")
    return {**os.environ, "XDG_CONFIG_HOME": str(home)}


def run_sub(
    argv: list[str], out: Path, timeout: float, env: dict[str, str]
) -> tuple[int, float, float]:
    """Run mosquitto_sub to its end with stdout to ``out``: (exit status, wall s, CPU s).

    The CPU is this process's reaped-children total before and after: mosquitto_sub is the
    only child reaped in between (the engine is stopped, the servers run on)."""
    cpu_before = _children_cpu()
    started = time.monotonic()
    with out.open("wb") as sink:
        proc = subprocess.Popen(  # noqa: S603  mosquitto_sub with our own arguments
            argv, stdin=subprocess.DEVNULL, stdout=sink, stderr=subprocess.PIPE, env=env
        )
    CHILDREN.add(proc.pid)
    try:
        _, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
    finally:
        CHILDREN.discard(proc.pid)
    wall = time.monotonic() - started
    if proc.returncode != 0 and err:
        say(f"  mosquitto_sub: {err.decode(errors='replace').strip()}")
    return proc.returncode, wall, _children_cpu() - cpu_before


async def make_sub_session(mqtt: MosquittoServer, client_id: str, folder: Path) -> None:
    argv = [*sub_command(mqtt, client_id), "-E"]
    rc, _, _ = await asyncio.to_thread(run_sub, argv, folder / "sub-session.txt", 30, sub_env(mqtt))
    if rc != 0:
        raise RuntimeError(f"mosquitto_sub could not make its session: exit {rc}")


async def sub_drain(
    mqtt: MosquittoServer,
    client_id: str,
    out: Path,
    storm: Storm,
    per_terminal: int,
    timeout: float,
) -> dict[str, Any]:
    """Resume the session with mosquitto_sub until it has the whole storm."""
    broker_cpu = cpu_seconds(_pid(mqtt))
    # -W: mosquitto_sub gives up by itself a little before we would kill it.
    argv = [
        *sub_command(mqtt, client_id),
        *("-C", str(len(storm)), "-F", "%U %t", "-W", str(max(1, int(timeout)))),
    ]
    rc, wall, cpu = await asyncio.to_thread(run_sub, argv, out, timeout + 10, sub_env(mqtt))
    row: dict[str, Any] = {
        "exit": rc,
        "wall_s": wall,
        "cpu_s": cpu,
        "broker_cpu_s": cpu_seconds(_pid(mqtt)) - broker_cpu,
    }
    row.update(await asyncio.to_thread(read_sub_output, out, storm, per_terminal))
    complete = rc == 0 and row["messages"] == len(storm) and row["uneven_terminals"] == 0
    if not complete:
        row["wall_s"] = None
    row["msgs_per_s"] = per_second(row["messages"], row["window_s"]) if complete else None
    return row


def read_sub_output(out: Path, storm: Storm, per_terminal: int) -> dict[str, Any]:
    """Count mosquitto_sub's lines (``%U %t``: a Unix time with nanoseconds, the topic) and
    check every terminal's acks came, each once."""
    first = last = None
    per_topic: Counter[str] = Counter()
    messages = 0
    with out.open(encoding="utf-8") as lines:
        for line in lines:
            stamp, _, topic = line.rstrip("\n").partition(" ")
            moment = float(stamp)
            first = moment if first is None else first
            last = moment
            per_topic[topic] += 1
            messages += 1
    topics = {topic for topic, _ in storm}
    uneven = sum(1 for topic in topics if per_topic.get(topic, 0) != per_terminal)
    uneven += sum(1 for topic in per_topic if topic not in topics)
    window = None if first is None or last is None else last - first
    return {"messages": messages, "uneven_terminals": uneven, "window_s": window}


# -- a run --------------------------------------------------------------------------------------


def show_engine(index: int, n: int, e: dict[str, Any]) -> None:
    if "error" in e:
        say(f"  engine        #{index}: failed: {e['error']}")
        return
    if "wall_s" not in e:
        say(f"  engine        #{index}: not drained")
        return
    say(
        f"  engine        #{index}: {_fmt(e['acks_per_s'], 0)} acks/s over"
        f" {_fmt(e['window_ms'], 0)} ms ({e['entries']} acks in the ack log; with the first"
        f" batch of {e['first_batch']}: {_fmt(e['acks_per_s_with_first_batch'], 0)}),"
        f" played {e['played']}/{n} in {_fmt(e['wall_s'], 3)} s from restart"
        f" (ready {e['ready_s']:.2f} s), CPU {e['cpu_s']:.2f} s,"
        f" peak RSS {e['peak_rss_mb']:.0f} MB, broker CPU {e['broker_cpu_s']:.2f} s,"
        f" redis CPU {e['redis_cpu_s']:.2f} s"
    )


def show_sub(index: int, acks: int, per_terminal: int, s: dict[str, Any]) -> None:
    if "error" in s:
        say(f"  mosquitto_sub #{index}: failed: {s['error']}")
        return
    if "wall_s" not in s:
        say(f"  mosquitto_sub #{index}: not drained")
        return
    window_ms = None if s["window_s"] is None else s["window_s"] * 1000
    say(
        f"  mosquitto_sub #{index}: {_fmt(s['msgs_per_s'], 0)} msgs/s over"
        f" {_fmt(window_ms, 0)} ms ({s['messages']}/{acks} messages,"
        f" {s['uneven_terminals']} terminals without exactly {per_terminal}),"
        f" {_fmt(s['wall_s'], 3)} s from spawn, CPU {s['cpu_s']:.2f} s,"
        f" broker CPU {s['broker_cpu_s']:.2f} s"
    )


async def one_run(
    base: Path,
    rds: RedisServer,
    rdb: aioredis.Redis,
    terminals: list[dict[str, str]],
    per_terminal: int,
    index: int,
    timeout: float,
) -> dict[str, Any]:
    folder = base / f"run-{index}"
    folder.mkdir(parents=True)
    engine_first = index % 2 == 1
    run: dict[str, Any] = {
        "run": index,
        "first": "engine" if engine_first else "mosquitto_sub",
        "engine": {},
        "mosquitto_sub": {},
    }
    e, s = run["engine"], run["mosquitto_sub"]
    mqtt = MosquittoServer(folder / "mosquitto")
    engine: EngineProcess | None = None
    try:
        await asyncio.to_thread(mqtt.start)
        s["client_id"] = f"storm-sub-{index}"
        await make_sub_session(mqtt, s["client_id"], folder)
        e["instance"] = f"ebd-storm-{index}"
        engine = province_engine(
            folder,
            redis_url=rds.url,
            mqtt_url=mqtt.url,
            instance=e["instance"],
            log_level="warning",
            resend={"red": 3600},
        )
        alert_id: str | None = None
        try:
            await engine.start()
            alert_id = e["alert_id"] = await issue_alert(engine, terminals, timeout)
        except Exception as exc:  # mosquitto_sub still has something to measure
            e["error"] = repr(exc)
        await engine.stop()  # SIGTERM: its links disconnect and their sessions stay

        # Without an alert, the same shape of storm under another id, for mosquitto_sub.
        storm = build_storm(
            terminals, alert_id or new_alert_id("storm", datetime.now(UTC)), per_terminal
        )
        run["acks"] = len(storm)
        run["storm_bytes"] = sum(len(topic) + len(payload) for topic, payload in storm)
        after = await last_stream_id(rdb, ACKLOG)
        run["publish_s"] = await publish_storm(await replay_url(mqtt), storm, timeout)

        for half in ("engine", "mosquitto_sub") if engine_first else ("mosquitto_sub", "engine"):
            try:
                if half == "engine" and alert_id is not None:
                    e.update(
                        await engine_drain(
                            engine, mqtt, rds, rdb, alert_id, len(terminals), len(storm), after,
                            timeout,
                        )
                    )  # fmt: skip
                elif half == "mosquitto_sub":
                    out = folder / f"sub-{index}.txt"
                    s.update(
                        await sub_drain(mqtt, s["client_id"], out, storm, per_terminal, timeout)
                    )
            except Exception as exc:  # the other half still measures something
                run[half]["error"] = repr(exc)
            finally:
                await engine.stop()  # never left running beside the other half's drain
    except Exception as exc:
        run["error"] = repr(exc)
        say(f"! run {index} failed: {exc!r}")
    finally:
        if engine is not None:
            await engine.stop()
        await asyncio.to_thread(mqtt.stop)
    show_engine(index, len(terminals), e)
    show_sub(index, run.get("acks", 0), per_terminal, s)
    eng, sub = e.get("acks_per_s"), s.get("msgs_per_s")
    run["share"] = eng / sub if eng and sub else None
    run["complete"] = run["share"] is not None
    say(f"  share         #{index}: {_fmt(run['share'], 2)}")
    return run


# -- the report ---------------------------------------------------------------------------------


def medians(runs: list[dict[str, Any]]) -> dict[str, float | None]:
    def of(half: str, key: str) -> float | None:
        return median([r[half].get(key) for r in runs])

    return {
        "acks": median([r.get("acks") for r in runs]),
        "engine_acks_per_s": of("engine", "acks_per_s"),
        "mosquitto_sub_msgs_per_s": of("mosquitto_sub", "msgs_per_s"),
        "share": median([r["share"] for r in runs]),
        "engine_wall_s": of("engine", "wall_s"),
        "mosquitto_sub_wall_s": of("mosquitto_sub", "wall_s"),
        "engine_cpu_s": of("engine", "cpu_s"),
        "engine_peak_rss_mb": of("engine", "peak_rss_mb"),
        "mosquitto_sub_cpu_s": of("mosquitto_sub", "cpu_s"),
    }


def table(terminals: int, runs: int, m: dict[str, float | None]) -> str:
    return "\n".join(
        [
            "| terminals | acks | engine acks/s | mosquitto_sub msgs/s | engine share"
            " | engine wall s | mosquitto_sub wall s | engine CPU s | engine peak RSS MB | runs |",
            "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
            f"| {terminals:,} | {_fmt(m['acks'], 0)} | {_fmt(m['engine_acks_per_s'], 0)}"
            f" | {_fmt(m['mosquitto_sub_msgs_per_s'], 0)} | {_fmt(m['share'], 2)}"
            f" | {_fmt(m['engine_wall_s'], 3)} | {_fmt(m['mosquitto_sub_wall_s'], 3)}"
            f" | {_fmt(m['engine_cpu_s'], 2)} | {_fmt(m['engine_peak_rss_mb'], 0)} | {runs} |",
        ]
    )


class StormBenchmark(Benchmark, name="storm", out="bench-storm.json"):
    def __init__(self, args: argparse.Namespace) -> None:
        super().__init__(args)
        self.terminals = pick_terminals(args.terminals)
        self.runs: list[dict[str, Any]] = []

    @classmethod
    def arguments(cls, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--terminals", type=int, default=17_498, help="one per village")
        parser.add_argument(
            "--acks-per-terminal", type=int, choices=sorted(STATES), default=2,
            help="1: played; 2: received, played; 3: received, playing, played",
        )  # fmt: skip
        parser.add_argument("--runs", type=int, default=3, help="engine + mosquitto_sub pairs")
        parser.add_argument("--timeout", type=float, default=300.0, help="seconds a phase may take")

    @classmethod
    def misuse(cls, args: argparse.Namespace) -> str | None:
        return "--runs must be at least 1" if args.runs < 1 else None

    async def measure(self, folder: Path) -> None:
        args = self.args
        rds = RedisServer(folder / "redis")
        try:
            await asyncio.to_thread(rds.start)
            rdb = aioredis.Redis.from_url(rds.url, decode_responses=True)
            try:
                say(
                    f"… {len(self.terminals)} terminals × {args.acks_per_terminal} acks,"
                    f" {args.runs} runs (files in {folder})"
                )
                for index in range(1, args.runs + 1):
                    self.runs.append(
                        await one_run(
                            folder, rds, rdb, self.terminals, args.acks_per_terminal, index,
                            args.timeout,
                        )
                    )  # fmt: skip
            finally:
                await rdb.aclose()
        finally:
            await asyncio.to_thread(rds.stop)

    def results(self) -> dict[str, Any]:
        return {
            "terminals": len(self.terminals),
            "acks_per_terminal": self.args.acks_per_terminal,
            "receive_maximum": RECEIVE_MAXIMUM,
            "target_share": 0.70,
            "runs": self.runs,
            "median": medians(self.runs) if self.runs else {},
        }

    def table(self) -> str:
        if not self.runs:
            return ""
        return table(len(self.terminals), len(self.runs), medians(self.runs))

    def complete(self) -> bool:
        return len(self.runs) == self.args.runs and all(r["complete"] for r in self.runs)


if __name__ == "__main__":
    sys.exit(main(StormBenchmark))
