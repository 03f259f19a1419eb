"""Reconnect storm: how long after a broker restart until every terminal of the province is
connected and subscribed again, and what share of that the engine adds.

    .venv/bin/python bench/reconnect.py                          # 17,498 terminals, 3 runs
    .venv/bin/python bench/reconnect.py --terminals 1000 --runs 1
    .venv/bin/python bench/reconnect.py --terminals 1000 --runs 1 --kill   # SIGKILL the broker

It starts its own mosquitto and redis-server (``dispatcher.embedded``) in a temporary folder
and one simulated terminal per village for ``--terminals`` villages spread evenly over Fujian
(17,498 is every village), in a child process of its own so the terminals have a core. The
child watches its ``receiver.simulator.Simulator`` (a subclass, the simulator is not changed)
and reports on its stdout, one JSON line each: the storm starting (the first terminal lost),
progress, and the moment every terminal is connected and subscribed again.

"Subscribed again" is what the simulator means by a terminal being up: its CONNACK came, and
either the broker said it kept the session (session present: the subscriptions came back with
it from mosquitto's persistence) or the terminal subscribed anew and got its SUBACK. Each run
proves it afterwards, outside the timed window: one QoS 1 publish of a test alert to the
province topic, and a lean subscriber (``receiver.mqtt_lite``) on ``eb/v1/term/+/ack`` counts
the terminals that answer ``played``; a run is complete only when all of them do.

A run, with all terminals up: stop the broker gracefully (SIGTERM: it saves its database;
``--kill``: SIGKILL after its next autosave, so the sessions are on disk), start it again on
the same port and data folder, and time from the broker accepting again (the earlier of
``MosquittoServer.start`` returning on its CONNACK probe and the first terminal back) until
the last terminal is subscribed again. Two variants, interleaved run by run so a machine
that gets busier or quieter affects both alike, in ABBA order (without, with; with, without;
…) so neither always goes first:

    without   the broker, the terminals and nothing else.
    with      ``python -m dispatcher serve`` (a fresh process per run, the terminals
              registered, its retained-state backlog ingested before the restart) connected
              to the same broker through the restart: it reconnects and resubscribes, and
              takes every terminal's new online state, competing with the terminals. Also its
              CPU seconds in the storm (from the stop until the last terminal is back), its
              peak RSS in the storm (VmHWM, reset through /proc/PID/clear_refs before the
              stop), when all its MQTT links were up again and when it had recorded the
              storm's N online states (``GET /metrics``, polled every 0.2 s).

Also for both: the restarted broker's CPU seconds until the last terminal is back (its pid
from ``MosquittoServer.pid``; what the old one spent saving is not counted), the quantiles of
the terminals' return, how many found their session kept or subscribed anew, and how many
connection attempts failed. The terminals retry as ``Simulator`` does (at once, then after
0.2 s doubling to 5 s, ±50 % jitter, at most 500 connecting at a time), so how long the broker
is down shapes the storm as much as the broker's and the engine's speed do.

The engine's persistent sessions are removed after each of its runs, so the broker queues
nothing for an absent engine in the runs without it. The engine's share is
median(with) − median(without), also as a percentage of median(without). Prints every run,
a Markdown table of the medians, and writes everything to ``--out`` (JSON). Exits 0 when all
runs completed and were verified.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import aiohttp
from figures import fmt, median, nearest_rank
from harness import (
    PROVINCE,
    REGISTER_PART,
    SimChild,
    emit,
    forget_sessions,
    fujian,
    grant_terminals,
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
from receiver.mqtt_lite import (
    Message,
    MqttConnection,
    MqttLiteError,
)
from receiver.simulator import SimTerminal, Simulator, _Virtual
from tests.support.broker import TEST_SIGNER
from tests.support.engine_process import EngineProcess, cpu_seconds

VARIANTS = ("without", "with")
ENGINE_INSTANCE = "ebd-reconnect"
# The engine's MQTT client ids: its instance name (the publishing link) and, since it takes
# acks on a connection of its own, that one's.
ENGINE_CLIENT_IDS = [ENGINE_INSTANCE, f"{ENGINE_INSTANCE}-acks"]
# How often the engine's /metrics is read during a storm: often enough to place its link-up,
# rarely enough to cost it next to nothing.
METRICS_EVERY = 0.2
# mosquitto's autosave_interval in the shipped config is 5 s; a save is awaited this long.
AUTOSAVE_WAIT = 20.0
ENGINE_IDLE_WAIT = 120.0


# -- the simulator child process -------------------------------------------------------------


@dataclass
class _Storm:
    began: float
    min_up: int
    # The last time each terminal came up: one that came up and went down again counts once,
    # from when it stayed up.
    last_up: dict[str, float] = field(default_factory=dict)
    session_present: int = 0
    resubscribed: int = 0
    failed_attempts: int = 0
    flaps: int = 0
    all_down: float | None = None


class WatchedSimulator(Simulator):
    """The simulator with an eye on each terminal's link: which are up (connected, and
    subscribed or with their session kept), and what a storm looked like once all are back.

    ``_connect_once`` returns only after the CONNACK and, without a kept session, the SUBACK;
    ``_on_lost`` is where a live link is noticed gone. Time stamps are ``time.monotonic()``,
    the same clock (CLOCK_MONOTONIC) as the parent's."""

    def __init__(
        self, terminals: list[SimTerminal], mqtt_url: str, out: TextIO, **options: Any
    ) -> None:
        super().__init__(terminals, mqtt_url, **options)
        self._out = out
        self._n = len(terminals)
        self._up: set[str] = set()
        self._storm: _Storm | None = None
        self.watching = False

    @property
    def up(self) -> int:
        return len(self._up)

    async def start(self, timeout: float = 120.0) -> None:
        await super().start(timeout)
        # Storms are what happens after every terminal was up once.
        self.watching = True

    async def _connect_once(self, virtual: _Virtual) -> None:
        try:
            await super()._connect_once(virtual)
        except BaseException:
            if self._storm is not None:
                self._storm.failed_attempts += 1
            raise
        self._came_up(virtual.term)

    def _on_lost(self, virtual: _Virtual, conn: MqttConnection, exc: BaseException | None) -> None:
        # Only the link a terminal is up on counts; a link lost halfway through connecting
        # never counted as up.
        if conn is virtual.conn and virtual.term.id in self._up:
            self._went_down(virtual.term)
        super()._on_lost(virtual, conn, exc)

    def _came_up(self, term: SimTerminal) -> None:
        now = time.monotonic()
        self._up.add(term.id)
        storm = self._storm
        if storm is None:
            return
        storm.last_up[term.id] = now
        if term.session_present:
            storm.session_present += 1
        else:
            storm.resubscribed += 1
        if len(self._up) < self._n:
            return
        ups = sorted(storm.last_up.values())
        self._storm = None
        emit(
            self._out,
            "all_up",
            up=self._n,
            began=storm.began,
            all_down=storm.all_down,
            min_up=storm.min_up,
            first=ups[0],
            p50=nearest_rank(ups, 0.5),
            p90=nearest_rank(ups, 0.9),
            p99=nearest_rank(ups, 0.99),
            last=ups[-1],
            returned=len(ups),
            session_present=storm.session_present,
            resubscribed=storm.resubscribed,
            failed_attempts=storm.failed_attempts,
            flaps=storm.flaps,
        )

    def _went_down(self, term: SimTerminal) -> None:
        now = time.monotonic()
        self._up.discard(term.id)
        if not self.watching:
            return
        storm = self._storm
        if storm is None:
            storm = self._storm = _Storm(began=now, min_up=len(self._up))
            emit(self._out, "storm", up=len(self._up))
        if term.id in storm.last_up:
            storm.flaps += 1
        storm.min_up = min(storm.min_up, len(self._up))
        if not self._up and storm.all_down is None:
            storm.all_down = now
            emit(self._out, "all_down", up=0)


