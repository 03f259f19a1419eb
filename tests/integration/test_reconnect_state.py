"""A terminal coming back gets the alerts still in force, not a backlog (issue 16, item 5).

With its session kept, the broker's queue arrives in a burst and the terminal plays only
what is in force (``receiver.brain``, catching up); without one, the engine sends it the
alerts in force on its cmd topic (``dispatcher.pipeline.current``). Real engine, Redis,
Mosquitto and simulated terminals; the reference agent for the field receiver's side.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from dispatcher.app import CATCH_UP
from dispatcher.http.state import STORE
from dispatcher.parts import LINK
from dispatcher.pipeline.current import CatchUp
from dispatcher.store.current import CurrentStore
from receiver.agent import ReceiverAgent
from tests.helpers import GULOU_COUNTY, alert_body, unique, wait_for
from tests.integration.engine import (
    GULOU,
    Client,
    delivery,
    dispatched,
    issue,
    online,
    register,
    terminals_in,
)
from tests.support.broker import Watch

N = 4


async def update_of(api: Client, ref: str, **fields: Any) -> str:
    body = alert_body(
        msg_type="update", references=[ref], headline="台风红色预警（更新）", **fields
    )
    response = await api.post("/api/v1/alerts", headers=GULOU, json=body)
    assert response.status == 201, await response.text()
    return str((await response.json())["id"])


async def cancel_of(api: Client, ref: str) -> str:
    response = await api.post(f"/api/v1/alerts/{ref}/cancel", headers=GULOU)
    assert response.status == 201, await response.text()
    return str((await response.json())["id"])


def details(watch: Watch, terminal_id: str, alert_id: str) -> list[str]:
    """``state`` or ``state/detail`` of each ack the terminal sent for the alert."""
    return [
        a["state"] + (f"/{a['detail']}" if a.get("detail") else "")
        for a in watch.acks(terminal_id, alert_id)
    ]


async def test_back_from_offline_a_terminal_plays_only_the_update_in_force(
    api: Client, mqtt_url: str, watch: Watch
) -> None:
    terminals = terminals_in(GULOU_COUNTY, N, unique("rc"))
    ids = [t.id for t in terminals]
    async with online(api, terminals, mqtt_url) as sim:
        await sim.drop(ids)
        first = await issue(api, GULOU)
        await wait_for(lambda: dispatched(api, first), timeout=10)
        updated = await update_of(api, first)
        other = await issue(api, GULOU, headline="暴雨橙色预警", severity="orange", event="暴雨")
        # Sent before it is cancelled (a cancel that comes first stops it at the engine).
        await wait_for(lambda: dispatched(api, other), timeout=10)
        cancel = await cancel_of(api, other)
        await wait_for(lambda: dispatched(api, updated), timeout=10)
        await wait_for(lambda: dispatched(api, cancel), timeout=10)
        await sim.reconnect(ids)
        assert all(t.session_present for t in terminals)
        await sim.wait_played(updated, N, timeout=20)
        await sim.wait_played(cancel, N, timeout=20)
        # A live alert after them: once it has played, the backlog was all handled.
        later = await issue(api, GULOU, headline="雷电黄色预警", severity="yellow", event="雷电")
        await sim.wait_played(later, N, timeout=20)
        await wait_for(lambda: all(details(watch, t, later)[-1:] == ["played"] for t in ids))
        assert all(sim.plays_of(t) == {updated: 1, later: 1} for t in ids)
        for t in ids:
            assert details(watch, t, first) == ["received", "failed/superseded"]
            assert details(watch, t, updated) == ["received", "played"]
            assert details(watch, t, other) == ["received", "failed/cancelled"]
            # A cancel of a warning this terminal never sounded: handled, not announced.
            assert details(watch, t, cancel) == ["received", "played/silent"]
    state = await delivery(api, updated)
    assert (state["expected"], state["played"]) == (N, N)


async def test_an_alert_that_expired_while_the_terminal_was_away_is_never_played(
    api: Client, mqtt_url: str, watch: Watch
) -> None:
    terminals = terminals_in(GULOU_COUNTY, 2, unique("rx"))
    ids = [t.id for t in terminals]
    soon = (datetime.now(UTC) + timedelta(seconds=2)).isoformat()
    async with online(api, terminals, mqtt_url) as sim:
        await sim.drop(ids)
        short = await issue(api, GULOU, expires_in=None, expires=soon)
        await wait_for(lambda: dispatched(api, short), timeout=10)
        await wait_for(lambda: datetime.now(UTC) > datetime.fromisoformat(soon), timeout=5)
        await sim.reconnect(ids)
        later = await issue(api, GULOU)
        await sim.wait_played(later, 2, timeout=20)
        assert all(sim.plays_of(t) == {later: 1} for t in ids)
        assert all("played" not in details(watch, t, short) for t in ids)


async def test_a_new_terminal_coming_online_plays_the_warning_in_force_once(
    api: Client, mqtt_url: str, watch: Watch
) -> None:
    first = await issue(api, GULOU)
    updated = await update_of(api, first)
    gone = await issue(api, GULOU, headline="暴雨橙色预警", severity="orange", event="暴雨")
    await cancel_of(api, gone)
    await wait_for(lambda: dispatched(api, updated), timeout=10)
    catch_up = api.app[CATCH_UP]
    sent = catch_up.totals["sent"]
    terminals = terminals_in(GULOU_COUNTY, N, unique("nw"))
    ids = [t.id for t in terminals]
    async with online(api, terminals, mqtt_url) as sim:
        assert not any(t.session_present for t in terminals)
        await sim.wait_played(updated, N, timeout=20)
        # Exactly the update, once per terminal: nothing of the replaced or cancelled ones.
        await wait_for(lambda: catch_up.totals["sent"] >= sent + N, timeout=10)
        assert catch_up.totals["sent"] == sent + N
        assert all(sim.plays_of(t) == {updated: 1} for t in ids)
        assert all(details(watch, t, updated) == ["received", "played"] for t in ids)
        # Registered after the update went out, they are not in its expected set, so the
        # engine cannot know they played it: another online event gets it again, and the
        # terminal answers with its ack again, without playing twice. The same event twice
        # (the retained state, seen again by a reconnecting engine) sends nothing.
        assert await catch_up.answer([(t, "a later connect") for t in ids]) == N
        assert await catch_up.answer([(t, "a later connect") for t in ids]) == 0
        await wait_for(lambda: sim.duplicates >= N, timeout=10)
        assert all(sim.plays_of(t) == {updated: 1} for t in ids)


async def test_an_alert_from_the_backlog_and_from_a_resend_plays_once(
    api: Client, mqtt_url: str
) -> None:
    terminals = terminals_in(GULOU_COUNTY, 2, unique("dup"))
    ids = [t.id for t in terminals]
    async with online(api, terminals, mqtt_url) as sim:
        await sim.drop(ids)
        alert_id = await issue(api, GULOU)
        await wait_for(lambda: dispatched(api, alert_id), timeout=10)
        # The engine sends the alert in force on the cmd topic as for a terminal back without
        # its session: queued in the same session behind the broadcast. Once per online event.
        catch_up = api.app[CATCH_UP]
        assert await catch_up.answer([(t, "connect-1") for t in ids]) == 2
        assert await catch_up.answer([(t, "connect-1") for t in ids]) == 0
        await sim.reconnect(ids)
        await sim.wait_played(alert_id, 2, timeout=20)
        await wait_for(lambda: sim.duplicates >= 2, timeout=10)
        assert all(sim.plays_of(t) == {alert_id: 1} for t in ids)


async def test_the_reference_agent_catches_up_like_the_simulator(
    api: Client, mqtt_url: str, watch: Watch, tmp_path: Path
) -> None:
    from tests.integration.test_receiver import RecordingPlayer  # its recording player

    (terminal,) = terminals_in(GULOU_COUNTY, 1, unique("ag"))
    given = await register(api, [terminal])
    scheme, _, address = given.url.partition("://")
    url = f"{scheme}://{terminal.id}:{terminal.password}@{address}"
    player = RecordingPlayer()
    agent = ReceiverAgent(
        terminal.id, terminal.region, url, player=player, keyring=given.keyring,
        ca_pem=given.ca_pem,
    )  # fmt: skip
    stop = asyncio.Event()
    task = asyncio.create_task(agent.run(stop))
    try:
        await wait_for(agent.connected.is_set, timeout=10)
        stop.set()
        await task
        first = await issue(api, GULOU)
        updated = await update_of(api, first)
        await wait_for(lambda: dispatched(api, updated), timeout=10)
        stop = asyncio.Event()
        task = asyncio.create_task(agent.run(stop))
        await wait_for(lambda: "played" in details(watch, terminal.id, updated), timeout=20)
        assert agent.session_present is True
        assert [p.alert_id for p in player.played] == [updated]
        assert details(watch, terminal.id, first) == ["received", "failed/superseded"]
    finally:
        stop.set()
        await task


ONLINE_AT = '"at":"2026-07-01T08:00:00.000+08:00"'


@pytest.mark.parametrize(
    ("topic", "payload", "queued"),
    [
        ("eb/v1/term/T1/state", '{"v":1,"state":"online","session":"new",' + ONLINE_AT + "}", True),
        # A terminal of another make, which does not say: treated as new.
        ("eb/v1/term/T1/state", '{"v":1,"state":"online",' + ONLINE_AT + "}", True),
        # Its session was kept: the broker delivers the backlog, nothing to send.
        ("eb/v1/term/T1/state", '{"v":1,"state":"online","session":"resumed",' + ONLINE_AT + "}",
         False),
        ("eb/v1/term/T1/state", '{"v":1,"state":"offline"}', False),
        # The report of a refused message is not a connect.
        ("eb/v1/term/T1/state",
         '{"v":1,"state":"online",' + ONLINE_AT + ',"rejected":{"reason":"unsigned"}}', False),
        # Without "at" one connect cannot be told from the next: not answered at all.
        ("eb/v1/term/T1/state", '{"v":1,"state":"online","session":"new"}', False),
        ("eb/v1/term/T1/ack", '{"v":1,"state":"online",' + ONLINE_AT + "}", False),
        ("eb/v1/term/bad\tid/state", '{"v":1,"state":"online",' + ONLINE_AT + "}", False),
        ("eb/v1/term/T1/state", '{"v":1,"state":"online"', False),
    ],
)  # fmt: skip
async def test_which_state_messages_are_answered_with_the_alerts_in_force(
    api: Client, topic: str, payload: str, queued: bool
) -> None:
    # A CatchUp of the test's own, not running, so its queue can be read; observe encodes
    # nothing, so no signer is needed.
    link = api.app[LINK]
    catch_up = CatchUp(CurrentStore(api.app[STORE]), link, encode=lambda alert: b"")
    catch_up.observe(topic, payload.encode())
    assert catch_up.backlog == (1 if queued else 0)
