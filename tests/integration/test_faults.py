"""Redis going away under a running engine: clear 503s, nothing accepted is lost, and the
engine carries on by itself when Redis is back."""

from __future__ import annotations

import uuid
from pathlib import Path

from dispatcher.services import RedisServer
from receiver.simulator import Simulator
from tests.helpers import wait_for
from tests.integration.engine import PROVINCE, alert_body, running_engine
from tests.integration.test_dispatch import (
    COUNTY_A,
    county_terminals,
    delivery,
    issue,
    played_all,
    register,
)


async def test_redis_kill_gives_503_then_the_engine_recovers_with_nothing_lost(
    fresh_redis: RedisServer, mqtt_url: str, tmp_path: Path
) -> None:
    prefix = f"rk-{uuid.uuid4().hex[:6]}"
    terminals = county_terminals(COUNTY_A, 30, prefix)
    async with running_engine(fresh_redis.url, mqtt_url, tmp_path) as api:
        await register(api, terminals)
        async with Simulator(terminals, mqtt_url) as sim:
            first = await issue(api, areas=[COUNTY_A])
            await wait_for(lambda: played_all(api, first, 30), timeout=20)
            fresh_redis.kill()
            response = await api.post("/api/v1/alerts", headers=PROVINCE, json=alert_body())
            assert response.status == 503
            body = await response.json()
            assert body["error"]["code"] == "store_unavailable"
            assert (await api.get("/readyz")).status == 503
            fresh_redis.restart()
            # Everything accepted before the crash is still there (appendfsync always) ...
            assert (await delivery(api, first))["played"] == 30
            # ... and the engine takes new alerts and dispatches them without a restart.
            second = await issue(api, areas=[COUNTY_A])
            await wait_for(lambda: played_all(api, second, 30), timeout=30)
            assert sim.played(second) == 30
            assert (await api.get("/readyz")).status == 200
