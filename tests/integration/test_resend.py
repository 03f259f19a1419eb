"""Deadlines: terminals with no ack get the alert again on their cmd topic, are failed and
escalated after the last resend; lost acks come back as repeated acks, never as a second play."""

from __future__ import annotations

import asyncio
import json
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from dispatcher.http.state import STORE
from receiver.simulator import Behaviour
from tests.helpers import GULOU_COUNTY, unique, wait_for
from tests.integration import engine as steps
from tests.integration.engine import (
    GULOU,
    PROVINCE,
    TAIJIANG,
    Client,
    ack_payload,
    base_url,
    delivery,
    dispatched,
    ebd,
    issue,
    online,
    played_all,
    running_engine,
    terminals_in,
)

FAST = {"red": 1.0, "orange": 1.0, "backoff": 0.5, "max_attempts": 2, "sweep_interval": 0.1}


class Recorder:
    """An escalation notifier as the SMS channel will be one; this one remembers."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, list[str]]] = []

    async def notify(self, alert: Any, records: Any) -> None:
        self.calls.append((alert.id, [r["terminal_id"] for r in records]))


class Broken:
    async def notify(self, alert: Any, records: Any) -> None:
        raise RuntimeError("gateway down")


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
def engine_overrides(recorder: Recorder) -> dict[str, Any]:
    """The ``api`` engine of this module: fast resends, and two escalation notifiers, one
    broken and the recorder."""
    return {"resend": FAST, "notifiers": [Broken(), recorder]}


async def test_lost_acks_are_recovered_by_a_resend_without_a_second_play(
    api: Client, mqtt_url: str
) -> None:
    prefix = unique("lost")
    terminals = terminals_in(GULOU_COUNTY, 20, prefix)
    lossy = frozenset(t.id for t in terminals[:5])
    async with online(api, terminals, mqtt_url, Behaviour(lose_first_acks=lossy)) as sim:
        alert_id = await issue(api, areas=[GULOU_COUNTY])
        state = await wait_for(lambda: played_all(api, alert_id, 20), timeout=20)
        assert all(sum(sim.plays_of(t.id).values()) == 1 for t in terminals)
        assert sim.duplicates >= 5
    assert isinstance(state, dict)
    assert state["resends"] == 5
    assert state["escalated"] == 0
    listing = await (
        await api.get(f"/api/v1/alerts/{alert_id}/terminals?state=played", headers=PROVINCE)
    ).json()
    resent = {t["id"]: t["resends"] for t in listing["terminals"] if t["resends"]}
    assert resent == dict.fromkeys(lossy, 1)


async def test_silent_terminals_are_failed_and_escalated_after_the_last_resend(
    api: Client,
    mqtt_url: str,
    recorder: Recorder,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("EBD_TOKEN", raising=False)
    prefix = unique("mute")
    terminals = terminals_in(GULOU_COUNTY, 10, prefix)
    silent = frozenset(t.id for t in terminals[:3])
    async with online(api, terminals, mqtt_url, Behaviour(silent=silent)) as sim:
        alert_id = await issue(api, headers=GULOU, areas=[GULOU_COUNTY])
        state = await wait_for(lambda: _escalated(api, alert_id, 3), timeout=20)
        # Two resends reached each silent terminal; it played once all the same.
        assert all(sum(sim.plays_of(t).values()) == 1 for t in silent)
    assert isinstance(state, dict)
    # A notifier that fails does not keep the others (the SMS step) from hearing of it.
    assert recorder.calls == [(alert_id, sorted(silent))]
    assert (state["played"], state["failed"], state["pending"]) == (7, 3, 0)
    assert state["resends"] == 6
    body = await (await api.get(f"/api/v1/escalations?alert_id={alert_id}", headers=GULOU)).json()
    assert {e["terminal_id"] for e in body["escalations"]} == silent
    record = body["escalations"][0]
    assert record["region_name"].startswith("福州市鼓楼区")
    assert "2 resends" in record["reason"]
    # Which warning went unheard, as the office issued it, and when, in Beijing time.
    assert (record["headline"], record["severity"], record["event"]) == (
        "台风红色预警",
        "red",
        "台风",
    )
    assert record["state"] == "open"
    assert record["at"].endswith("+08:00")
    everywhere = await (await api.get("/api/v1/escalations", headers=PROVINCE)).json()
    assert {e["terminal_id"] for e in everywhere["escalations"]} >= silent
    # Another county's office sees none of Gulou's escalations.
    other = await (await api.get("/api/v1/escalations", headers=TAIJIANG)).json()
    assert other["escalations"] == []
    failed = await (
        await api.get(f"/api/v1/alerts/{alert_id}/terminals?state=failed", headers=GULOU)
    ).json()
    assert {t["id"] for t in failed["terminals"]} == silent
    bad = await api.get(f"/api/v1/alerts/{alert_id}/terminals?state=lost", headers=GULOU)
    assert bad.status == 422
    # A late final ack still counts: the terminal did play, only its acks were lost.
    late = sorted(silent)[0]
    await steps.publish_acks(sim, [(late, ack_payload(alert_id))])
    after = await wait_for(lambda: _played(api, alert_id, 8), timeout=10)
    assert isinstance(after, dict)
    assert (after["failed"], after["no_ack"], after["escalated"]) == (2, 2, 3)
    # Its escalation is resolved, with the time (written just after the ack); the others stay open.
    url = f"/api/v1/escalations?alert_id={alert_id}&state="
    resolved = await wait_for(lambda: _resolved(api, url + "resolved"), timeout=10)
    assert isinstance(resolved, list)
    assert [e["terminal_id"] for e in resolved] == [late]
    assert resolved[0]["resolved_at"].endswith("+08:00")
    assert datetime.fromisoformat(resolved[0]["resolved_at"]) >= datetime.fromisoformat(
        record["at"]
    )
    still_open = await (await api.get(url + "open", headers=GULOU)).json()
    assert {e["terminal_id"] for e in still_open["escalations"]} == silent - {late}
    everywhere = await (await api.get("/api/v1/escalations?state=resolved", headers=GULOU)).json()
    assert late in {e["terminal_id"] for e in everywhere["escalations"]}
    bad_state = await api.get(url + "closed", headers=GULOU)
    assert bad_state.status == 422
    base = base_url(api).rstrip("/")
    argv = ["escalations", "list", "--api", base, "--alert", alert_id]
    with pytest.MonkeyPatch.context() as env:
        env.setenv("EBD_TOKEN", "tok-gulou")
        assert await ebd(*argv) == 0
        table = capsys.readouterr().out
        assert all(t in table for t in silent)
        assert "鼓楼区" in table
        assert await ebd(*argv[:-2], "-o", "json") == 0
        assert len(json.loads(capsys.readouterr().out)["escalations"]) >= 3
    assert await ebd("escalations", "list", "--api", base) == 2
    assert "EBD_TOKEN" in capsys.readouterr().err


async def _resolved(api: Client, url: str) -> list[dict[str, Any]] | None:
    """The escalations ``url`` lists once each has its resolution time."""
    body = await (await api.get(url, headers=GULOU)).json()
    rows = body["escalations"]
    return rows if rows and all(e["resolved_at"] for e in rows) else None


async def _played(api: Client, alert_id: str, n: int) -> dict[str, Any] | None:
    state = await delivery(api, alert_id)
    return state if state["played"] == n else None


async def _escalated(api: Client, alert_id: str, n: int) -> dict[str, Any] | None:
    state = await delivery(api, alert_id)
    return state if state["escalated"] == n else None


async def test_two_sweepers_never_resend_twice(
    api: Client, redis_url: str, mqtt_url: str, tmp_path: Path
) -> None:
    """A second engine on the same Redis and broker sweeps too; each due alert goes to one."""
    prefix = unique("two")
    terminals = terminals_in(GULOU_COUNTY, 8, prefix)
    silent = frozenset(t.id for t in terminals)
    given = await steps.register(api, terminals)
    async with (
        running_engine(redis_url, mqtt_url, tmp_path / "b", resend=FAST, instance="ebd-2"),
        given.simulator(terminals, behaviour=Behaviour(silent=silent)),
    ):
        alert_id = await issue(api, areas=[GULOU_COUNTY])
        state = await wait_for(lambda: _escalated(api, alert_id, 8), timeout=20)
    assert isinstance(state, dict)
    # Exactly max_attempts resends per terminal, however many sweepers ran.
    assert state["resends"] == 16
    store = api.app[STORE]
    assert len(await store.escalations(alert_id=alert_id)) == 8


async def test_acks_kept_by_the_broker_while_the_engine_was_away_are_not_resent_for(
    redis_url: str, mqtt_url: str, tmp_path: Path
) -> None:
    """The deadline passes while the engine is down and the terminals' acks wait in its
    session: back up, it takes them in before its sweeper resends to anyone."""
    prefix = unique("away")
    client_id = f"ebd-{prefix}"
    terminals = terminals_in(GULOU_COUNTY, 20, prefix)
    silent = Behaviour(silent=frozenset(t.id for t in terminals))
    async with (
        running_engine(redis_url, mqtt_url, tmp_path, client_id=client_id, resend=FAST) as api,
        online(api, terminals, mqtt_url, silent) as sim,
    ):
        alert_id = await issue(api, areas=[GULOU_COUNTY])
        await wait_for(lambda: dispatched(api, alert_id), timeout=10)
    await steps.publish_acks(sim, [(t.id, ack_payload(alert_id)) for t in terminals])
    # Past the red deadline (1 s) while nobody takes the acks: only the broker has them.
    await asyncio.sleep(FAST["red"] + 0.5)
    async with running_engine(
        redis_url, mqtt_url, tmp_path, client_id=client_id, resend=FAST
    ) as api:
        state = await wait_for(lambda: played_all(api, alert_id, 20), timeout=20)
        assert isinstance(state, dict)
        assert state["resends"] == 0