# -- the engine -------------------------------------------------------------------------------


def parse_metrics(text: str) -> dict[str, float]:
    """Prometheus text exposition → {sample name with its labels: value}."""
    values: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        name, _, value = line.rpartition(" ")
        with contextlib.suppress(ValueError):
            values[name] = float(value)
    return values


STATES = 'ebd_terminal_messages_total{outcome="state_messages"}'
BACKLOG = "ebd_ack_backlog"


def links_connects(metrics: dict[str, float]) -> dict[str, float]:
    """Connections made so far by each of the engine's MQTT links: ``ebd_mqtt_connects``
    and, when the engine takes acks on a connection of its own, ``ebd_mqtt_ack_link_connects``
    (however many links it has, each must be back)."""
    return {
        k: v
        for k, v in metrics.items()
        if k.startswith("ebd_mqtt") and k.endswith("connects_total")
    }


def links_back(metrics: dict[str, float], before: dict[str, float]) -> bool:
    """Every link connected (``ebd_mqtt*_connected`` 1) on a connection made since ``before``."""
    gauges = [v for k, v in metrics.items() if k.startswith("ebd_mqtt") and k.endswith("connected")]
    now = links_connects(metrics)
    return (
        bool(gauges)
        and all(v == 1 for v in gauges)
        and now.keys() == before.keys()
        and all(now[k] > before[k] for k in now)
    )


