"""``GET /api/v1/terminals/health``: online, offline and never-reported terminals per region
and one level down, equal to what the simulated terminals did; failures of the recent alerts
per region and per terminal; the office's jurisdiction and bad queries refused."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest

from receiver.simulator import Behaviour
from tests.helpers import GULOU_COUNTY, TAIJIANG_COUNTY, unique, wait_for
from tests.integration.engine import (
    GULOU,
    PROVINCE,
    TAIJIANG,
    Client,
    delivery,
    issue,
    online,
    register,
    terminals_in,
)


async def health(api: Client, headers: dict[str, str] = GULOU, **query: str) -> Any:
    response = await api.get("/api/v1/terminals/health", headers=headers, params=query)
    body = await response.json()
    assert response.status == 200, body
    return body


def township(code: str) -> str:
    return code[:9]


async def test_online_offline_and_never_reported_per_region_equal_the_terminals(
    api: Client, mqtt_url: str
) -> None:
    connected = terminals_in(GULOU_COUNTY, 5, unique("on"))
    silent = terminals_in(GULOU_COUNTY, 2, unique("never"))
    await register(api, silent)
    async with online(api, connected, mqtt_url) as sim:

        async def all_online() -> Any:
            body = await health(api)
            return body if body["totals"]["online"] == 5 else None

        await wait_for(all_online, message="the five simulated terminals shown online")
        gone = connected[0]
        await sim.drop([gone.id])

        async def one_offline() -> Any:
            body = await health(api)
            return body if body["totals"]["offline"] == 1 else None

        body: Any = await wait_for(one_offline, message="the dropped terminal's Will counted")
    assert body["region"] == {"code": GULOU_COUNTY, "name": "鼓楼区", "level": "county"}
    assert [p["code"] for p in body["path"]] == ["35", "3501", GULOU_COUNTY]
    assert body["totals"] | {"last_seen": None} == {
        "terminals": 7, "online": 4, "offline": 1, "unknown": 2, "last_seen": None,
        "failures": 0,
    }  # fmt: skip
    assert body["totals"]["last_seen"] is not None
    # Each township of the county, with the terminals the test put there.
    want_online = Counter(township(t.region) for t in connected[1:])
    want_all = Counter(township(t.region) for t in connected + silent)
    children = {c["code"]: c for c in body["children"]}
    assert all(c["level"] == "township" for c in children.values())
    for code, n in want_all.items():
        assert children[code]["terminals"] == n
        assert children[code]["online"] == want_online[code]
    assert sum(c["terminals"] for c in children.values()) == 7
    # Above a township the page shows counts, not thousands of rows.
    assert body["terminals"] == []
    # The township of the dropped terminal lists each of its terminals with its state.
    town = await health(api, region=township(gone.region))
    states = {t["id"]: t["state"] for t in town["terminals"]}
    assert states[gone.id] == "offline"
    for t in silent:
        if township(t.region) == township(gone.region):
            assert states[t.id] is None
    assert town["terminals_total"] == want_all[township(gone.region)]


async def test_failures_of_recent_alerts_per_region_and_terminal(
    api: Client, mqtt_url: str
) -> None:
    terminals = terminals_in(GULOU_COUNTY, 4, unique("fail"))
    bad = terminals[1]
    async with online(api, terminals, mqtt_url, Behaviour(fail=frozenset({bad.id}))):
        alert_id = await issue(api, GULOU, areas=[GULOU_COUNTY], status="exercise")

        async def finished() -> bool:
            state = await delivery(api, alert_id)
            return bool(state["played"] == 3 and state["failed"] == 1)

        await wait_for(finished, message="three played, one failed")
        county = await health(api)
        town = await health(api, region=township(bad.region))
        village = await health(api, region=bad.region)
    assert county["alerts_considered"] == 1
    assert county["totals"]["failures"] == 1
    children = {c["code"]: c["failures"] for c in county["children"]}
    assert children[township(bad.region)] == 1
    assert sum(children.values()) == 1
    assert town["totals"]["failures"] == 1
    failures = {t["id"]: t["failures"] for t in town["terminals"]}
    assert failures[bad.id] == 1
    assert all(n == 0 for tid, n in failures.items() if tid != bad.id)
    assert {c["code"]: c["failures"] for c in town["children"]}[bad.region] == 1
    assert [t["failures"] for t in village["terminals"] if t["id"] == bad.id] == [1]
    assert village["children"] == []
    # The province sees the same failure in its city.
    province = await health(api, PROVINCE)
    assert {c["code"]: c["failures"] for c in province["children"]}["3501"] == 1


async def test_an_office_sees_no_other_office_s_terminals(api: Client) -> None:
    await register(api, terminals_in(GULOU_COUNTY, 2, unique("mine")))
    response = await api.get(
        "/api/v1/terminals/health", headers=TAIJIANG, params={"region": GULOU_COUNTY}
    )
    body = await response.json()
    assert response.status == 403, body
    assert body["error"]["details"]["region_codes"] == [GULOU_COUNTY]
    # Its own county's page has none of them.
    own = await health(api, TAIJIANG)
    assert own["region"]["code"] == TAIJIANG_COUNTY
    assert own["totals"]["terminals"] == 0
    response = await api.get("/api/v1/terminals/health")
    assert response.status == 401


@pytest.mark.parametrize(
    ("query", "status", "field"),
    [
        ({"region": "3501x"}, 422, None),
        ({"region": "359999"}, 422, None),
        ({"days": "0"}, 422, "days"),
        ({"days": "91"}, 422, "days"),
        ({"days": "-1"}, 422, "days"),
        ({"limit": "5"}, 400, "limit"),
    ],
)
async def test_bad_queries_are_refused_saying_what_is_wrong(
    api: Client, query: dict[str, str], status: int, field: str | None
) -> None:
    response = await api.get("/api/v1/terminals/health", headers=PROVINCE, params=query)
    body = await response.json()
    assert response.status == status, body
    assert body["error"]["message"]
    if field is not None:
        assert body["error"]["details"][0]["field"] == field


async def test_a_terminal_s_own_page_still_answers_beside_the_health_page(api: Client) -> None:
    terminal = terminals_in(GULOU_COUNTY, 1, unique("own"))[0]
    await register(api, [terminal])
    response = await api.get(f"/api/v1/terminals/{terminal.id}", headers=GULOU)
    assert response.status == 200
    assert (await response.json())["id"] == terminal.id
