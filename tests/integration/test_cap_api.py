"""CAP 1.2 against a real engine (Redis and broker): a Chinese warning imported is issued and
played as its JSON twin would be, imported once however often (or however concurrently) it
comes, its Update and Cancel chained to it; hostile and unusable documents refused by element
and line; every alert served as schema-valid CAP that reads back to its fields, and in an Atom
feed, to the offices that may see it."""

from __future__ import annotations

import asyncio
import xml.etree.ElementTree as ET
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from dispatcher.core.cap_in import parse_cap
from dispatcher.core.cap_schema import CAP_NS, MAX_CAP_BYTES, read_valid_cap
from receiver.simulator import Behaviour, SimTerminal
from tests.helpers import ZHONGSHAN, fujian, unique, wait_for
from tests.integration.engine import (
    GULOU,
    PROVINCE,
    TAIJIANG,
    Client,
    base_url,
    issue,
    online,
    played_all,
    register,
    running_engine,
    terminals_in,
)
from tests.support.cap_attacks import BILLION_LAUGHS, XXE
from tests.support.people import add_person

CST = timezone(timedelta(hours=8))
N = f"{{{CAP_NS}}}"
ATOM = "{http://www.w3.org/2005/Atom}"
CAP_TYPE = {"Content-Type": "application/cap+xml"}

AREA = """    <area>
      <areaDesc>{name}</areaDesc>
      <geocode>
        <valueName>GB/T 2260</valueName>
        <value>{code}</value>
      </geocode>
    </area>
"""
POLYGON_AREA = """    <area>
      <areaDesc>闽江口</areaDesc>
      <polygon>26.0,119.3 26.1,119.3 26.1,119.4 26.0,119.3</polygon>
    </area>
"""