def acks_seen(metrics: dict[str, float]) -> float:
    """Every ack the engine recorded, whatever the outcome (counted, unknown alert …)."""
    prefix = 'ebd_terminal_messages_total{outcome="acks_'
    return sum(v for k, v in metrics.items() if k.startswith(prefix))


async def read_metrics(
    http: aiohttp.ClientSession, engine: EngineProcess
) -> dict[str, float] | None:
    with contextlib.suppress(aiohttp.ClientError, TimeoutError):
        async with http.get(f"{engine.base_url}/metrics") as response:
            if response.status == 200:
                return parse_metrics(await response.text())
    return None


async def wait_metrics(
    http: aiohttp.ClientSession,
    engine: EngineProcess,
    ok: Callable[[dict[str, float]], bool],
    timeout: float,
) -> tuple[float | None, dict[str, float]]:
    """Poll /metrics until ``ok``; (when it was seen, the last reading), or (None, …)."""
    deadline = time.monotonic() + timeout
    last: dict[str, float] = {}
    while True:
        metrics = await read_metrics(http, engine)
        if metrics is not None:
            last = metrics
            if ok(metrics):
                return time.monotonic(), last
        if time.monotonic() >= deadline or not engine.running:
            return None, last
        await asyncio.sleep(METRICS_EVERY)


