"""The SMS channel end to end: the engine (real Redis, real broker) texting through real HTTP
gateway servers run by the test, which keep their own books of what they sent."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import GUDONG, QINGCHENG, TAIJIANG_VILLAGE, ZHONGSHAN, wait_for
from tests.integration.engine import (
    GULOU,
    PROVINCE,
    Client,
    alert_body,
    people,
    phone,
    running_engine,
)
from tests.integration.engine import (
    issue as issue_alert,
)
from tests.support.sms_sandbox import AliyunGatewayServer, GatewayServer, GenericGatewayServer


@asynccontextmanager
async def engine_with(
    redis_url: str,
    mqtt_url: str,
    tmp_path: Path,
    gateways: list[GatewayServer],
    resend: dict[str, Any] | None = None,
    **sms: Any,
) -> AsyncIterator[Client]:
    settings = [
        gw.settings(f"gw{i + 1}", priority=i + 1, **sms.pop(f"gw{i + 1}", {}))
        for i, gw in enumerate(gateways)
    ]
    config = {
        "gateways": [s.model_dump() for s in settings],
        "settle_after": 1.0,
        "backoff": 0.05,
        "backoff_max": 0.5,
        **sms,
    }
    extra: dict[str, Any] = {"resend": resend} if resend else {}
    async with running_engine(redis_url, mqtt_url, tmp_path, sms=config, **extra) as client:
        for s, gw in zip(settings, gateways, strict=True):
            # An Aliyun-style gateway posts receipts to where its console was told to.
            gw.callback_url = str(client.make_url(f"/api/v1/sms/receipts/{s.name}"))
        yield client


Texting = tuple[GenericGatewayServer, Client]


@asynccontextmanager
async def generic_engine(
    redis_url: str,
    mqtt_url: str,
    tmp_path: Path,
    *,
    receipt_mode: str = "after",
    **options: Any,
) -> AsyncIterator[Texting]:
    """An engine that texts through one generic gateway, and that gateway (sending receipts
    as ``receipt_mode`` says); ``options`` as for ``engine_with``."""
    async with (
        GenericGatewayServer(receipt_mode=receipt_mode) as gw,
        engine_with(redis_url, mqtt_url, tmp_path, [gw], **options) as client,
    ):
        yield gw, client


@pytest.fixture
async def texting(redis_url: str, mqtt_url: str, tmp_path: Path) -> AsyncIterator[Texting]:
    async with generic_engine(redis_url, mqtt_url, tmp_path) as engine:
        yield engine


async def register(client: Client, rows: list[dict[str, Any]]) -> dict[str, Any]:
    response = await client.post("/api/v1/recipients", json=rows, headers=PROVINCE)
    body: dict[str, Any] = await response.json()
    assert response.status == 200, body
    return body


async def issue(client: Client, **fields: Any) -> str:
    """Issues an alert on the SMS channel alone unless ``fields`` name the channels."""
    return await issue_alert(client, **{"channels": ["sms"], **fields})


async def sms_of(client: Client, alert_id: str) -> dict[str, Any]:
    response = await client.get(f"/api/v1/alerts/{alert_id}", headers=PROVINCE)
    body = await response.json()
    return dict(body["delivery"].get("sms") or {})


async def until_sms(
    client: Client, alert_id: str, timeout: float = 20.0, **wanted: int
) -> dict[str, Any]:
    async def check() -> dict[str, Any] | None:
        summary = await sms_of(client, alert_id)
        return summary if all(summary.get(k) == v for k, v in wanted.items()) else None

    result = await wait_for(check, timeout=timeout, message=f"sms counts {wanted}")
    assert isinstance(result, dict)
    return result


async def test_every_recipient_in_the_area_gets_one_text(texting: Texting) -> None:
    gw, client = texting
    rows = people(20)
    # Listed twice (village head and grid worker): still one text.
    rows.append({**rows[0], "role": "grid_worker"})
    rows += [{"phone": phone(900), "name": "外区", "region": TAIJIANG_VILLAGE, "role": "resident"}]
    await register(client, rows)
    alert_id = await issue(client, areas=[GUDONG], channels=["loudspeaker", "sms"])
    summary = await until_sms(client, alert_id, recipients=20, delivered=20)
    await gw.receipts_done()
    gateways = await (await client.get("/api/v1/sms/gateways", headers=PROVINCE)).json()
    assert gateways["receipts"]["receipts"] == 20
    assert gateways["in_doubt"] == 0
    assert summary["failed"] == 0
    assert summary["queued"] == 0
    assert summary["segments"] >= 20
    assert len(gw.sent) == 20
    assert gw.duplicates == 0
    assert all(gw.sent_count(phone(i), alert_id) == 1 for i in range(20))
    assert gw.sent_count(phone(900), alert_id) == 0
    text = next(iter(gw.sent.values())).text
    assert text.startswith("【福建省应急管理厅】")
    assert "台风红色预警" in text


async def test_aliyun_gateway_end_to_end(redis_url: str, mqtt_url: str, tmp_path: Path) -> None:
    async with (
        AliyunGatewayServer() as gw,
        engine_with(redis_url, mqtt_url, tmp_path, [gw]) as client,
    ):
        await register(client, people(15))
        alert_id = await issue(client, areas=[GUDONG], status="exercise")
        await until_sms(client, alert_id, recipients=15, delivered=15)
        assert len(gw.sent) == 15
        assert gw.duplicates == 0
        assert all("【演练】" in m.text for m in gw.sent.values())


async def test_sms_channel_unconfigured_is_refused(
    redis_url: str, mqtt_url: str, tmp_path: Path
) -> None:
    async with running_engine(redis_url, mqtt_url, tmp_path) as client:
        response = await client.post(
            "/api/v1/alerts", json=alert_body(channels=["sms"]), headers=GULOU
        )
        body = await response.json()
        assert response.status == 422
        assert "sms" in body["error"]["message"]


async def recipients_of(
    client: Client, alert_id: str, job: str = "alert"
) -> dict[str, dict[str, Any]]:
    response = await client.get(f"/api/v1/alerts/{alert_id}/sms?job={job}", headers=PROVINCE)
    body = await response.json()
    assert response.status == 200, body
    return {row["phone"]: row for row in body["recipients"]}


async def test_the_rate_limit_is_never_exceeded(
    redis_url: str, mqtt_url: str, tmp_path: Path
) -> None:
    async with (
        GenericGatewayServer(rate_limit=40) as gw,
        engine_with(redis_url, mqtt_url, tmp_path, [gw], gw1={"rate": 40}) as client,
    ):
        await register(client, people(120))
        alert_id = await issue(client, areas=[GUDONG])
        await until_sms(client, alert_id, delivered=120, timeout=30)
        assert gw.throttled == 0, "the engine went over the gateway's limit"
        assert gw.peak_rate <= 40
        assert len(gw.sent) == 120
        assert gw.duplicates == 0


async def test_throttling_answers_are_retried_without_duplicates(
    redis_url: str, mqtt_url: str, tmp_path: Path
) -> None:
    # The contract says 200/s but the gateway allows 30/s: it answers "throttled" and the
    # engine backs off and tries again.
    async with (
        GenericGatewayServer(rate_limit=30, retry_after=0.2) as gw,
        engine_with(redis_url, mqtt_url, tmp_path, [gw], gw1={"rate": 200}) as client,
    ):
        await register(client, people(90))
        alert_id = await issue(client, areas=[GUDONG])
        await until_sms(client, alert_id, delivered=90, timeout=30)
        assert gw.throttled > 0
        assert len(gw.sent) == 90
        assert gw.duplicates == 0
        assert max(gw.sent_count(phone(i), alert_id) for i in range(90)) == 1


async def test_server_errors_are_retried_and_rejections_are_not(texting: Texting) -> None:
    gw, client = texting
    await register(client, people(10))
    gw.reject_phones.add(phone(3))
    alert_id = await issue(client, areas=[GUDONG])
    await until_sms(client, alert_id, delivered=9, failed=1)
    rows = await recipients_of(client, alert_id)
    assert rows[phone(3)]["state"] == "failed"
    assert rows[phone(3)]["attempts"] == 1, "a rejected message must not be tried again"
    assert rows[phone(3)]["error"]
    gw.fail_next(2, "500")
    second = await issue(client, areas=[GUDONG], headline="暴雨红色预警")
    await until_sms(client, second, delivered=9, failed=1)
    rows = await recipients_of(client, second)
    assert gw.faults_injected == 2
    assert max(r["attempts"] for r in rows.values()) >= 2
    assert gw.duplicates == 0
    assert all(gw.sent_count(phone(i), second) == (i != 3) for i in range(10))


async def test_no_answer_after_submit_is_settled_by_lookup_never_resent(
    redis_url: str, mqtt_url: str, tmp_path: Path
) -> None:
    async with generic_engine(redis_url, mqtt_url, tmp_path, gw1={"timeout": 0.5}) as (gw, client):
        await register(client, people(5))
        gw.fail_next(1, "accept_then_hang")
        alert_id = await issue(client, areas=[ZHONGSHAN])
        # The gateway took them but never answered; the settler asks and finds them delivered.
        await until_sms(client, alert_id, delivered=5, unknown=0)
        assert len(gw.sent) == 5
        assert all(gw.sent_count(phone(i), alert_id) == 1 for i in range(5))
        assert gw.duplicates == 0


async def test_a_dropped_request_is_looked_up_and_then_sent_once(texting: Texting) -> None:
    gw, client = texting
    await register(client, people(5))
    gw.fail_next(1, "drop_connection")
    alert_id = await issue(client, areas=[ZHONGSHAN])
    await until_sms(client, alert_id, delivered=5)
    assert gw.faults_injected == 1
    assert all(gw.sent_count(phone(i), alert_id) == 1 for i in range(5))
    assert gw.duplicates == 0
    rows = await recipients_of(client, alert_id)
    assert all(r["attempts"] == 2 for r in rows.values())


async def test_failover_to_the_next_gateway(redis_url: str, mqtt_url: str, tmp_path: Path) -> None:
    async with (
        GenericGatewayServer() as primary,
        AliyunGatewayServer() as backup,
        engine_with(
            redis_url, mqtt_url, tmp_path, [primary, backup], failover_after=2, cooldown=60
        ) as client,
    ):
        primary.fail_next(1000, "500")
        await register(client, people(30))
        alert_id = await issue(client, areas=[GUDONG])
        await until_sms(client, alert_id, delivered=30)
        assert len(primary.sent) == 0
        assert len(backup.sent) == 30
        assert backup.duplicates == 0
        rows = await recipients_of(client, alert_id)
        assert {r["gateway"] for r in rows.values()} == {"gw2"}
        response = await client.get("/api/v1/sms/gateways", headers=PROVINCE)
        status = {g["name"]: g for g in (await response.json())["gateways"]}
        assert status["gw1"]["up"] is False
        assert status["gw2"]["up"] is True


async def test_receipts_before_the_submit_answer_are_kept(
    redis_url: str, mqtt_url: str, tmp_path: Path
) -> None:
    engine = generic_engine(redis_url, mqtt_url, tmp_path, receipt_mode="before")
    async with engine as (gw, client):
        await register(client, people(8))
        alert_id = await issue(client, areas=[ZHONGSHAN])
        summary = await until_sms(client, alert_id, delivered=8)
        assert summary["submitted"] == 0
        assert set(gw.receipt_answers) == {200}


async def test_part_receipts_fold_into_one_state(texting: Texting) -> None:
    gw, client = texting
    gw.parts_receipts = True
    gw.fail_receipt_phones.add(phone(1))
    await register(client, people(3))
    long_text = "预计未来24小时将有12级以上大风，沿海地区有大到暴雨。" * 6
    alert_id = await issue(client, areas=[ZHONGSHAN], sms_text=long_text)
    summary = await until_sms(client, alert_id, delivered=2, failed=1)
    rows = await recipients_of(client, alert_id)
    segments = rows[phone(0)]["segments"]
    assert segments >= 3
    assert summary["segments"] == 3 * segments
    assert rows[phone(0)]["parts_delivered"] == segments
    assert rows[phone(1)]["state"] == "failed"


async def test_receipts_with_a_bad_signature_are_refused(texting: Texting) -> None:
    gw, client = texting
    gw.bad_signature = True
    await register(client, people(4))
    alert_id = await issue(client, areas=[ZHONGSHAN])
    await until_sms(client, alert_id, submitted=4)
    await gw.receipts_done()
    assert gw.receipt_answers
    assert set(gw.receipt_answers) == {401}
    summary = await sms_of(client, alert_id)
    assert summary["delivered"] == 0
    assert summary["submitted"] == 4
    # Unsigned and for an unknown gateway: refused too.
    response = await client.post("/api/v1/sms/receipts/gw1", data=b'{"receipts": []}')
    assert response.status == 401
    response = await client.post("/api/v1/sms/receipts/nope", data=b"{}")
    assert response.status == 404
    # None of the refused posts counted as a receipt.
    gateways = await (await client.get("/api/v1/sms/gateways", headers=PROVINCE)).json()
    assert gateways["receipts"].get("receipts", 0) == 0


async def test_cancel_stops_queued_texts_and_tells_only_those_reached(
    redis_url: str, mqtt_url: str, tmp_path: Path
) -> None:
    async with generic_engine(redis_url, mqtt_url, tmp_path, gw1={"rate": 20}) as (gw, client):
        await register(client, people(60))
        alert_id = await issue(client, areas=[GUDONG])
        await wait_for(lambda: len(gw.sent) >= 5, message="first texts sent")
        response = await client.post(f"/api/v1/alerts/{alert_id}/cancel", headers=PROVINCE)
        cancel = await response.json()
        assert response.status == 201, cancel

        async def settled() -> dict[str, Any] | None:
            summary = await sms_of(client, alert_id)
            busy = summary["queued"] + summary["submitting"] + summary["unknown"]
            return summary if busy == 0 and summary["cancelled"] > 0 else None

        summary = await wait_for(settled, timeout=20, message="the alert's texts settled")
        assert isinstance(summary, dict)
        reached = summary["delivered"] + summary["submitted"]
        assert reached + summary["cancelled"] == 60
        sent_before = {m.phone for m in gw.sent.values() if m.key and alert_id in str(m.key)}
        assert len(sent_before) == reached
        await until_sms(client, cancel["id"], recipients=reached, delivered=reached, timeout=20)
        cancel_texts = [m for m in gw.sent.values() if cancel["id"] in str(m.key)]
        assert {m.phone for m in cancel_texts} == sent_before
        assert all("解除" in m.text for m in cancel_texts)


async def test_hourly_limit_per_person_spares_red_warnings(
    redis_url: str, mqtt_url: str, tmp_path: Path
) -> None:
    async with generic_engine(redis_url, mqtt_url, tmp_path, per_recipient_per_hour=1) as (
        gw,
        client,
    ):
        await register(client, people(2))
        first = await issue(client, areas=[ZHONGSHAN], severity="yellow")
        await until_sms(client, first, delivered=2)
        second = await issue(client, areas=[ZHONGSHAN], severity="yellow", headline="暴雨黄色预警")
        await until_sms(client, second, failed=2)
        rows = await recipients_of(client, second)
        assert all("recipient_limit" in r["error"] for r in rows.values())
        red = await issue(client, areas=[ZHONGSHAN], severity="red", headline="台风红色预警二")
        await until_sms(client, red, delivered=2)
        assert len(gw.sent) == 4


async def test_roles_filter_who_is_texted(texting: Texting) -> None:
    gw, client = texting
    await register(client, people(3) + people(4, role="resident")[3:])
    alert_id = await issue(client, areas=[ZHONGSHAN], sms_roles=["resident"])
    await until_sms(client, alert_id, recipients=1, delivered=1)
    assert [m.phone for m in gw.sent.values()] == [phone(3)]


FAST_RESEND = {"red": 0.5, "backoff": 0.2, "max_attempts": 1, "sweep_interval": 0.1}


async def register_silent_terminals(client: Client, region: str) -> None:
    # Registered and never connected: they cannot acknowledge.
    response = await client.post(
        "/api/v1/terminals",
        json=[{"id": f"silent-{region}-{i}", "region": region} for i in range(2)],
        headers=PROVINCE,
    )
    assert response.status == 200, await response.text()


CONTACTS = [
    {"phone": phone(1), "name": "村长", "region": ZHONGSHAN, "role": "village_head"},
    {"phone": phone(2), "name": "网格员", "region": QINGCHENG, "role": "grid_worker"},
    {"phone": phone(3), "name": "值班员", "region": GUDONG, "role": "duty_officer"},
    {"phone": phone(4), "name": "居民", "region": ZHONGSHAN, "role": "resident"},
]


@pytest.mark.parametrize(
    ("status", "texted"), [("actual", phone(1)), ("exercise", phone(3))], ids=["warning", "drill"]
)
async def test_a_silent_village_is_escalated_to_its_contacts_by_sms(
    redis_url: str, mqtt_url: str, tmp_path: Path, status: str, texted: str
) -> None:
    async with generic_engine(redis_url, mqtt_url, tmp_path, resend=FAST_RESEND) as (gw, client):
        await register(client, CONTACTS)
        await register_silent_terminals(client, ZHONGSHAN)
        # Loudspeakers only: the texts below come from the escalation, not the alert.
        alert_id = await issue(client, areas=[GUDONG], channels=["loudspeaker"], status=status)

        async def escalation_texts() -> dict[str, dict[str, Any]] | None:
            rows = await recipients_of(client, alert_id, job="escalation")
            return rows if rows and all(r["state"] == "delivered" for r in rows.values()) else None

        rows = await wait_for(escalation_texts, timeout=20, message="escalation texts")
        assert isinstance(rows, dict)
        assert set(rows) == {texted}
        (message,) = gw.sent.values()
        assert message.phone == texted
        assert "中山社区" in message.text
        assert "未确认收到" in message.text
        assert ("【演练】" in message.text) == (status == "exercise")
        summary = await sms_of(client, alert_id)
        assert summary["recipients"] == 0
        assert summary["escalation"]["delivered"] == 1


async def test_a_lost_receipt_is_made_up_for_by_a_lookup(
    redis_url: str, mqtt_url: str, tmp_path: Path
) -> None:
    async with generic_engine(redis_url, mqtt_url, tmp_path, receipt_wait=1.0) as (gw, client):
        # Receipts the engine refuses stand for receipts that never arrive.
        gw.bad_signature = True
        await register(client, people(4))
        alert_id = await issue(client, areas=[ZHONGSHAN])
        await until_sms(client, alert_id, delivered=4)
        await gw.receipts_done()
        assert set(gw.receipt_answers) == {401}
        assert len(gw.sent) == 4
        assert gw.duplicates == 0


@pytest.mark.parametrize("server", [GenericGatewayServer, AliyunGatewayServer])
async def test_a_whole_message_receipt_settles_a_long_text(
    redis_url: str, mqtt_url: str, tmp_path: Path, server: type[GatewayServer]
) -> None:
    async with (
        server() as gw,
        engine_with(redis_url, mqtt_url, tmp_path, [gw]) as client,
    ):
        await register(client, people(2))
        long_text = "预计未来24小时将有12级以上大风，沿海地区有大到暴雨。" * 4
        alert_id = await issue(client, areas=[ZHONGSHAN], sms_text=long_text)
        await until_sms(client, alert_id, delivered=2)
        rows = await recipients_of(client, alert_id)
        assert all(r["segments"] >= 2 for r in rows.values())
        assert len(gw.sent) == 2
