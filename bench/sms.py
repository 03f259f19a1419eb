"""SMS benchmark: one province-wide red alert texted to N people through a rate-limited gateway.

    .venv/bin/python bench/sms.py                                   # 100,000 people at 2,000/s
    .venv/bin/python bench/sms.py --recipients 5000 --rate 1000     # the small run of `make bench`
    .venv/bin/python bench/sms.py --protocol aliyun --batch 200

Everything runs in a temporary folder: its own redis-server and mosquitto
(``dispatcher.embedded``), a sandbox gateway (the tests' ``tests/support/sms_sandbox.py``)
served from this process that throttles anything over ``--rate`` in a 1-second window, and the
engine as a process of its own (``python -m dispatcher serve``) configured with that gateway at
the same rate and with its receipts coming back to the engine's API. Then:

1. raw capacity: a plain aiohttp client posts batches of the engine's size straight to a
   second sandbox gateway with the same limit, paced naively at exactly the limit (a throttled
   batch goes to the front of the queue), and its achieved rate is measured;
2. N people with distinct mobile numbers (+86139…) spread over Fujian's villages are
   registered through ``POST /api/v1/recipients`` in parts of 5,000 (timed);
3. one red alert to the province (areas ["35"], channels ["sms"]); the engine's counts, the
   gateway's accepted messages and the engine's memory are printed every second;
4. once everyone is delivered (or ``--timeout``): the times from the POST to the last message
   the gateway accepted and to the last receipt applied, the achieved rate (messages accepted
   over the time from the first to the last) as a share of the limit and of the raw rate, the
   gateway's peak over any 1-second window, its throttled answers and duplicates, texts per
   phone, the engine's memory (VmRSS, VmHWM) and Redis's (INFO memory), and what the engine
   logged about its requests.

Exit status 1 when the peak went over the limit, the gateway throttled the engine, a phone was
texted twice, not everyone was delivered, or the achieved rate was under 97 % of the limit.

``--scenario priority`` (issue 15: red warnings first) measures instead what a red warning's
texts wait behind a province drill:

    .venv/bin/python bench/sms.py --scenario priority               # 100,000 drill texts at 2,000/s

N people are registered as above; a province-wide drill (status exercise) is issued to all of
them, and once it is planned and ``--red-after`` seconds of it were sent (so nearly all of it
is queued or in flight), an actual red warning to ``--red-area`` (鼓楼区 by default). Reported:
the drill texts the gateway took after the red's texts were queued (the engine's
``sms.planned``) and before its first one, in batches and seconds (target: at most one batch),
drill texts between the red's first and last, the red's times from its POST, how much of the
drill was still to send when the red was done, and whether the drill then completed. Exit
status 1 when more than one batch went ahead, the rate was exceeded, a phone got a text twice,
or either alert was not delivered to everyone.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import itertools
import json
import os
import statistics
import sys
import time
from collections import Counter, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import redis
from harness import PROVINCE, fujian, issue, province_api, province_engine
from skeleton import Benchmark, main, say

from adapters.sms.aliyun import API_VERSION, aliyun_phone, rpc_signature
from adapters.sms.gateway import out_id, split_out_id
from adapters.sms.pool import Pace
from dispatcher.core.regions import Level
from dispatcher.embedded.processes import MosquittoServer, RedisServer, free_port
from tests.support.engine_process import EngineApi, EngineProcess, cpu_seconds
from tests.support.sms_sandbox import (
    AliyunGatewayServer,
    GatewayServer,
    GenericGatewayServer,
    peak_in_window,
)

GATEWAY = "bench"
REGISTER_PART = 5000  # rows per POST /api/v1/recipients: ~0.5 MB, well under the 4 MB limit
RAW_TEXT = "【福建省应急管理厅】台风红色预警（演练数据）：预计未来24小时将有12级以上大风。"
# Issue 15: at least this share of the contracted rate, never above it.
TARGET_SHARE = 0.97
GULOU = "350102"


def phone(n: int) -> str:
    return f"+86139{n:08d}"


def mb(kb: float) -> str:
    """kB (as /proc reports them) in MB."""
    return f"{kb / 1024:,.0f} MB"


def redis_memory(client: redis.Redis) -> int:
    return int(client.info("memory")["used_memory"])


# -- raw gateway capacity ---------------------------------------------------------------------


@dataclass
class Raw:
    messages: int = 0
    requests: int = 0
    throttled: int = 0
    seconds: float = 0.0
    rate: float = 0.0
    peak: int = 0


def _raw_request(
    gw: GatewayServer, job: str, phones: Sequence[str]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(json=…, data=…) keyword arguments of one submit of ``phones`` in ``gw``'s protocol."""
    if isinstance(gw, GenericGatewayServer):
        messages = [
            {"id": out_id(job, p), "to": p, "text": RAW_TEXT, "segments": 2} for p in phones
        ]
        return {"messages": messages, "callback_url": None}, {}
    assert isinstance(gw, AliyunGatewayServer)
    form = {
        "AccessKeyId": gw.access_key_id,
        "Action": "SendSms",
        "Format": "JSON",
        "RegionId": "cn-hangzhou",
        "SignatureMethod": "HMAC-SHA1",
        "SignatureNonce": os.urandom(12).hex(),
        "SignatureVersion": "1.0",
        "Timestamp": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "Version": API_VERSION,
        "PhoneNumbers": ",".join(aliyun_phone(p) for p in phones),
        "SignName": "福建省应急管理厅",
        "TemplateCode": gw.template_code,
        "TemplateParam": json.dumps({"content": RAW_TEXT}, ensure_ascii=False),
        "OutId": job,
    }
    form["Signature"] = rpc_signature(form, gw.access_key_secret)
    return {}, form