def cap_doc(
    identifier: str,
    *,
    sender: str = "fzqxt@fjmb.cn",
    sent: str = "2026-12-06T20:30:00+08:00",
    msg_type: str = "Alert",
    references: str = "",
    severity: str = "Extreme",
    headline: str = "福州市气象台发布台风红色预警信号",
    areas: str | None = None,
    hours: int = 6,
) -> bytes:
    """A CAP 1.2 typhoon warning of the Fuzhou observatory for 鼓楼区 (350102) by default."""
    refs = f"  <references>{references}</references>\n" if references else ""
    expires = (datetime.now(CST) + timedelta(hours=hours)).replace(microsecond=0).isoformat()
    area_xml = AREA.format(name="鼓楼区", code="350102") if areas is None else areas
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<alert xmlns="urn:oasis:names:tc:emergency:cap:1.2">
  <identifier>{identifier}</identifier>
  <sender>{sender}</sender>
  <sent>{sent}</sent>
  <status>Actual</status>
  <msgType>{msg_type}</msgType>
  <scope>Public</scope>
{refs}  <info>
    <language>zh-CN</language>
    <category>Met</category>
    <event>台风</event>
    <urgency>Immediate</urgency>
    <severity>{severity}</severity>
    <certainty>Likely</certainty>
    <eventCode>
      <valueName>GB/T 35965.1</valueName>
      <value>11B01</value>
    </eventCode>
    <expires>{expires}</expires>
    <senderName>福州市气象台</senderName>
    <headline>{headline}</headline>
    <description>受台风影响，预计未来24小时内鼓楼区将出现12级以上大风，请注意防范。</description>
    <instruction>请立即停止户外作业，转移至安全场所。</instruction>
{area_xml}  </info>
</alert>
""".encode()


async def post_cap(
    api: Client,
    data: bytes,
    headers: dict[str, str] = PROVINCE,
    content_type: str = "application/cap+xml",
) -> tuple[int, dict[str, Any]]:
    response = await api.post(
        "/api/v1/cap", data=data, headers={**headers, "Content-Type": content_type}
    )
    return response.status, await response.json()


async def imported(api: Client, data: bytes, headers: dict[str, str] = PROVINCE) -> dict[str, Any]:
    status, body = await post_cap(api, data, headers)
    assert status == 201, body
    return body


async def alerts_headlined(api: Client, headline: str) -> list[dict[str, Any]]:
    response = await api.get("/api/v1/alerts?limit=500", headers=PROVINCE)
    assert response.status == 200
    return [a for a in (await response.json())["alerts"] if a["headline"] == headline]


def error_of(status: int, body: dict[str, Any], expected: int) -> dict[str, Any]:
    assert status == expected, body
    assert set(body) == {"error"}
    return dict(body["error"])


# --- import ---------------------------------------------------------------------------------


async def test_a_chinese_cap_warning_is_issued_and_played_like_its_json_twin(
    api: Client, mqtt_url: str
) -> None:
    headline = unique("台风红色预警")
    terminals = terminals_in("350102", 3, unique("cap"))
    async with online(api, terminals, mqtt_url, Behaviour(send_playing=True)):
        identifier = unique("35000041600000-20261206")
        body = await imported(api, cap_doc(identifier, headline=headline))
        assert body["cap"] == {
            "identifier": identifier,
            "sender": "fzqxt@fjmb.cn",
            "sent": "2026-12-06T20:30:00+08:00",
        }
        assert (body["severity"], body["severity_cap"], body["status"]) == (
            "red",
            "Extreme",
            "actual",
        )
        assert body["areas"] == ["350102"]
        assert body["area_names"] == {"350102": "鼓楼区"}
        assert (body["event"], body["event_code"], body["msg_type"]) == ("台风", "11B01", "alert")
        assert body["sender"] == "fj-province"  # the office that imported it issues it
        assert body["dispatch"] == {"state": "queued"}
        state = await wait_for(lambda: played_all(api, body["id"], 3), timeout=30)
        assert state is not None


async def test_the_same_message_imported_again_returns_its_alert_and_issues_nothing(
    api: Client,
) -> None:
    headline = unique("台风")
    data = cap_doc(unique("id"), headline=headline)
    first = await imported(api, data)
    status, again = await post_cap(api, data)
    assert status == 200, again
    assert again["id"] == first["id"]
    assert again["cap"]["duplicate"] is True
    # The same sent written in UTC is the same message.
    status, utc = await post_cap(
        api, data.replace(b"2026-12-06T20:30:00+08:00", b"2026-12-06T12:30:00+00:00")
    )
    assert (status, utc["id"]) == (200, first["id"])
    assert [a["id"] for a in await alerts_headlined(api, headline)] == [first["id"]]


async def test_two_imports_of_one_message_at_once_issue_it_once(api: Client) -> None:
    headline = unique("台风")
    data = cap_doc(unique("id"), headline=headline)
    (s1, b1), (s2, b2) = await asyncio.gather(post_cap(api, data), post_cap(api, data))
    assert sorted([s1, s2]) == [200, 201], (b1, b2)
    assert b1["id"] == b2["id"]
    assert len(await alerts_headlined(api, headline)) == 1


async def test_two_engines_importing_one_message_at_once_issue_it_once(
    api: Client, redis_url: str, mqtt_url: str, tmp_path: Path
) -> None:
    """Two instances on one Redis: the index's SET NX claim, not a lock in one process."""
    headline = unique("台风")
    data = cap_doc(unique("id"), headline=headline)
    async with running_engine(redis_url, mqtt_url, tmp_path / "second") as other:
        answers = await asyncio.gather(post_cap(api, data), post_cap(other, data))
    statuses = sorted(status for status, _ in answers)
    assert statuses in ([200, 201], [201, 409]), answers
    assert len(await alerts_headlined(api, headline)) == 1
    if statuses == [201, 409]:
        [(_, refused)] = [a for a in answers if a[0] == 409]
        assert "is being imported right now" in refused["error"]["message"]


async def test_an_update_and_a_cancel_chain_to_the_imported_alert(api: Client) -> None:
    sender = "fzqxt@fjmb.cn"
    first_id = unique("id")
    first = await imported(api, cap_doc(first_id, sent="2026-12-06T20:30:00+08:00"))
    update_id = unique("id")
    update = await imported(
        api,
        cap_doc(
            update_id,
            sent="2026-12-06T21:00:00+08:00",
            msg_type="Update",
            severity="Severe",
            headline="台风预警降为橙色",
            references=f"{sender},{first_id},2026-12-06T20:30:00+08:00",
        ),
    )
    assert (update["msg_type"], update["references"]) == ("update", [first["id"]])
    assert update["severity"] == "orange"
    cancel = await imported(
        api,
        cap_doc(
            unique("id"),
            sent="2026-12-06T22:00:00+08:00",
            msg_type="Cancel",
            references=f"{sender},{update_id},2026-12-06T21:00:00+08:00",
        ),
    )
    assert (cancel["msg_type"], cancel["references"]) == ("cancel", [update["id"]])
    response = await api.get(f"/api/v1/alerts/{update['id']}", headers=PROVINCE)
    assert (await response.json())["delivery"]["cancelled_by"] == cancel["id"]


