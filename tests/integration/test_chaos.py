"""Chaos: the real engine, broker and Redis killed with SIGKILL mid-dispatch and restarted.

Every scenario ends with the same exact check (``assert_exact``): every terminal played the
alert exactly once, the engine counts each terminal once as ``played`` and nothing as failed,
and the ack log holds each counted state change once. The engine runs as a separate process
(``tests.support.engine_process``); thousands of simulated terminals run in this one. Resends
are fast (first after 2 s) so that whatever a crash lost comes back within the test.
"""

from __future__ import annotations

import os
import signal
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

import pytest
import redis

from dispatcher.core.regions import Level
from dispatcher.embedded.processes import MosquittoServer, RedisServer
from dispatcher.store.acklog import acklog_rows
from dispatcher.store.keys import alert_key, counts_key, dispatch_key, tstate_key
from receiver.simulator import Behaviour, SimTerminal, Simulator
from tests.helpers import fujian, unique, wait_for
from tests.integration.engine import online
from tests.integration.processes import two_instances
from tests.support.engine_process import EngineApi, EngineProcess

# Resends at 2, 3, 5, 9 and 13 s after dispatch; escalation (no_ack) after 17 s.
RESEND = {
    "red": 2.0,
    "backoff": 1.0,
    "backoff_max": 4.0,
    "max_attempts": 5,
    "sweep_interval": 0.2,
}
PROVINCE = "35"
# Delivery is done within seconds; this bounds a hang, never a sleep.
SETTLE = 40.0


def engine_for(tmp_path: Path, redis_url: str, mqtt_url: str, **options: Any) -> EngineProcess:
    """An engine process with the fast resends; ``options`` as ``EngineProcess`` takes them."""
    return EngineProcess(tmp_path, redis_url=redis_url, mqtt_url=mqtt_url, resend=RESEND, **options)