async def raw_capacity(gw: GatewayServer, n: int, batch: int, rate: float) -> Raw:
    """Post ``n`` messages in batches of ``batch`` straight to ``gw``, one batch every
    ``batch / rate`` seconds (no bucket, no margin); a throttled batch is sent again next."""
    queue = deque(
        [f"+86138{i:08d}" for i in range(start, min(n, start + batch))]
        for start in range(0, n, batch)
    )
    out = Raw()
    interval = batch / rate
    in_flight: set[asyncio.Task[None]] = set()

    async def post(http: aiohttp.ClientSession, phones: list[str]) -> None:
        body, form = _raw_request(gw, "raw-bench", phones)
        async with http.post(gw.url, json=body or None, data=form or None) as response:
            answer = await response.json(content_type=None)
        out.requests += 1
        throttled = response.status == 429 or (
            isinstance(answer, dict) and answer.get("Code") == "isv.BUSINESS_LIMIT_CONTROL"
        )
        taken = response.status == 200 and (
            isinstance(gw, GenericGatewayServer) or answer.get("Code") == "OK"
        )
        if throttled:
            out.throttled += 1
            queue.appendleft(phones)
        elif not taken:
            raise RuntimeError(f"raw submit failed: {response.status} {answer}")

    started = time.monotonic()
    next_at = started
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http:
        while queue or in_flight:
            if not queue:
                await asyncio.wait(in_flight, return_when=asyncio.FIRST_COMPLETED)
                continue
            now = time.monotonic()
            if next_at > now:
                await asyncio.sleep(next_at - now)
            elif next_at < now - interval:
                next_at = now  # fell behind (waiting for a throttled batch): no catch-up burst
            task = asyncio.create_task(post(http, queue.popleft()))
            in_flight.add(task)
            task.add_done_callback(in_flight.discard)
            next_at += interval
        await asyncio.gather(*in_flight)
    times = [a.at for a in gw.accepted]
    out.messages = len(times)
    out.seconds = times[-1] - times[0] if len(times) > 1 else 0.0
    out.rate = (len(times) / out.seconds) if out.seconds else 0.0
    out.peak = peak_in_window(times)
    return out


# -- the engine run ---------------------------------------------------------------------------


class LoopLag:
    """How late this process's event loop wakes a 10 ms sleeper: the sandbox gateway stamps
    arrivals on this loop, so its lag is jitter the engine's pace must leave room for."""

    def __init__(self) -> None:
        self.lags: list[float] = []
        self.gc_pauses: list[float] = []
        self._gc_started = 0.0
        self._task: asyncio.Task[None] | None = None

    def _on_gc(self, phase: str, _info: dict[str, int]) -> None:
        if phase == "start":
            self._gc_started = time.perf_counter()
        else:
            self.gc_pauses.append(time.perf_counter() - self._gc_started)

    async def _watch(self) -> None:
        while True:
            before = time.monotonic()
            await asyncio.sleep(0.01)
            self.lags.append(time.monotonic() - before - 0.01)

    def __enter__(self) -> LoopLag:
        # What the setup left (100,000 registration rows and their answers) is never garbage:
        # out of the collector's sight, its full collections stop stalling the gateway's loop.
        gc.collect()
        gc.freeze()
        gc.callbacks.append(self._on_gc)
        self._task = asyncio.create_task(self._watch(), name="loop-lag")
        return self

    def __exit__(self, *_exc: object) -> None:
        gc.callbacks.remove(self._on_gc)
        gc.unfreeze()
        if self._task is not None:
            self._task.cancel()

    def summary(self) -> str:
        if not self.lags:
            return "not measured"
        ordered = sorted(self.lags)
        p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
        return (
            f"median {statistics.median(ordered) * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms, "
            f"max {ordered[-1] * 1000:.0f} ms; garbage collections {len(self.gc_pauses)}, "
            f"longest {max(self.gc_pauses, default=0.0) * 1000:.0f} ms"
        )