def reset_peak_rss(pid: int) -> bool:
    """Set a process's VmHWM back to its current RSS (Linux ≥ 4.0, our own child)."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5", encoding="ascii")
    except OSError:
        return False
    return True


async def start_engine(
    folder: Path, redis_url: str, mqtt_url: str, terminals: list[dict[str, str]]
) -> EngineProcess:
    engine = province_engine(
        folder,
        redis_url=redis_url,
        mqtt_url=mqtt_url,
        instance=ENGINE_INSTANCE,
        log_level="warning",
    )
    await engine.start()
    try:
        async with province_api(engine) as api:
            await api.register(terminals, part=REGISTER_PART)
    except BaseException:
        await engine.stop()
        raise
    return engine


# -- the end-to-end check ---------------------------------------------------------------------


class AckCounter:
    """Counts the terminals that acknowledge one alert ``played``."""

    def __init__(self, alert_id: str, n: int) -> None:
        self.alert_id = alert_id
        self.n = n
        self.acks = 0
        self.played: set[str] = set()
        self.done: asyncio.Future[float] = asyncio.get_running_loop().create_future()

    def on_message(self, message: Message) -> None:
        try:
            body = json.loads(message.payload)
        except ValueError:
            return
        if not isinstance(body, dict) or body.get("alert_id") != self.alert_id:
            return
        self.acks += 1
        if body.get("state") == "played":
            self.played.add(message.topic.split("/")[3])
            if len(self.played) >= self.n and not self.done.done():
                self.done.set_result(time.monotonic())


async def verify(mqtt_url: str, tree: RegionTree, n: int, timeout: float) -> dict[str, Any]:
    """One QoS 1 test alert to the province topic; how many terminals played it."""
    alert = new_alert("reconnect-check")
    counter = AckCounter(alert.id, n)
    conn = await throwaway_client(mqtt_url, "reconnect-check", on_message=counter.on_message)
    try:
        codes = await conn.subscribe(["eb/v1/term/+/ack"], qos=1)
        if codes != [1]:
            raise RuntimeError(f"check subscription refused: {codes}")
        payload = TEST_SIGNER.sign(encode_alert(alert))
        started = time.monotonic()
        await conn.publish_acked(tree.topic(PROVINCE), payload)
        finished: float | None = None
        with contextlib.suppress(TimeoutError):
            finished = await asyncio.wait_for(asyncio.shield(counter.done), timeout)
    finally:
        conn.disconnect()
    return {
        "alert_id": alert.id,
        "played": len(counter.played),
        "acks": counter.acks,
        "seconds": None if finished is None else finished - started,
    }


# -- one run ----------------------------------------------------------------------------------


@dataclass
class Stage:
    """What every run shares: the servers and the terminals, connected in their child."""

    folder: Path
    tree: RegionTree
    terminals: list[dict[str, str]]
    mqtt: MosquittoServer
    rds: RedisServer
    sim: SimChild
    timeout: float
    kill: bool

    @property
    def n(self) -> int:
        return len(self.terminals)


async def wait_saved(mqtt: MosquittoServer, since: float, timeout: float) -> float | None:
    """Until mosquitto has written its database after ``since`` (wall clock); how long that
    took, or None. Bounded polling: the broker tells no one when it autosaves."""
    db = mqtt.data_dir / "mosquitto.db"
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        with contextlib.suppress(OSError):
            if db.stat().st_mtime > since:
                return time.monotonic() - started
        await asyncio.sleep(0.1)
    return None


async def one_run(bench: Stage, variant: str, index: int) -> dict[str, Any]:
    n = bench.n
    row: dict[str, Any] = {
        "variant": variant,
        "run": index,
        "mode": "kill" if bench.kill else "stop",
    }
    engine: EngineProcess | None = None
    watch: asyncio.Task[tuple[float | None, dict[str, float]]] | None = None
    base_states = 0.0
    base_connects: dict[str, float] = {}
    http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5))
    try:
        if variant == "with":
            engine = await start_engine(
                bench.folder / f"with-{index}", bench.rds.url, bench.mqtt.url, bench.terminals
            )
            # A new session gets every terminal's retained state: let the engine take that
            # backlog before the storm, or it would be counted as the storm's.
            idle_at, metrics = await wait_metrics(
                http,
                engine,
                lambda m: m.get(STATES, 0) >= n and m.get(BACKLOG, 1) == 0,
                ENGINE_IDLE_WAIT,
            )
            if idle_at is None:
                say(f"  ! the engine did not ingest the {n} retained states before the storm")
            base_states = metrics.get(STATES, 0.0)
            base_connects = links_connects(metrics)

        await bench.sim.wait_all_up(bench.timeout)
        if bench.kill:
            # A crash loses what was not saved; the storm measured is that of kept sessions.
            saved = await wait_saved(bench.mqtt, time.time(), AUTOSAVE_WAIT)
            if saved is None:
                raise RuntimeError("mosquitto did not save its database before the kill")

        mark = len(bench.sim.events)
        engine_cpu = engine.cpu_seconds() if engine is not None else 0.0
        peak_reset = engine is not None and engine.pid is not None and reset_peak_rss(engine.pid)
        rss_before = engine.memory_kb()[0] if engine is not None else 0
        t_stop = time.monotonic()
        await asyncio.to_thread(bench.mqtt.kill if bench.kill else bench.mqtt.stop)
        t_down = time.monotonic()
        # The engine's link, watched from the moment the broker is gone.
        if engine is not None:
            watch = asyncio.create_task(
                wait_metrics(
                    http,
                    engine,
                    lambda m: links_back(m, base_connects),
                    bench.timeout,
                )
            )
        await asyncio.to_thread(bench.mqtt.start)
        t_start = time.monotonic()
        broker_pid = bench.mqtt.pid
        try:
            done = await bench.sim.wait_event(lambda e: e["event"] == "all_up", mark, bench.timeout)
        except TimeoutError:
            done = None
        t_seen = time.monotonic()
        broker_cpu = cpu_seconds(broker_pid) if broker_pid is not None else None
        engine_cpu_storm = engine.cpu_seconds() - engine_cpu if engine is not None else None
        row.update(
            stop_s=t_down - t_stop,
            start_s=t_start - t_down,
            broker_cpu_s=broker_cpu,
        )
        if done is None:
            row.update(seconds=None, up=bench.sim.up)
        else:
            # The broker accepted by the time its probe had a CONNACK, or a terminal was in.
            t0 = min(t_start, done["first"])
            row.update(
                seconds=done["last"] - t0,
                from_stop_s=done["last"] - t_stop,
                first_s=done["first"] - t0,
                p50_s=done["p50"] - t0,
                p90_s=done["p90"] - t0,
                p99_s=done["p99"] - t0,
                lost_after_s=done["began"] - t_stop,
                all_lost=done["min_up"] == 0,
                session_present=done["session_present"],
                resubscribed=done["resubscribed"],
                failed_attempts=done["failed_attempts"],
                flaps=done["flaps"],
                curve=[
                    [round(e["t"] - t0, 3), e["up"]]
                    for e in bench.sim.events[mark:]
                    if e["event"] in ("storm", "progress", "all_down", "all_up")
                ],
            )
        if engine is not None and watch is not None:
            link_at, _ = await watch
            settled_at, _ = await wait_metrics(
                http,
                engine,
                lambda m: m.get(STATES, 0) >= base_states + n and m.get(BACKLOG, 1) == 0,
                ENGINE_IDLE_WAIT,
            )
            t0 = min(t_start, done["first"]) if done is not None else t_start
            row["engine"] = {
                "cpu_storm_s": engine_cpu_storm,
                "cpu_to_settled_s": engine.cpu_seconds() - engine_cpu,
                "peak_rss_mb": engine.memory_kb()[1] / 1024 if peak_reset else None,
                "rss_before_mb": rss_before / 1024,
                "link_up_s": None if link_at is None else link_at - t0,
                "settled_s": None if settled_at is None else settled_at - t0,
                "storm_observed_until_s": t_seen - t0,
            }

        # Outside the timed window: every terminal really gets a message.
        if done is not None:
            before = await read_metrics(http, engine) if engine is not None else None
            check = await verify(bench.mqtt.url, bench.tree, n, bench.timeout)
            if engine is not None and before is not None:
                # The engine's own ack subscription came back too: it records them all.
                wanted = acks_seen(before) + check["acks"]
                seen_at, after = await wait_metrics(
                    http, engine, lambda m: acks_seen(m) >= wanted, 60.0
                )
                check["engine_acks"] = int(acks_seen(after) - acks_seen(before))
                check["engine_ok"] = seen_at is not None
            row["check"] = check
    finally:
        if watch is not None and not watch.done():
            watch.cancel()
        await http.close()
        if engine is not None:
            await engine.stop()
            # Nothing queued for an absent engine in the runs without it.
            try:
                await forget_sessions(bench.mqtt.url, ENGINE_CLIENT_IDS)
            except (OSError, MqttLiteError, TimeoutError) as exc:
                say(f"  ! the engine's sessions stay in the broker: {exc!r}")
    return row


def complete(row: dict[str, Any], n: int) -> bool:
    check = row.get("check") or {}
    engine_ok = row["variant"] == "without" or bool(check.get("engine_ok"))
    return row.get("seconds") is not None and check.get("played") == n and engine_ok


def describe(row: dict[str, Any], n: int) -> str:
    if row.get("seconds") is None:
        return f"TIMEOUT ({row.get('up')}/{n} up)"
    check = row.get("check", {})
    text = (
        f"{row['seconds']:.3f} s to all {n} subscribed again"
        f" (first {row['first_s']:.2f}, p50 {row['p50_s']:.2f}, p90 {row['p90_s']:.2f},"
        f" p99 {row['p99_s']:.2f}; broker down {row['stop_s']:.2f} s, up in {row['start_s']:.2f} s;"
        f" {row['session_present']} sessions kept, {row['resubscribed']} resubscribed,"
        f" {row['failed_attempts']} refused attempts; broker CPU {fmt(row['broker_cpu_s'])} s)"
        f"; check: {check.get('played')}/{n} played"
    )
    eng = row.get("engine")
    if eng is not None:
        text += (
            f", engine saw {check.get('engine_acks')} acks"
            f"\n      engine: link up {fmt(eng['link_up_s'], suffix=' s')},"
            f" states ingested {fmt(eng['settled_s'], suffix=' s')},"
            f" CPU {fmt(eng['cpu_storm_s'])} s in the storm"
            f" ({fmt(eng['cpu_to_settled_s'])} s until settled),"
            f" peak RSS {fmt(eng['peak_rss_mb'], 0)} MB"
        )
    return text


def medians(rows: list[dict[str, Any]]) -> dict[str, Any]:
    def of(key: str) -> float | None:
        return median([r.get(key) for r in rows]) if rows else None

    def of_engine(key: str) -> float | None:
        return median([(r.get("engine") or {}).get(key) for r in rows]) if rows else None

    result: dict[str, Any] = {
        key: of(key)
        for key in ("seconds", "p50_s", "p90_s", "p99_s", "stop_s", "start_s", "broker_cpu_s")
    }
    if rows and rows[0]["variant"] == "with":
        result.update(
            {
                f"engine_{key}": of_engine(key)
                for key in ("cpu_storm_s", "peak_rss_mb", "link_up_s", "settled_s")
            }
        )
    return result


def table(results: dict[str, list[dict[str, Any]]], summary: dict[str, Any]) -> str:
    lines = [
        "| variant | runs | all subscribed again s | p50 s | p90 s | p99 s | broker CPU s"
        " | engine CPU s | engine peak RSS MB | engine link up s | engine states in s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for variant in VARIANTS:
        m = summary["median"][variant]
        lines.append(
            f"| {variant} engine | {len(results[variant])} | {fmt(m['seconds'], 3)}"
            f" | {fmt(m['p50_s'])} | {fmt(m['p90_s'])} | {fmt(m['p99_s'])}"
            f" | {fmt(m['broker_cpu_s'])} | {fmt(m.get('engine_cpu_storm_s'))}"
            f" | {fmt(m.get('engine_peak_rss_mb'), 0)} | {fmt(m.get('engine_link_up_s'))}"
            f" | {fmt(m.get('engine_settled_s'))} |"
        )
    share, pct = summary["engine_share_s"], summary["engine_share_pct"]
    lines.append("")
    lines.append(
        f"Engine's share: {fmt(share, 3, ' s')} ({fmt(pct, 1, ' %')} of the time without it)"
    )
    return "\n".join(lines)


class Reconnect(Benchmark, name="reconnect", out="bench-reconnect.json"):
    def __init__(self, args: argparse.Namespace) -> None:
        super().__init__(args)
        self.terminals = pick_terminals(args.terminals)
        self.results_: dict[str, list[dict[str, Any]]] = {variant: [] for variant in VARIANTS}
        self.sim_connect_s: float | None = None

    @classmethod
    def arguments(cls, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--terminals", type=int, default=17_498, help="simulated terminals")
        parser.add_argument("--runs", type=int, default=3, help="runs of each variant")
        parser.add_argument("--timeout", type=float, default=300.0, help="seconds a step may take")
        parser.add_argument(
            "--kill", action="store_true", help="SIGKILL the broker instead of stopping it"
        )

    @staticmethod
    def simulator(
        terminals: list[SimTerminal], mqtt_url: str, out: TextIO, **options: Any
    ) -> tuple[Simulator, Callable[[], int] | None]:
        sim = WatchedSimulator(terminals, mqtt_url, out, **options)
        return sim, lambda: sim.up

    async def measure(self, folder: Path) -> None:
        args, n = self.args, len(self.terminals)
        mqtt = MosquittoServer(folder / "mosquitto")
        rds = RedisServer(folder / "redis")
        sim = SimChild(folder, self.terminals, mqtt.url, args.timeout, self.script)
        try:
            await asyncio.to_thread(mqtt.start)
            await asyncio.to_thread(rds.start)
            await grant_terminals(mqtt, self.terminals)
            say(f"… {n} terminals: connecting the simulator")
            self.sim_connect_s = round(await sim.start(args.timeout), 1)
            say(f"  connected in {self.sim_connect_s} s")
            stage = Stage(folder, fujian(), self.terminals, mqtt, rds, sim, args.timeout, args.kill)
            for i in range(1, args.runs + 1):
                # ABBA: whichever variant comes right after the other's run has the same share
                # of first places, so an order effect does not pass for the engine's share.
                for variant in VARIANTS if i % 2 else VARIANTS[::-1]:
                    row = await one_run(stage, variant, i)
                    self.results_[variant].append(row)
                    label = f"{variant} engine"
                    say(f"  {label:<14} #{i}: {describe(row, n)}")
        finally:
            await sim.stop()
            await asyncio.to_thread(rds.stop)
            await asyncio.to_thread(mqtt.stop)

    def summary(self) -> dict[str, Any]:
        """The medians of each variant and the engine's share of the time."""
        median = {variant: medians(self.results_[variant]) for variant in VARIANTS}
        without, with_engine = median["without"]["seconds"], median["with"]["seconds"]
        share = with_engine - without if without is not None and with_engine is not None else None
        return {
            "median": median,
            "engine_share_s": share,
            "engine_share_pct": 100 * share / without if share is not None and without else None,
        }

    def results(self) -> dict[str, Any]:
        report: dict[str, Any] = {
            "terminals": len(self.terminals),
            "runs": self.args.runs,
            "mode": "kill" if self.args.kill else "stop",
            "results": self.results_,
        }
        if self.sim_connect_s is not None:
            report["sim_connect_s"] = self.sim_connect_s
        return {**report, **self.summary()}

    def table(self) -> str:
        return table(self.results_, self.summary())

    def complete(self) -> bool:
        n, runs = len(self.terminals), self.args.runs
        return all(
            len(rows) == runs and all(complete(r, n) for r in rows)
            for rows in self.results_.values()
        )


if __name__ == "__main__":
    sys.exit(main(Reconnect))
