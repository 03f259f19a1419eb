"""API under load: county offices issue alerts while a province-wide wave is in flight.

    .venv/bin/python bench/api_load.py                   # 17,498 terminals, 50 offices, 3 runs
    .venv/bin/python bench/api_load.py --terminals 1000 --offices 10 --runs 1

It starts its own mosquitto and redis-server (``dispatcher.embedded``) in a temporary folder and
one simulated terminal per village for ``--terminals`` villages spread evenly over Fujian, in a
child process (``harness.SimChild``: the terminals get a core of their own). Then, per run:

    engine   a fresh ``python -m dispatcher serve`` (``harness.province_engine``) on a flushed
             Redis, with the province office and ``--offices`` county offices (``[[offices]]``:
             each its own id, token and a distinct Fujian county, spread evenly over the
             province). The engine has no per-office rate limit or quota, so nothing needs
             configuring for the load. The terminals are registered through the API.
    wave     the province office POSTs a red alert for ``35`` and follows it with
             GET /api/v1/alerts/{id} every 50 ms until played == N (as bench/province_wave.py).
    load     as soon as that POST has its 201, every county office issues yellow and blue
             alerts for its own county (expires_in 60 s, an Idempotency-Key each, as a client
             that retries safely sends), one every ``--interval`` seconds (default 5: fifty
             offices offer 10 alerts/s, each reaching ~200 terminals that ack twice, far above
             any real typhoon night), staggered over the interval, one request in flight per
             office. Smaller intervals show how latency grows as the two cores saturate;
             ``--interval 0`` sends back to back: the engine's saturation throughput. An
             office stops once it has issued ``--alerts-per-office`` AND the wave has ended:
             the load covers the whole wave however long it takes, and every run has at least
             offices × alerts-per-office
             samples.

Each office is an aiohttp session of its own with a one-connection connector: 50 offices are
50 independent clients, each on its own keep-alive connection (opened by a warm-up request
before the wave, which also checks the office's token), and no request ever waits for a pool
slot in this process, so what is timed is the engine's answer. A request is timed from the
send until its status line and headers are read. Anything but 201 (or no answer within 30 s)
is a failure and is reported with its body; the percentiles are over every request. With
``--interval 0`` the offices are a closed loop (each waits for its answer before sending
again), so the engine runs saturated and the latency includes its queue: mean latency ≈
offices / issues per second; that mode measures throughput, the default measures latency.

Each county alert also reaches the terminals of its county, which ack it (received and
played) like the wave's alert: the county load is an ack load on the engine as well.

Between runs Redis is flushed and the stopped engine's persistent broker session discarded,
so no alert, outbox entry or queued ack of one run loads the next.

Per run: issue latency p50/p90/p99/max (also of the requests sent while the wave was in
flight), successful issues per second over the load window (first send to last answer),
failures, the wave's seconds to played == N, the engine's CPU seconds in the window and since
its start, its peak RSS, and the CPU seconds in the window of every process started here
(engine, redis, mosquitto, simulator, this client) and of the whole machine: "others" is what
processes not started here took, so a run that shared the cores with other work says so.
Prints every run, then a Markdown table of the medians against the target (issue p99 ≤
100 ms), and writes everything to ``--out`` (JSON). Exits 0 when every run completed (the
wave reached N) without a failed issue, 1 otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import sys
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import redis.asyncio as aioredis
from figures import fmt, median, percentiles
from harness import (
    PROVINCE,
    PROVINCE_OFFICE,
    REGISTER_PART,
    TOKEN,
    SimChild,
    forget_sessions,
    fujian,
    grant_terminals,
    issue,
    pick_terminals,
    province_api,
    province_engine,
)
from skeleton import Benchmark, main, say

from dispatcher.core.regions import Level
from dispatcher.embedded.processes import MosquittoServer, RedisServer
from tests.support.engine_process import EngineApi, cpu_seconds

INSTANCE = "ebd-api"
POLL = 0.05
REQUEST_TIMEOUT = 30.0
SIM_TIMEOUT = 600.0
TARGET_P99_MS = 50.0  # issue 15 (it was 100 ms before)
# Failures printed per run; the JSON file has every one.
SHOW_FAILURES = 20


def machine_busy_seconds() -> float:
    """CPU seconds all cores have spent busy since boot (/proc/stat): with the CPU of our own
    processes it tells how much of the machine something else took during a run."""
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(f) for f in fields[:8])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


class CpuMeter:
    """CPU seconds of the engine, the servers, the simulator, this process and the whole
    machine over one window."""

    def __init__(self, pids: Mapping[str, int | None]) -> None:
        self.pids = {name: pid for name, pid in pids.items() if pid is not None}
        self.before = self._read()

    def _read(self) -> dict[str, float]:
        values = {name: cpu_seconds(pid) for name, pid in self.pids.items()}
        values["bench"] = time.process_time()
        values["machine"] = machine_busy_seconds()
        return values

    def stop(self) -> dict[str, float]:
        after = self._read()
        used = {name: after[name] - self.before[name] for name in after}
        ours = sum(v for name, v in used.items() if name != "machine")
        # Clock ticks make this a little noisy; what matters is whether it is near zero.
        used["others"] = max(0.0, used["machine"] - ours)
        return used


# -- offices ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CountyOffice:
    id: str
    name: str
    region: str
    region_name: str
    token: str

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


def pick_offices(k: int) -> list[CountyOffice]:
    """``k`` county offices for distinct counties, spread evenly over the province, each with
    a fresh token."""
    counties = fujian().descendants(PROVINCE, level=Level.COUNTY)
    if not 1 <= k <= len(counties):
        raise SystemExit(f"--offices must be from 1 to {len(counties)} (one per county)")
    chosen = [counties[i * len(counties) // k] for i in range(k)]
    return [
        CountyOffice(
            id=f"county-{c.code}",
            name=f"{c.name}应急管理局",
            region=c.code,
            region_name=c.name,
            token=secrets.token_urlsafe(32),
        )
        for c in chosen
    ]


def offices_config(offices: list[CountyOffice]) -> dict[str, tuple[str, str, str]]:
    """The engine's offices: the province's and the counties' (token → id, name, region)."""
    return {TOKEN: PROVINCE_OFFICE, **{o.token: (o.id, o.name, o.region) for o in offices}}