@dataclass
class Run:
    recipients: int
    rate: float
    register_seconds: float = 0.0
    post_to_201: float = 0.0
    to_first_accepted: float = 0.0
    to_last_accepted: float = 0.0
    to_all_delivered: float | None = None
    slowest_answer: float = 0.0  # the longest GET /api/v1/alerts/{id} while it ran
    accepted: int = 0
    achieved: float = 0.0
    achieved_planned: float = 0.0  # from the moment the engine logged sms.planned
    seconds_full: list[int] = field(default_factory=list)  # messages per whole second
    peak: int = 0
    peak_at: float = 0.0  # seconds after the POST that the peak window ended
    throttled: int = 0
    duplicates: int = 0
    max_per_phone: int = 0
    phones_texted: int = 0
    receipt_posts_not_ok: int = 0
    final: dict[str, Any] = field(default_factory=dict)
    rss_started_kb: int = 0
    rss_before_kb: int = 0
    rss_peak_kb: int = 0
    hwm_kb: int = 0
    redis_empty: int = 0
    redis_registered: int = 0
    redis_after: int = 0
    # CPU seconds from the POST until everyone was delivered, and that stretch's length.
    cpu_window: float = 0.0
    cpu: dict[str, float] = field(default_factory=dict)
    log: dict[str, Any] = field(default_factory=dict)
    loop_lag: str = ""
    gaps: list[float] = field(default_factory=list)  # between requests the gateway took

    @property
    def problems(self) -> list[str]:
        out = []
        if self.achieved < TARGET_SHARE * self.rate:
            out.append(
                f"achieved {self.achieved:,.0f}/s, under {TARGET_SHARE:.0%} of {self.rate:g}/s"
            )
        if self.peak > self.rate:
            out.append(f"peak {self.peak}/s over the limit {self.rate:g}/s")
        if self.throttled:
            out.append(f"the gateway throttled {self.throttled} requests")
        if self.duplicates or self.max_per_phone > 1:
            out.append(f"double texts (duplicates {self.duplicates}, max {self.max_per_phone})")
        if self.final.get("delivered") != self.recipients:
            out.append(f"delivered {self.final.get('delivered')} of {self.recipients}")
        return out


async def register(api: EngineApi, n: int) -> float:
    villages = fujian().descendants(PROVINCE, level=Level.VILLAGE)
    rows = [
        {
            "phone": phone(i),
            "name": f"测试{i}",
            "region": villages[i % len(villages)].code,
            "role": "resident",
        }
        for i in range(n)
    ]
    started = time.monotonic()
    created = 0
    for start in range(0, n, REGISTER_PART):
        part = rows[start : start + REGISTER_PART]
        async with api.http.post(f"{api.base_url}/api/v1/recipients", json=part) as response:
            reply = await response.json(content_type=None)
            if response.status != 200:
                raise RuntimeError(f"registration failed: {response.status} {reply}")
        created += int(reply["created"])
    seconds = time.monotonic() - started
    if created != n:
        raise RuntimeError(f"registered {created} new people, expected {n}")
    print(
        f"registered {n:,} people over {len(villages):,} villages in {seconds:.1f} s "
        f"({n / seconds:,.0f}/s, parts of {REGISTER_PART:,})",
        flush=True,
    )
    return seconds


async def send_alert(
    api: EngineApi, engine: EngineProcess, gw: GatewayServer, run: Run, timeout: float
) -> tuple[str, float, float]:
    """Issue the alert and watch it to the end; (alert id, POST monotonic, POST wall time)."""
    posted, posted_wall = time.monotonic(), time.time()
    alert_id = await issue(api, instruction="请立即转移至安全场所。", channels=["sms"])
    run.post_to_201 = time.monotonic() - posted
    print(f"alert {alert_id}: 201 after {run.post_to_201 * 1000:.0f} ms", flush=True)
    print(
        f"{'t':>5}  {'gw accepted':>11}  {'/s':>5}  {'submitted':>9}  {'delivered':>9}  {'/s':>5}"
        f"  {'queued':>7}  {'in flight':>9}  {'engine RSS':>10}",
        flush=True,
    )
    deadline = posted + timeout
    last_print, last_accepted, last_delivered = posted, 0, 0
    sms: dict[str, Any] = {}
    while True:
        await asyncio.sleep(0.1)
        asked = time.monotonic()
        delivery = await api.try_delivery(alert_id, timeout=120, detail="city")
        now = time.monotonic()
        run.slowest_answer = max(run.slowest_answer, now - asked)
        if delivery is not None:
            sms = dict(delivery.get("sms") or {})
        rss, _ = engine.memory_kb()
        run.rss_peak_kb = max(run.rss_peak_kb, rss)
        delivered = int(sms.get("delivered", 0))
        ended = sum(int(sms.get(k, 0)) for k in ("delivered", "failed", "cancelled", "expired"))
        finished = sms.get("recipients") == run.recipients and ended >= run.recipients
        if finished and delivered == run.recipients:
            run.to_all_delivered = now - posted
        if finished or now > deadline or not engine.running or now - last_print >= 1.0:
            accepted = len(gw.accepted)
            span = now - last_print
            in_flight = int(sms.get("submitting", 0)) + int(sms.get("unknown", 0))
            print(
                f"{now - posted:5.1f}  {accepted:>11,}  {(accepted - last_accepted) / span:>5.0f}"
                f"  {int(sms.get('submitted', 0)):>9,}  {delivered:>9,}"
                f"  {(delivered - last_delivered) / span:>5.0f}  {int(sms.get('queued', 0)):>7,}"
                f"  {in_flight:>9,}  {mb(rss):>10}",
                flush=True,
            )
            last_print, last_accepted, last_delivered = now, accepted, delivered
        if finished or now > deadline or not engine.running:
            break
    run.final = sms
    if not engine.running:
        print(f"!! the engine died; see {engine.log_path}", flush=True)
    elif not finished:
        print(f"!! not finished after {timeout:.0f} s", flush=True)
    return alert_id, posted, posted_wall


