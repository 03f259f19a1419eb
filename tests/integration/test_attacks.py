"""An attacker on the same network, replayed against real processes: every attack must fail
and change nothing. The engine runs in-process on the session's broker and Redis, configured
as a deployment is (accounts, TLS for terminals, signed payloads, Redis with a password)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import redis

from dispatcher.core.signing import Signer, SigningKey
from dispatcher.embedded.processes import MosquittoServer
from dispatcher.parts import ACK_LINK, SETTINGS
from receiver.mqtt_lite import (
    ConnectRefused,
    MqttConnection,
    MqttLiteError,
    open_connection,
    parse_mqtt_url,
    tls_context,
)
from receiver.simulator import Behaviour, SimTerminal, Simulator
from tests.helpers import COUNTY_TOPIC, GULOU_COUNTY, ZHONGSHAN, unique, wait_for
from tests.integration.engine import (
    GULOU,
    PROVINCE,
    TAIJIANG,
    Client,
    ack_payload,
    delivery,
    dispatched,
    issue,
    online,
    terminals_in,
)
from tests.support.broker import BROKERS, TEST_SIGNER, Watch, alert_body

pytestmark = pytest.mark.timeout(120)


def broker(mqtt_url: str) -> MosquittoServer:
    return BROKERS[mqtt_url]


async def terminal_link(
    sim: Simulator, user: str, password: str | None, client_id: str | None = None
) -> MqttConnection:
    """A client on the terminals' TLS listener as ``user``."""
    target = parse_mqtt_url(sim.mqtt_url)
    conn, _ = await open_connection(
        target.host,
        target.port,
        client_id or user,
        ssl=tls_context(sim.ca_pem),
        username=user,
        password=password,
    )
    return conn


async def refused(coro: Any) -> bool:
    try:
        conn = await coro
    except ConnectRefused:
        return True
    conn.disconnect()
    return False


async def test_anonymous_clients_are_refused_on_both_listeners(mqtt_url: str) -> None:
    server = broker(mqtt_url)
    target = parse_mqtt_url(server.bare_url)
    assert await refused(open_connection(target.host, target.port, unique("anon")))
    ca = tls_context(server.ca_file.read_text(encoding="ascii"))
    assert await refused(open_connection("127.0.0.1", server.terminal_port, unique("anon"), ssl=ca))
    # A terminal's listener does not speak plain MQTT: no way around TLS.
    plain = open_connection("127.0.0.1", server.terminal_port, unique("plain"), timeout=3)
    with pytest.raises((MqttLiteError, OSError, TimeoutError)):
        await plain


async def test_a_forged_ack_for_another_terminal_is_not_counted(api: Client, mqtt_url: str) -> None:
    """Terminal A, with its own valid account, publishes `played` on terminal B's ack topic
    while B is silent: the broker drops it, B stays unanswered."""
    terminals = terminals_in(GULOU_COUNTY, 2, unique("forge"))
    a, b = terminals
    silent = frozenset({b.id})
    async with online(api, terminals, mqtt_url, Behaviour(silent=silent)) as sim:
        alert_id = await issue(api, areas=[GULOU_COUNTY])
        await wait_for(lambda: dispatched(api, alert_id), timeout=10)
        await wait_for(lambda: sim.played(alert_id) >= 2, timeout=10)
        attacker = await terminal_link(sim, a.id, a.password, client_id=unique("x"))
        try:
            code = await attacker.publish_acked(f"eb/v1/term/{b.id}/ack", ack_payload(alert_id))
        except Exception:
            code = 0x87
        finally:
            attacker.disconnect()
        assert code >= 0x80
        state = await wait_for(lambda: _played_by(api, alert_id, 1), timeout=10)
    assert isinstance(state, dict)
    assert state["played"] == 1, "only A's own ack may count"
    terms = await (
        await api.get(f"/api/v1/alerts/{alert_id}/terminals?state=played", headers=PROVINCE)
    ).json()
    assert [t["id"] for t in terms["terminals"]] == [a.id]


async def _played_by(api: Client, alert_id: str, n: int) -> dict[str, Any] | None:
    state = await delivery(api, alert_id)
    return state if state["played"] >= n else None


