"""Imports of 100,000 rows as jobs, while /healthz is polled every 10 ms (issue 15).

    .venv/bin/python bench/imports.py                     # 100,000 recipients and terminals
    .venv/bin/python bench/imports.py --rows 20000 --runs 1

It starts its own mosquitto and redis-server (``dispatcher.embedded``) in a temporary folder
and an engine (``python -m dispatcher serve``, ``harness.province_engine``) that keeps the
terminals' broker accounts (the broker's password file), as the embedded default does. Per run,
on a flushed Redis and a fresh engine:

    warm-up     a 6,000-row import of each kind, as a job: the engine starts its checking
                workers at its first large import, which a long-running engine has done long
                before; the warm-up rows are others than the measured ones.
    recipients  POST /api/v1/recipients with ``--rows`` people in one body (phones spread
                over the mainland mobile ranges, villages round robin), then
                GET /api/v1/jobs/{id} every 50 ms until the job has ended.
    terminals   the same with POST /api/v1/terminals and ``--rows`` new terminals: the job
                registers them, issues their broker accounts and has the broker reread its
                password file; its result carries the passwords (checked: one per terminal).

An import's seconds run from the POST's send until the job reads ``done`` (the 202 comes once
the rows are checked); rows/s is rows over that. Meanwhile a client of its own (one keep-alive
connection) GETs /healthz every 10 ms (the next one 10 ms after the previous send, or at once
if that took longer): p50/p99/max of those answers over the import. Every figure is the
median over the runs. Exits 0 when every import reached ``done`` with the exact counts, 1
otherwise. Targets: an import of 100,000 rows ≤ 5 s, /healthz p99 ≤ 50 ms meanwhile.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import redis.asyncio as aioredis
from figures import fmt, median, percentiles
from harness import TOKEN, fujian, province_engine
from skeleton import Benchmark, main, say

from dispatcher.core.regions import Level
from dispatcher.embedded.processes import MosquittoServer, RedisServer
from tests.support.broker import known

TARGET_SECONDS = 5.0
TARGET_HEALTHZ_P99_MS = 50.0
POLL_HEALTHZ_S = 0.010
POLL_JOB_S = 0.05
WARM_UP_ROWS = 6000
# Mainland mobile ranges, so the phone numbers are not all of one range.
_RANGES = ("130", "133", "135", "138", "139", "150", "152", "158", "176", "180", "186", "199")


def recipients(n: int, start: int = 0) -> list[dict[str, Any]]:
    villages = fujian().descendants("35", level=Level.VILLAGE)
    return [
        {
            "phone": f"+86{_RANGES[i % len(_RANGES)]}{i:08d}",
            "name": f"测试{i}",
            "region": villages[i % len(villages)].code,
            "role": "resident",
        }
        for i in range(start, start + n)
    ]


def terminals(n: int, prefix: str) -> list[dict[str, str]]:
    villages = fujian().descendants("35", level=Level.VILLAGE)
    return [
        {"id": f"{prefix}-{i:06d}", "region": villages[i % len(villages)].code} for i in range(n)
    ]


def _poll_healthz(url: str, stop: Any, out: Any) -> None:
    """In a process of its own: GET ``url`` every ``POLL_HEALTHZ_S`` until ``stop`` is set,
    then send (latencies, failures) on ``out``."""

    async def poll() -> tuple[list[tuple[float, float]], int]:
        seconds: list[tuple[float, float]] = []
        failures = 0
        connector = aiohttp.TCPConnector(limit=1)
        timeout = aiohttp.ClientTimeout(total=10)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as http:
            while not stop.is_set():
                sent = time.monotonic()
                try:
                    async with http.get(url) as response:
                        await response.read()
                        ok = response.status == 200
                except (aiohttp.ClientError, TimeoutError):
                    ok = False
                took = time.monotonic() - sent
                if ok:
                    seconds.append((sent, took))
                else:
                    failures += 1
                await asyncio.sleep(max(0.0, POLL_HEALTHZ_S - took))
        return seconds, failures

    out.send(asyncio.run(poll()))
    out.close()


class HealthPoller:
    """GETs /healthz every ``POLL_HEALTHZ_S`` on a connection of its own, from a process of
    its own: in this one, the benchmark's own work (encoding 100,000 rows, decoding 100,000
    credentials, its garbage collections) would stall the poller and count as the engine's."""

    def __init__(self, base_url: str) -> None:
        self.url = f"{base_url}/healthz"
        self.seconds: list[float] = []
        # (monotonic time sent, seconds taken) of each answer: the clock is the machine's,
        # the same in this process.
        self.samples: list[tuple[float, float]] = []
        self.failures = 0
        context = multiprocessing.get_context("spawn")
        self._stop = context.Event()
        self._results, sender = context.Pipe(duplex=False)
        self._process = context.Process(
            target=_poll_healthz, args=(self.url, self._stop, sender), daemon=True
        )
        self._sender = sender

    async def __aenter__(self) -> HealthPoller:
        self._process.start()
        self._sender.close()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self._stop.set()
        self.samples, self.failures = await asyncio.to_thread(self._results.recv)
        self.seconds = [took for _, took in self.samples]
        await asyncio.to_thread(self._process.join, 10)