def score_gateway(gw: GatewayServer, run: Run, posted: float, planned_after: float | None) -> None:
    times = [a.at for a in gw.accepted]
    run.accepted = len(times)
    if not times:
        return
    first, last = times[0], times[-1]
    run.to_first_accepted = first - posted
    run.to_last_accepted = last - posted
    run.achieved = len(times) / (last - first) if last > first else 0.0
    if planned_after is not None:
        later = [t for t in times if t >= posted + planned_after]
        if len(later) > 1:
            run.achieved_planned = len(later) / (later[-1] - later[0])
    per_second = Counter(int(t - first) for t in times)
    run.seconds_full = [per_second[s] for s in range(int(last - first))]  # whole seconds only
    run.peak = peak_in_window(times)
    low = 0
    for high, now in enumerate(times):  # where that peak was: the same two pointers
        while times[low] <= now - 1.0:
            low += 1
        if high - low + 1 == run.peak:
            run.peak_at = now - posted
            break
    run.gaps = [b - a for a, b in itertools.pairwise(sorted(set(times)))]
    run.throttled = gw.throttled
    run.duplicates = gw.duplicates
    texts = Counter(a.phone for a in gw.accepted)  # = gw.sent_count(phone) for every phone
    run.max_per_phone = max(texts.values())
    run.phones_texted = len(texts)
    run.receipt_posts_not_ok = sum(1 for s in gw.receipt_answers if s != 200)


def read_engine_log(path: Path, posted_wall: float) -> dict[str, Any]:
    """What the engine logged from the POST on: requests, receipts, warnings, planning."""
    out: dict[str, Any] = {
        "requests": 0,
        "messages": 0,
        "sizes": Counter(),
        "outcomes": Counter(),
        "errors": Counter(),
        "receipt_posts": 0,
        "receipts": 0,
        "warnings": Counter(),
        "planned_after": None,
        "request_times": [],
    }
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if not isinstance(record, dict):
            continue
        event = record.get("event")
        if record.get("level") in ("warning", "error", "critical"):
            out["warnings"][event] += 1
        if event == "sms.request":
            at = datetime.fromisoformat(str(record["timestamp"]).replace("Z", "+00:00"))
            out["request_times"].append(at.timestamp())
            out["requests"] += 1
            out["messages"] += int(record.get("messages", 0))
            out["sizes"][int(record.get("messages", 0))] += 1
            out["outcomes"].update(record.get("outcomes") or {})
            out["errors"].update(record.get("errors") or [])
        elif event == "sms.receipts":
            out["receipt_posts"] += 1
            out["receipts"] += int(record.get("receipts", 0))
        elif event == "sms.planned" and "timestamp" in record:
            at = datetime.fromisoformat(str(record["timestamp"]).replace("Z", "+00:00"))
            out["planned_after"] = at.timestamp() - posted_wall
    return out