async def test_a_terminal_can_neither_sound_nor_cancel_alerts(api: Client, mqtt_url: str) -> None:
    """A terminal's account publishing a signed-looking alert and a cancel on alert topics:
    refused by the broker's ACL, nothing played, the engine's alert not cancelled."""
    terminals = terminals_in(GULOU_COUNTY, 2, unique("noisy"))
    async with online(api, terminals, mqtt_url) as sim:
        real = await issue(api, areas=[GULOU_COUNTY])
        await wait_for(lambda: sim.played(real) >= 2, timeout=10)
        attacker = await terminal_link(sim, terminals[0].id, terminals[0].password)
        fake_id = unique("fake")
        try:
            fake = TEST_SIGNER.sign(json.dumps(alert_body(fake_id)).encode())
            cancel = TEST_SIGNER.sign(
                json.dumps(alert_body(unique("c"), msg_type="cancel", references=[real])).encode()
            )
            codes = []
            for payload in (fake, cancel):
                try:
                    codes.append(await attacker.publish_acked(COUNTY_TOPIC, payload))
                except Exception:
                    codes.append(0x87)
                    break
        finally:
            attacker.disconnect()
        assert all(code >= 0x80 for code in codes)
        shown = await (await api.get(f"/api/v1/alerts/{real}", headers=PROVINCE)).json()
    assert sim.plays_of(terminals[1].id).get(fake_id) is None
    assert shown["delivery"]["state"] == "dispatched"


async def test_an_unsigned_or_wrongly_signed_alert_from_the_engine_account_is_refused(
    api: Client, mqtt_url: str, watch: Watch
) -> None:
    """Someone holding the engine's broker password but not its signing key: terminals
    refuse what they publish, report it on their state topic, and play nothing."""
    terminals = terminals_in(GULOU_COUNTY, 2, unique("sig"))
    async with online(api, terminals, mqtt_url) as sim:
        bad_key = Signer(SigningKey.generate())
        unsigned_id, forged_id, old_id = unique("u"), unique("f"), unique("o")
        await watch.publish(COUNTY_TOPIC, alert_body(unsigned_id), sign=False)
        forged = bad_key.sign(json.dumps(alert_body(forged_id)).encode())
        await watch.publish(COUNTY_TOPIC, forged, sign=False)
        # A genuine signature on an old alert (sent two days ago): a replay.
        sent = datetime.now(UTC) - timedelta(days=2)
        old = alert_body(old_id, sent=sent, expires_in=timedelta(days=7))
        await watch.publish(COUNTY_TOPIC, old)
        await wait_for(lambda: _rejections(watch, terminals) >= 6, timeout=10)
    for terminal in terminals:
        plays = sim.plays_of(terminal.id)
        assert not {unsigned_id, forged_id, old_id} & set(plays)
    reasons = _rejection_reasons(watch, terminals)
    assert any("unsigned" in r for r in reasons), reasons
    assert any("unknown key" in r or "bad signature" in r for r in reasons), reasons


def _rejected(watch: Watch, terminals: list[SimTerminal]) -> list[dict[str, Any]]:
    found = []
    for terminal in terminals:
        for message in watch.on(f"eb/v1/term/{terminal.id}/state"):
            if message.get("rejected"):
                found.append(message["rejected"])
    return found


def _rejections(watch: Watch, terminals: list[SimTerminal]) -> int:
    return len(_rejected(watch, terminals))


def _rejection_reasons(watch: Watch, terminals: list[SimTerminal]) -> list[str]:
    return [str(r.get("reason", "")) for r in _rejected(watch, terminals)]


async def test_a_client_id_takeover_is_impossible(api: Client, mqtt_url: str) -> None:
    """A terminal connecting with another terminal's client id, or the engine's ack link's,
    is connected under its own name: nobody is thrown off, no session is wiped."""
    terminals = terminals_in(GULOU_COUNTY, 2, unique("take"))
    a, b = terminals
    async with online(api, terminals, mqtt_url) as sim:
        connects = {t.id: t.connects for t in terminals}
        for victim in (b.id, f"{api.app[SETTINGS].mqtt_client_id}-acks"):
            attacker = await terminal_link(sim, a.id, a.password, client_id=victim)
            attacker.disconnect()
        # The attacker's own id was used instead: A's simulated link may be replaced, B's not.
        assert b.connects == connects[b.id]
        assert b.connected
        alert_id = await issue(api, areas=[GULOU_COUNTY])
        await wait_for(lambda: sim.played(alert_id) >= 2, timeout=15)
    assert api.app[ACK_LINK].connected.is_set()


