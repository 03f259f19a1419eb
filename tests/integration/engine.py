"""Builds a real engine app for tests (real Redis and broker, the test offices, a unique client
id), and the calls the integration tests make of it: register terminals, issue an alert, read
its delivery, run the ``ebd`` command against it."""

from __future__ import annotations

import asyncio
import errno
import json
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiohttp.test_utils import TestClient, TestServer

from dispatcher.app import create_app
from dispatcher.cli.main import main
from dispatcher.core.auth import hash_token
from dispatcher.core.regions import Level
from dispatcher.embedded.processes import free_port
from dispatcher.settings import Settings, load_settings
from receiver.mqtt_lite import MqttConnection, open_connection, parse_mqtt_url, tls_context
from receiver.simulator import Behaviour, SimTerminal, Simulator
from tests.helpers import FUJIAN_FILE, ZHONGSHAN, fujian, unique

# Imported from here by tests.support.engine_process: the offices and the request body it uses.
from tests.helpers import OFFICES as OFFICES
from tests.helpers import alert_body as alert_body
from tests.support.broker import Provisioning, mqtt_settings, provision, signing_settings

if TYPE_CHECKING:
    # Only a type here: tests.support.engine_process imports this module.
    from tests.support.engine_process import EngineApi

Client = TestClient[Any, Any]
REGIONS_FILE = FUJIAN_FILE

PROVINCE = {"Authorization": "Bearer tok-province"}
GULOU = {"Authorization": "Bearer tok-gulou"}
TAIJIANG = {"Authorization": "Bearer tok-taijiang"}


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
            **mqtt_settings(mqtt_url),
            "client_id": client_id or unique("ebd-test"),
            "session_expiry": 120,
        },
        signing=signing_settings(),
        regions={"file": str(REGIONS_FILE)},
        # The test offices' tokens stand for linked release systems whose warnings were
        # approved upstream (machine_approved): a module testing approval overrides them.
        offices=overrides.pop("offices", None)
        or [
            {
                "id": oid,
                "name": name,
                "region": region,
                "token_sha256": hash_token(token),
                "machine_approved": True,
            }
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
) -> AsyncIterator[Client]:
    """The engine app with ``overrides`` of its settings (and ``notifiers``), served on a free
    port for the block; stopped afterwards."""
    notifiers = overrides.pop("notifiers", ())
    sms = overrides.get("sms")
    for attempt in range(1, 6):
        # A port known beforehand, so SMS gateways can be told where to post receipts; another
        # process may take it before it is bound (an outgoing connection's port): then another.
        port = free_port()
        if sms is not None:
            overrides["sms"] = {"callback_base": f"http://127.0.0.1:{port}", **sms}
        settings = engine_settings(redis_url, mqtt_url, state_dir, client_id=client_id, **overrides)
        app = create_app(settings, tree=fujian(), notifiers=notifiers)
        server = TestServer(app, port=port)
        try:
            await server.start_server()
        except OSError as exc:
            await server.close()  # the app started before the bind failed: stop it
            if exc.errno != errno.EADDRINUSE or attempt == 5:
                raise
            continue
        break
    async with TestClient(server) as client:
        yield client


def midday_zone() -> str:
    """A fixed-offset zone where it is now between 06:00 and 18:00, so a drill a few seconds
    ahead falls in working hours whenever the suite runs."""
    hour = datetime.now(UTC).hour
    offset = (12 - hour + 12) % 24 - 12  # local hour 12 at UTC hour `hour`
    # Etc/GMT signs are inverted: Etc/GMT-8 is UTC+8.
    return "Etc/GMT" + (f"-{offset}" if offset > 0 else f"+{-offset}" if offset < 0 else "")


def drill_settings(**overrides: Any) -> dict[str, Any]:
    """``[drills]`` settings for tests: any day and hour, a 3 s window, a short lease."""
    return {
        "timezone": midday_zone(),
        "weekdays": [1, 2, 3, 4, 5, 6, 7],
        "workday_start": "00:00",
        "workday_end": "23:59",
        "window": 3.0,
        "late_after": 1.0,
        "lease_seconds": 1.5,
        "grace": 60.0,
        **overrides,
    }


def terminals_in(region: str, n: int, prefix: str) -> list[SimTerminal]:
    """``n`` simulated terminals in the villages below ``region`` (round robin), with ids of
    this test's own (``prefix``)."""
    villages = fujian().descendants(region, level=Level.VILLAGE)
    return [SimTerminal(f"{prefix}-{i}", villages[i % len(villages)].code) for i in range(n)]


