"""``GET /api/v1/alerts/{id}/events``: the live delivery stream against real terminals."""

from __future__ import annotations

import itertools
import json
from typing import Any

import pytest
from aiohttp import ClientResponse

from receiver.simulator import Behaviour
from tests.helpers import GULOU_COUNTY, TAIJIANG_COUNTY, unique
from tests.integration.engine import (
    GULOU,
    PROVINCE,
    TAIJIANG,
    Client,
    issue,
    online,
    terminals_in,
)

FAST = {"red": 1.0, "orange": 1.0, "backoff": 0.5, "max_attempts": 2, "sweep_interval": 0.1}


@pytest.fixture
def engine_overrides() -> dict[str, Any]:
    """Fast resends, so a silent terminal is resent to and escalated within seconds."""
    return {"resend": FAST}


async def events_until_done(response: ClientResponse) -> list[tuple[str, Any]]:
    """The stream's events, in order, up to and with ``done`` (the server ends it there)."""
    assert response.status == 200, await response.text()
    assert response.content_type == "text/event-stream"
    events: list[tuple[str, Any]] = []
    name, data = "message", ""
    async for raw in response.content:
        line = raw.decode().rstrip("\r\n")
        if line.startswith("event:"):
            name = line[6:].strip()
        elif line.startswith("data:"):
            data += line[5:].strip()
        elif not line and data:
            events.append((name, json.loads(data)))
            if name == "done":
                return events
            name, data = "message", ""
    raise AssertionError(f"the stream ended without done after {events}")


async def test_stream_follows_acks_to_done_with_counts_equal_to_what_terminals_did(
    api: Client, mqtt_url: str
) -> None:
    terminals = terminals_in(GULOU_COUNTY, 12, unique("live"))
    async with online(api, terminals, mqtt_url, Behaviour(ack_delay=0.3)) as sim:
        alert_id = await issue(api, headers=GULOU, areas=[GULOU_COUNTY])
        async with api.get(f"/api/v1/alerts/{alert_id}/events", headers=GULOU) as response:
            events = await events_until_done(response)
        played = sim.played(alert_id)
    counts = [data for name, data in events if name == "counts"]
    assert len(counts) >= 2, "the page saw the figures move, not only the end"
    last = counts[-1]
    assert last["totals"]["expected"] == 12
    assert last["totals"]["played"] == played == 12
    assert last["totals"]["pending"] == 0
    # The province, its city and the county, and the townships the terminals are in.
    regions = last["regions"]
    assert regions["35"]["played"] == regions["3501"]["played"] == regions[GULOU_COUNTY]["played"]
    townships = {t.region[:9] for t in terminals}
    assert {code for code in regions if len(code) == 9} == townships
    assert sum(regions[code]["played"] for code in townships) == 12
    # Nothing is sent twice in a row: each counts event differs from the one before.
    assert all(a != b for a, b in itertools.pairwise(counts))
    assert events[-1][0] == "done"


async def test_stream_reports_resends_and_escalations_as_they_happen(
    api: Client, mqtt_url: str
) -> None:
    terminals = terminals_in(GULOU_COUNTY, 6, unique("mute"))
    silent = frozenset(t.id for t in terminals[:2])
    async with online(api, terminals, mqtt_url, Behaviour(silent=silent)):
        alert_id = await issue(api, headers=GULOU, areas=[GULOU_COUNTY])
        async with api.get(f"/api/v1/alerts/{alert_id}/events", headers=GULOU) as response:
            events = await events_until_done(response)
    names = [name for name, _ in events]
    assert "resend" in names
    assert names.index("resend") < names.index("escalation")
    escalated = {data["terminal_id"] for name, data in events if name == "escalation"}
    assert escalated == silent
    last = [data for name, data in events if name == "counts"][-1]["totals"]
    assert (last["played"], last["failed"], last["pending"]) == (4, 2, 0)


async def test_another_county_sees_only_its_own_part_of_a_city_alert(
    api: Client, mqtt_url: str
) -> None:
    prefix = unique("split")
    gulou = terminals_in(GULOU_COUNTY, 4, prefix + "g")
    taijiang = terminals_in(TAIJIANG_COUNTY, 3, prefix + "t")
    async with online(api, gulou + taijiang, mqtt_url):
        alert_id = await issue(api, headers=PROVINCE, areas=["3501"])
        async with api.get(f"/api/v1/alerts/{alert_id}/events", headers=TAIJIANG) as response:
            events = await events_until_done(response)
    regions = [data for name, data in events if name == "counts"][-1]["regions"]
    # Its own county and what lies above it; never the neighbouring county's figures.
    assert TAIJIANG_COUNTY in regions
    assert GULOU_COUNTY not in regions
    assert not any(code.startswith(GULOU_COUNTY) for code in regions)
    assert regions[TAIJIANG_COUNTY]["played"] == 3


async def test_stream_refuses_strangers_unknown_alerts_and_offices_it_does_not_concern(
    api: Client,
) -> None:
    alert_id = await issue(api, headers=GULOU, areas=[GULOU_COUNTY])
    url = f"/api/v1/alerts/{alert_id}/events"
    response = await api.get(url)
    assert response.status == 401
    assert "Authorization" in (await response.json())["error"]["message"]
    response = await api.get(url, headers={"Authorization": "Bearer not-a-token"})
    assert response.status == 401
    # Another county has no business with 鼓楼区's alert: no stream of it.
    response = await api.get(url, headers=TAIJIANG)
    assert response.status == 403
    response = await api.get("/api/v1/alerts/no-such-alert/events", headers=GULOU)
    assert response.status == 404
    response = await api.get("/api/v1/alerts/" + "x" * 500 + "/events", headers=GULOU)
    assert response.status == 404
    # A query it does not take is refused, not ignored.
    response = await api.get(url + "?since=0", headers=GULOU)
    assert response.status in (400, 422)
    assert "since" in await response.text()
