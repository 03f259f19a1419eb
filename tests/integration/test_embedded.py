"""The embedded default: with no URLs the engine runs its own broker and Redis, and stops them."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient, TestServer

from dispatcher.app import create_app
from dispatcher.http.state import URLS
from dispatcher.settings import Settings
from tests.helpers import fujian
from tests.integration.engine import engine_settings


def accepts(url: str) -> bool:
    host, port = url.split("//")[1].split("/")[0].rsplit(":", 1)
    try:
        with socket.create_connection((host, int(port)), timeout=1):
            return True
    except OSError:
        return False


def without(settings: Settings, *names: str) -> Settings:
    update: dict[str, Any] = {}
    for name in names:
        update[name] = getattr(settings, name).model_copy(update={"url": None})
    return settings.model_copy(update=update)


async def test_no_urls_start_and_stop_private_servers(tmp_path: Path, mqtt_url: str) -> None:
    settings = without(engine_settings("redis://x:1/0", mqtt_url, tmp_path), "mqtt", "redis")
    app = create_app(settings, tree=fujian())
    async with TestClient(TestServer(app)) as client:
        urls: dict[str, str] = app[URLS]
        assert urls["mqtt"] != mqtt_url
        ready = await client.get("/readyz")
        assert ready.status == 200, await ready.text()
        assert (tmp_path / "redis" / "data").is_dir()
        assert (tmp_path / "mosquitto").is_dir()
    assert not accepts(urls["mqtt"])
    assert not accepts(urls["redis"])


async def test_only_the_missing_server_is_started(tmp_path: Path, mqtt_url: str) -> None:
    settings = without(engine_settings("redis://x:1/0", mqtt_url, tmp_path), "redis")
    app = create_app(settings, tree=fujian())
    async with TestClient(TestServer(app)) as client:
        assert app[URLS]["mqtt"] == mqtt_url
        assert (await client.get("/readyz")).status == 200
    assert not (tmp_path / "mosquitto").exists()