async def test_an_update_of_our_own_cap_output_resolves_to_our_alert(api: Client) -> None:
    alert_id = await issue(api, headline=unique("台风"))
    ours = await api.get(f"/api/v1/alerts/{alert_id}.cap", headers=PROVINCE)
    root = read_valid_cap(await ours.read()).root
    triple = ",".join(root.findtext(N + name) or "" for name in ("sender", "identifier", "sent"))
    assert triple.startswith("fj-province@ebd.local," + alert_id + ",")
    update = await imported(
        api, cap_doc(unique("id"), msg_type="Update", severity="Moderate", references=triple)
    )
    assert update["references"] == [alert_id]
    assert update["severity"] == "yellow"


async def test_a_reference_to_an_unknown_message_is_refused_naming_the_triple(
    api: Client,
) -> None:
    triple = "other@example.org,never-seen,2026-12-06T20:00:00+08:00"
    status, body = await post_cap(api, cap_doc(unique("id"), msg_type="Cancel", references=triple))
    error = error_of(status, body, 422)
    assert triple in error["message"]
    assert "import the message it refers to first" in error["message"]
    assert error["details"][0]["field"] == "/alert/references"
    assert error["details"][0]["line"] == 9
    # Refused, so not remembered: the same message may come again once its reference exists.
    status, body = await post_cap(api, cap_doc(unique("id"), msg_type="Cancel", references=triple))
    assert status == 422


async def test_an_office_importing_outside_its_region_is_refused_as_for_json(
    api: Client,
) -> None:
    data = cap_doc(unique("id"), areas=AREA.format(name="台江区", code="350103"))
    status, body = await post_cap(api, data, GULOU)
    error = error_of(status, body, 403)
    assert "350103" in error["message"]
    # Refused, so nothing is remembered: the office that may issue it imports it.
    assert (await imported(api, data, TAIJIANG))["areas"] == ["350103"]


# --- refusals -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "said", "element", "line"),
    [
        pytest.param(BILLION_LAUGHS, "DOCTYPE ('lolz') is not accepted", "body", 2, id="laughs"),
        pytest.param(XXE, "external references are never processed", "body", 2, id="xxe"),
        pytest.param(
            cap_doc("x").replace(b"emergency:cap:1.2", b"emergency:cap:1.1"),
            "this is CAP 1.1",
            "/alert",
            2,
            id="cap-1.1",
        ),
        pytest.param(
            cap_doc("x", areas=POLYGON_AREA),
            "given only as a polygon",
            "/alert/info[1]/area[1]",
            25,
            id="polygon-only",
        ),
        pytest.param(
            cap_doc("x", areas=AREA.format(name="无此区", code="350199")),
            "350199 is not in the engine's region tree",
            "/alert/info[1]/area[1]",
            25,
            id="unknown-region",
        ),
        pytest.param(
            cap_doc("x", severity="Unknown"),
            "severity Unknown has no warning colour",
            "/alert/info[1]/severity",
            14,
            id="severity-unknown",
        ),
    ],
)
async def test_hostile_or_unusable_cap_is_refused_by_element_and_line(
    api: Client, data: bytes, said: str, element: str, line: int
) -> None:
    status, body = await post_cap(api, data)
    error = error_of(status, body, 422)
    assert error["code"] == "invalid_cap"
    assert said in error["message"]
    assert (error["details"][0]["field"], error["details"][0]["line"]) == (element, line)


async def test_an_oversized_document_is_413_unread(api: Client) -> None:
    padding = b"<!-- " + b"x" * MAX_CAP_BYTES + b" -->"
    status, body = await post_cap(api, cap_doc(unique("id")) + padding)
    error = error_of(status, body, 413)
    assert "the limit (a warning is a few KiB" in error["message"]
    assert str(MAX_CAP_BYTES) in error["message"]


async def test_another_content_type_is_415_saying_which_to_send(api: Client) -> None:
    response = await api.post(
        "/api/v1/cap",
        data=cap_doc(unique("id")),
        headers={**PROVINCE, "Content-Type": "application/json"},
    )
    error = error_of(response.status, await response.json(), 415)
    assert "application/cap+xml" in error["message"]
    assert "'application/json'" in error["message"]