def county_alert(office: CountyOffice, i: int) -> dict[str, Any]:
    severity, label = ("yellow", "黄色") if i % 2 == 0 else ("blue", "蓝色")
    return {
        "event": "暴雨",
        "event_code": "11B03",
        "severity": severity,
        "headline": f"{office.region_name}暴雨{label}预警（演练数据）",
        "text": "预计未来3小时降雨量将达50毫米以上，请远离低洼地带。",
        "areas": [office.region],
        # The API's minimum, so the terminals soon forget them; their delivery is not followed.
        "expires_in": 60,
    }


# -- one run ----------------------------------------------------------------------------------


@dataclass(slots=True)
class Issue:
    office: str
    sent: float  # perf_counter at the send
    latency: float  # seconds until the status line and headers were read
    status: int | None  # None: no answer (timeout, connection error)
    body: Any = None  # kept for failures only
    during_wave: bool = True


@dataclass(slots=True)
class Load:
    go: asyncio.Event = field(default_factory=asyncio.Event)
    wave_done: asyncio.Event = field(default_factory=asyncio.Event)
    issues: list[Issue] = field(default_factory=list)


async def warm_up(http: aiohttp.ClientSession, base_url: str, office: CountyOffice) -> None:
    """Open the office's connection and check its token before anything is timed."""
    async with http.get(f"{base_url}/api/v1/regions/{office.region}") as response:
        body = await response.text()
        if response.status != 200:
            raise RuntimeError(f"office {office.id} warm-up: {response.status} {body[:300]}")


