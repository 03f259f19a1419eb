"""The SMS channel end to end: the engine (real Redis, real broker) texting through real HTTP
gateway servers run by the test, which keep their own books of what they sent."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient

from tests.helpers import wait_for
from tests.integration.engine import GULOU, PROVINCE, alert_body, running_engine
from tests.sms_gateways import AliyunGatewayServer, GatewayServer, GenericGatewayServer

# Real villages (社区) of 鼓东街道, 鼓楼区, 福州市, and one in 台江区.
ZHONGSHAN = "350102001001"
QINGCHENG = "350102001002"
GUDONG = "350102001"
TAIJIANG_VILLAGE = "350103001002"


def phone(n: int) -> str:
    return f"+86139{n:08d}"


def people(n: int, region: str = ZHONGSHAN, role: str = "village_head") -> list[dict[str, Any]]:
    return [
        {"phone": phone(i), "name": f"张{i}", "region": region, "role": role} for i in range(n)
    ]


@asynccontextmanager
async def engine_with(
    redis_url: str,
    mqtt_url: str,
    tmp_path: Path,
    gateways: list[GatewayServer],
    **sms: Any,
) -> AsyncIterator[TestClient[Any, Any]]:
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
    async with running_engine(redis_url, mqtt_url, tmp_path, sms=config) as client:
        for s, gw in zip(settings, gateways, strict=True):
            # An Aliyun-style gateway posts receipts to where its console was told to.
            gw.callback_url = str(client.make_url(f"/api/v1/sms/receipts/{s.name}"))
        yield client


async def register(client: TestClient[Any, Any], rows: list[dict[str, Any]]) -> dict[str, Any]:
    response = await client.post("/api/v1/recipients", json=rows, headers=PROVINCE)
    body: dict[str, Any] = await response.json()
    assert response.status == 200, body
    return body


async def issue(client: TestClient[Any, Any], **fields: Any) -> str:
    fields.setdefault("channels", ["sms"])
    response = await client.post("/api/v1/alerts", json=alert_body(**fields), headers=PROVINCE)
    body = await response.json()
    assert response.status == 201, body
    return str(body["id"])


async def sms_of(client: TestClient[Any, Any], alert_id: str) -> dict[str, Any]:
    response = await client.get(f"/api/v1/alerts/{alert_id}", headers=PROVINCE)
    body = await response.json()
    return dict(body["delivery"].get("sms") or {})


async def until_sms(
    client: TestClient[Any, Any], alert_id: str, timeout: float = 20.0, **wanted: int
) -> dict[str, Any]:
    async def check() -> dict[str, Any] | None:
        summary = await sms_of(client, alert_id)
        return summary if all(summary.get(k) == v for k, v in wanted.items()) else None

    result = await wait_for(check, timeout=timeout, message=f"sms counts {wanted}")
    assert isinstance(result, dict)
    return result


async def test_every_recipient_in_the_area_gets_one_text(
    redis_url: str, mqtt_url: str, tmp_path: Path
) -> None:
    async with (
        GenericGatewayServer() as gw,
        engine_with(redis_url, mqtt_url, tmp_path, [gw]) as client,
    ):
        rows = people(20)
        # Listed twice (village head and grid worker): still one text.
        rows.append({**rows[0], "role": "grid_worker"})
        rows += [{"phone": phone(900), "name": "外区", "region": TAIJIANG_VILLAGE, "role": "resident"}]
        await register(client, rows)
        alert_id = await issue(client, areas=[GUDONG], channels=["loudspeaker", "sms"])
        summary = await until_sms(client, alert_id, recipients=20, delivered=20)
        await gw.receipts_done()
        assert summary["failed"] == 0 and summary["queued"] == 0
        assert summary["segments"] >= 20
        assert len(gw.sent) == 20
        assert gw.duplicates == 0
        assert all(gw.sent_count(phone(i), alert_id) == 1 for i in range(20))
        assert gw.sent_count(phone(900), alert_id) == 0
        text = next(iter(gw.sent.values())).text
        assert text.startswith("【福建省应急管理厅】") and "台风红色预警" in text


async def test_aliyun_gateway_end_to_end(redis_url: str, mqtt_url: str, tmp_path: Path) -> None:
    async with (
        AliyunGatewayServer() as gw,
        engine_with(redis_url, mqtt_url, tmp_path, [gw]) as client,
    ):
        await register(client, people(15))
        alert_id = await issue(client, areas=[GUDONG], status="exercise")
        await until_sms(client, alert_id, recipients=15, delivered=15)
        assert len(gw.sent) == 15 and gw.duplicates == 0
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