def encoded(rows: list[dict[str, Any]]) -> bytes:
    return json.dumps(rows, ensure_ascii=False).encode()


async def import_job(
    http: aiohttp.ClientSession, base_url: str, path: str, body: bytes
) -> tuple[float, dict[str, Any], float, float]:
    """POST ``body`` (rows, ``encoded``) to ``path`` and follow its job until it ended:
    (seconds, the job, when the POST was sent (monotonic), seconds until its 202)."""
    headers = {"Content-Type": "application/json", "Prefer": "respond-async"}
    started = time.monotonic()
    async with http.post(f"{base_url}{path}", data=body, headers=headers) as response:
        answer = await response.json(content_type=None)
        if response.status != 202:
            raise RuntimeError(f"{path}: {response.status} {answer}")
    accepted = time.monotonic() - started
    location = answer["location"]
    while True:
        async with http.get(f"{base_url}{location}") as response:
            job = await response.json(content_type=None)
        if job["state"] not in ("queued", "running"):
            return time.monotonic() - started, job, started, accepted
        await asyncio.sleep(POLL_JOB_S)


async def run_once(
    folder: Path, rows: int, mqtt: MosquittoServer, redis_url: str
) -> dict[str, Any]:
    async with aioredis.Redis.from_url(redis_url) as client:
        await client.flushall()
    engine = province_engine(folder, redis_url=redis_url, mqtt_url=mqtt.url, instance="ebd-imp")
    await engine.start()
    run: dict[str, Any] = {}
    try:
        headers = {"Authorization": f"Bearer {TOKEN}"}
        timeout = aiohttp.ClientTimeout(total=300)
        async with aiohttp.ClientSession(headers=headers, timeout=timeout) as http:
            base = engine.base_url
            warm_people = encoded(recipients(WARM_UP_ROWS, 10**7))
            await import_job(http, base, "/api/v1/recipients", warm_people)
            warm_terminals = encoded(terminals(WARM_UP_ROWS, "warm"))
            await import_job(http, base, "/api/v1/terminals", warm_terminals)
            for kind, path, data in (
                ("recipients", "/api/v1/recipients", encoded(recipients(rows))),
                ("terminals", "/api/v1/terminals", encoded(terminals(rows, "imp"))),
            ):
                say(f"… {kind}: {rows} rows")
                async with HealthPoller(base) as poller:
                    seconds, job, posted, accepted = await import_job(http, base, path, data)
                result = job.get("result") or {}
                ok = job["state"] == "done" and result.get("created") == rows
                if kind == "terminals":
                    ok = ok and len(result.get("credentials") or []) == rows
                health = percentiles(poller.seconds)
                run[kind] = {
                    "rows": rows,
                    "seconds": round(seconds, 2),
                    "rows_per_s": round(rows / seconds),
                    "state": job["state"],
                    "created": result.get("created"),
                    "ok": ok,
                    "healthz_ms": {k: health.get(k) for k in ("p50", "p99", "max")},
                    "healthz_samples": len(poller.seconds),
                    "healthz_failures": poller.failures,
                    "accepted_s": round(accepted, 2),
                    # Where the tail is: the slowest answers, by when they were sent.
                    "healthz_slowest": [
                        {"at_s": round(sent - posted, 2), "ms": round(took * 1000, 1)}
                        for sent, took in sorted(poller.samples, key=lambda st: -st[1])[:6]
                    ],
                }
                if not ok:
                    run[kind]["job"] = {k: v for k, v in job.items() if k != "result"}
                say(
                    f"  {seconds:.2f} s, /healthz p99 {fmt(health.get('p99'), 1)} ms, "
                    f"max {fmt(health.get('max'), 1)} ms ({len(poller.seconds)} samples); 202 "
                    f"after {accepted:.2f} s; slowest at "
                    + ", ".join(
                        f"{s['at_s']:.2f} s ({s['ms']:.0f} ms)"
                        for s in run[kind]["healthz_slowest"]
                    )
                )
    finally:
        await engine.stop()
    return run


