"""What offices read is consistent: one status for an alert in every view, unknown query
parameters refused by every endpoint, times in Beijing time (kept in UTC), and escalations
that say which warning went unheard and are not raised for a cancel."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from dispatcher.http.state import STORE
from dispatcher.store.keys import alert_key
from receiver.simulator import Behaviour
from tests.helpers import GULOU_COUNTY, unique, wait_for
from tests.integration.engine import (
    GULOU,
    PROVINCE,
    Client,
    alert_body,
    delivery,
    dispatched,
    issue,
    online,
    terminals_in,
)

BEIJING = timedelta(hours=8)


class Recorder:
    """An escalation notifier that remembers which alerts it heard of."""

    def __init__(self) -> None:
        self.alerts: list[str] = []

    async def notify(self, alert: Any, records: Any) -> None:
        self.alerts.append(alert.id)


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
def engine_overrides(recorder: Recorder) -> dict[str, Any]:
    fast = {"red": 1.0, "orange": 1.0, "backoff": 0.5, "max_attempts": 2, "sweep_interval": 0.1}
    return {"resend": fast, "notifiers": [recorder]}


async def _status_in_list(api: Client, alert_id: str) -> str:
    body = await (await api.get("/api/v1/alerts?limit=500", headers=PROVINCE)).json()
    [item] = [a for a in body["alerts"] if a["id"] == alert_id]
    return str(item["dispatch"]["state"])


async def _statuses(api: Client, alert_id: str) -> tuple[str, str]:
    """(the list's status, the detail's status) of ``alert_id``."""
    return await _status_in_list(api, alert_id), (await delivery(api, alert_id))["state"]


async def _post(api: Client, path: str, **body: Any) -> dict[str, Any]:
    response = await api.post(path, headers=GULOU, json=body)
    assert response.status == 201, await response.text()
    return dict(await response.json())


async def test_list_and_detail_show_one_status_after_update_and_cancel(api: Client) -> None:
    first = await issue(api, headers=GULOU)
    await wait_for(lambda: dispatched(api, first), timeout=10)
    assert await _statuses(api, first) == ("dispatched", "dispatched")

    update = await issue(api, headers=GULOU, references=[first], msg_type="update")
    await wait_for(lambda: dispatched(api, update), timeout=10)
    assert await _statuses(api, first) == ("superseded", "superseded")
    assert await _statuses(api, update) == ("dispatched", "dispatched")

    cancel = (await _post(api, f"/api/v1/alerts/{update}/cancel"))["id"]
    # The update reads as cancelled from the moment the cancel is accepted, in both views.
    assert await _statuses(api, update) == ("cancelled", "cancelled")
    await wait_for(lambda: dispatched(api, cancel), timeout=10)
    assert await _statuses(api, update) == ("cancelled", "cancelled")
    assert await _statuses(api, cancel) == ("dispatched", "dispatched")
    detail = await delivery(api, update)
    assert detail["cancelled_by"] == cancel
    assert detail["cancelled_at"].endswith("+08:00")


# Every GET endpoint an office reads, with a parameter it does take (None: it takes none).
ENDPOINTS = [
    ("/api/v1/alerts", "limit"),
    ("/api/v1/alerts/{alert}", "detail"),
    ("/api/v1/alerts/{alert}/terminals", "state"),
    ("/api/v1/alerts/{alert}/sms", "job"),
    ("/api/v1/escalations", "state"),
    ("/api/v1/terminals", "region"),
    ("/api/v1/regions/35", None),
    ("/api/v1/recipients", "role"),
    ("/api/v1/sms/gateways", None),
    ("/api/v1/keyring", None),
    ("/api/v1/audit", "action"),
    ("/api/v1/audit/export", "since"),
    ("/api/v1/audit/verify", None),
    ("/api/v1/drills", "year"),
    ("/api/v1/drills/compliance", "year"),
    ("/api/v1/drills/acks", "drill"),
]


@pytest.fixture
async def alert(api: Client) -> str:
    return await issue(api)


@pytest.mark.parametrize(("path", "accepted"), ENDPOINTS)
async def test_an_unknown_query_parameter_is_refused_naming_it(
    api: Client, alert: str, path: str, accepted: str | None
) -> None:
    url = path.format(alert=alert)
    response = await api.get(f"{url}?limti=5", headers=PROVINCE)
    assert response.status == 400, await response.text()
    error = (await response.json())["error"]
    assert error["code"] == "bad_request"
    assert "'limti'" in error["message"]
    [detail] = error["details"]
    assert detail["field"] == "limti"
    if accepted is None:
        assert detail["accepted"] == []
        assert "no query parameters" in error["message"]
    else:
        assert accepted in detail["accepted"]
        assert accepted in error["message"]


@pytest.mark.parametrize("query", ["limit=5&limit=6", "limit=5&Limit=6", "limit=5&limit"])
async def test_a_parameter_twice_or_in_another_case_is_refused(api: Client, query: str) -> None:
    response = await api.get(f"/api/v1/alerts?{query}", headers=PROVINCE)
    assert response.status == 400, await response.text()
    assert (await response.json())["error"]["details"][0]["field"] in {"limit", "Limit"}


@pytest.mark.parametrize("name", ["x" * 5000, "%00", "%E2%80%AE", "limit%20"])
async def test_a_hostile_parameter_name_is_refused_and_cut_short(api: Client, name: str) -> None:
    response = await api.get(f"/api/v1/alerts?{name}=1", headers=PROVINCE)
    assert response.status == 400, await response.text()
    detail = (await response.json())["error"]["details"][0]
    assert len(detail["field"]) <= 65
    assert detail["accepted"] == ["limit"]


async def test_known_parameters_still_work(api: Client, alert: str) -> None:
    response = await api.get("/api/v1/alerts?limit=1", headers=PROVINCE)
    assert response.status == 200, await response.text()
    assert (await response.json())["count"] == 1
    response = await api.get(f"/api/v1/alerts/{alert}?detail=city", headers=PROVINCE)
    assert response.status == 200, await response.text()


async def test_a_post_with_an_unknown_flag_issues_nothing(api: Client) -> None:
    """A mistyped ``?dryrun=1`` (the flag is ``dry_run``): an engine that ignored it would
    send a real warning."""
    before = await (await api.get("/api/v1/alerts?limit=500", headers=PROVINCE)).json()
    response = await api.post("/api/v1/alerts?dryrun=1", headers=GULOU, json=alert_body())
    assert response.status == 400, await response.text()
    after = await (await api.get("/api/v1/alerts?limit=500", headers=PROVINCE)).json()
    assert [a["id"] for a in after["alerts"]] == [a["id"] for a in before["alerts"]]


def _beijing(value: str) -> datetime:
    """``value`` parsed, after checking it is written in Beijing time."""
    assert value.endswith("+08:00"), value
    moment = datetime.fromisoformat(value)
    assert moment.utcoffset() == BEIJING
    return moment


async def test_times_are_shown_in_beijing_time_and_kept_in_utc(api: Client, mqtt_url: str) -> None:
    expires = (datetime.now(UTC) + timedelta(hours=2)).replace(microsecond=0)
    terminals = terminals_in(GULOU_COUNTY, 2, unique("tz"))
    async with online(api, terminals, mqtt_url):
        # Sent with another offset (UTC, as "Z"): the same instant comes back in +08:00.
        created = await _post(
            api, "/api/v1/alerts", **_body(expires=expires.isoformat().replace("+00:00", "Z"))
        )
        alert_id = created["id"]
        assert _beijing(created["expires"]) == expires
        state = await wait_for(lambda: _all_played(api, alert_id, 2), timeout=20)
    assert isinstance(state, dict)
    detail = await (await api.get(f"/api/v1/alerts/{alert_id}", headers=GULOU)).json()
    assert _beijing(detail["expires"]) == expires
    sent = _beijing(detail["sent"])
    assert abs(sent - datetime.now(UTC)) < timedelta(minutes=1)
    for name in ("queued_at", "dispatched_at", "last_ack_at"):
        assert _beijing(state[name]) >= sent - timedelta(seconds=1), name
    listed = await (await api.get("/api/v1/alerts?limit=500", headers=PROVINCE)).json()
    [item] = [a for a in listed["alerts"] if a["id"] == alert_id]
    assert _beijing(item["sent"]) == sent
    registered = await (
        await api.get(f"/api/v1/terminals?region={terminals[0].region}", headers=PROVINCE)
    ).json()
    mine = [t for t in registered["terminals"] if t["id"] == terminals[0].id]
    assert mine
    assert _beijing(mine[0]["registered_at"])
    audit = await (await api.get("/api/v1/audit?limit=1000", headers=PROVINCE)).json()
    issued = [r for r in audit["records"] if r["target"] == alert_id]
    assert issued
    assert _beijing(issued[0]["at"]) >= sent - timedelta(seconds=1)
    assert _beijing(issued[0]["detail"]["expires"]) == expires
    # The data keeps UTC: what is stored, signed and audited does not depend on the display.
    raw = await api.app[STORE].redis.get(alert_key(alert_id))
    assert '"expires":"' + expires.strftime("%Y-%m-%dT%H:%M:%S") + "Z" in raw


def _body(**fields: Any) -> dict[str, Any]:
    return alert_body(expires_in=None, **fields)


async def _all_played(api: Client, alert_id: str, n: int) -> dict[str, Any] | None:
    state = await delivery(api, alert_id)
    return state if state["played"] == n else None


@pytest.mark.parametrize(
    "expires",
    ["2030-01-01T08:00:00", "2030-01-01 08:00", "2030-01-01", "明天", "2030-02-30T00:00Z"],
)
async def test_a_time_without_an_offset_or_not_a_time_is_422_naming_it(
    api: Client, expires: str
) -> None:
    response = await api.post("/api/v1/alerts", headers=GULOU, json=_body(expires=expires))
    assert response.status == 422, await response.text()
    error = (await response.json())["error"]
    assert any(d["field"] == "expires" for d in error["details"]), error


async def test_a_cancel_nobody_confirms_is_given_up_without_an_escalation(
    api: Client, mqtt_url: str, recorder: Recorder
) -> None:
    terminals = terminals_in(GULOU_COUNTY, 3, unique("quiet"))
    silent = Behaviour(silent=frozenset(t.id for t in terminals))
    async with online(api, terminals, mqtt_url, silent):
        warning = await issue(api, headers=GULOU)
        await wait_for(lambda: dispatched(api, warning), timeout=10)
        cancel = (await _post(api, f"/api/v1/alerts/{warning}/cancel"))["id"]
        # After its resends the cancel's silent terminals are counted failed, and no more.
        state = await wait_for(lambda: _failed(api, cancel, 3), timeout=20)
    assert isinstance(state, dict)
    assert (state["resends"], state["escalated"], state["pending"]) == (6, 0, 0)
    for alert_id in (warning, cancel):
        body = await (
            await api.get(f"/api/v1/escalations?alert_id={alert_id}", headers=GULOU)
        ).json()
        assert body["escalations"] == []
        assert alert_id not in recorder.alerts


async def _failed(api: Client, alert_id: str, n: int) -> dict[str, Any] | None:
    state = await delivery(api, alert_id)
    return state if state["failed"] == n else None
