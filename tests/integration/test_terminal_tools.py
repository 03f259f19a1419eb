"""What a technician and an office do with one terminal: a link test (ping) that the terminal
acks without sounding, why its acks were refused, unregistering it, a new password; through
the API and ``ebd terminals``. Alert texts a loudspeaker cannot say are refused at the API."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from adapters.loudspeaker.ping import LinkPinger
from dispatcher.app import create_app
from dispatcher.core.signing import Keyring, SigningKey
from dispatcher.http.terminals import PINGER
from dispatcher.parts import LINK, SIGNER
from receiver.agent import ReceiverAgent
from receiver.simulator import Simulator
from tests.helpers import fujian, unique, wait_for
from tests.integration.engine import (
    GULOU,
    PROVINCE,
    Client,
    alert_body,
    base_url,
    ebd,
    engine_settings,
    online,
    publish_acks,
    register,
    terminals_in,
)
from tests.integration.test_receiver import RecordingPlayer, running

GULOU_COUNTY, TAIJIANG_COUNTY = "350102", "350103"


async def _pinger(app: web.Application) -> AsyncIterator[None]:
    # What dispatcher.app does once the link exists; here for an app that does not yet.
    if PINGER not in app:
        app[PINGER] = LinkPinger(app[LINK], app[SIGNER])
    yield


@pytest.fixture
async def api(redis_url: str, mqtt_url: str, tmp_path: Path) -> AsyncIterator[Client]:
    app = create_app(engine_settings(redis_url, mqtt_url, tmp_path / "state"), tree=fujian())
    app.cleanup_ctx.append(_pinger)
    async with TestClient(TestServer(app)) as client:
        yield client


@pytest.fixture
def token_file(tmp_path: Path) -> str:
    path = tmp_path / "token"
    path.write_text("tok-province\n", encoding="utf-8")
    return str(path)


async def shown(api: Client, terminal_id: str, headers: dict[str, str] = PROVINCE) -> Any:
    response = await api.get(f"/api/v1/terminals/{terminal_id}", headers=headers)
    assert response.status == 200, await response.text()
    return await response.json()


# -- ping ------------------------------------------------------------------------------------


async def test_a_ping_is_acked_by_the_terminal_with_its_round_trip(
    api: Client, mqtt_url: str
) -> None:
    terminals = terminals_in(GULOU_COUNTY, 1, unique("ping"))
    async with online(api, terminals, mqtt_url) as sim:
        response = await api.post(f"/api/v1/terminals/{terminals[0].id}/ping", headers=GULOU)
        body = await response.json()
        plays = dict(sim.terminals[0].plays)
    assert response.status == 200, body
    assert body["answered"] is True
    assert body["ack"]["state"] == "received"
    assert body["ack"]["terminal_id"] == terminals[0].id
    assert 0 < body["rtt_ms"] < 10_000
    assert body["ping_id"].startswith("ping:")
    assert plays == {}  # acked, never sounded
    # Not an ack of some unknown alert: nothing refused, nothing counted against the terminal.
    assert (await shown(api, terminals[0].id))["rejections"] == []


async def test_the_reference_receiver_answers_a_ping_without_sounding(api: Client) -> None:
    terminal = terminals_in(GULOU_COUNTY, 1, unique("agent"))[0]
    given = await register(api, [terminal])
    url = given.url.replace("mqtts://", f"mqtts://{terminal.id}:{terminal.password}@")
    player = RecordingPlayer()
    agent = ReceiverAgent(
        terminal.id, terminal.region, url, keyring=given.keyring, ca_pem=given.ca_pem,
        player=player,
    )  # fmt: skip
    async with running(agent):
        response = await api.post(f"/api/v1/terminals/{terminal.id}/ping", headers=PROVINCE)
        body = await response.json()
    assert body["answered"] is True, body
    assert body["ack"]["state"] == "received"
    assert player.played == []


async def test_a_ping_of_a_silent_terminal_says_no_answer_and_its_last_state(
    api: Client,
) -> None:
    terminals = terminals_in(GULOU_COUNTY, 1, unique("mute"))
    await register(api, terminals)
    response = await api.post(f"/api/v1/terminals/{terminals[0].id}/ping?timeout=1")
    assert response.status == 401  # no token: the office is always asked for
    response = await api.post(
        f"/api/v1/terminals/{terminals[0].id}/ping?timeout=1", headers=PROVINCE
    )
    body = await response.json()
    assert response.status == 200, body
    assert body["answered"] is False
    assert body["state"] is None
    assert "no answer" in body["message"]
    assert "never reported a state" in body["message"]


@pytest.mark.parametrize(
    ("path", "headers", "status", "words"),
    [
        ("/api/v1/terminals/nobody-here/ping", PROVINCE, 404, "not registered"),
        ("/api/v1/terminals/{id}/ping?timeout=0", PROVINCE, 422, "timeout"),
        ("/api/v1/terminals/{id}/ping?timeout=61", PROVINCE, 422, "timeout"),
        ("/api/v1/terminals/{id}/ping?timeout=ten", PROVINCE, 422, "timeout"),
        ("/api/v1/terminals/{id}/ping?wait=3", PROVINCE, 400, "wait"),
        ("/api/v1/terminals/{id}/ping", GULOU, 403, "350103"),
    ],
)
async def test_a_bad_ping_is_refused_with_a_reason(
    api: Client, path: str, headers: dict[str, str], status: int, words: str
) -> None:
    terminals = terminals_in(TAIJIANG_COUNTY, 1, unique("far"))
    await register(api, terminals)
    response = await api.post(path.format(id=terminals[0].id), headers=headers)
    assert response.status == status
    assert words in json.dumps(await response.json(), ensure_ascii=False)


async def test_ebd_terminals_ping_prints_the_round_trip_or_exits_1(
    api: Client, mqtt_url: str, token_file: str, capsys: pytest.CaptureFixture[str]
) -> None:
    terminals = terminals_in(GULOU_COUNTY, 2, unique("cliping"))
    await register(api, terminals[1:])
    args = ("--api", base_url(api), "--token-file", token_file)
    async with online(api, terminals[:1], mqtt_url):
        assert await ebd("--lang", "en", "terminals", "ping", terminals[0].id, *args) == 0
    assert "the link works" in capsys.readouterr().out
    assert (
        await ebd("--lang", "en", "terminals", "ping", terminals[1].id, "--timeout", "1", *args)
        == 1
    )
    assert f"no answer from {terminals[1].id} within 1 s" in capsys.readouterr().out


# -- why acks were refused -------------------------------------------------------------------


async def test_refused_acks_are_shown_with_their_reasons_newest_first(
    api: Client, mqtt_url: str, token_file: str, capsys: pytest.CaptureFixture[str]
) -> None:
    terminals = terminals_in(GULOU_COUNTY, 1, unique("refused"))
    terminal_id = terminals[0].id
    async with online(api, terminals, mqtt_url) as sim:
        unknown = json.dumps(
            {"v": 1, "alert_id": "gone-1", "state": "played", "at": "2026-11-27T08:00:00+08:00"}
        ).encode()
        await publish_acks(sim, [(terminal_id, b'{"v":1,"alert_id":"x"}'), (terminal_id, unknown)])

        async def two_reasons() -> list[dict[str, str]] | None:
            found = (await shown(api, terminal_id))["rejections"]
            return found if len(found) >= 2 else None

        rejections: Any = await wait_for(two_reasons)
    assert rejections[0]["alert_id"] == "gone-1"
    assert rejections[0]["reason"].startswith("unknown alert gone-1")
    assert rejections[1]["reason"].startswith("malformed ack")
    assert await ebd("--lang", "en", "terminals", "show", terminal_id, "--api", base_url(api),
                     "--token-file", token_file) == 0  # fmt: skip
    out = capsys.readouterr().out
    assert "latest refused acks (2)" in out
    assert "unknown alert gone-1" in out


async def test_a_terminal_that_refuses_the_ping_says_why_and_the_office_sees_it(
    api: Client,
) -> None:
    terminals = terminals_in(GULOU_COUNTY, 1, unique("wrongkeys"))
    given = await register(api, terminals)
    # Provisioned with a keyring that does not hold the engine's key.
    stranger = Keyring([SigningKey.generate().public()])
    async with Simulator(terminals, given.url, ca_pem=given.ca_pem, keyring=stranger):
        response = await api.post(f"/api/v1/terminals/{terminals[0].id}/ping?timeout=2")
        assert response.status == 401
        response = await api.post(
            f"/api/v1/terminals/{terminals[0].id}/ping?timeout=2", headers=PROVINCE
        )
        body = await response.json()

        async def refusal() -> list[dict[str, str]] | None:
            found = (await shown(api, terminals[0].id))["rejections"]
            return found or None

        rejections: Any = await wait_for(refusal)
    assert body["answered"] is False
    assert body["state"]["state"] == "online"
    assert rejections[0]["reason"].startswith("the terminal refused a message from the engine")
    # Refused before its id could be trusted: the reason names the engine's key instead.
    assert "alert_id" not in rejections[0]
    assert "(key ed25519-" in rejections[0]["reason"], rejections[0]


async def test_only_the_office_of_the_terminal_sees_it(api: Client) -> None:
    terminals = terminals_in(TAIJIANG_COUNTY, 1, unique("other"))
    await register(api, terminals)
    response = await api.get(f"/api/v1/terminals/{terminals[0].id}", headers=GULOU)
    assert response.status == 403
    assert (await shown(api, terminals[0].id))["region"] == terminals[0].region


# -- unregister, new password ----------------------------------------------------------------


async def test_ebd_terminals_delete_unregisters_and_audits(
    api: Client, token_file: str, capsys: pytest.CaptureFixture[str]
) -> None:
    terminals = terminals_in(GULOU_COUNTY, 1, unique("gone"))
    await register(api, terminals)
    args = ("--api", base_url(api), "--token-file", token_file)
    assert await ebd("--lang", "en", "terminals", "delete", terminals[0].id, *args) == 0
    assert "unregistered" in capsys.readouterr().out
    response = await api.get(f"/api/v1/terminals/{terminals[0].id}", headers=PROVINCE)
    assert response.status == 404
    audit = await (await api.get("/api/v1/audit?limit=20", headers=PROVINCE)).json()
    deleted = [e for e in audit["records"] if e["action"] == "terminal.delete"]
    assert [e["target"] for e in deleted[:1]] == [terminals[0].id]
    assert await ebd("--lang", "en", "terminals", "delete", terminals[0].id, *args) != 0
    assert "not registered" in capsys.readouterr().err


async def test_ebd_terminals_rotate_credentials_writes_a_private_provisioning_file(
    api: Client, token_file: str, tmp_path: Path
) -> None:
    terminals = terminals_in(GULOU_COUNTY, 1, unique("rot"))
    await register(api, terminals)
    out = tmp_path / "new.json"
    argv = ("terminals", "rotate-credentials", terminals[0].id, "--credentials-out", str(out))
    assert await ebd("--lang", "en", *argv, "--api", base_url(api), "--token-file", token_file) == 0
    written = json.loads(out.read_text(encoding="utf-8"))
    assert [c["id"] for c in written["credentials"]] == [terminals[0].id]
    assert written["broker"]["url"].startswith("mqtts://")
    assert out.stat().st_mode & 0o077 == 0
    # Never over an earlier file: its passwords may still be needed.
    assert await ebd("--lang", "en", *argv, "--api", base_url(api), "--token-file", token_file) == 2


# -- texts a loudspeaker cannot say ----------------------------------------------------------


# (field, its text, how the refusal names the character); control and bidi characters are
# refused already (tests/integration/test_authz.py).
UNSAYABLE_TEXTS = [
    ("headline", "台风🌀红色预警", "U+1F300 (cyclone)"),
    ("text", "请注意⚠️安全", "U+26A0 (warning sign)"),
    ("instruction", "转移\u200d到安全地带", "U+200D (zero width joiner)"),
    ("instruction", "私用\ue000字符", "U+E000"),
]


@pytest.mark.parametrize(("field", "value", "named"), UNSAYABLE_TEXTS)
async def test_an_alert_text_with_what_a_loudspeaker_cannot_say_is_refused(
    api: Client, field: str, value: str, named: str
) -> None:
    body = alert_body() | {field: value}
    response = await api.post("/api/v1/alerts", headers=PROVINCE, json=body)
    assert response.status == 422
    error = await response.json()
    text = json.dumps(error, ensure_ascii=False)
    assert field in text
    assert named in text
    assert "cannot say" in text


async def test_units_and_numbered_steps_are_still_accepted(api: Client) -> None:
    body = alert_body() | {"text": "气温38℃，雨量50㎜；①远离河道 → 高处"}
    response = await api.post("/api/v1/alerts", headers=PROVINCE, json=body)
    assert response.status == 201, await response.text()
