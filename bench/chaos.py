"""Chaos run: kill the engine, the broker or Redis mid-dispatch to a simulated province.

    .venv/bin/python bench/chaos.py --terminals 5000
    .venv/bin/python bench/chaos.py --terminals 2000 --scenarios engine-kill,ack-storm

Each scenario gets its own mosquitto, redis-server (``dispatcher.embedded``) and engine
process (``python -m dispatcher serve``) in a temporary folder, a fleet of simulated terminals
spread over Fujian's villages, one red alert to the whole province, and one fault. It then
waits (bounded by ``--timeout``) until every terminal that should play the alert has, and
prints one row per scenario:

    delivered     terminals that played the alert (of those that should)
    played-twice  terminals that started playback more than once (must be 0)
    acks lost     terminals that played but the engine does not count as played (must be 0)
    seconds       from the fault until the engine counted everyone (or the timeout)

Everything it starts is stopped before it exits, also on Ctrl-C or SIGTERM. The scenarios
are the ones of tests/integration/test_chaos.py, at a province's scale, with the same engine
runner (tests/support/engine_process.py, through bench/harness.py).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

import redis
from harness import PROVINCE, REGISTER_PART, fujian, issue, province_api, province_engine
from skeleton import Benchmark, main, say

from dispatcher.core.regions import Level
from dispatcher.embedded.processes import MosquittoServer, RedisServer
from dispatcher.store.acklog import acklog_rows
from dispatcher.store.keys import alert_key, dispatch_key, tstate_key
from receiver.simulator import Behaviour, SimTerminal, Simulator
from tests.support.broker import known
from tests.support.engine_process import EngineApi, EngineProcess, outbox_reading

# Resends 2, 3, 5, 9 and 13 s after dispatch; escalation after 17 s.
RESEND = {"red": 2.0, "backoff": 1.0, "backoff_max": 4.0, "max_attempts": 5}
# A fault that takes longer than the whole resend window to make up for is a finding too: a
# red alert should not wait on a timeout after the broker (or whatever died) is back.
SLOW_AFTER = 20.0
# Issue 15: an instance killed (or hung) right after its 201, its alert played by every
# terminal within this many seconds of the fault.
FAILOVER_LIMIT = 5.0


async def until(predicate: Callable[[], Awaitable[bool] | bool], timeout: float) -> bool:
    """Poll ``predicate`` until true (True) or ``timeout`` seconds passed (False)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = predicate()
        if not isinstance(result, bool):
            result = await result
        if result:
            return True
        await asyncio.sleep(0.05)
    return False


# -- one scenario -----------------------------------------------------------------------------


@dataclass
class Row:
    scenario: str
    terminals: int
    should_play: int = 0
    delivered: int = 0
    played_twice: int = 0
    acks_lost: int = 0
    seconds: float = 0.0
    complete: bool = False
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return (
            self.complete
            and self.delivered == self.should_play
            and self.played_twice == 0
            and self.acks_lost == 0
            and not any(n.startswith("!") for n in self.notes)
        )