async def office_load(
    http: aiohttp.ClientSession,
    base_url: str,
    office: CountyOffice,
    load: Load,
    at_least: int,
    deadline: float,
    interval: float,
    phase: float,
) -> None:
    url = f"{base_url}/api/v1/alerts"
    await load.go.wait()
    # Open loop when ``interval`` > 0: the office issues on its own clock (staggered by
    # ``phase`` so fifty offices do not fire in the same millisecond), not when the engine
    # has answered; a late answer delays only that office's next alert.
    next_at = time.monotonic() + phase
    i = 0
    while time.monotonic() < deadline and not (i >= at_least and load.wave_done.is_set()):
        if interval > 0:
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))
            next_at += interval
        body = county_alert(office, i)
        headers = {"Idempotency-Key": f"api-load-{uuid.uuid4().hex}"}
        during = not load.wave_done.is_set()
        sent = time.perf_counter()
        try:
            async with http.post(url, json=body, headers=headers) as response:
                latency = time.perf_counter() - sent
                status = response.status
                # The body is read in any case so the connection can carry the next request.
                raw = await response.read()
        except (aiohttp.ClientError, TimeoutError) as exc:
            load.issues.append(
                Issue(office.id, sent, time.perf_counter() - sent, None, repr(exc), during)
            )
        else:
            kept = None
            if status != 201:
                try:
                    kept = json.loads(raw)
                except ValueError:
                    kept = raw.decode("utf-8", "replace")[:2000]
            load.issues.append(Issue(office.id, sent, latency, status, kept, during))
        i += 1


async def follow_wave(
    api: EngineApi,
    alert_id: str,
    n: int,
    started: float,
    deadline: float,
    load: Load,
) -> dict[str, Any]:
    """Poll the province alert until played == n (or the deadline); the load hears of the end
    through ``load.wave_done`` whichever way it ends."""
    played, expected, seconds = 0, None, None
    slowest_poll = 0.0
    try:
        while time.monotonic() < deadline:
            asked = time.monotonic()
            delivery = await api.try_delivery(alert_id, timeout=120)
            slowest_poll = max(slowest_poll, time.monotonic() - asked)
            if delivery is not None:
                played = int(delivery.get("played", 0))
                expected = delivery.get("expected")
                if played >= n:
                    seconds = time.monotonic() - started
                    break
            await asyncio.sleep(POLL)
    finally:
        load.wave_done.set()
    return {
        "wave_s": seconds,
        "played": played,
        "expected": expected,
        "slowest_poll_ms": slowest_poll * 1000,
    }


def server_side_ms(metrics: str, method: str, route: str) -> dict[str, float | None]:
    """p50 and p99 of one route's ``ebd_api_request_seconds`` histogram, in ms: the upper
    bound of the bucket each falls in (Prometheus' own resolution)."""
    buckets: list[tuple[float, float]] = []
    for line in metrics.splitlines():
        if not line.startswith("ebd_api_request_seconds_bucket{"):
            continue
        labels, _, count = line.partition("} ")
        pairs = dict(part.split("=", 1) for part in labels.partition("{")[2].split(","))
        if pairs.get("method") == f'"{method}"' and pairs.get("route") == f'"{route}"':
            buckets.append((float(pairs["le"].strip('"')), float(count)))
    total = buckets[-1][1] if buckets else 0.0
    out: dict[str, float | None] = {"n": total}
    for name, q in (("p50", 0.5), ("p99", 0.99)):
        hit = next((bound for bound, count in buckets if total and count >= q * total), None)
        out[name] = None if hit is None else hit * 1000
    return out


