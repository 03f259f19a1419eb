"""Who may do what: each test replays an attack through the real API (real Redis) and checks
that it is refused and changed nothing. None of them needs terminals."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import redis

from adapters.sms.generic import receipt_signature
from dispatcher.core.auth import hash_token
from tests.helpers import GUDONG, TAIJIANG_VILLAGE, ZHONGSHAN, alert_body
from tests.integration.engine import (
    GULOU,
    PROVINCE,
    TAIJIANG,
    Client,
    drill_settings,
    midday_zone,
    people,
    running_engine,
)
from tests.integration.test_sms import engine_with, generic_engine, issue, register, until_sms
from tests.support.sms_sandbox import GenericGatewayServer

FUZHOU = {"Authorization": "Bearer tok-fuzhou"}


async def post(
    api: Client, path: str, body: Any, headers: dict[str, str], status: int
) -> dict[str, Any]:
    response = await api.post(path, json=body, headers=headers)
    data: dict[str, Any] = await response.json()
    assert response.status == status, data
    return data


async def get(api: Client, path: str, headers: dict[str, str] = PROVINCE) -> dict[str, Any]:
    response = await api.get(path, headers=headers)
    data: dict[str, Any] = await response.json()
    assert response.status == 200, data
    return data


async def alert_ids(api: Client) -> list[str]:
    return [a["id"] for a in (await get(api, "/api/v1/alerts?limit=500"))["alerts"]]


# 1. Cancel and update: the issuing office or one above it ----------------------------------


async def test_a_county_may_not_cancel_or_update_the_province_alert_over_it(api: Client) -> None:
    issued = await post(api, "/api/v1/alerts", alert_body(), PROVINCE, 201)
    before = await alert_ids(api)
    refused = await post(api, f"/api/v1/alerts/{issued['id']}/cancel", {}, GULOU, 403)
    assert "fj-province" in refused["error"]["message"]
    assert "ask fj-province or an office above it" in refused["error"]["message"]
    update = alert_body(msg_type="update", references=[issued["id"]], headline="已解除")
    refused = await post(api, "/api/v1/alerts", update, GULOU, 403)
    assert "fj-province" in refused["error"]["message"]
    assert await alert_ids(api) == before
    alert = await get(api, f"/api/v1/alerts/{issued['id']}")
    assert alert["delivery"]["cancelled_by"] is None
    assert alert["delivery"]["superseded_by"] is None


async def test_the_issuer_and_the_offices_above_it_may_cancel_or_update(api: Client) -> None:
    first = await post(api, "/api/v1/alerts", alert_body(), GULOU, 201)
    update = alert_body(msg_type="update", references=[first["id"]])
    updated = await post(api, "/api/v1/alerts", update, GULOU, 201)
    # The city office is above 鼓楼区: it may cancel what the county issued.
    cancel = await post(api, f"/api/v1/alerts/{updated['id']}/cancel", {}, FUZHOU, 201)
    assert cancel["msg_type"] == "cancel"
    assert cancel["references"] == [updated["id"]]


async def test_a_county_may_not_cancel_an_alert_of_the_city_covering_only_it(
    api: Client,
) -> None:
    issued = await post(api, "/api/v1/alerts", alert_body(areas=["350102"]), FUZHOU, 201)
    refused = await post(api, f"/api/v1/alerts/{issued['id']}/cancel", {}, GULOU, 403)
    assert "fz-city" in refused["error"]["message"]
    assert (await get(api, f"/api/v1/alerts/{issued['id']}"))["delivery"]["cancelled_by"] is None


# 2. Control and bidi characters in alert texts ----------------------------------------------


@pytest.mark.parametrize(
    ("field", "value", "char"),
    [
        ("headline", "台风\u202e警预色红", "U+202E"),
        ("headline", "台风\n红色预警", "U+000A"),
        ("event", "台风\u2066", "U+2066"),
        ("text", "预计\u0007大风", "U+0007"),
        ("text", "预计\u200f大风", "U+200F"),
        ("instruction", "请\u0085转移", "U+0085"),
        ("instruction", "请\u061c转移", "U+061C"),
        ("sms_text", "短信\x1b[2J", "U+001B"),
    ],
)
async def test_control_and_bidi_characters_are_refused_naming_field_and_char(
    api: Client, field: str, value: str, char: str
) -> None:
    before = await alert_ids(api)
    extra: dict[str, Any] = {"channels": ["loudspeaker", "sms"]} if field == "sms_text" else {}
    body = alert_body(**{field: value, **extra})
    refused = await post(api, "/api/v1/alerts", body, PROVINCE, 422)
    message = refused["error"]["message"]
    assert message.startswith(f"{field}: "), message
    assert char in message
    assert await alert_ids(api) == before


async def test_newlines_and_tabs_are_fine_in_text_and_instruction(api: Client) -> None:
    body = alert_body(text="第一行\n第二行\t完", instruction="一\n二")
    issued = await post(api, "/api/v1/alerts", body, PROVINCE, 201)
    assert issued["text"] == "第一行\n第二行\t完"


async def test_a_cancel_reason_with_a_bidi_override_is_refused(api: Client) -> None:
    issued = await post(api, "/api/v1/alerts", alert_body(), PROVINCE, 201)
    refused = await post(
        api, f"/api/v1/alerts/{issued['id']}/cancel", {"reason": "解除\u202d"}, PROVINCE, 422
    )
    assert "reason" in refused["error"]["message"]
    assert "U+202D" in refused["error"]["message"]
    assert (await get(api, f"/api/v1/alerts/{issued['id']}"))["delivery"]["cancelled_by"] is None


# 3. Recipients: phone numbers and postings of another jurisdiction --------------------------


async def test_a_county_may_not_rename_a_person_of_another_county(api: Client) -> None:
    person = {"phone": "+8613712340001", "name": "台江人", "region": TAIJIANG_VILLAGE,
              "role": "village_head", "languages": ["zh"]}  # fmt: skip
    await post(api, "/api/v1/recipients", [person], TAIJIANG, 200)
    hijack = {**person, "name": "冒名", "region": ZHONGSHAN, "languages": ["en"]}
    await post(api, "/api/v1/recipients", [hijack], GULOU, 200)
    listed = await get(api, "/api/v1/recipients?region=35&limit=10")
    [row] = [r for r in listed["recipients"] if r["phone"] == person["phone"]]
    # 鼓楼 added its own posting, but the name and languages stay 台江's.
    assert row["name"] == "台江人"
    assert row["languages"] == ["zh"]
    assert {p["region"] for p in row["postings"]} == {TAIJIANG_VILLAGE, ZHONGSHAN}
    # And 鼓楼 cannot take away 台江's posting either.
    await post(api, "/api/v1/recipients", [{**hijack, "name": "x"}], GULOU, 200)
    listed = await get(api, "/api/v1/recipients?region=35&limit=10")
    [row] = [r for r in listed["recipients"] if r["phone"] == person["phone"]]
    assert TAIJIANG_VILLAGE in {p["region"] for p in row["postings"]}


async def test_an_office_reads_only_its_own_peoples_numbers_of_a_province_text(
    redis_url: str, mqtt_url: str, tmp_path: Path
) -> None:
    engine = generic_engine(redis_url, mqtt_url, tmp_path, receipt_mode="none")
    async with engine as (_gw, client):
        ours = people(2, ZHONGSHAN)
        theirs = people(2, TAIJIANG_VILLAGE, start=10)
        await register(client, ours + theirs)
        alert_id = await issue(client, areas=["35"])
        await until_sms(client, alert_id, submitted=4)
        path = f"/api/v1/alerts/{alert_id}/sms"
        rows = (await get(client, path, GULOU))["recipients"]
        shown = {r["phone"] for r in rows if r["phone"]}
        assert shown == {p["phone"] for p in ours}
        hidden = [r for r in rows if r["outside_jurisdiction"]]
        assert len(hidden) == 2
        assert all(r["phone"] is None and "****" in r["phone_masked"] for r in hidden)
        # The province reads every number.
        everyone = (await get(client, path, PROVINCE))["recipients"]
        assert {r["phone"] for r in everyone} == {p["phone"] for p in ours + theirs}


# 5. SMS receipts: no replays, only from the gateway holding the message ---------------------


def signed(secret: str, receipts: list[dict[str, Any]]) -> tuple[bytes, dict[str, str]]:
    body = json.dumps({"receipts": receipts}).encode()
    timestamp = str(int(time.time()))
    return body, {
        "Content-Type": "application/json",
        "X-Ebd-Timestamp": timestamp,
        "X-Ebd-Signature": receipt_signature(secret, timestamp, body),
    }


def receipt_of(gw: GenericGatewayServer, phone: str, status: str) -> dict[str, Any]:
    [sent] = [s for s in gw.sent.values() if s.phone == phone]
    return {"id": sent.out_id, "message_id": sent.message_id, "status": status,
            "part": 1, "parts": 1, "at": datetime.now(UTC).isoformat()}  # fmt: skip


async def states(client: Client, alert_id: str) -> dict[str, str]:
    rows = (await get(client, f"/api/v1/alerts/{alert_id}/sms"))["recipients"]
    return {r["phone"]: r["state"] for r in rows}


async def test_a_replayed_receipt_is_refused_and_changes_nothing(
    redis_url: str, mqtt_url: str, tmp_path: Path, rdb: redis.Redis
) -> None:
    async with (
        GenericGatewayServer(receipt_mode="none") as gw,
        engine_with(redis_url, mqtt_url, tmp_path, [gw]) as client,
    ):
        rows = people(2, ZHONGSHAN)
        await register(client, rows)
        alert_id = await issue(client)
        await until_sms(client, alert_id, submitted=2)
        first, second = rows[0]["phone"], rows[1]["phone"]
        body, headers = signed(gw.secret, [receipt_of(gw, first, "failed")])
        url = "/api/v1/sms/receipts/gw1"
        assert (await client.post(url, data=body, headers=headers)).status == 200
        # The gateway's later word: delivered after all.
        body2, headers2 = signed(gw.secret, [receipt_of(gw, second, "delivered")])
        assert (await client.post(url, data=body2, headers=headers2)).status == 200
        before = await states(client, alert_id)
        assert before == {first: "failed", second: "delivered"}
        taken = rdb.xlen("ebd:sms:receipts")
        for replay_body, replay_headers in ((body, headers), (body2, headers2)):
            response = await client.post(url, data=replay_body, headers=replay_headers)
            assert response.status == 401
            assert "replay" in (await response.json())["error"]["message"]
        assert await states(client, alert_id) == before
        assert rdb.xlen("ebd:sms:receipts") == taken


async def test_a_receipt_posted_by_another_gateway_is_refused(
    redis_url: str, mqtt_url: str, tmp_path: Path
) -> None:
    async with (
        GenericGatewayServer(receipt_mode="none") as gw1,
        GenericGatewayServer(receipt_mode="none", secret="another-secret-of-gw2-0123456") as gw2,
        engine_with(redis_url, mqtt_url, tmp_path, [gw1, gw2]) as client,
    ):
        rows = people(1, ZHONGSHAN)
        await register(client, rows)
        alert_id = await issue(client)
        await until_sms(client, alert_id, submitted=1)
        assert gw2.sent == {}  # gw1 (priority 1) holds the message
        # gw2 signs a receipt for the message gw1 holds: it is gw2's word, not gw1's.
        body, headers = signed(gw2.secret, [receipt_of(gw1, rows[0]["phone"], "failed")])
        response = await client.post("/api/v1/sms/receipts/gw2", data=body, headers=headers)
        assert response.status == 401
        assert "does not hold" in (await response.json())["error"]["message"]
        assert await states(client, alert_id) == {rows[0]["phone"]: "submitted"}


# 4. Run-now of a drill by a county office ------------------------------------------------


def _not_today() -> list[int]:
    """Every ISO weekday but today's in the drill zone: now is outside the drill rules."""
    today = datetime.now(UTC).astimezone(_zone()).isoweekday()
    return [d for d in range(1, 8) if d != today]


