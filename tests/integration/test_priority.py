"""Red before drills: every queue of the engine serves actual red and orange warnings first.

The outbox: a red warning issued while a long queue of drills is being dispatched waits for
at most the one drill in flight. The sweeps: an urgent alert's due sweep is claimed before
others due earlier.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from dispatcher.core.models import Alert, AlertRequest, Severity, Status
from dispatcher.http.state import STORE
from dispatcher.store.store import Store
from tests.helpers import alert_body, wait_for
from tests.integration.engine import PROVINCE, issue, running_engine

DRILLS = 150


def drill(n: int) -> Alert:
    request = AlertRequest.model_validate(
        alert_body(status="exercise", severity="blue", headline=f"演练 {n}", areas=["350102"])
    )
    return Alert.issue(request, office_id="fj-province", office_name="福建省", areas=["350102"])


def at(state: dict[str, str], field: str) -> datetime:
    return datetime.fromisoformat(state[field])


async def test_a_red_warning_overtakes_a_queue_of_drills_and_waits_for_one_at_most(
    redis_url: str, mqtt_url: str, tmp_path: Path, store: Store
) -> None:
    # The drills are queued before the engine starts: its worker finds a long queue.
    drills = [drill(n) for n in range(DRILLS)]
    for alert in drills:
        await store.create_alert(alert, office_id="fj-province")
    async with running_engine(redis_url, mqtt_url, tmp_path) as api:
        engine_store = api.app[STORE]

        async def dispatched(alert_id: str) -> bool:
            state = await engine_store.dispatch_state(alert_id)
            return bool(state.get("state") == "dispatched")

        await wait_for(lambda: dispatched(drills[0].id), timeout=20, message="the first drill")
        red_id = await issue(api, PROVINCE)  # alert_body's default: an actual red typhoon
        await wait_for(lambda: dispatched(red_id), timeout=20, message="the red warning")
        await wait_for(lambda: dispatched(drills[-1].id), timeout=60, message="every drill")
        red = await engine_store.dispatch_state(red_id)
        states = [await engine_store.dispatch_state(a.id) for a in drills]
    queued, sent = at(red, "queued_at"), at(red, "dispatched_at")
    before_red = [s for s in states if at(s, "dispatched_at") < sent]
    meanwhile = [s for s in before_red if at(s, "dispatched_at") > queued]
    # The red came while drills were still queued (else this test shows nothing) …
    assert len(before_red) < DRILLS
    # … and went out after at most the one in flight, not after the rest of a read batch.
    assert len(meanwhile) <= 1, f"{len(meanwhile)} drills went out while the red waited"


async def test_every_alert_sits_in_the_stream_of_its_priority(store: Store) -> None:
    await store.ensure_outbox()
    red = Alert.issue(
        AlertRequest.model_validate(alert_body()),
        office_id="fj-province",
        office_name="福建省",
        areas=["350102"],
    )
    orange_drill = Alert.issue(
        AlertRequest.model_validate(alert_body(severity="orange", status="exercise")),
        office_id="fj-province",
        office_name="福建省",
        areas=["350102"],
    )
    assert (red.urgent, red.severity, red.status) == (True, Severity.RED, Status.ACTUAL)
    assert orange_drill.urgent is False
    for alert in (orange_drill, red):
        await store.create_alert(alert, office_id="fj-province")
    entries = await store.outbox_read("w", count=10, block_ms=100)
    assert [(e.alert_id, e.urgent) for e in entries] == [(red.id, True), (orange_drill.id, False)]
    for entry in entries:
        await store.outbox_done(entry)
    assert await store.outbox_read("w", count=10, block_ms=0, pending=True) == []


async def test_an_urgent_sweep_is_claimed_before_others_due_earlier(store: Store) -> None:
    await store.schedule_sweep("drill-1", 1_000)
    await store.schedule_sweep("drill-2", 2_000)
    await store.schedule_sweep("red-1", 5_000, urgent=True)
    first = await store.claim_due_sweeps(10_000, lease_ms=30_000, count=2, instance="a")
    assert first == ["red-1", "drill-1"]
    assert await store.claim_due_sweeps(10_000, lease_ms=30_000, count=5, instance="a") == [
        "drill-2"
    ]
    # Claimed: due again only when the claim's lease runs out.
    assert await store.claim_due_sweeps(39_999, lease_ms=30_000, count=5, instance="b") == []
    await store.finish_sweep("red-1")
    assert await store.claim_due_sweeps(40_001, lease_ms=30_000, count=5, instance="b") == [
        "drill-1",
        "drill-2",
    ]