class Stage:
    """One scenario's servers, engine(s), terminals and HTTP client."""

    def __init__(self, folder: Path, n: int, behaviour: Behaviour) -> None:
        self.folder = folder
        # Known to the engines' settings: they issue the terminals' accounts, as deployed.
        self.mqtt = known(MosquittoServer(folder / "mosquitto"))
        self.redis_server = RedisServer(folder / "redis")
        prefix = uuid.uuid4().hex[:6]
        villages = fujian().descendants(PROVINCE, level=Level.VILLAGE)
        step = max(1, len(villages) // n)
        self.terminals = [
            SimTerminal(f"{prefix}-{i}", villages[(i * step) % len(villages)].code)
            for i in range(n)
        ]
        self.behaviour = behaviour
        self.engines: list[EngineProcess] = []
        self.sim: Simulator
        self.api: EngineApi
        self.rdb: redis.Redis

    def engine(
        self, *, instance: str, shared: bool = False, claim_idle_seconds: float = 60.0
    ) -> EngineProcess:
        engine = province_engine(
            self.folder,
            redis_url=self.redis_server.url,
            mqtt_url=self.mqtt.url,
            instance=instance,
            shared_subscription=shared,
            claim_idle_seconds=claim_idle_seconds,
            resend={**RESEND, "sweep_interval": 0.2},
        )
        self.engines.append(engine)
        return engine

    @contextlib.asynccontextmanager
    async def run(self, engines: int = 1, **extra: Any) -> AsyncIterator[Stage]:
        names = ["ebd-1"] if engines == 1 else [f"ebd-{c}" for c in "ab"]
        try:
            await asyncio.to_thread(self.mqtt.start)
            await asyncio.to_thread(self.redis_server.start)
            self.rdb = redis.Redis.from_url(self.redis_server.url, decode_responses=True)
            for name in names:
                await self.engine(instance=name, **extra).start()
            async with province_api(self.engines[0], timeout=30) as api:
                self.api = api
                given = await api.register(self.terminals, part=REGISTER_PART)
                assert given is not None, "the engines issued no broker accounts"
                async with given.simulator(self.terminals, behaviour=self.behaviour) as sim:
                    self.sim = sim
                    yield self
        finally:
            for engine in self.engines:
                await engine.stop()
            with contextlib.suppress(Exception):
                self.rdb.close()
            await asyncio.to_thread(self.redis_server.stop)
            await asyncio.to_thread(self.mqtt.stop)

    async def delivery(self, alert_id: str, base_url: str | None = None) -> dict[str, Any]:
        """The alert's delivery; empty while the engine cannot answer (it may be down)."""
        return await self.api.try_delivery(alert_id, base_url, timeout=30) or {}

    async def counted(self, alert_id: str, n: int, base_url: str | None = None) -> bool:
        """The engine counts ``n`` terminals as played and will resend nothing more."""
        state = await self.delivery(alert_id, base_url)
        if state.get("played") != n:
            return False
        try:
            return all(
                self.rdb.zscore(key, alert_id) is None
                for key in ("ebd:sweeps", "ebd:sweeps:urgent")
            )
        except redis.RedisError:
            return False

    async def finish(self, row: Row, alert_id: str, started: float, timeout: float) -> Row:
        """Wait until every terminal of the stage counts as played, then score the run."""
        n = len(self.terminals)
        row.complete = await until(lambda: self.counted(alert_id, n), timeout)
        return self.score(row, alert_id, [t.id for t in self.terminals], started)

    def score(self, row: Row, alert_id: str, ids: list[str], started: float) -> Row:
        row.seconds = round(time.monotonic() - started, 1)
        if not row.complete:
            row.notes.append("!engine not done by the timeout")
        elif row.seconds > SLOW_AFTER:
            row.notes.append(f"!slow: more than {SLOW_AFTER:g} s")
        tstate = cast(dict[str, str], self.rdb.hgetall(tstate_key(alert_id)))
        plays = {t: self.sim.plays_of(t).get(alert_id, 0) for t in ids}
        row.should_play = len(ids)
        row.delivered = sum(1 for p in plays.values() if p >= 1)
        row.played_twice = sum(1 for p in plays.values() if p > 1)
        row.acks_lost = sum(1 for t, p in plays.items() if p >= 1 and tstate.get(t) != "played")
        entries = cast(list[tuple[str, dict[str, str]]], self.rdb.xrange("ebd:acklog"))
        everything = [r for i, f in entries for r in acklog_rows(i, f)]
        log = [f for f in everything if f.get("alert_id") == alert_id]
        counted = Counter((f["terminal_id"], f["state"]) for f in log if f["result"] == "1")
        twice = sum(1 for k in counted.values() if k > 1)
        if twice:
            row.notes.append(f"!{twice} state changes counted twice")
        # The ingestion counters against the ack log, which has every ack and its result.
        stats = int(self.rdb.hget("ebd:stats", "acks_counted") or 0)
        logged = sum(1 for f in everything if f["result"] == "1" and f["state"] != "no_ack")
        if stats != logged:
            row.notes.append(f"!ebd:stats acks_counted {stats}, ack log {logged}")
        dispatch = cast(dict[str, str], self.rdb.hgetall(dispatch_key(alert_id)))
        for key in ("resends", "escalated"):
            if int(dispatch.get(key, 0)):
                row.notes.append(f"{key} {dispatch[key]}")
        others = Counter(v for v in tstate.values() if v != "played")
        if others:
            row.notes.append("states " + ", ".join(f"{k} {v}" for k, v in others.items()))
        return row


async def engine_kill(folder: Path, n: int, timeout: float) -> Row:
    row = Row("engine-kill", n)
    async with Stage(folder, n, Behaviour(play_time=1.0)).run() as s:
        engine = s.engines[0]
        alert_id = await issue(s.api, engine.base_url)
        started = time.monotonic()
        engine.kill()  # right after the 201
        await engine.start()
        await until(lambda: s.sim.received(alert_id) >= n // 4, timeout)
        engine.kill()  # again, while the acks stream in
        await engine.start()
        return await s.finish(row, alert_id, started, timeout)


async def broker_kill(folder: Path, n: int, timeout: float) -> Row:
    row = Row("broker-kill (acks)", n)
    async with Stage(folder, n, Behaviour(play_time=1.0)).run() as s:
        alert_id = await issue(s.api, s.engines[0].base_url)
        await until(lambda: s.sim.played(alert_id) >= n // 10, timeout)
        started = time.monotonic()
        await asyncio.to_thread(s.mqtt.kill)
        await asyncio.to_thread(s.mqtt.start)
        return await s.finish(row, alert_id, started, timeout)


async def broker_kill_in_flight(folder: Path, n: int, timeout: float) -> Row:
    row = Row("broker-kill (publish)", n)
    async with Stage(folder, n, Behaviour()).run() as s:
        base_url = s.engines[0].base_url
        assert s.mqtt.pid is not None
        os.kill(s.mqtt.pid, signal.SIGSTOP)  # frozen: the alert's PUBACK never comes
        try:
            alert_id = await issue(s.api, base_url)

            async def dispatching() -> bool:
                state = await s.delivery(alert_id)
                return state.get("state") == "dispatching"

            await until(dispatching, timeout)
        finally:
            await asyncio.to_thread(s.mqtt.kill)
        started = time.monotonic()
        await asyncio.to_thread(s.mqtt.start)
        return await s.finish(row, alert_id, started, timeout)


async def redis_kill(folder: Path, n: int, timeout: float) -> Row:
    row = Row("redis-kill", n)
    async with Stage(folder, n, Behaviour()).run() as s:
        alert_id = await issue(s.api, s.engines[0].base_url)
        started = time.monotonic()
        await asyncio.to_thread(s.redis_server.kill)
        await asyncio.to_thread(s.redis_server.start)
        if not s.rdb.exists(alert_key(alert_id)):
            row.notes.append("!alert lost with Redis")
        return await s.finish(row, alert_id, started, timeout)


async def offline(folder: Path, n: int, timeout: float) -> Row:
    row = Row("offline, back in time", n)
    async with Stage(folder, n, Behaviour()).run() as s:
        away = [t.id for t in s.terminals[: max(1, n // 100)]]
        await s.sim.drop(away)
        alert_id = await issue(s.api, s.engines[0].base_url)
        await until(lambda: s.sim.played(alert_id) >= n - len(away), timeout)
        started = time.monotonic()
        await s.sim.reconnect(away)
        return await s.finish(row, alert_id, started, timeout)


async def expired_offline(folder: Path, n: int, timeout: float) -> Row:
    row = Row("offline past expiry", n)
    async with Stage(folder, n, Behaviour()).run() as s:
        base_url = s.engines[0].base_url
        away = s.terminals[: max(1, n // 100)]
        await s.sim.drop([t.id for t in away])
        expires = datetime.now(UTC) + timedelta(seconds=6)
        alert_id = await issue(s.api, base_url, expires=expires)
        present = [t.id for t in s.terminals[len(away) :]]
        await until(lambda: s.sim.played(alert_id) >= len(present), timeout)
        await until(lambda: datetime.now(UTC) > expires + timedelta(seconds=1), 15)
        started = time.monotonic()
        await s.sim.reconnect([t.id for t in away])
        # A marker alert to the absent terminals' villages: once each played it, the broker
        # had handed over everything its session held, the expired alert included.
        marker = await issue(s.api, base_url, areas=sorted({t.region for t in away}))
        row.complete = await until(
            lambda: all(s.sim.plays_of(t.id).get(marker) for t in away), timeout
        )
        late = sum(1 for t in away if s.sim.plays_of(t.id).get(alert_id))
        if late:
            row.notes.append(f"!{late} played after expiry")
        row.notes.append(f"{len(away)} away")
        return s.score(row, alert_id, present, started)


async def two_instances(folder: Path, n: int, timeout: float) -> Row:
    row = Row("2 instances, 1 killed", n)
    async with Stage(folder, n, Behaviour(play_time=1.0)).run(
        engines=2, shared=True, claim_idle_seconds=2.0
    ) as s:
        a, b = s.engines
        alert_id = await issue(s.api, a.base_url)
        await until(lambda: s.sim.received(alert_id) >= n // 4, timeout)
        started = time.monotonic()
        a.kill()  # and it stays dead
        row.complete = await until(lambda: s.counted(alert_id, n, b.base_url), timeout)
        return s.score(row, alert_id, [t.id for t in s.terminals], started)


async def ack_storm(folder: Path, n: int, timeout: float) -> Row:
    row = Row("ack storm, engine down", n)
    async with Stage(folder, n, Behaviour(ack_delay=1.5)).run() as s:
        engine = s.engines[0]
        alert_id = await issue(s.api, engine.base_url)

        async def dispatched() -> bool:
            return (await s.delivery(alert_id)).get("state") == "dispatched"

        await until(dispatched, timeout)
        engine.kill()
        started = time.monotonic()
        await until(lambda: sum(t.acks_sent for t in s.terminals) >= 2 * n, timeout)
        await engine.start()
        return await s.finish(row, alert_id, started, timeout)


async def failover(folder: Path, n: int, timeout: float, *, hang: bool) -> Row:
    """Two instances; the one that answered the 201 holds the alert's outbox entry and is
    killed (or stopped) at once; the other sends it once the first one's liveness lease
    lapses (``claim_idle_seconds`` stays 60 s: only the lease can explain a quick takeover).
    Timed from the fault to the last terminal played."""
    row = Row("failover, " + ("hung (SIGSTOP)" if hang else "killed (SIGKILL)"), n)
    async with Stage(folder, n, Behaviour()).run(engines=2, shared=True) as s:
        a, b = s.engines
        assert a.pid is not None
        assert b.pid is not None
        # The entry must land on a: b is frozen until its blocking read of the outbox ended.
        await until(lambda: outbox_reading(s.rdb, b), 10)
        os.kill(b.pid, signal.SIGSTOP)
        try:
            await until(lambda: not outbox_reading(s.rdb, b), 5)
            alert_id = await issue(s.api, a.base_url)
            os.kill(a.pid, signal.SIGSTOP if hang else signal.SIGKILL)
            started = time.monotonic()
        finally:
            os.kill(b.pid, signal.SIGCONT)
        try:
            await until(lambda: s.sim.played(alert_id) >= n, timeout)
            heard = time.monotonic() - started
            row.notes.append(f"all played {heard:.2f} s after the fault")
            if heard > FAILOVER_LIMIT:
                row.notes.append(f"!failover slower than {FAILOVER_LIMIT:g} s")
            row.complete = await until(lambda: s.counted(alert_id, n, b.base_url), timeout)
        finally:
            if hang:
                os.kill(a.pid, signal.SIGCONT)
        return s.score(row, alert_id, [t.id for t in s.terminals], started)


async def failover_kill(folder: Path, n: int, timeout: float) -> Row:
    return await failover(folder, n, timeout, hang=False)


async def failover_hang(folder: Path, n: int, timeout: float) -> Row:
    return await failover(folder, n, timeout, hang=True)


SCENARIOS: dict[str, Callable[[Path, int, float], Awaitable[Row]]] = {
    "engine-kill": engine_kill,
    "broker-kill": broker_kill,
    "broker-kill-publish": broker_kill_in_flight,
    "redis-kill": redis_kill,
    "offline": offline,
    "expired-offline": expired_offline,
    "two-instances": two_instances,
    "ack-storm": ack_storm,
    "failover-kill": failover_kill,
    "failover-hang": failover_hang,
}


def table(rows: list[Row]) -> str:
    head = ("scenario", "terminals", "delivered", "played-twice", "acks lost", "seconds", "")
    lines = [
        (
            r.scenario,
            str(r.terminals),
            f"{r.delivered}/{r.should_play}",
            str(r.played_twice),
            str(r.acks_lost),
            f"{r.seconds:.1f}",
            ("ok" if r.ok else "FAIL") + (f"  {'; '.join(r.notes)}" if r.notes else ""),
        )
        for r in rows
    ]
    widths = [max(len(x[i]) for x in [head, *lines]) for i in range(len(head) - 1)]
    out = [""]
    for line in [head, *lines]:
        padded = zip(line[:-1], widths, strict=True)
        cells = [c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(padded)]
        out.append("  ".join(cells) + "  " + line[-1])
    return "\n".join(out)


class Chaos(Benchmark, name="chaos"):
    def __init__(self, args: argparse.Namespace) -> None:
        super().__init__(args)
        self.names = args.scenarios.split(",") if args.scenarios else list(SCENARIOS)
        self.rows: list[Row] = []

    @classmethod
    def arguments(cls, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--terminals", type=int, default=5000, help="simulated terminals")
        parser.add_argument(
            "--scenarios", default="", help=f"comma-separated, of: {', '.join(SCENARIOS)}"
        )
        parser.add_argument(
            "--timeout", type=float, default=60.0, help="seconds each wait of a scenario may take"
        )

    @classmethod
    def misuse(cls, args: argparse.Namespace) -> str | None:
        if not 1 <= args.terminals <= 19_000:
            return "--terminals must be from 1 to 19000 (one broker, 20,000 open files)"
        unknown = [n for n in args.scenarios.split(",") if args.scenarios and n not in SCENARIOS]
        if unknown:
            return f"unknown scenarios {unknown}; choose from {', '.join(SCENARIOS)}"
        return None

    async def measure(self, folder: Path) -> None:
        n, timeout = self.args.terminals, self.args.timeout
        for name in self.names:
            stage = folder / name
            say(f"… {name}: {n} terminals")
            try:
                # The scenario bounds each of its waits; this bounds the scenario as a whole.
                async with asyncio.timeout(timeout * 4 + 120):
                    row = await SCENARIOS[name](stage, n, timeout)
            except Exception as exc:  # one broken scenario must not hide the others
                row = Row(name, n, should_play=n)
                row.notes.append(f"!crashed: {exc!r}; logs in {stage}")
            self.rows.append(row)

    def table(self) -> str:
        return table(self.rows)

    def complete(self) -> bool:
        return bool(self.rows) and all(r.ok for r in self.rows)


if __name__ == "__main__":
    sys.exit(main(Chaos))