async def test_application_xml_is_taken_as_well(api: Client) -> None:
    status, body = await post_cap(
        api, cap_doc(unique("id")), content_type="application/xml; charset=utf-8"
    )
    assert status == 201, body


async def test_no_token_is_401(api: Client) -> None:
    response = await api.post("/api/v1/cap", data=cap_doc(unique("id")), headers=CAP_TYPE)
    error = error_of(response.status, await response.json(), 401)
    assert "Authorization" in error["message"]


# --- CAP out -------------------------------------------------------------------------------


async def test_an_alert_as_cap_is_valid_and_reads_back_to_its_fields(api: Client) -> None:
    headline = unique("台风红色预警")
    alert_id = await issue(api, headline=headline, areas=["350102", "350103"])
    alert = await (await api.get(f"/api/v1/alerts/{alert_id}", headers=PROVINCE)).json()
    response = await api.get(f"/api/v1/alerts/{alert_id}.cap", headers=PROVINCE)
    assert response.status == 200
    assert response.content_type == "application/cap+xml"
    assert response.headers["Cache-Control"] == "private, max-age=300"
    data = await response.read()
    root = read_valid_cap(data).root  # the OASIS schema
    assert root.findtext(N + "identifier") == alert_id
    names = [a.findtext(N + "areaDesc") for a in root.iter(N + "area")]
    assert names == ["鼓楼区", "台江区"]
    request = parse_cap(data).to_request(known_region=fujian().__contains__)
    for field in ("event", "event_code", "severity", "headline", "text", "instruction", "areas"):
        assert request.model_dump(mode="json")[field] == alert[field], field
    assert request.expires == datetime.fromisoformat(alert["expires"]).replace(microsecond=0)
    assert request.status.value == alert["status"]
    # Imported again (our own output as a linked system would send it): the same fields.
    again = await imported(api, data)
    assert again["id"] != alert_id
    for field in ("event", "event_code", "severity", "headline", "text", "instruction", "areas"):
        assert again[field] == alert[field], field
    # Unchanged: 304 to the ETag.
    etag = response.headers["ETag"]
    cached = await api.get(
        f"/api/v1/alerts/{alert_id}.cap", headers={**PROVINCE, "If-None-Match": etag}
    )
    assert cached.status == 304
    assert cached.headers["ETag"] == etag


async def test_accept_cap_on_the_alert_gives_cap_and_json_stays_the_default(api: Client) -> None:
    alert_id = await issue(api, headline=unique("台风"))
    as_cap = await api.get(
        f"/api/v1/alerts/{alert_id}", headers={**PROVINCE, "Accept": "application/cap+xml"}
    )
    assert as_cap.status == 200
    assert as_cap.content_type == "application/cap+xml"
    assert "Accept" in as_cap.headers["Vary"]
    assert read_valid_cap(await as_cap.read()).root.findtext(N + "identifier") == alert_id
    for accept in (None, "application/json", "*/*", "application/json, application/cap+xml;q=0.5"):
        headers = PROVINCE if accept is None else {**PROVINCE, "Accept": accept}
        as_json = await api.get(f"/api/v1/alerts/{alert_id}", headers=headers)
        assert as_json.content_type == "application/json", accept
        assert (await as_json.json())["id"] == alert_id
    # An id that ends in .cap is not taken for the alert: the .cap route answers, 404.
    missing = await api.get(f"/api/v1/alerts/{alert_id}x.cap", headers=PROVINCE)
    assert missing.status == 404
    assert f"no alert '{alert_id}x'" in (await missing.json())["error"]["message"]


async def test_an_office_cannot_read_another_jurisdictions_alert_as_cap(api: Client) -> None:
    alert_id = await issue(api, GULOU, headline=unique("台风"))
    for path, headers in (
        (f"/api/v1/alerts/{alert_id}.cap", TAIJIANG),
        (f"/api/v1/alerts/{alert_id}", {**TAIJIANG, "Accept": "application/cap+xml"}),
        (f"/api/v1/alerts/{alert_id}", TAIJIANG),
    ):
        response = await api.get(path, headers=headers)
        assert response.status == 403, path
        assert "does not concern region 350103" in (await response.json())["error"]["message"]
    assert (await api.get(f"/api/v1/alerts/{alert_id}.cap", headers=GULOU)).status == 200