def medians(runs: list[dict[str, Any]], kind: str) -> dict[str, float | None]:
    done = [r[kind] for r in runs if kind in r]
    return {
        "seconds": median([r["seconds"] for r in done]),
        "rows_per_s": median([r["rows_per_s"] for r in done]),
        "p50": median([r["healthz_ms"]["p50"] for r in done]),
        "p99": median([r["healthz_ms"]["p99"] for r in done]),
        "max": median([r["healthz_ms"]["max"] for r in done]),
    }


class Imports(Benchmark, name="imports", out="bench-imports.json"):
    def __init__(self, args: argparse.Namespace) -> None:
        super().__init__(args)
        self.runs: list[dict[str, Any]] = []

    @classmethod
    def arguments(cls, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--rows", type=int, default=100_000, help="rows of each import")
        parser.add_argument("--runs", type=int, default=1, help="repetitions, each a fresh engine")

    @classmethod
    def misuse(cls, args: argparse.Namespace) -> str | None:
        if not 1 <= args.rows <= 100_000 or args.runs < 1:
            return "--rows must be from 1 to 100000 and --runs at least 1"
        return None

    async def measure(self, folder: Path) -> None:
        mqtt = known(MosquittoServer(folder / "mosquitto"))
        rds = RedisServer(folder / "redis")
        try:
            await asyncio.to_thread(mqtt.start)
            await asyncio.to_thread(rds.start)
            for i in range(self.args.runs):
                try:
                    run = await run_once(folder / f"run-{i + 1}", self.args.rows, mqtt, rds.url)
                except Exception as exc:  # one broken run must not hide the others
                    run = {"error": repr(exc)}
                    say(f"  run {i + 1} failed: {exc!r}")
                self.runs.append(run)
        finally:
            await asyncio.to_thread(rds.stop)
            await asyncio.to_thread(mqtt.stop)

    def results(self) -> dict[str, Any]:
        return {
            "rows": self.args.rows,
            "target_seconds": TARGET_SECONDS,
            "target_healthz_p99_ms": TARGET_HEALTHZ_P99_MS,
            "runs": self.runs,
            "median": {kind: medians(self.runs, kind) for kind in ("recipients", "terminals")},
        }

    def table(self) -> str:
        lines = [
            f"Imports of {self.args.rows:,} rows as jobs, /healthz every 10 ms meanwhile "
            f"(median of {len(self.runs)} run(s))",
            "",
            "| import | rows | seconds | rows/s | /healthz p50 | p99 | max |",
            "|---|---:|---:|---:|---:|---:|---:|",
        ]
        verdicts = []
        for kind in ("recipients", "terminals"):
            m = medians(self.runs, kind)
            lines.append(
                f"| {kind} | {self.args.rows:,} | {fmt(m['seconds'])} | "
                f"{fmt(m['rows_per_s'], 0, grouped=True)} | {fmt(m['p50'], 1)} ms | "
                f"{fmt(m['p99'], 1)} ms | {fmt(m['max'], 1)} ms |"
            )
            if m["seconds"] is not None and m["p99"] is not None:
                met = m["seconds"] <= TARGET_SECONDS and m["p99"] <= TARGET_HEALTHZ_P99_MS
                verdicts.append(f"{kind} {'met' if met else 'NOT met'}")
        lines.append(
            f"\nTarget ≤ {TARGET_SECONDS:g} s per import, /healthz p99 ≤ "
            f"{TARGET_HEALTHZ_P99_MS:g} ms: {', '.join(verdicts) or 'not measured'}."
        )
        return "\n".join(lines)

    def complete(self) -> bool:
        return len(self.runs) == self.args.runs and all(
            r.get(kind, {}).get("ok") for r in self.runs for kind in ("recipients", "terminals")
        )


if __name__ == "__main__":
    sys.exit(main(Imports))
