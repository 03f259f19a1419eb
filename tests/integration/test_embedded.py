"""The embedded default: with no URLs the engine runs its own broker and Redis, and stops them."""

from __future__ import annotations

import asyncio
import socket
import ssl
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from cryptography import x509

from dispatcher.app import create_app
from dispatcher.core.errors import ConfigError, ServiceError
from dispatcher.embedded.processes import MosquittoServer, free_port
from dispatcher.http.state import URLS
from dispatcher.settings import Settings, load_settings
from receiver.agent import LogPlayer, ReceiverAgent
from receiver.simulator import SimTerminal
from tests.helpers import ZHONGSHAN, fujian, unique, wait_for
from tests.integration.engine import PROVINCE, engine_settings, register


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


# -- a broker field terminals can reach, where they were told ---------------------------------


async def test_a_restarted_engine_keeps_its_broker_ports_and_its_receivers_reconnect(
    tmp_path: Path, redis_url: str, mqtt_url: str
) -> None:
    settings = without(engine_settings(redis_url, mqtt_url, tmp_path), "mqtt")
    terminal = SimTerminal(unique("stay"), ZHONGSHAN)
    async with TestClient(TestServer(create_app(settings, tree=fujian()))) as client:
        given = await register(client, [terminal])
        first = (tmp_path / "mosquitto" / "ports.json").read_text(encoding="ascii")
    url = given.url.replace("mqtts://", f"mqtts://{terminal.id}:{terminal.password}@")
    agent = ReceiverAgent(
        terminal.id, ZHONGSHAN, url, keyring=given.keyring, ca_pem=given.ca_pem,
        player=LogPlayer(play_time=0.0),
    )  # fmt: skip
    stop = asyncio.Event()
    # Started while the engine (and its broker) are down: the receiver retries the address it
    # was given until the restarted broker is back there.
    task = asyncio.create_task(agent.run(stop), name="test-agent")
    try:
        async with TestClient(TestServer(create_app(settings, tree=fujian()))) as client:
            await wait_for(agent.connected.is_set, timeout=20, message="receiver reconnected")
            again = await client.post(
                f"/api/v1/terminals/{terminal.id}/credentials", headers=PROVINCE
            )
            assert again.status == 200
            assert (await again.json())["broker"]["url"] == given.url
    finally:
        stop.set()
        async with asyncio.timeout(10):
            await task
    assert (tmp_path / "mosquitto" / "ports.json").read_text(encoding="ascii") == first


def test_the_broker_remembers_the_ports_it_chose(tmp_path: Path) -> None:
    with MosquittoServer(tmp_path) as first:
        ports = (first.port, first.terminal_port)
    again = MosquittoServer(tmp_path)
    assert (again.port, again.terminal_port) == ports
    with again:
        assert again.running
    # A port given explicitly wins over the remembered one, and is remembered in turn.
    moved = free_port()
    with MosquittoServer(tmp_path, terminal_port=moved) as third:
        assert (third.port, third.terminal_port) == (ports[0], moved)
    assert MosquittoServer(tmp_path).terminal_port == moved


def test_a_listener_on_every_address_is_reached_by_the_names_in_its_certificate(
    tmp_path: Path,
) -> None:
    settings = load_settings(
        None,
        mqtt={
            "terminal_listen": f"0.0.0.0:{free_port('0.0.0.0')}",  # noqa: S104  the point
            "terminal_url": "mqtts://broker.county.example:8883",
            "terminal_names": ["10.20.30.40"],
        },
    )
    listeners = settings.mqtt.embedded_broker()
    with MosquittoServer(tmp_path, **listeners) as server:
        assert server.terminal_host == "0.0.0.0"  # noqa: S104
        assert server.terminal_url == f"mqtts://broker.county.example:{server.terminal_port}"
        names = san_of(server.files.cert_file)
        assert {"broker.county.example", "10.20.30.40", "localhost", "127.0.0.1"} <= names
        # A terminal that knows the broker by that name verifies it, whichever address it used.
        context = ssl.create_default_context(cadata=server.ca_file.read_text(encoding="ascii"))
        with (
            socket.create_connection(("127.0.0.1", server.terminal_port), timeout=5) as raw,
            context.wrap_socket(raw, server_hostname="broker.county.example") as tls,
        ):
            assert tls.version() in ("TLSv1.2", "TLSv1.3")


def test_a_listener_on_every_address_needs_the_name_terminals_use() -> None:
    with pytest.raises(ConfigError, match="set terminal_url"):
        load_settings(None, mqtt={"terminal_listen": "0.0.0.0:8883"})
    with pytest.raises(ConfigError, match="not HOST:PORT"):
        load_settings(None, mqtt={"terminal_listen": "8883"})
    with pytest.raises(ServiceError, match="the name or address terminals reach it by"):
        MosquittoServer(Path("/nonexistent"), terminal_host="0.0.0.0", terminal_port=8883)  # noqa: S104


def san_of(cert_file: Path | str) -> set[str]:
    cert = x509.load_pem_x509_certificate(Path(cert_file).read_bytes())
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return {str(n) for n in names.get_values_for_type(x509.DNSName)} | {
        str(n) for n in names.get_values_for_type(x509.IPAddress)
    }
