"""Builds a real engine app for tests: real Redis and broker, test offices, a unique client id."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient, TestServer

from dispatcher.app import create_app
from dispatcher.core.auth import hash_token
from dispatcher.core.regions import RegionTree
from dispatcher.embedded.processes import free_port
from dispatcher.settings import Settings, load_settings
from tests.helpers import FUJIAN_FILE

REGIONS_FILE = FUJIAN_FILE
_TREE: RegionTree | None = None

# token → (office id, name, region)
OFFICES = {
    "tok-province": ("fj-province", "福建省应急管理厅", "35"),
    "tok-fuzhou": ("fz-city", "福州市应急管理局", "3501"),
    "tok-gulou": ("fz-gulou", "鼓楼区应急管理局", "350102"),
    "tok-taijiang": ("fz-taijiang", "台江区应急管理局", "350103"),
}
PROVINCE = {"Authorization": "Bearer tok-province"}
GULOU = {"Authorization": "Bearer tok-gulou"}
TAIJIANG = {"Authorization": "Bearer tok-taijiang"}


def fujian() -> RegionTree:
    global _TREE
    if _TREE is None:
        _TREE = RegionTree.from_csv(REGIONS_FILE)
    return _TREE


def engine_settings(
    redis_url: str,
    mqtt_url: str,
    state_dir: Path,
    *,
    client_id: str | None = None,
    **overrides: Any,
) -> Settings:
    return load_settings(
        None,
        redis={"url": redis_url},
        mqtt={
            "url": mqtt_url,
            "client_id": client_id or f"ebd-test-{uuid.uuid4().hex[:8]}",
            "session_expiry": 120,
        },
        regions={"file": str(REGIONS_FILE)},
        offices=[
            {"id": oid, "name": name, "region": region, "token_sha256": hash_token(token)}
            for token, (oid, name, region) in OFFICES.items()
        ],
        state_dir=str(state_dir),
        **overrides,
    )


@asynccontextmanager
async def running_engine(
    redis_url: str,
    mqtt_url: str,
    state_dir: Path,
    *,
    client_id: str | None = None,
    **overrides: Any,
) -> AsyncIterator[TestClient[Any, Any]]:
    notifiers = overrides.pop("notifiers", ())
    # A port known beforehand, so SMS gateways can be told where to post receipts.
    port = free_port()
    if "sms" in overrides:
        overrides["sms"] = {"callback_base": f"http://127.0.0.1:{port}", **overrides["sms"]}
    settings = engine_settings(redis_url, mqtt_url, state_dir, client_id=client_id, **overrides)
    app = create_app(settings, tree=fujian(), notifiers=notifiers)
    async with TestClient(TestServer(app, port=port)) as client:
        yield client


def alert_body(**fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "event": "台风",
        "event_code": "11B01",
        "severity": "red",
        "headline": "台风红色预警",
        "text": "预计未来24小时将有12级以上大风。",
        "instruction": "请立即转移至安全场所。",
        "areas": ["350102"],
        "expires_in": 3600,
    }
    body.update(fields)
    return {k: v for k, v in body.items() if v is not None}