async def register(api: Client, terminals: list[SimTerminal]) -> Provisioning:
    """Registers ``terminals`` (as the province office), giving them their passwords; what
    the engine handed out for them."""
    response = await api.post(
        "/api/v1/terminals",
        headers=PROVINCE,
        json=[{"id": t.id, "region": t.region} for t in terminals],
    )
    assert response.status == 200, await response.text()
    return provision(terminals, [await response.json()])


@asynccontextmanager
async def online(
    api: Client | EngineApi,
    terminals: list[SimTerminal],
    mqtt_url: str,
    behaviour: Behaviour | None = None,
) -> AsyncIterator[Simulator]:
    """``terminals`` registered with the engine behind ``api`` (in-process or a process) and
    simulated on the broker at ``mqtt_url`` for the block: the simulator."""
    if isinstance(api, TestClient):
        given = await register(api, terminals)
    else:
        handed = await api.register(terminals)
        assert handed is not None, "the engine issued no broker accounts"
        given = handed
    async with given.simulator(terminals, behaviour=behaviour) as sim:
        yield sim


async def issue(api: Client, headers: dict[str, str] = PROVINCE, **fields: Any) -> str:
    """Issues ``alert_body(**fields)``; its id."""
    response = await api.post("/api/v1/alerts", headers=headers, json=alert_body(**fields))
    assert response.status == 201, await response.text()
    return str((await response.json())["id"])


async def delivery(api: Client, alert_id: str, detail: str = "county") -> dict[str, Any]:
    """The alert's delivery state, broken down to ``detail``."""
    response = await api.get(f"/api/v1/alerts/{alert_id}?detail={detail}", headers=PROVINCE)
    assert response.status == 200, await response.text()
    return dict((await response.json())["delivery"])


async def played_all(api: Client, alert_id: str, n: int) -> dict[str, Any] | None:
    """The delivery once ``n`` terminals are expected and all played it, else None."""
    state = await delivery(api, alert_id)
    return state if state["played"] == n and state["expected"] == n else None


async def dispatched(api: Client, alert_id: str) -> bool:
    return bool((await delivery(api, alert_id))["state"] == "dispatched")


def ack_payload(alert_id: str, state: str = "played", *, detail: str | None = None) -> bytes:
    """A terminal's ack as it publishes it on ``eb/v1/term/<id>/ack``."""
    return json.dumps(
        {"v": 1, "alert_id": alert_id, "state": state, "at": "2026-11-27T08:00:00+08:00"}
        | ({"detail": detail} if detail else {})
    ).encode()


async def publish_acks(sim: Simulator, acks: Iterable[tuple[str, bytes]]) -> None:
    """Publishes each (terminal id, payload) on the terminal's ack topic as that terminal of
    ``sim`` would (its own account, QoS 1, in the given order). The connection takes over the
    simulated terminal's (one client id per account), which reconnects by itself."""
    acks = list(acks)
    passwords = {t.id: t.password for t in sim.terminals}
    # The simulated links of these terminals are cut first (they stay down): one account, one
    # client id, and a reconnecting simulator would throw this publisher off.
    await sim.drop(sorted({terminal_id for terminal_id, _ in acks} - _dropped(sim)))
    target = parse_mqtt_url(sim.mqtt_url)
    tls = tls_context(sim.ca_pem)
    connections: dict[str, MqttConnection] = {}
    try:
        for terminal_id, payload in acks:
            conn = connections.get(terminal_id)
            if conn is None:
                conn, _ = await open_connection(
                    target.host, target.port, terminal_id, ssl=tls, clean_start=False,
                    session_expiry=600, username=terminal_id, password=passwords[terminal_id],
                )  # fmt: skip
                connections[terminal_id] = conn
            assert await conn.publish_acked(f"eb/v1/term/{terminal_id}/ack", payload) < 0x80
    finally:
        for conn in connections.values():
            conn.disconnect()


def _dropped(sim: Simulator) -> set[str]:
    return {t.id for t in sim.terminals if not t.connected}


def base_url(api: Client) -> str:
    """The engine's URL, for ``ebd --api``."""
    return str(api.make_url("/"))


async def ebd(*argv: str) -> int:
    """The ``ebd`` command in a thread: it calls asyncio.run, and this loop serves the engine."""
    return await asyncio.to_thread(main, list(argv))


def phone(n: int) -> str:
    """The ``n``-th test mobile number, in E.164."""
    return f"+86139{n:08d}"


def people(
    n: int, region: str = ZHONGSHAN, *, role: str = "village_head", start: int = 0
) -> list[dict[str, Any]]:
    """Recipient rows of ``n`` people posted in ``region``, phones ``phone(start)`` on."""
    return [
        {"phone": phone(i), "name": f"张{i}", "region": region, "role": role}
        for i in range(start, start + n)
    ]