async def reset_between_runs(redis_url: str, mqtt_url: str) -> None:
    """Nothing of a previous run may load the next: county alerts still in the outbox would be
    dispatched by the next engine, and the stopped engine's persistent broker session (the
    broker queues without limit) would keep collecting every ack of the next run."""
    rdb = aioredis.Redis.from_url(redis_url)
    try:
        await rdb.flushall()
    finally:
        await rdb.aclose()
    await forget_sessions(mqtt_url, [INSTANCE])


# Redis commands slower than this are kept in its slow log (microseconds): a command that
# holds Redis this long holds every issue request's round trip behind it.
SLOW_US = 2000


async def slow_commands(redis_url: str, *, reset: bool = False) -> dict[str, Any]:
    """Redis's slow log since the last reset: how many commands took over ``SLOW_US``, the
    longest, and the slowest by command (EVALSHA: by its first key's prefix)."""
    rdb = aioredis.Redis.from_url(redis_url)
    try:
        if reset:
            await rdb.config_set("slowlog-log-slower-than", SLOW_US)
            await rdb.config_set("slowlog-max-len", 1024)
            await rdb.slowlog_reset()
            return {}
        entries = await rdb.slowlog_get(1024)
    finally:
        await rdb.aclose()
    by_kind: dict[str, list[float]] = {}
    for entry in entries:
        command = entry.get("command", b"")
        words = (
            command.decode("utf-8", "replace") if isinstance(command, bytes) else str(command)
        ).split()
        kind = words[0].upper() if words else "?"
        if kind in ("EVALSHA", "EVAL", "FCALL") and len(words) > 3:
            kind += " " + words[3].rsplit(":", 1)[0]
        by_kind.setdefault(kind, []).append(entry["duration"] / 1000)
    return {
        "over_ms": SLOW_US / 1000,
        "count": len(entries),
        "max_ms": max((d for ds in by_kind.values() for d in ds), default=0.0),
        "by_command": {
            k: {"count": len(ds), "max_ms": max(ds), "total_ms": sum(ds)}
            for k, ds in sorted(by_kind.items(), key=lambda kv: -sum(kv[1]))[:6]
        },
    }