async def test_the_feed_lists_current_alerts_the_office_sees_newest_first(api: Client) -> None:
    marked = unique('台风 <红色> & "预警"')  # markup characters, escaped in the feed
    gulou_id = await issue(api, GULOU, headline=marked)
    newer_id = await issue(api, GULOU, headline=unique("暴雨"), severity="orange")
    cancelled_id = await issue(api, GULOU, headline=unique("大风"))
    response = await api.post(f"/api/v1/alerts/{cancelled_id}/cancel", headers=GULOU)
    assert response.status == 201

    async def feed(headers: dict[str, str]) -> list[str]:
        response = await api.get("/api/v1/cap/feed", headers=headers)
        assert response.status == 200
        assert response.content_type == "application/atom+xml"
        root = ET.fromstring(await response.read())  # noqa: S314  our own engine's answer
        assert root.tag == ATOM + "feed"
        links = [
            link.get("href", "")
            for entry in root.iter(ATOM + "entry")
            for link in entry.iter(ATOM + "link")
            if link.get("type") == "application/cap+xml"
        ]
        return [href.rpartition("/")[2].removesuffix(".cap") for href in links]

    listed = await feed(GULOU)
    assert listed.index(newer_id) < listed.index(gulou_id)
    assert cancelled_id not in listed
    assert gulou_id not in await feed(TAIJIANG)
    response = await api.get("/api/v1/cap/feed", headers=GULOU)
    entry = next(
        e
        for e in ET.fromstring(await response.read()).iter(ATOM + "entry")  # noqa: S314
        if (e.findtext(ATOM + "id") or "").endswith(f"/{gulou_id}.cap")
    )
    assert entry.findtext(ATOM + "title") == marked
    href = entry.find(ATOM + "link")
    assert href is not None
    cap = await api.get(urlsplit(str(href.get("href"))).path, headers=GULOU)
    assert cap.status == 200
    assert read_valid_cap(await cap.read()).root.findtext(N + "identifier") == gulou_id


async def test_a_person_previews_an_import_and_a_red_one_waits_for_an_approver(
    api: Client,
) -> None:
    """As ``POST /api/v1/alerts`` for a person: the preview first, then an approver."""
    await register(api, [SimTerminal(unique("cap-person"), ZHONGSHAN)])  # reachable
    token = await add_person(
        api.session, base_url(api), "tok-gulou", unique("cap-composer"), ["composer"]
    )
    composer = {"Authorization": f"Bearer {token}"}
    data = cap_doc(unique("id"))
    status, body = await post_cap(api, data, composer)
    assert "POST /api/v1/cap?dry_run=1" in error_of(status, body, 428)["message"]
    response = await api.post("/api/v1/cap?dry_run=1", data=data, headers={**composer, **CAP_TYPE})
    preview = await response.json()
    assert response.status == 200, preview
    assert preview["totals"]["terminals"] >= 1
    path = f"/api/v1/cap?preview_id={preview['preview_id']}"
    response = await api.post(path, data=data, headers={**composer, **CAP_TYPE})
    pending = await response.json()
    assert response.status == 202, pending
    assert (pending["state"], pending["office_id"]) == ("pending", "fz-gulou")
    assert pending["cap"]["identifier"] in data.decode()
    # Imported again while it waits: the submission, not a second one.
    response = await api.post(path, data=data, headers={**composer, **CAP_TYPE})
    again = await response.json()
    assert (response.status, again["id"], again["state"]) == (200, pending["id"], "pending")
    # A duplicate needs no preview: nothing is sent.
    status, again = await post_cap(api, data, composer)
    assert (status, again["id"]) == (200, pending["id"])


async def test_one_cancel_of_two_messages_cancels_both(api: Client) -> None:
    sender = "fzqxt@fjmb.cn"
    ids = [unique("id"), unique("id")]
    made = [
        (await imported(api, cap_doc(ids[0], sent="2026-12-06T20:30:00+08:00")))["id"],
        (await imported(api, cap_doc(ids[1], sent="2026-12-06T20:40:00+08:00")))["id"],
    ]
    references = (
        f"{sender},{ids[0]},2026-12-06T20:30:00+08:00 {sender},{ids[1]},2026-12-06T12:40:00Z"
    )
    cancel = await imported(api, cap_doc(unique("id"), msg_type="Cancel", references=references))
    assert cancel["references"] == [made[0]]
    assert len(cancel["cancels"]) == 2
    for alert_id, cancel_id in zip(made, cancel["cancels"], strict=True):
        response = await api.get(f"/api/v1/alerts/{alert_id}", headers=PROVINCE)
        assert (await response.json())["delivery"]["cancelled_by"] == cancel_id
