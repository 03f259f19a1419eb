"""End to end: API → outbox → MQTT → simulated terminals → acks → delivery state in Redis."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from dispatcher.embedded.processes import MosquittoServer
from dispatcher.http.state import STORE
from dispatcher.parts import LINK
from receiver.simulator import Behaviour
from tests.helpers import unique, wait_for
from tests.integration.engine import (
    GULOU,
    Client,
    ack_payload,
    alert_body,
    delivery,
    dispatched,
    issue,
    online,
    played_all,
    publish_acks,
    register,
    running_engine,
    terminals_in,
)

COUNTY_A = "350102"  # 鼓楼区
COUNTY_B = "350103"  # 台江区


async def test_county_alert_reaches_only_that_county_and_counts_each_terminal_once(
    api: Client, mqtt_url: str
) -> None:
    prefix = unique("e2e")
    a = terminals_in(COUNTY_A, 150, prefix + "a")
    b = terminals_in(COUNTY_B, 150, prefix + "b")
    async with online(api, a + b, mqtt_url, Behaviour(send_playing=True)) as sim:
        alert_id = await issue(api, areas=[COUNTY_A])
        state = await wait_for(lambda: played_all(api, alert_id, 150), timeout=30)
        assert isinstance(state, dict)
        assert sim.played(alert_id) == 150
        assert all(sim.plays_of(t.id) == {alert_id: 1} for t in a)
        assert all(sim.plays_of(t.id) == {} for t in b)
    assert state["received"] == 150
    assert state["failed"] == 0
    assert state["pending"] == 0
    assert state["state"] == "dispatched"
    assert [row["code"] for row in state["by_county"]] == [COUNTY_A]
    assert state["by_county"][0]["played"] == 150
    assert state["by_city"] == [
        {"code": "3501", "name": "福州市", "expected": 150, "received": 150, "played": 150,
         "failed": 0, "no_ack": 0, "cancelled": 0, "pending": 0,
         "villages_without_terminal": 0}
    ]  # fmt: skip
    store = api.app[STORE]
    log = await store.ack_log(count=1000)
    mine = [e for e in log if e["alert_id"] == alert_id]
    # received, playing, played from each terminal, each appended to the log once.
    assert len(mine) == 450
    assert {e["result"] for e in mine} == {"1"}
    assert (await store.stats())["acks_counted"] == 450


async def test_duplicate_backward_and_bad_acks_are_counted_and_never_stop_ingestion(
    api: Client, mqtt_url: str
) -> None:
    prefix = unique("ack")
    terminals = terminals_in(COUNTY_A, 3, prefix)
    # Silent terminals: the acks in this test are written by hand.
    silent = Behaviour(silent=frozenset(t.id for t in terminals))
    async with online(api, terminals, mqtt_url, silent) as sim:
        alert_id = await issue(api, areas=[COUNTY_A])
        await wait_for(lambda: delivery(api, alert_id), timeout=10)
        await wait_for(lambda: dispatched(api, alert_id), timeout=10, message="alert dispatched")
        t0, t1, t2 = (t.id for t in terminals)

        def ack(state: str, alert: str = alert_id, detail: str | None = None) -> bytes:
            return ack_payload(alert, state, detail=detail)

        sequence = [
            (t0, ack("received")),
            (t0, ack("received")),  # duplicate
            (t0, ack("played")),
            (t0, ack("received")),  # backwards: ignored
            (t1, b"not json at all"),
            (t1, b'{"v": 1, "alert_id": "x"}'),  # missing state and at
            (t1, b'{"v": 2, "alert_id": "x", "state": "played", "at": "2026-11-27T08:00:00Z"}'),
            (t1, ack("played").replace(b"+08:00", b"")),  # naive time
            (t1, ack("exploded")),
            (t1, ack("played", alert="no-such-alert")),
            (t1, ack("failed")),
            (t1, ack("played")),  # after failed: ignored
            # Free text with the characters that frame a batch in Redis: kept as it came.
            (t2, ack("playing", detail="功放\t过热\n已降功率")),
        ]
        # Acks of terminals the engine does not know can no longer reach it: without an
        # account no client may publish on a terminal's topic (tests/integration/test_attacks).
        await publish_acks(sim, sequence)
        store = api.app[STORE]
        stats = await wait_for(lambda: _stats_total(store, 13), timeout=10)
    assert isinstance(stats, dict)
    assert stats["acks_malformed"] == 5
    assert stats["acks_unknown_alert"] == 1
    assert stats["acks_duplicate"] == 3
    assert stats["acks_counted"] == 4
    state = await delivery(api, alert_id)
    assert (state["expected"], state["received"], state["played"], state["failed"]) == (3, 2, 1, 1)
    assert state["pending"] == 0
    assert stats.get("batches_failed", 0) == 0
    log = [e for e in await store.ack_log(count=1000) if e["alert_id"] == alert_id]
    assert [e["detail"] for e in log if e["terminal_id"] == t2] == ["功放\t过热\n已降功率"]


async def _stats_total(store: Any, n: int) -> dict[str, int] | None:
    stats: dict[str, int] = await store.stats()
    keys = ("acks_malformed", "acks_unknown_alert", "acks_unknown_terminal", "acks_duplicate",
            "acks_counted", "acks_unexpected")  # fmt: skip
    return stats if sum(stats.get(k, 0) for k in keys) >= n else None


async def test_village_alert_and_terminals_outside_targets(api: Client, mqtt_url: str) -> None:
    prefix = unique("vil")
    terminals = terminals_in(COUNTY_A, 20, prefix)
    target = terminals[0].region
    expected = [t for t in terminals if t.region == target]
    async with online(api, terminals, mqtt_url) as sim:
        alert_id = await issue(api, headers=GULOU, areas=[target])
        await wait_for(lambda: played_all(api, alert_id, len(expected)), timeout=20)
        assert sim.played(alert_id) == len(expected)
    state = await delivery(api, alert_id, detail="township")
    assert [row["code"] for row in state["by_township"]] == [target[:9]]


async def test_cancel_stops_the_alert_and_is_itself_acknowledged(
    api: Client, mqtt_url: str
) -> None:
    prefix = unique("cx")
    terminals = terminals_in(COUNTY_A, 40, prefix)
    async with online(api, terminals, mqtt_url) as sim:
        alert_id = await issue(api, headers=GULOU, areas=[COUNTY_A])
        await wait_for(lambda: played_all(api, alert_id, 40), timeout=20)
        response = await api.post(
            f"/api/v1/alerts/{alert_id}/cancel", headers=GULOU, json={"reason": "台风已远离"}
        )
        assert response.status == 201, await response.text()
        cancel = await response.json()
        assert cancel["msg_type"] == "cancel"
        assert cancel["references"] == [alert_id]
        assert cancel["text"] == "台风已远离"
        await wait_for(lambda: played_all(api, cancel["id"], 40), timeout=20)
        assert sim.received(cancel["id"]) == 40
    original = await delivery(api, alert_id)
    assert original["state"] == "cancelled"
    assert original["cancelled_by"] == cancel["id"]
    again = await api.post(f"/api/v1/alerts/{alert_id}/cancel", headers=GULOU)
    assert again.status == 409
    assert cancel["id"] in (await again.json())["error"]["message"]
    of_cancel = await api.post(f"/api/v1/alerts/{cancel['id']}/cancel", headers=GULOU)
    assert of_cancel.status == 409
    unknown = await api.post("/api/v1/alerts/nope/cancel", headers=GULOU)
    assert unknown.status == 404


async def test_cancel_during_playback_counts_terminals_as_cancelled_not_failed(
    api: Client, mqtt_url: str
) -> None:
    prefix = unique("cp")
    terminals = terminals_in(COUNTY_A, 30, prefix)
    async with online(api, terminals, mqtt_url, Behaviour(play_time=120)):
        alert_id = await issue(api, headers=GULOU, areas=[COUNTY_A])
        await wait_for(lambda: _all_received(api, alert_id, 30), timeout=20, message="all playing")
        response = await api.post(f"/api/v1/alerts/{alert_id}/cancel", headers=GULOU)
        assert response.status == 201
        state = await wait_for(lambda: _all_cancelled(api, alert_id, 30), timeout=20)
    assert isinstance(state, dict)
    assert (state["played"], state["failed"], state["pending"]) == (0, 0, 0)
    assert state["state"] == "cancelled"


async def _all_received(api: Client, alert_id: str, n: int) -> bool:
    return bool((await delivery(api, alert_id))["received"] == n)


async def _all_cancelled(api: Client, alert_id: str, n: int) -> dict[str, Any] | None:
    state = await delivery(api, alert_id)
    return state if state["cancelled"] == n else None


async def test_broker_restart_during_dispatch_keeps_the_engine_session(
    redis_url: str, fresh_mosquitto: MosquittoServer, tmp_path: Path
) -> None:
    prefix = unique("br")
    terminals = terminals_in(COUNTY_A, 60, prefix)
    async with running_engine(redis_url, fresh_mosquitto.url, tmp_path) as api:
        link = api.app[LINK]
        async with online(api, terminals, fresh_mosquitto.url) as sim:
            fresh_mosquitto.stop()
            await wait_for(lambda: not link.connected.is_set(), timeout=10)
            # Accepted while the broker is down: stored, queued, sent when it is back.
            alert_id = await issue(api, areas=[COUNTY_A])
            assert (await delivery(api, alert_id))["state"] in ("queued", "dispatching")
            fresh_mosquitto.restart()
            await wait_for(lambda: link.connected.is_set(), timeout=20)
            assert link.connects == 2
            assert link.session_present is True
            await wait_for(lambda: played_all(api, alert_id, 60), timeout=60)
            assert all(sum(sim.plays_of(t.id).values()) == 1 for t in terminals)


async def test_an_update_supersedes_the_alert_it_references(api: Client, mqtt_url: str) -> None:
    prefix = unique("up")
    terminals = terminals_in(COUNTY_A, 25, prefix)
    async with online(api, terminals, mqtt_url, Behaviour(play_time=120)) as sim:
        first = await issue(api, headers=GULOU, areas=[COUNTY_A], severity="orange")
        await wait_for(lambda: _all_received(api, first, 25), timeout=20)
        second = await issue(
            api,
            headers=GULOU,
            areas=[COUNTY_A],
            msg_type="update",
            references=[first],
            headline="台风红色预警（升级）",
        )
        # Terminals stop the old one (acked as superseded) and start the new one.
        old = await wait_for(lambda: _all_cancelled(api, first, 25), timeout=20)
        await wait_for(lambda: _all_received(api, second, 25), timeout=20)
        assert all(sim.plays_of(t.id) == {first: 1, second: 1} for t in terminals)
    assert isinstance(old, dict)
    assert old["state"] == "superseded"
    assert old["superseded_by"] == second
    assert old["failed"] == 0
    # A cancel cannot be updated, and neither can a cancelled alert.
    cancel = await api.post(f"/api/v1/alerts/{second}/cancel", headers=GULOU)
    cancel_id = (await cancel.json())["id"]
    for ref in (second, cancel_id):
        response = await api.post(
            "/api/v1/alerts",
            headers=GULOU,
            json=alert_body(areas=[COUNTY_A], msg_type="update", references=[ref]),
        )
        assert response.status == 409, await response.text()
    unknown = await api.post(
        "/api/v1/alerts",
        headers=GULOU,
        json=alert_body(areas=[COUNTY_A], msg_type="update", references=["no-such-alert"]),
    )
    assert unknown.status == 422


async def test_expired_alert_state_and_no_dispatch_after_expiry(api: Client, mqtt_url: str) -> None:
    prefix = unique("ex")
    terminals = terminals_in(COUNTY_A, 5, prefix)
    given = await register(api, terminals)
    soon = (datetime.now(UTC) + timedelta(seconds=2)).isoformat()
    async with given.simulator(terminals) as sim:
        await sim.drop([t.id for t in terminals])
        alert_id = await issue(api, areas=[COUNTY_A], expires_in=None, expires=soon)
        await wait_for(lambda: dispatched(api, alert_id), timeout=10)
        expired = await wait_for(lambda: _state_is(api, alert_id, "expired"), timeout=10)
        await sim.reconnect([t.id for t in terminals])
        # A live alert after it: once that has played, anything queued before it was seen.
        later = await issue(api, areas=[COUNTY_A])
        await wait_for(lambda: played_all(api, later, 5), timeout=20)
        assert all(sim.plays_of(t.id) == {later: 1} for t in terminals)
    assert isinstance(expired, dict)
    assert expired["played"] == 0


async def _state_is(api: Client, alert_id: str, state: str) -> dict[str, Any] | None:
    current = await delivery(api, alert_id)
    return current if current["state"] == state else None