async def run_once(
    folder: Path,
    redis_url: str,
    mqtt_url: str,
    terminals: list[dict[str, str]],
    offices: list[CountyOffice],
    at_least: int,
    interval: float,
    timeout: float,
    service_pids: Mapping[str, int | None],
    dispatch: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    await reset_between_runs(redis_url, mqtt_url)
    await slow_commands(redis_url, reset=True)
    engine = province_engine(
        folder,
        redis_url=redis_url,
        mqtt_url=mqtt_url,
        instance=INSTANCE,
        offices=offices_config(offices),
        log_level="warning",
        dispatch=dispatch,
    )
    n = len(terminals)
    load = Load()
    timeouts = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT)
    sessions: list[aiohttp.ClientSession] = []
    try:
        await engine.start()
        async with province_api(engine, timeout=120) as api:
            await api.register(terminals, part=REGISTER_PART)
            for office in offices:
                sessions.append(
                    aiohttp.ClientSession(
                        connector=aiohttp.TCPConnector(limit=1),
                        headers=office.auth,
                        timeout=timeouts,
                    )
                )
            await asyncio.gather(
                *(warm_up(s, engine.base_url, o) for s, o in zip(sessions, offices, strict=True))
            )
            meter = CpuMeter({"engine": engine.pid, **service_pids})
            window_started = time.perf_counter()
            started = time.monotonic()
            deadline = started + timeout
            alert_id = await issue(api)
            province_issue_s = time.monotonic() - started
            load_started = time.perf_counter()
            load.go.set()
            offices_done = asyncio.gather(
                *(
                    office_load(
                        s,
                        engine.base_url,
                        o,
                        load,
                        at_least,
                        deadline,
                        interval,
                        interval * k / len(offices),
                    )
                    for k, (s, o) in enumerate(zip(sessions, offices, strict=True))
                )
            )
            try:
                wave = await follow_wave(api, alert_id, n, started, deadline, load)
            finally:
                # follow_wave has set wave_done however it ended, so the offices stop after
                # their minimum count; none is left running when the sessions close.
                await offices_done
            load_ended = time.perf_counter()
            cpu = meter.stop()
            cpu_total = engine.cpu_seconds()
            peak_rss_mb = engine.memory_kb()[1] / 1024
            async with api.http.get(f"{engine.base_url}/metrics") as response:
                engine_side = server_side_ms(await response.text(), "POST", "/api/v1/alerts")
            redis_slow = await slow_commands(redis_url)
    finally:
        for session in sessions:
            await session.close()
        await engine.stop()

    ok = [i for i in load.issues if i.status == 201]
    failures = [
        {"office": i.office, "status": i.status, "body": i.body, "latency_ms": i.latency * 1000}
        for i in load.issues
        if i.status != 201
    ]
    last_answer = max((i.sent + i.latency for i in load.issues), default=load_ended)
    window = last_answer - load_started
    return {
        "alert_id": alert_id,
        "redis_slow": redis_slow,
        **wave,
        "province_issue_ms": province_issue_s * 1000,
        "issues": len(load.issues),
        "issued_during_wave": sum(1 for i in load.issues if i.during_wave),
        "ok": len(ok),
        "failures": failures,
        "latency_ms": percentiles([i.latency for i in load.issues]),
        "latency_ms_during_wave": percentiles([i.latency for i in load.issues if i.during_wave]),
        # The engine's own time over each issue (its ebd_api_request_seconds histogram, so
        # bucket bounds): the rest of what the office waited was the machine's.
        "engine_side_ms": engine_side,
        "load_s": window,
        "issues_per_s": len(ok) / window if window > 0 else None,
        "cpu_s": cpu["engine"],
        "cpu_total_s": cpu_total,
        "peak_rss_mb": peak_rss_mb,
        # CPU seconds in the window (wave and load) per process; "machine" is every core's
        # busy time, "others" what processes not started here took of it.
        "window_s": load_ended - window_started,
        "window_cpu_s": cpu,
        # Every request in send order, for a closer look: (office, ms after the load began,
        # latency ms, status).
        "requests": [
            [
                i.office,
                round((i.sent - load_started) * 1000, 1),
                round(i.latency * 1000, 2),
                i.status,
            ]
            for i in sorted(load.issues, key=lambda i: i.sent)
        ],
    }


def complete(run: dict[str, Any]) -> bool:
    return run.get("wave_s") is not None and not run.get("failures") and not run.get("error")


def show_run(index: int, run: dict[str, Any]) -> None:
    if "error" in run:
        say(f"  run #{index}: FAILED {run['error']}")
        return
    lat, in_wave = run["latency_ms"], run["latency_ms_during_wave"]
    wave = "TIMEOUT" if run["wave_s"] is None else f"{run['wave_s']:.3f} s"
    say(
        f"  run #{index}: {run['ok']}/{run['issues']} issued in {run['load_s']:.2f} s"
        f" = {fmt(run['issues_per_s'], 1)}/s; latency ms p50 {fmt(lat['p50'], 1)}"
        f" p90 {fmt(lat['p90'], 1)} p99 {fmt(lat['p99'], 1)} max {fmt(lat['max'], 1)}"
    )
    say(
        f"          the {run['issued_during_wave']} sent during the wave: p50"
        f" {fmt(in_wave['p50'], 1)} p99 {fmt(in_wave['p99'], 1)} max {fmt(in_wave['max'], 1)}"
    )
    side = run.get("engine_side_ms") or {}
    say(
        f"          the engine's own time over an issue (histogram buckets): p50 ≤"
        f" {fmt(side.get('p50'), 0)} ms, p99 ≤ {fmt(side.get('p99'), 0)} ms"
    )
    say(
        f"          wave {wave} (played {run['played']}/{run['expected']}, slowest poll"
        f" {run['slowest_poll_ms']:.0f} ms); engine CPU {run['cpu_s']:.2f} s in the window,"
        f" {run['cpu_total_s']:.2f} s total, peak RSS {run['peak_rss_mb']:.0f} MB"
    )
    slow = run.get("redis_slow") or {}
    if slow:
        kinds = "; ".join(
            f"{k} {v['count']}× max {v['max_ms']:.1f} ms" for k, v in slow["by_command"].items()
        )
        say(
            f"          Redis commands over {slow['over_ms']:g} ms: {slow['count']}"
            f" (longest {slow['max_ms']:.1f} ms){': ' + kinds if kinds else ''}"
        )
    cpu = run["window_cpu_s"]
    shares = ", ".join(f"{name} {cpu[name]:.2f}" for name in cpu if name != "machine")
    say(
        f"          CPU s in the {run['window_s']:.2f} s window: {shares}"
        f" (machine {cpu['machine']:.2f} of {os.cpu_count() or 1} cores ×"
        f" {run['window_s']:.2f} s)"
    )
    for failure in run["failures"][:SHOW_FAILURES]:
        body = json.dumps(failure["body"], ensure_ascii=False)
        say(f"          ! {failure['office']}: {failure['status']} {body}")
    if len(run["failures"]) > SHOW_FAILURES:
        say(f"          ! … {len(run['failures']) - SHOW_FAILURES} more failures in the JSON file")


