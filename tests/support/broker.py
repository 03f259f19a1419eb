"""The tests' side of the broker: a client that publishes as the engine does and records what
terminals send, and v1 alert payloads as terminals receive them."""

from __future__ import annotations

import asyncio
import json
import secrets
import ssl
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from adapters.loudspeaker.probe import broker_accepts
from dispatcher.core.broker_auth import password_line
from dispatcher.core.signing import Keyring, Signer, SigningKey
from dispatcher.embedded.processes import MosquittoServer
from receiver.mqtt_lite import (
    Message,
    MqttConnection,
    open_connection,
    parse_mqtt_url,
    tls_context,
)
from receiver.simulator import SimTerminal, Simulator
from tests.helpers import unique


def alert_body(
    alert_id: str,
    *,
    msg_type: str = "alert",
    status: str = "actual",
    references: list[str] | None = None,
    areas: list[str] | None = None,
    sent: datetime | None = None,
    expires_in: timedelta = timedelta(hours=1),
) -> dict[str, Any]:
    sent = sent or datetime.now(UTC)
    return {
        "v": 1,
        "id": alert_id,
        "msg_type": msg_type,
        "status": status,
        "severity": "orange",
        "event": "暴雨",
        "event_code": "11B03",
        "headline": "鼓楼区暴雨橙色预警",
        "text": "预计未来6小时降雨量将达50毫米以上。",
        "instruction": "请远离低洼地带。",
        "sent": sent.isoformat(),
        "expires": (sent + expires_in).isoformat(),
        "areas": areas or ["350102"],
        "references": references or [],
        "repeat": 2,
        "audio": None,
    }


# The tests' own signing key, for payloads published without an engine; terminals of such
# tests are given TEST_KEYRING.
TEST_KEY = SigningKey.generate()
TEST_SIGNER = Signer(TEST_KEY)
TEST_KEYRING = Keyring([TEST_KEY.public()])

_KEY_FILES: tuple[str, str] | None = None


def signing_settings() -> dict[str, str]:
    """``[signing]`` settings that make an engine sign with ``TEST_KEY``: every engine of the
    tests (several instances of one deployment share their key) and ``Watch`` sign alike, and
    ``TEST_KEYRING`` verifies them all."""
    global _KEY_FILES
    if _KEY_FILES is None:
        folder = Path(tempfile.mkdtemp(prefix="ebd-test-keys-"))
        TEST_KEY.save(folder / "signing-key.json")
        TEST_KEYRING.save(folder / "keyring.json")
        _KEY_FILES = (str(folder / "signing-key.json"), str(folder / "keyring.json"))
    return {"key_file": _KEY_FILES[0], "keyring_file": _KEY_FILES[1]}


# The brokers the tests started, by their engine URL: what an engine using one is told of it.
BROKERS: dict[str, MosquittoServer] = {}


def known(server: MosquittoServer) -> MosquittoServer:
    BROKERS[server.url] = server
    return server


def mqtt_settings(url: str) -> dict[str, str]:
    """``[mqtt]`` settings of an engine on the broker at ``url``: with a broker the tests
    started, the terminals' address, CA and accounts file too, so the engine issues accounts."""
    server = BROKERS.get(url)
    return server.engine_settings() if server is not None else {"url": url}


async def grant(server: MosquittoServer, ids: list[str]) -> dict[str, str]:
    """Broker accounts for ``ids`` without an engine (for tests of terminals alone): added to
    the password file, working once this returns."""
    passwords = {i: secrets.token_urlsafe(16) for i in ids}
    with server.accounts_file.open("a", encoding="utf-8") as out:
        out.writelines(password_line(i, p) + "\n" for i, p in passwords.items())
    await asyncio.to_thread(server.reload)
    tls = tls_context(server.ca_file.read_text(encoding="ascii"))
    last = ids[-1]
    taken = await until_accepted("127.0.0.1", server.terminal_port, last, passwords[last], tls=tls)
    assert taken, "the broker did not take accounts"
    return passwords


async def until_accepted(
    host: str, port: int, user: str, password: str, *, tls: ssl.SSLContext | None
) -> bool:
    """Whether the broker accepts ``user`` within 10 s (it rereads its files on SIGHUP, a
    moment after the signal)."""
    deadline = asyncio.get_running_loop().time() + 10
    while not await broker_accepts(host, port, user, password, tls=tls):
        if asyncio.get_running_loop().time() > deadline:
            return False
        await asyncio.sleep(0.05)
    return True