def report(run: Run, raw: Raw | None, args: argparse.Namespace, pace: Pace) -> str:
    limit = run.rate
    lines = [
        "",
        f"== {run.recipients:,} recipients, limit {limit:g}/s, {args.protocol} gateway, engine "
        f"batches of {pace.batch}, bucket refilled at {pace.refill:,.1f}/s",
    ]

    def row(label: str, value: str) -> None:
        lines.append(f"{label:<36}{value}")

    row("registration", f"{run.register_seconds:.1f} s")
    if run.log.get("planned_after") is not None:
        row("POST → planned (engine log)", f"{run.log['planned_after']:.2f} s")
    row("POST → first accepted", f"{run.to_first_accepted:.2f} s")
    row("POST → last accepted", f"{run.to_last_accepted:.1f} s")
    delivered = run.to_all_delivered
    row(
        "POST → all delivered (receipts)",
        f"{delivered:.1f} s (polled every 0.1 s)" if delivered is not None else "never",
    )
    row(
        "achieved rate",
        f"{run.achieved:,.0f}/s = {run.achieved / limit:.1%} of the limit "
        f"({run.accepted:,} accepted, first to last)",
    )
    if run.achieved_planned:
        row(
            "  from the end of planning",
            f"{run.achieved_planned:,.0f}/s = {run.achieved_planned / limit:.1%} of the limit",
        )
    if run.seconds_full:
        full = run.seconds_full
        row(
            "whole seconds",
            f"min {min(full):,} / median {statistics.median(full):,.0f} / max {max(full):,} "
            f"messages ({len(full)} s)",
        )
    row(
        "engine's designed ceiling",
        f"{pace.refill:,.0f}/s = {pace.refill / limit:.1%} of the limit (bucket refill rate)",
    )
    row("slowest status answer (GET)", f"{run.slowest_answer:.2f} s while it ran")
    row(
        "gateway peak, any 1-s window",
        f"{run.peak:,}/s (limit {limit:g}), first in the second ending {run.peak_at:.1f} s "
        "after the POST",
    )
    row("gateway throttled requests", str(run.throttled))
    if run.gaps:
        gaps, spacing = sorted(run.gaps), pace.batch / pace.refill
        late = sum(g - spacing for g in gaps if g > 1.5 * spacing)
        row(
            "gaps between requests taken",
            f"median {statistics.median(gaps) * 1000:.1f} ms, p90 "
            f"{gaps[int(len(gaps) * 0.9)] * 1000:.0f} ms, max {gaps[-1] * 1000:.0f} ms; "
            f"{late:.1f} s lost in gaps over 1.5× the pace's {spacing * 1000:.0f} ms",
        )
    row("gateway's event loop lag (its clock)", run.loop_lag)
    row("gateway duplicates", str(run.duplicates))
    row("texts per phone (max)", f"{run.max_per_phone} ({run.phones_texted:,} phones)")
    row("receipt posts not answered 200", str(run.receipt_posts_not_ok))
    states = ", ".join(f"{k} {v:,}" for k, v in run.final.items() if v and k != "segments")
    row("engine counts", states)
    row(
        "engine RSS",
        f"started {mb(run.rss_started_kb)}, before the alert {mb(run.rss_before_kb)}, "
        f"peak sampled {mb(run.rss_peak_kb)}, VmHWM {mb(run.hwm_kb)}",
    )
    row(
        "Redis used_memory",
        f"empty {mb(run.redis_empty / 1024)}, registered {mb(run.redis_registered / 1024)}, "
        f"after {mb(run.redis_after / 1024)}",
    )
    if run.cpu_window:
        used = ", ".join(
            f"{name} {seconds:.1f} s ({seconds / run.cpu_window:.0%})"
            for name, seconds in run.cpu.items()
        )
        row(f"CPU over those {run.cpu_window:.0f} s (of a core)", used)
    log = run.log
    if log.get("requests"):
        sizes = ", ".join(f"{k}×{v}" for k, v in sorted(log["sizes"].items(), reverse=True)[:4])
        row(
            "engine requests (sms.request)",
            f"{log['requests']:,} for {log['messages']:,} messages (sizes {sizes}); "
            f"outcomes {dict(log['outcomes'])}",
        )
        if log["errors"]:
            row("engine request errors", str(dict(log["errors"].most_common(3))))
        times = log["request_times"]
        gaps = [b - a for a, b in itertools.pairwise(times)][len(times) // 10 :]
        if gaps:
            row(
                "engine request spacing",
                f"median {statistics.median(gaps) * 1000:.1f} ms from the second tenth on "
                f"(the bucket's: {pace.batch / pace.refill * 1000:.1f} ms)",
            )
        row(
            "receipt posts taken (sms.receipts)",
            f"{log['receipt_posts']:,} with {log['receipts']:,} receipts",
        )
    if log.get("warnings"):
        row("engine warnings/errors logged", str(dict(log["warnings"])))
    if raw is not None:
        row(
            "raw client, same limit",
            f"{raw.messages:,} messages in {raw.requests:,} requests ({raw.throttled} "
            f"throttled): {raw.rate:,.0f}/s = {raw.rate / limit:.1%} of the limit, "
            f"peak {raw.peak:,}/s",
        )
        if raw.rate:
            row("engine / raw", f"{run.achieved / raw.rate:.1%}")
    problems = run.problems
    lines.append("RESULT: " + ("ok" if not problems else "FAIL: " + "; ".join(problems)))
    return "\n".join(lines)


# -- the priority scenario --------------------------------------------------------------------


@dataclass
class Priority:
    """A red warning issued while a province drill's texts are queued and in flight."""

    rate: float
    batch: int
    drill: str = ""
    red: str = ""
    drill_recipients: int = 0
    red_recipients: int = 0
    drill_accepted_at_red: int = 0  # drill texts the gateway had taken when the red was POSTed
    drill_queued_at_red: int = 0  # and those the engine still had queued
    red_planned: float | None = None  # seconds from the red's POST to its sms.planned
    red_first: float = 0.0  # seconds from the red's POST to the gateway taking its first text
    red_last: float = 0.0
    red_delivered: int = 0
    drill_ahead: int = 0  # drill texts taken after the red was queued, before its first
    drill_inside: int = 0  # drill texts taken between the red's first and its last
    drill_left_when_red_done: int = 0
    drill_delivered: int = 0
    drill_done: float | None = None  # seconds from the red's POST to the drill all delivered
    peak: int = 0
    throttled: int = 0
    duplicates: int = 0
    max_per_phone_per_alert: int = 0

    @property
    def ahead_batches(self) -> float:
        return self.drill_ahead / self.batch

    @property
    def waited(self) -> float | None:
        """Seconds from the red's texts queued to its first taken by the gateway."""
        return None if self.red_planned is None else self.red_first - self.red_planned

    @property
    def problems(self) -> list[str]:
        out = []
        if self.red_planned is None:
            out.append("the engine did not log the red's planning")
        if self.drill_ahead > self.batch:
            out.append(f"{self.ahead_batches:.1f} drill batches went ahead of the red (target ≤ 1)")
        if self.peak > self.rate:
            out.append(f"peak {self.peak}/s over the limit {self.rate:g}/s")
        if self.throttled:
            out.append(f"the gateway throttled {self.throttled} requests")
        if self.duplicates or self.max_per_phone_per_alert > 1:
            out.append("a phone was texted twice for one alert")
        if self.red_delivered != self.red_recipients or not self.red_recipients:
            out.append(f"red delivered to {self.red_delivered} of {self.red_recipients}")
        if self.drill_delivered != self.drill_recipients:
            out.append(f"drill delivered to {self.drill_delivered} of {self.drill_recipients}")
        return out


async def sms_counts(api: EngineApi, alert_id: str) -> dict[str, Any]:
    delivery = await api.try_delivery(alert_id, timeout=120, detail="city")
    return dict((delivery or {}).get("sms") or {})


async def until_counts(
    api: EngineApi, alert_id: str, done: Callable[[dict[str, Any]], bool], timeout: float
) -> dict[str, Any]:
    """The alert's SMS counts once ``done`` says so, or when ``timeout`` seconds passed."""
    deadline = time.monotonic() + timeout
    while True:
        sms = await sms_counts(api, alert_id)
        if done(sms) or time.monotonic() > deadline:
            return sms
        await asyncio.sleep(0.05)


def all_ended(sms: dict[str, Any]) -> bool:
    recipients = int(sms.get("recipients", 0))
    ended = sum(int(sms.get(k, 0)) for k in ("delivered", "failed", "cancelled", "expired"))
    return recipients > 0 and ended >= recipients


def planned_at(path: Path, job: str) -> float | None:
    """Wall-clock time the engine logged ``sms.planned`` for ``job``."""
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if (
            isinstance(record, dict)
            and record.get("event") == "sms.planned"
            and record.get("job") == job
            and "timestamp" in record
        ):
            stamp = str(record["timestamp"]).replace("Z", "+00:00")
            return datetime.fromisoformat(stamp).timestamp()
    return None


async def priority_run(
    api: EngineApi, gw: GatewayServer, out: Priority, args: argparse.Namespace
) -> tuple[float, float]:
    """The drill, then the red; (the red's POST as monotonic and as wall-clock time)."""
    timeout = args.timeout or 2 * args.recipients / args.rate + 120
    out.drill = await issue(
        api, status="exercise", channels=["sms"], headline="台风红色预警（全省演练）"
    )
    say(f"drill {out.drill} issued; waiting until it is planned and {args.red_after:g} s sent")
    await until_counts(
        api, out.drill, lambda sms: int(sms.get("recipients", 0)) >= args.recipients, timeout
    )
    # The drill sending for a while is the scenario itself, not a wait for an event.
    await asyncio.sleep(args.red_after)
    drill = await sms_counts(api, out.drill)
    out.drill_accepted_at_red = len(gw.accepted)
    out.drill_queued_at_red = int(drill.get("queued", 0))
    posted, posted_wall = time.monotonic(), time.time()
    out.red = await issue(api, channels=["sms"], areas=[args.red_area])
    say(f"red {out.red} issued with {out.drill_queued_at_red:,} drill texts queued")
    red = await until_counts(api, out.red, all_ended, timeout)
    out.drill_left_when_red_done = args.recipients - (len(gw.accepted) - int(red["recipients"]))
    say(f"red done after {time.monotonic() - posted:.1f} s; now the rest of the drill")
    drill = await until_counts(api, out.drill, all_ended, timeout)
    if all_ended(drill):
        out.drill_done = time.monotonic() - posted
    out.red_recipients = int(red.get("recipients", 0))
    out.red_delivered = int(red.get("delivered", 0))
    out.drill_recipients = int(drill.get("recipients", 0))
    out.drill_delivered = int(drill.get("delivered", 0))
    return posted, posted_wall


def score_priority(gw: GatewayServer, out: Priority, posted: float, planned: float | None) -> None:
    """``planned``: seconds from the red's POST to its texts queued (the engine's log)."""
    taken = sorted(gw.accepted, key=lambda a: a.at)
    jobs = [split_out_id(a.key if isinstance(a.key, str) else out_id(*a.key))[0] for a in taken]
    red_times = [a.at for a, job in zip(taken, jobs, strict=True) if job == out.red]
    out.red_planned = planned
    if red_times:
        first, last = red_times[0], red_times[-1]
        out.red_first, out.red_last = first - posted, last - posted
        queued = posted + (planned or 0.0)
        drill_times = [a.at for a, job in zip(taken, jobs, strict=True) if job == out.drill]
        out.drill_ahead = sum(1 for t in drill_times if queued < t < first)
        out.drill_inside = sum(1 for t in drill_times if first < t < last)
    out.peak = peak_in_window(a.at for a in taken)
    out.throttled = gw.throttled
    out.duplicates = gw.duplicates
    per_alert = Counter(zip(jobs, (a.phone for a in taken), strict=True))
    out.max_per_phone_per_alert = max(per_alert.values(), default=0)


def priority_report(out: Priority, args: argparse.Namespace, pace: Pace) -> str:
    lines = [
        "",
        f"== priority: a red warning ({args.red_area}) behind a province drill of "
        f"{out.drill_recipients:,} texts; limit {args.rate:g}/s, batches of {pace.batch} "
        f"({pace.batch / pace.refill * 1000:.0f} ms each)",
    ]

    def row(label: str, value: str) -> None:
        lines.append(f"{label:<44}{value}")

    row(
        "drill when the red was POSTed",
        f"{out.drill_accepted_at_red:,} sent, {out.drill_queued_at_red:,} queued",
    )
    if out.red_planned is not None:
        row("red POST → its texts queued", f"{out.red_planned:.2f} s ({out.red_recipients:,})")
    waited = out.waited
    row(
        "drill texts ahead of the red",
        f"{out.drill_ahead:,} = {out.ahead_batches:.1f} batches"
        + (f", {waited * 1000:.0f} ms from queued to first sent" if waited is not None else "")
        + " (target ≤ 1 batch)",
    )
    row("drill texts among the red's", f"{out.drill_inside:,}")
    row(
        "red POST → first / last text sent",
        f"{out.red_first:.2f} s / {out.red_last:.2f} s "
        f"(alone at the pace: {out.red_recipients / pace.refill:.2f} s of sending)",
    )
    row("drill left to send when the red was done", f"{out.drill_left_when_red_done:,}")
    row(
        "drill completed",
        f"{out.drill_delivered:,} of {out.drill_recipients:,} delivered"
        + (f", {out.drill_done:.1f} s after the red's POST" if out.drill_done else ""),
    )
    row("gateway peak, any 1-s window", f"{out.peak:,}/s (limit {args.rate:g})")
    row("gateway throttled / duplicates", f"{out.throttled} / {out.duplicates}")
    row("texts per phone per alert (max)", str(out.max_per_phone_per_alert))
    problems = out.problems
    lines.append("RESULT: " + ("ok" if not problems else "FAIL: " + "; ".join(problems)))
    return "\n".join(lines)


def new_gateway(protocol: str, rate: float) -> GatewayServer:
    if protocol == "aliyun":
        return AliyunGatewayServer(rate_limit=rate)
    return GenericGatewayServer(rate_limit=rate)


class Sms(Benchmark, name="sms"):
    def __init__(self, args: argparse.Namespace) -> None:
        super().__init__(args)
        # Default: 10 s at the limit, at most everyone.
        if args.raw_messages < 0:
            args.raw_messages = int(min(args.recipients, 10 * args.rate))
        self.run = Run(args.recipients, args.rate)
        self.raw: Raw | None = None
        self.pace: Pace | None = None
        self.priority: Priority | None = None
        self.scored = False

    @classmethod
    def arguments(cls, parser: argparse.ArgumentParser) -> None:
        parser.add_argument(
            "--scenario",
            choices=("rate", "priority"),
            default="rate",
            help="rate: one red alert to everyone; priority: a red warning behind a drill",
        )
        parser.add_argument(
            "--red-area", default=GULOU, help="priority: the red warning's area (default 鼓楼区)"
        )
        parser.add_argument(
            "--red-after",
            type=float,
            default=2.0,
            help="priority: seconds of the drill's sending before the red is issued",
        )
        parser.add_argument("--recipients", type=int, default=100_000, help="people to text")
        parser.add_argument("--rate", type=float, default=2000.0, help="the gateway's limit, msg/s")
        parser.add_argument("--protocol", choices=("generic", "aliyun"), default="generic")
        parser.add_argument(
            "--batch", type=int, default=0, help="the gateway's batch_size (default: the engine's)"
        )
        parser.add_argument(
            "--concurrency",
            type=int,
            default=4,
            help="the gateway's concurrency (requests at once)",
        )
        parser.add_argument(
            "--raw-messages",
            type=int,
            default=-1,
            help="messages of the raw-client measurement (default: 10 s at the limit, at most N; "
            "0 skips it)",
        )
        parser.add_argument(
            "--timeout",
            type=float,
            default=0.0,
            help="seconds to wait (default 2 × N / rate + 120)",
        )

    @classmethod
    def misuse(cls, args: argparse.Namespace) -> str | None:
        if not 1 <= args.recipients <= 1_000_000:
            return "--recipients must be from 1 to 1,000,000"
        if args.scenario == "priority" and args.red_area not in fujian():
            return f"--red-area {args.red_area!r} is no region of Fujian"
        if args.red_after < 0:
            return "--red-after must be 0 or more seconds"
        return None

    async def measure(self, folder: Path) -> None:
        args, run = self.args, self.run
        mqtt = MosquittoServer(folder / "mosquitto")
        redis_server = RedisServer(folder / "redis")
        engine: EngineProcess | None = None
        rdb: redis.Redis | None = None
        try:
            await asyncio.to_thread(mqtt.start)
            await asyncio.to_thread(redis_server.start)
            rdb = redis.Redis.from_url(redis_server.url, decode_responses=True)
            async with new_gateway(args.protocol, args.rate) as gw:
                port = free_port()
                overrides: dict[str, Any] = {"rate": args.rate, "concurrency": args.concurrency}
                if args.batch:
                    overrides["batch_size"] = args.batch
                settings = gw.settings(GATEWAY, **overrides)
                pace = self.pace = Pace.of(settings)
                # Aliyun posts receipts where its console says; the generic protocol names the
                # URL in every request (the engine's callback_base, its own API by default).
                gw.callback_url = f"http://127.0.0.1:{port}/api/v1/sms/receipts/{GATEWAY}"

                if args.raw_messages and args.scenario == "rate":
                    async with new_gateway(args.protocol, args.rate) as raw_gw:
                        print(
                            f"raw client: {args.raw_messages:,} messages in batches of"
                            f" {pace.batch} at {args.rate:g}/s …",
                            flush=True,
                        )
                        raw = self.raw = await raw_capacity(
                            raw_gw, args.raw_messages, pace.batch, args.rate
                        )
                        print(
                            f"raw client: {raw.rate:,.0f}/s ({raw.rate / args.rate:.1%}), peak "
                            f"{raw.peak:,}/s, {raw.throttled} throttled",
                            flush=True,
                        )

                run.redis_empty = redis_memory(rdb)
                engine = province_engine(
                    folder,
                    redis_url=redis_server.url,
                    mqtt_url=mqtt.url,
                    instance="ebd-sms-bench",
                    port=port,
                    sms={"gateways": [settings]},
                )
                await engine.start()
                run.rss_started_kb = engine.memory_kb()[0]
                async with province_api(engine, timeout=120) as api:
                    run.register_seconds = await register(api, args.recipients)
                    run.redis_registered = redis_memory(rdb)
                    run.rss_before_kb = engine.memory_kb()[0]
                    wait = args.timeout or 2 * args.recipients / args.rate + 120
                    pids = {"engine": engine.pid or 0, "redis-server": redis_server.pid or 0}
                    cpu_before = {name: cpu_seconds(pid) for name, pid in pids.items()}
                    cpu_before["this process (gateway, client)"] = time.process_time()
                    window = time.monotonic()
                    if args.scenario == "priority":
                        self.priority = Priority(args.rate, pace.batch)
                        posted, posted_wall = await priority_run(api, gw, self.priority, args)
                        run.cpu_window = time.monotonic() - window
                        await engine.stop()
                        wall = planned_at(engine.log_path, self.priority.red)
                        planned = None if wall is None else wall - posted_wall
                        score_priority(gw, self.priority, posted, planned)
                        self.scored = True
                        return
                    with LoopLag() as lag:
                        _, posted, posted_wall = await send_alert(api, engine, gw, run, wait)
                    run.loop_lag = lag.summary()
                    run.cpu_window = time.monotonic() - window
                    run.cpu = {
                        name: cpu_seconds(pid) - cpu_before[name] for name, pid in pids.items()
                    }
                    run.cpu["this process (gateway, client)"] = (
                        time.process_time() - cpu_before["this process (gateway, client)"]
                    )
                with contextlib.suppress(TimeoutError):
                    await gw.receipts_done(timeout=10)
                if engine.running:
                    run.hwm_kb = engine.memory_kb()[1]
                run.redis_after = redis_memory(rdb)
                await engine.stop()
                run.log = read_engine_log(engine.log_path, posted_wall)
                score_gateway(gw, run, posted, run.log["planned_after"])
                self.scored = True
        finally:
            if rdb is not None:
                rdb.close()
            if engine is not None:
                await engine.stop()
            await asyncio.to_thread(redis_server.stop)
            await asyncio.to_thread(mqtt.stop)

    def table(self) -> str:
        if not self.scored or self.pace is None:
            return ""
        if self.priority is not None:
            return priority_report(self.priority, self.args, self.pace)
        return report(self.run, self.raw, self.args, self.pace)

    def complete(self) -> bool:
        if self.priority is not None:
            return self.scored and not self.priority.problems
        return self.scored and not self.run.problems


if __name__ == "__main__":
    sys.exit(main(Sms))