def _zone() -> Any:
    from zoneinfo import ZoneInfo

    return ZoneInfo(midday_zone())


async def test_a_county_may_not_run_a_drill_now_outside_the_drill_rules(
    redis_url: str, mqtt_url: str, tmp_path: Path
) -> None:
    settings = drill_settings(weekdays=_not_today())
    async with running_engine(redis_url, mqtt_url, tmp_path, drills=settings) as client:
        at = datetime.now(UTC) + timedelta(days=1)
        while at.astimezone(_zone()).isoweekday() not in settings["weekdays"]:
            at += timedelta(days=1)
        body = {"township": GUDONG, "at": at.isoformat(), "reason": "测试"}
        drill = await post(client, "/api/v1/drills", body, GULOU, 201)
        refused = await post(client, f"/api/v1/drills/{drill['id']}/run", {}, GULOU, 403)
        message = refused["error"]["message"]
        assert "only within the drill rules" in message
        assert "ask the city or province office" in message
        after = await get(client, f"/api/v1/drills/{drill['id']}")
        assert after["status"] == "planned"
        assert after["alert_id"] is None
        assert await alert_ids(client) == []


# 6. /metrics restricted ---------------------------------------------------------------------


async def test_restricted_metrics_need_the_scraper_or_a_province_token(
    redis_url: str, mqtt_url: str, tmp_path: Path
) -> None:
    api = {"metrics_public": False, "metrics_token_sha256": hash_token("scrape-me")}
    async with running_engine(redis_url, mqtt_url, tmp_path, api=api) as client:
        assert (await client.get("/metrics")).status == 401
        assert (await client.get("/metrics", headers=GULOU)).status == 403
        bad = {"Authorization": "Bearer scrape-you"}
        assert (await client.get("/metrics", headers=bad)).status == 401
        for ok in ({"Authorization": "Bearer scrape-me"}, PROVINCE):
            response = await client.get("/metrics", headers=ok)
            assert response.status == 200
            assert "ebd_" in await response.text()


async def test_metrics_are_public_by_default(api: Client) -> None:
    assert (await api.get("/metrics")).status == 200


# 7c. Failed authentications are throttled per source --------------------------------------


async def test_a_source_with_many_failed_tokens_gets_429_even_with_a_good_one(
    redis_url: str, mqtt_url: str, tmp_path: Path
) -> None:
    api = {"auth_failures_per_minute": 5}
    async with running_engine(redis_url, mqtt_url, tmp_path, api=api) as client:
        for n in range(5):
            bad = {"Authorization": f"Bearer guess-{n}"}
            assert (await client.get("/api/v1/alerts", headers=bad)).status == 401
        response = await client.get("/api/v1/alerts", headers=PROVINCE)
        assert response.status == 429
        assert 55 <= int(response.headers["Retry-After"]) <= 60
        assert "too many failed authentications" in (await response.json())["error"]["message"]
        refused = await client.post("/api/v1/alerts", json=alert_body(), headers=PROVINCE)
        assert refused.status == 429
    # Nothing was issued by the blocked source.
    async with running_engine(redis_url, mqtt_url, tmp_path) as fresh:
        assert await alert_ids(fresh) == []