def terminal_url(server: MosquittoServer, terminal_id: str, password: str) -> str:
    """The terminals' listener with one terminal's credentials in it."""
    return f"mqtts://{terminal_id}:{password}@127.0.0.1:{server.terminal_port}"


async def simulator_on(mqtt_url: str, terminals: list[SimTerminal], **options: Any) -> Simulator:
    """A simulator of ``terminals`` on the broker at ``mqtt_url`` without an engine: accounts
    granted, TLS as the terminals use it, ``TEST_KEYRING`` (what ``Watch`` signs with)."""
    server = BROKERS[mqtt_url]
    passwords = await grant(server, [t.id for t in terminals])
    for terminal in terminals:
        terminal.password = passwords[terminal.id]
    return Simulator(
        terminals,
        f"mqtts://127.0.0.1:{server.terminal_port}",
        ca_pem=server.ca_file.read_text(encoding="ascii"),
        keyring=options.pop("keyring", TEST_KEYRING),
        **options,
    )


async def agent_access(mqtt_url: str, terminal_id: str) -> tuple[str, str]:
    """(URL with the terminal's own account, CA) for an agent on the broker at ``mqtt_url``."""
    server = BROKERS[mqtt_url]
    passwords = await grant(server, [terminal_id])
    return (
        terminal_url(server, terminal_id, passwords[terminal_id]),
        server.ca_file.read_text(encoding="ascii"),
    )


@dataclass(frozen=True, slots=True)
class Provisioning:
    """What the engine handed out with terminals' credentials: the terminals' broker address,
    its CA and the keyring."""

    url: str
    ca_pem: str
    keyring: Keyring

    def simulator(self, terminals: list[SimTerminal], **options: Any) -> Simulator:
        return Simulator(terminals, self.url, ca_pem=self.ca_pem, keyring=self.keyring, **options)


def provision(terminals: Iterable[SimTerminal], answers: Iterable[dict[str, Any]]) -> Provisioning:
    """Give ``terminals`` the passwords of the registration ``answers`` (a terminal that had an
    account keeps the password it has); what the answers say of the broker and keys."""
    by_id = {t.id: t for t in terminals}
    last: dict[str, Any] | None = None
    for answer in answers:
        for credential in answer.get("credentials", []):
            if credential["id"] in by_id:
                by_id[credential["id"]].password = credential["password"]
        last = answer
    assert last is not None, "no registration answer"
    assert last.get("broker"), f"no broker in the answer: {last}"
    return Provisioning(
        last["broker"]["url"],
        last["broker"]["ca_pem"],
        Keyring.from_json(json.dumps(last["keyring"])),
    )


class Watch:
    """The test's side of the broker: publishes like the engine and records what terminals
    send (a mqtt_lite client, so the agent's aiomqtt link is checked against another
    implementation)."""

    def __init__(self) -> None:
        self.messages: list[Message] = []
        self.conn: MqttConnection | None = None

    async def open(self, url: str, topics: list[str]) -> None:
        """Connect with the engine account of ``url`` (the engine listener)."""
        mqtt = parse_mqtt_url(url)
        self.conn, _ = await open_connection(
            mqtt.host,
            mqtt.port,
            unique("watch"),
            on_message=self.messages.append,
            keepalive=30,
            username=mqtt.username,
            password=mqtt.password,
        )
        await self.conn.subscribe(topics)

    async def publish(self, topic: str, body: dict[str, Any] | bytes, *, sign: bool = True) -> None:
        """Publish as the engine would: signed with the tests' key (``TEST_KEYRING`` verifies
        it) unless ``sign`` is False."""
        assert self.conn is not None
        payload = body if isinstance(body, bytes) else json.dumps(body).encode()
        if sign:
            payload = TEST_SIGNER.sign(payload)
        assert await self.conn.publish_acked(topic, payload) < 0x80

    def on(self, topic: str) -> list[dict[str, Any]]:
        return [json.loads(m.payload) for m in self.messages if m.topic == topic and m.payload]

    def acks(self, terminal_id: str, alert_id: str | None = None) -> list[dict[str, Any]]:
        acks = self.on(f"eb/v1/term/{terminal_id}/ack")
        return [a for a in acks if alert_id is None or a["alert_id"] == alert_id]

    def states(self, terminal_id: str) -> list[str]:
        return [s["state"] for s in self.on(f"eb/v1/term/{terminal_id}/state")]

    async def close(self) -> None:
        if self.conn is not None:
            self.conn.disconnect()
            await self.conn.closed