def medians(runs: list[dict[str, Any]]) -> dict[str, float | None]:
    done = [r for r in runs if "error" not in r]
    if not done:
        return {}
    return {
        "p50_ms": median([r["latency_ms"]["p50"] for r in done]),
        "p90_ms": median([r["latency_ms"]["p90"] for r in done]),
        "p99_ms": median([r["latency_ms"]["p99"] for r in done]),
        "max_ms": median([r["latency_ms"]["max"] for r in done]),
        "issues_per_s": median([r["issues_per_s"] for r in done]),
        "failures": median([len(r["failures"]) for r in done]),
        "wave_s": median([r["wave_s"] for r in done]),
        "engine_cpu_s": median([r["cpu_s"] for r in done]),
        "engine_peak_rss_mb": median([r["peak_rss_mb"] for r in done]),
    }


def table(args: argparse.Namespace, m: dict[str, float | None], runs: int) -> str:
    lines = [
        "| terminals | offices | p50 ms | p90 ms | p99 ms | max ms | issues/s | failures"
        " | wave s | engine CPU s | engine peak RSS MB | runs |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        f"| {args.terminals:,} | {args.offices} | {fmt(m.get('p50_ms'), 1)}"
        f" | {fmt(m.get('p90_ms'), 1)} | {fmt(m.get('p99_ms'), 1)} | {fmt(m.get('max_ms'), 1)}"
        f" | {fmt(m.get('issues_per_s'), 1)} | {fmt(m.get('failures'), 0)}"
        f" | {fmt(m.get('wave_s'), 3)} | {fmt(m.get('engine_cpu_s'), 2)}"
        f" | {fmt(m.get('engine_peak_rss_mb'), 0)} | {runs} |",
    ]
    p99 = m.get("p99_ms")
    if p99 is not None:
        verdict = "met" if p99 <= TARGET_P99_MS else "NOT met"
        lines.append(f"\nTarget issue p99 ≤ {TARGET_P99_MS:.0f} ms: {verdict} ({p99:.1f} ms).")
    return "\n".join(lines)