def province_terminals(n: int, prefix: str) -> list[SimTerminal]:
    """``n`` terminals spread evenly over Fujian's villages, ids of this test's own."""
    villages = fujian().descendants(PROVINCE, level=Level.VILLAGE)
    step = max(1, len(villages) // n)
    return [
        SimTerminal(f"{prefix}-{i}", villages[(i * step) % len(villages)].code) for i in range(n)
    ]


async def until_played(
    api: EngineApi,
    rdb: redis.Redis,
    alert_id: str,
    n: int,
    base_url: str | None = None,
    timeout: float = SETTLE,
) -> dict[str, Any]:
    """Wait until ``n`` terminals are expected and played (the engine or its Redis may be
    down meanwhile), then until nothing more will be resent; the final delivery. On timeout
    the error shows the last delivery and the terminals' states in Redis."""
    last: dict[str, Any] | None = None

    async def played() -> bool:
        nonlocal last
        last = await api.try_delivery(alert_id, base_url) or last
        return bool(last and last["expected"] == n and last["played"] == n)

    try:
        await wait_for(played, timeout=timeout)
        await wait_for(lambda: settled(rdb, alert_id), timeout=timeout)
    except AssertionError as exc:
        brief = {k: v for k, v in (last or {}).items() if not k.startswith("by_")}
        tstate = Counter(rdb.hgetall(tstate_key(alert_id)).values())
        raise AssertionError(
            f"{exc}\n  last delivery: {brief}\n  terminal states in Redis: {dict(tstate)}"
        ) from None
    return await api.delivery(alert_id, base_url)


def settled(rdb: redis.Redis, alert_id: str) -> bool:
    """No sweep of the alert is due any more and the outbox is empty: nothing will be resent."""
    if any(rdb.zscore(k, alert_id) is not None for k in ("ebd:sweeps", "ebd:sweeps:urgent")):
        return False
    for stream in ("ebd:outbox", "ebd:outbox:urgent"):
        if not rdb.exists(stream):
            continue
        groups = {g["name"]: g for g in rdb.xinfo_groups(stream)}
        if int(groups["dispatch"]["pending"]) or int(groups["dispatch"]["lag"] or 0):
            return False
    return True


def acklog(rdb: redis.Redis) -> list[dict[str, str]]:
    """Every ack in the ack log, one dict each."""
    entries = cast(list[tuple[str, dict[str, str]]], rdb.xrange("ebd:acklog"))
    return [row for entry_id, f in entries for row in acklog_rows(entry_id, f)]


def acklog_of(rdb: redis.Redis, alert_id: str) -> list[dict[str, str]]:
    return [row for row in acklog(rdb) if row["alert_id"] == alert_id]


def assert_exact(
    rdb: redis.Redis,
    sim: Simulator,
    terminals: list[SimTerminal],
    alert_id: str,
    state: dict[str, Any],
    *,
    every_ack_arrives: bool = True,
) -> None:
    """Everyone played once, and the engine counted each terminal and each ack once.

    With ``every_ack_arrives`` (no broker crash) each terminal's two acks (received, played)
    are each counted once: exactly 2 per terminal.
    """
    n = len(terminals)
    replays = {t.id: p for t in terminals if (p := sim.plays_of(t.id)) != {alert_id: 1}}
    assert not replays, (
        f"{len(replays)} terminals did not play exactly once: {list(replays.items())[:5]}"
    )
    assert (state["expected"], state["received"], state["played"]) == (n, n, n), state
    nothing = ("failed", "no_ack", "cancelled", "pending", "escalated")
    assert {k: state.get(k, 0) for k in nothing} == dict.fromkeys(nothing, 0), state
    tstate = rdb.hgetall(tstate_key(alert_id))
    assert Counter(tstate.values()) == {"played": n}
    counts = cast(dict[str, str], rdb.hgetall(counts_key(alert_id)))
    province = {k.split("|")[1]: int(v) for k, v in counts.items() if k.startswith("35|")}
    assert province["expected"] == n
    assert province["played"] == n
    assert all(v == 0 for k, v in province.items() if k not in ("expected", "played")), province
    # The ack log: each counted state change of a terminal appears once.
    counted = [
        (e["terminal_id"], e["state"]) for e in acklog_of(rdb, alert_id) if e["result"] == "1"
    ]
    twice = [pair for pair, k in Counter(counted).items() if k > 1]
    assert not twice, f"state changes counted twice: {twice[:5]}"
    acks_counted = int(rdb.hget(dispatch_key(alert_id), "acks_counted") or 0)
    assert acks_counted == len(counted)
    # The ingestion counters never count more than was recorded (their exactness across a
    # crash is test_ingestion_stats_match_the_ack_records_across_engine_kills).
    assert int(rdb.hget("ebd:stats", "acks_counted") or 0) <= acks_counted
    if every_ack_arrives:
        assert acks_counted == 2 * n, f"{acks_counted} state changes counted for {n} terminals"
    else:
        assert n <= acks_counted <= 2 * n


@asynccontextmanager
async def province_alert(
    engine: EngineProcess, terminals: list[SimTerminal], mqtt_url: str, *, received: int = 0
) -> AsyncIterator[tuple[EngineApi, Simulator, str]]:
    """The terminals online (each playing for 1 s) and a province alert issued through
    ``engine``; entered once ``received`` of them have it, the moment to break something."""
    async with (
        EngineApi(engine.base_url) as api,
        online(api, terminals, mqtt_url, Behaviour(play_time=1.0)) as sim,
    ):
        alert_id = await api.issue(areas=[PROVINCE])
        if received:
            await wait_for(lambda: sim.received(alert_id) >= received, timeout=20)
        yield api, sim, alert_id


async def test_engine_killed_mid_dispatch_recovers_every_ack_exactly_once(
    fresh_mosquitto: MosquittoServer, redis_url: str, rdb: redis.Redis, tmp_path: Path
) -> None:
    """SIGKILL right after the 201 (the outbox entry may be read, half sent or not at all),
    again while the acks stream in, then a restart: 2,000 terminals, each once."""
    terminals = province_terminals(2000, unique("ek"))
    engine = engine_for(tmp_path, redis_url, fresh_mosquitto.url)
    async with (
        engine,
        province_alert(engine, terminals, fresh_mosquitto.url) as (api, sim, alert_id),
    ):
        engine.kill()
        assert sim.played(alert_id) == 0
        await engine.start()
        await wait_for(lambda: sim.received(alert_id) >= 500, timeout=20)
        engine.kill()
        killed_at_played = sim.played(alert_id)
        assert killed_at_played < len(terminals)
        await engine.start()
        state = await until_played(api, rdb, alert_id, len(terminals))
        assert_exact(rdb, sim, terminals, alert_id, state)


async def test_ingestion_stats_match_the_ack_records_across_engine_kills(
    fresh_mosquitto: MosquittoServer, redis_url: str, rdb: redis.Redis, tmp_path: Path
) -> None:
    """Six alerts, the engine SIGKILLed while each one's acks stream in: ``ebd:stats``
    (acks_counted, acks_duplicate) must agree with the ack log, which records every ack with
    its result, however the kills fell."""
    terminals = province_terminals(1000, unique("st"))
    engine = engine_for(tmp_path, redis_url, fresh_mosquitto.url)
    alert_ids = []
    async with (
        engine,
        EngineApi(engine.base_url) as api,
        online(api, terminals, fresh_mosquitto.url, Behaviour(play_time=0.5)) as sim,
    ):
        for _ in range(6):
            alert_id = await api.issue(areas=[PROVINCE])
            alert_ids.append(alert_id)
            await sim.wait_received(alert_id, 300, timeout=20)
            engine.kill()
            await engine.start()
        for alert_id in alert_ids:
            await until_played(api, rdb, alert_id, len(terminals))
    results = Counter(row["result"] for row in acklog(rdb))
    per_alert = sum(int(cast(str, rdb.hget(dispatch_key(a), "acks_counted"))) for a in alert_ids)
    assert results["1"] == per_alert == 6 * 2 * len(terminals)
    stats = {k: int(v) for k, v in rdb.hgetall("ebd:stats").items()}
    assert (stats.get("acks_counted", 0), stats.get("acks_duplicate", 0)) == (
        results["1"],
        results["0"],
    ), f"ebd:stats {stats} against the ack log {dict(results)}"


async def test_broker_killed_while_acks_stream_back_every_terminal_plays_once(
    fresh_mosquitto: MosquittoServer, redis_url: str, rdb: redis.Redis, tmp_path: Path
) -> None:
    """SIGKILL of mosquitto while the played acks stream back; restarted on the same port and
    data, the engine and the terminals reconnect by themselves. What the broker had not saved
    (it saves every 5 s: here the terminals' sessions and the acks in flight) is made up for by
    the terminals' unconfirmed acks going out again and by the engine's resends."""
    terminals = province_terminals(2000, unique("bk"))
    engine = engine_for(tmp_path, redis_url, fresh_mosquitto.url)
    async with (
        engine,
        province_alert(engine, terminals, fresh_mosquitto.url) as (api, sim, alert_id),
    ):
        await wait_for(lambda: sim.played(alert_id) >= 200, timeout=20)
        fresh_mosquitto.kill()
        fresh_mosquitto.start()
        state = await until_played(api, rdb, alert_id, len(terminals))
        assert_exact(rdb, sim, terminals, alert_id, state, every_ack_arrives=False)
        assert engine.running


async def test_broker_killed_with_the_alert_in_flight_it_goes_out_within_seconds(
    fresh_mosquitto: MosquittoServer, redis_url: str, rdb: redis.Redis, tmp_path: Path
) -> None:
    """The broker dies while the engine waits for the PUBACK of the alert's publish (it is
    frozen first, so the kill lands exactly then). The broker is back at once; a red alert
    must not wait for the publish timeout (30 s) before it goes out again."""
    terminals = province_terminals(2000, unique("bf"))
    engine = engine_for(tmp_path, redis_url, fresh_mosquitto.url)
    async with (
        engine,
        EngineApi(engine.base_url) as api,
        online(api, terminals, fresh_mosquitto.url) as sim,
    ):
        assert fresh_mosquitto.pid is not None
        os.kill(fresh_mosquitto.pid, signal.SIGSTOP)
        try:
            alert_id = await api.issue(areas=[PROVINCE])
            # The engine answers from the loop that runs the dispatch: once it says
            # "dispatching", the publish has been handed to the (frozen) broker.
            await wait_for(lambda: _state_is(api, alert_id, "dispatching"), timeout=10)
        finally:
            fresh_mosquitto.kill()
        fresh_mosquitto.start()
        state = await until_played(api, rdb, alert_id, len(terminals), timeout=15)
        assert_exact(rdb, sim, terminals, alert_id, state)


async def _state_is(api: EngineApi, alert_id: str, wanted: str) -> bool:
    state = await api.try_delivery(alert_id)
    return bool(state and state["state"] == wanted)


async def test_redis_killed_right_after_the_201_the_alert_survives_and_goes_out(
    fresh_mosquitto: MosquittoServer, fresh_redis: RedisServer, tmp_path: Path
) -> None:
    terminals = province_terminals(1000, unique("rk"))
    engine = engine_for(tmp_path, fresh_redis.url, fresh_mosquitto.url)
    async with (
        engine,
        EngineApi(engine.base_url) as api,
        online(api, terminals, fresh_mosquitto.url) as sim,
    ):
        alert_id = await api.issue(areas=[PROVINCE])
        fresh_redis.kill()
        fresh_redis.start()
        with redis.Redis.from_url(fresh_redis.url, decode_responses=True) as rdb:
            assert rdb.exists(alert_key(alert_id))
            state = await until_played(api, rdb, alert_id, len(terminals))
            assert_exact(rdb, sim, terminals, alert_id, state)
        assert engine.running


async def test_a_terminal_offline_during_dispatch_gets_the_alert_once_when_back(
    mqtt_url: str, redis_url: str, rdb: redis.Redis, tmp_path: Path
) -> None:
    terminals = province_terminals(200, unique("off"))
    offline = [t.id for t in terminals[:20]]
    engine = engine_for(tmp_path, redis_url, mqtt_url, client_id=unique("ebd"))
    async with engine, EngineApi(engine.base_url) as api, online(api, terminals, mqtt_url) as sim:
        await sim.drop(offline)
        await wait_for(lambda: _offline_recorded(rdb, offline), timeout=10)
        alert_id = await api.issue(areas=[PROVINCE])
        await wait_for(lambda: sim.played(alert_id) == 180, timeout=20)
        state = await wait_for(lambda: _played(api, alert_id, 180), timeout=20)
        assert isinstance(state, dict)
        assert (state["expected"], state["pending"]) == (200, 20)
        assert state["offline_at_dispatch"] == 20
        await sim.reconnect(offline)
        state = await until_played(api, rdb, alert_id, 200)
        assert_exact(rdb, sim, terminals, alert_id, state)
        # They resumed the persistent sessions that had kept the alert for them.
        assert all(t.session_present for t in terminals[:20])


async def _played(api: EngineApi, alert_id: str, n: int) -> dict[str, Any] | None:
    state = await api.try_delivery(alert_id)
    return state if state and state["played"] == n else None


def _offline_recorded(rdb: redis.Redis, ids: list[str]) -> bool:
    states = rdb.hmget("ebd:terms:state", ids)
    return all(s is not None and '"offline"' in s for s in states)


async def test_an_alert_that_expires_while_a_terminal_is_offline_is_never_played(
    mqtt_url: str, redis_url: str, rdb: redis.Redis, tmp_path: Path
) -> None:
    terminals = province_terminals(50, unique("exp"))
    away = terminals[0]
    engine = engine_for(tmp_path, redis_url, mqtt_url, client_id=unique("ebd"))
    async with engine, EngineApi(engine.base_url) as api, online(api, terminals, mqtt_url) as sim:
        await sim.drop([away.id])
        expires = datetime.now(UTC) + timedelta(seconds=6)
        alert_id = await api.issue(areas=[PROVINCE], expires=expires)
        await wait_for(lambda: sim.played(alert_id) == 49, timeout=10)
        # The deadline sweeper resends to the absent terminal meanwhile (queued for it).
        await wait_for(lambda: _resent(api, alert_id), timeout=10)
        await wait_for(lambda: datetime.now(UTC) > expires + timedelta(seconds=1), timeout=10)
        await sim.reconnect([away.id])
        assert away.session_present
        # A marker alert for its village only: the broker hands over what the session
        # queued before it, so once the marker played, the expired alert had its chance.
        marker = await api.issue(areas=[away.region])
        await wait_for(lambda: sim.plays_of(away.id).get(marker) == 1, timeout=20)
        assert sim.plays_of(away.id) == {marker: 1}
        assert rdb.hget(tstate_key(alert_id), away.id) in (None, "failed")
        state = await api.delivery(alert_id)
        assert (state["played"], state["expected"]) == (49, 50)


async def _resent(api: EngineApi, alert_id: str) -> bool:
    state = await api.try_delivery(alert_id)
    return bool(state and state["resends"] >= 1)


@pytest.mark.parametrize("comes_back", [False, True], ids=["stays_dead", "restarted"])
async def test_two_instances_one_killed_mid_dispatch_every_ack_counts_once(
    fresh_mosquitto: MosquittoServer,
    redis_url: str,
    rdb: redis.Redis,
    tmp_path: Path,
    comes_back: bool,
) -> None:
    """Two engines share the outbox and (by a shared subscription) the acks; one dies by
    SIGKILL while acks stream in. Whether it stays dead (the survivor carries on alone, within
    the resend window of 17 s) or comes back under its name, every terminal plays once and
    counts once. With shared subscriptions an instance's session ends with its connection (see
    docs/operations.md), so acks in flight to the dead one are recovered by resends: a terminal
    may skip from no ack to played, never count twice."""
    terminals = province_terminals(2000, unique("duo"))
    a, b = two_instances(
        tmp_path, redis_url, fresh_mosquitto.url, resend=RESEND, claim_idle_seconds=2.0
    )
    async with (
        a,
        b,
        province_alert(a, terminals, fresh_mosquitto.url, received=500) as (api, sim, alert_id),
    ):
        a.kill()
        if comes_back:
            await a.start()
        state = await until_played(api, rdb, alert_id, len(terminals), b.base_url, timeout=25)
        assert_exact(rdb, sim, terminals, alert_id, state, every_ack_arrives=False)
        assert b.running


async def test_an_ack_storm_while_the_engine_is_down_loses_no_ack(
    fresh_mosquitto: MosquittoServer, redis_url: str, rdb: redis.Redis, tmp_path: Path
) -> None:
    """3,000 terminals ack (6,000 acks, far above mosquitto's default queue of 1,000) while
    the engine is dead; its persistent session keeps them all for the restart."""
    terminals = province_terminals(3000, unique("storm"))
    engine = engine_for(tmp_path, redis_url, fresh_mosquitto.url)
    async with engine, EngineApi(engine.base_url) as api:
        # Acks leave a terminal 1.5 s after the alert: the engine is dead by then.
        behaviour = Behaviour(ack_delay=1.5)
        async with online(api, terminals, fresh_mosquitto.url, behaviour) as sim:
            alert_id = await api.issue(areas=[PROVINCE])
            await wait_for(
                lambda: _state_is(api, alert_id, "dispatched"), timeout=10, interval=0.01
            )
            engine.kill()
            await wait_for(
                lambda: sum(t.acks_sent for t in terminals) >= 2 * len(terminals), timeout=20
            )
            restarted_ms = _redis_ms(rdb)
            await engine.start()
            state = await until_played(api, rdb, alert_id, len(terminals))
            assert_exact(rdb, sim, terminals, alert_id, state)
            after = [e for e in acklog_of(rdb, alert_id) if int(e["recorded_ms"]) >= restarted_ms]
            # The storm really waited in the broker: far more than its default queue of 1,000.
            assert len(after) > 1000


def _redis_ms(rdb: redis.Redis) -> int:
    seconds, micros = rdb.time()
    return int(seconds) * 1000 + int(micros) // 1000