async def test_revoked_and_rotated_credentials_stop_working_at_once(
    api: Client, mqtt_url: str
) -> None:
    terminals = terminals_in(GULOU_COUNTY, 2, unique("rev"))
    a, b = terminals
    async with online(api, terminals, mqtt_url) as sim:
        old_b = b.password
        revoked = await api.delete(f"/api/v1/terminals/{a.id}/credentials", headers=GULOU)
        assert revoked.status == 200, await revoked.text()
        assert await refused(terminal_link(sim, a.id, a.password, client_id=unique("r")))
        # Another county cannot rotate Gulou's terminal.
        other = await api.post(f"/api/v1/terminals/{b.id}/credentials", headers=TAIJIANG)
        assert other.status == 403
        rotated = await api.post(f"/api/v1/terminals/{b.id}/credentials", headers=GULOU)
        assert rotated.status == 200, await rotated.text()
        (new,) = (await rotated.json())["credentials"]
        assert new["password"] != old_b
        assert await refused(terminal_link(sim, b.id, old_b, client_id=unique("r")))
        fresh = await terminal_link(sim, b.id, new["password"])
        fresh.disconnect()
    audit = await (await api.get("/api/v1/audit?action=credential.revoke", headers=PROVINCE)).json()
    assert [r["target"] for r in audit["records"]] == [a.id]


async def test_a_deleted_terminal_loses_its_account(api: Client, mqtt_url: str) -> None:
    terminals = terminals_in(GULOU_COUNTY, 1, unique("del"))
    async with online(api, terminals, mqtt_url) as sim:
        (t,) = terminals
        refused_by_other = await api.delete(f"/api/v1/terminals/{t.id}", headers=TAIJIANG)
        assert refused_by_other.status == 403
        deleted = await api.delete(f"/api/v1/terminals/{t.id}", headers=GULOU)
        assert deleted.status == 200, await deleted.text()
        assert await refused(terminal_link(sim, t.id, t.password, client_id=unique("d")))
    listing = await (await api.get(f"/api/v1/terminals?region={ZHONGSHAN}", headers=GULOU)).json()
    assert t.id not in [x["id"] for x in listing["terminals"]]


async def test_an_office_cannot_move_another_jurisdictions_terminal(api: Client) -> None:
    gulou_terminal = {"id": unique("gl"), "region": ZHONGSHAN}
    made = await api.post("/api/v1/terminals", headers=GULOU, json=[gulou_terminal])
    assert made.status == 200
    taijiang_village = "350103001002"
    moved = await api.post(
        "/api/v1/terminals",
        headers=TAIJIANG,
        json=[{"id": gulou_terminal["id"], "region": taijiang_village}],
    )
    assert moved.status == 403
    listing = await (await api.get(f"/api/v1/terminals?region={ZHONGSHAN}", headers=GULOU)).json()
    assert gulou_terminal["id"] in [x["id"] for x in listing["terminals"]]


def test_redis_refuses_clients_without_the_password(redis_url: str) -> None:
    """The embedded Redis (as the tests run it) takes no command without the password: no
    SET + XADD of a forged alert, no HGETALL of phone numbers."""
    bare = redis_url.split("@", 1)[1]
    with redis.Redis.from_url(f"redis://{bare}") as anonymous:
        with pytest.raises(redis.AuthenticationError):
            anonymous.set("ebd:alert:forged", "{}")
        with pytest.raises(redis.AuthenticationError):
            anonymous.xadd("ebd:outbox", {"alert_id": "forged"})
        with pytest.raises(redis.AuthenticationError):
            anonymous.hgetall("ebd:recips")
    with redis.Redis.from_url(redis_url) as engine:
        assert engine.exists("ebd:alert:forged") == 0
        with pytest.raises(redis.AuthenticationError):
            redis.Redis.from_url(f"redis://ebd:wrong@{bare}").ping()