class ApiLoad(Benchmark, name="api_load", out="bench-api.json"):
    def __init__(self, args: argparse.Namespace) -> None:
        super().__init__(args)
        self.terminals = pick_terminals(args.terminals)
        self.offices = pick_offices(args.offices)
        self.runs: list[dict[str, Any]] = []
        self.sim_connect_s: float | None = None

    @classmethod
    def arguments(cls, parser: argparse.ArgumentParser) -> None:
        parser.add_argument(
            "--terminals", type=int, default=17_498, help="simulated terminals, one per village"
        )
        parser.add_argument("--offices", type=int, default=50, help="county offices issuing alerts")
        parser.add_argument(
            "--alerts-per-office",
            type=int,
            default=3,
            help="alerts each office issues at least (it goes on until the wave has ended)",
        )
        parser.add_argument(
            "--interval",
            type=float,
            default=5.0,
            help="seconds between one office's alerts (open loop); 0: back to back (saturation)",
        )
        parser.add_argument("--runs", type=int, default=3, help="repetitions, each a fresh engine")
        parser.add_argument(
            "--ack-batch-size",
            type=int,
            default=None,
            help="the engine's [dispatch] ack_batch_size (default: the engine's own)",
        )
        parser.add_argument(
            "--sim-nice",
            type=int,
            default=0,
            help="run the simulated terminals niced (e.g. 19): on this one machine, the nearest "
            "to terminals on machines of their own, as in production (default 0: not niced)",
        )
        parser.add_argument("--timeout", type=float, default=300.0, help="seconds a run may take")

    @classmethod
    def misuse(cls, args: argparse.Namespace) -> str | None:
        if args.alerts_per_office < 1 or args.runs < 1:
            return "--alerts-per-office and --runs must be at least 1"
        return None

    async def measure(self, folder: Path) -> None:
        args = self.args
        mqtt = MosquittoServer(folder / "mosquitto")
        rds = RedisServer(folder / "redis")
        sim: SimChild | None = None
        try:
            await asyncio.to_thread(mqtt.start)
            await asyncio.to_thread(rds.start)
            await grant_terminals(mqtt, self.terminals)
            sim = SimChild(
                folder,
                self.terminals,
                mqtt.url,
                SIM_TIMEOUT,
                self.script,
                niceness=self.args.sim_nice,
            )
            say(f"… {args.terminals} terminals: connecting the simulator")
            started = time.monotonic()
            await sim.start(SIM_TIMEOUT)
            self.sim_connect_s = round(time.monotonic() - started, 1)
            say(f"  connected in {self.sim_connect_s} s")
            say(
                f"… {args.offices} county offices, each at least {args.alerts_per_office} alerts"
                " and until the wave has ended"
            )
            for i in range(args.runs):
                try:
                    run = await run_once(
                        folder / f"run-{i + 1}",
                        rds.url,
                        mqtt.url,
                        self.terminals,
                        self.offices,
                        args.alerts_per_office,
                        args.interval,
                        args.timeout,
                        {"redis": rds.pid, "mosquitto": mqtt.pid, "simulator": sim.pid},
                        dispatch=(
                            None
                            if args.ack_batch_size is None
                            else {"ack_batch_size": args.ack_batch_size}
                        ),
                    )
                except Exception as exc:  # one broken run must not hide the others
                    run = {"error": repr(exc)}
                self.runs.append(run)
                show_run(i + 1, run)
        finally:
            if sim is not None:
                await sim.stop()
            await asyncio.to_thread(rds.stop)
            await asyncio.to_thread(mqtt.stop)

    def results(self) -> dict[str, Any]:
        args = self.args
        report: dict[str, Any] = {
            "terminals": args.terminals,
            "offices": [{"id": o.id, "region": o.region, "name": o.name} for o in self.offices],
            "alerts_per_office": args.alerts_per_office,
            "interval_s": args.interval,
            "target_p99_ms": TARGET_P99_MS,
            "runs": self.runs,
        }
        if self.sim_connect_s is not None:
            report["sim_connect_s"] = self.sim_connect_s
        return {**report, "median": medians(self.runs)}

    def table(self) -> str:
        return table(self.args, medians(self.runs), len(self.runs))

    def complete(self) -> bool:
        return len(self.runs) == self.args.runs and all(complete(r) for r in self.runs)


if __name__ == "__main__":
    sys.exit(main(ApiLoad))
