"""Redis going away under a running engine: clear 503s, nothing accepted is lost, and the
engine carries on by itself when Redis is back."""

from __future__ import annotations

from pathlib import Path

from dispatcher.embedded.processes import RedisServer
from dispatcher.http.state import STORE
from dispatcher.parts import ACK_LINK, INGESTER
from receiver.simulator import Behaviour
from tests.helpers import GULOU_COUNTY, unique, wait_for
from tests.integration import engine as steps
from tests.integration.engine import (
    PROVINCE,
    issue,
    online,
    played_all,
    publish_acks,
    running_engine,
    terminals_in,
)


async def test_redis_kill_gives_503_then_the_engine_recovers_with_nothing_lost(
    fresh_redis: RedisServer, mqtt_url: str, tmp_path: Path
) -> None:
    prefix = unique("rk")
    terminals = terminals_in(GULOU_COUNTY, 30, prefix)
    async with (
        running_engine(fresh_redis.url, mqtt_url, tmp_path) as api,
        online(api, terminals, mqtt_url) as sim,
    ):
        first = await issue(api, areas=[GULOU_COUNTY])
        await wait_for(lambda: played_all(api, first, 30), timeout=20)
        fresh_redis.kill()
        response = await api.post("/api/v1/alerts", headers=PROVINCE, json=steps.alert_body())
        assert response.status == 503
        body = await response.json()
        assert body["error"]["code"] == "store_unavailable"
        assert (await api.get("/readyz")).status == 503
        fresh_redis.restart()
        # Everything accepted before the crash is still there (appendfsync always) ...
        assert (await steps.delivery(api, first))["played"] == 30
        # ... and the engine takes new alerts and dispatches them without a restart.
        second = await issue(api, areas=[GULOU_COUNTY])
        await wait_for(lambda: played_all(api, second, 30), timeout=30)
        assert sim.played(second) == 30
        assert (await api.get("/readyz")).status == 200


async def test_acks_taken_while_redis_is_down_survive_an_engine_restart(
    fresh_redis: RedisServer, mqtt_url: str, tmp_path: Path
) -> None:
    """Acks are confirmed to the broker only once they are in Redis: an engine that stops
    holding unrecorded acks gets them again from its persistent session."""
    prefix = unique("held")
    client_id = f"ebd-{prefix}"
    terminals = terminals_in(GULOU_COUNTY, 3, prefix)
    silent = Behaviour(silent=frozenset(t.id for t in terminals))
    async with (
        running_engine(fresh_redis.url, mqtt_url, tmp_path, client_id=client_id) as api,
        online(api, terminals, mqtt_url, silent) as sim,
    ):
        alert_id = await issue(api, areas=[GULOU_COUNTY])
        await wait_for(lambda: steps.dispatched(api, alert_id), timeout=10)
        fresh_redis.kill()
        acks = [(t.id, steps.ack_payload(alert_id)) for t in terminals]
        await publish_acks(sim, acks)
        ingester = api.app[INGESTER]
        await wait_for(
            lambda: ingester.fed["ack"] == 3 and ingester.waiting_for_store > 0, timeout=10
        )
    fresh_redis.restart()
    async with running_engine(fresh_redis.url, mqtt_url, tmp_path, client_id=client_id) as api:
        # The acks' own connection resumed its session, where the broker kept the acks.
        assert api.app[ACK_LINK].session_present is True
        state = await wait_for(lambda: played_all(api, alert_id, 3), timeout=20)
        assert isinstance(state, dict)
        assert (await api.app[STORE].stats())["acks_counted"] == 3


async def test_a_lost_outbox_group_is_made_again(
    redis_url: str, mqtt_url: str, tmp_path: Path
) -> None:
    """Redis without persistence restarted, or FLUSHALL: dispatching must not stop for good."""
    prefix = unique("ng")
    terminals = terminals_in(GULOU_COUNTY, 5, prefix)
    async with running_engine(redis_url, mqtt_url, tmp_path) as api:
        await api.app[STORE].redis.flushall()
        async with online(api, terminals, mqtt_url):
            alert_id = await issue(api, areas=[GULOU_COUNTY])
            await wait_for(lambda: played_all(api, alert_id, 5), timeout=20)
