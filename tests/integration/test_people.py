"""People against a real engine (real Redis): signing in sets a safe cookie, changes made with
the cookie need the CSRF token, a person's API token works until revoked or the person is
disabled, roles limit what a person may change, an admin manages only their own office, the
audit log names the person, and no password ever shows in an answer or a log line."""

from __future__ import annotations

import json
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any

import pytest
import redis
from structlog.testing import capture_logs

from dispatcher.cli.main import main
from dispatcher.store import keys
from tests.helpers import ZHONGSHAN, unique
from tests.integration import engine as steps
from tests.integration.engine import GULOU, PROVINCE, Client, base_url, ebd, running_engine
from tests.support.people import DEFAULT_PASSWORD, add_person, sign_in

TAIJIANG_TOKEN = "tok-taijiang"
ME = "/api/v1/me"


@pytest.fixture
def engine_overrides() -> dict[str, Any]:
    return {"drills": steps.drill_settings()}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def login_id(prefix: str = "p") -> str:
    return unique(prefix).lower()


async def person(api: Client, roles: list[str], office: str = "tok-gulou") -> tuple[str, str]:
    """A new person of the office with ``roles``: (login id, API token)."""
    pid = login_id()
    return pid, await add_person(api.session, str(api.make_url("")), office, pid, roles)


async def answer(response: Any, status: int) -> Any:
    body = await response.json()
    assert response.status == status, body
    return body


async def audit_records(api: Client, action: str) -> list[dict[str, Any]]:
    body = await answer(
        await api.get(f"/api/v1/audit?limit=1000&action={action}", headers=PROVINCE), 200
    )
    return list(body["records"])


# Signing in --------------------------------------------------------------------------------


async def test_signing_in_sets_an_http_only_strict_cookie_and_me_names_the_person(
    api: Client,
) -> None:
    pid, _ = await person(api, ["composer", "viewer"])
    response = await api.post("/api/v1/session", json={"login": pid, "password": DEFAULT_PASSWORD})
    body = await answer(response, 200)
    assert body["person"]["id"] == pid
    assert body["person"]["office_id"] == "fz-gulou"
    cookie = SimpleCookie(response.headers["Set-Cookie"])["ebd_session"]
    assert cookie["httponly"] is True
    assert cookie["samesite"] == "Strict"
    assert cookie["path"] == "/"
    assert not cookie["secure"]  # plain HTTP here; TLS sets it
    me = await answer(await api.get(ME), 200)
    assert me["person"]["id"] == pid
    assert me["office"] == {
        "id": "fz-gulou",
        "name": "鼓楼区应急管理局",
        "region": "350102",
        "region_name": "鼓楼区",
    }
    assert me["roles"] == ["composer", "viewer"]
    assert me["csrf"] == body["csrf"]


async def test_an_office_token_is_a_machine_without_a_person(api: Client) -> None:
    me = await answer(await api.get(ME, headers=GULOU), 200)
    assert me["person"] is None
    assert me["roles"] == []
    assert me["csrf"] is None
    assert me["office"]["id"] == "fz-gulou"


async def test_a_wrong_password_is_refused_and_repeated_failures_are_throttled(
    redis_url: str, mqtt_url: str, tmp_path: Any
) -> None:
    async with running_engine(
        redis_url, mqtt_url, tmp_path / "state", api={"auth_failures_per_minute": 3}
    ) as api:
        pid, _ = await person(api, ["viewer"])
        wrong = {"login": pid, "password": "not-the-password"}
        for _ in range(2):
            refused = await answer(await api.post("/api/v1/session", json=wrong), 401)
            assert refused["error"]["message"] == "wrong login id or password"
            assert "Set-Cookie" not in refused
        nobody = {"login": "no-such-person", "password": "whatever-it-is"}
        await answer(await api.post("/api/v1/session", json=nobody), 401)
        # The third failure blocked the address: even the right password waits.
        right = {"login": pid, "password": DEFAULT_PASSWORD}
        response = await api.post("/api/v1/session", json=right)
        assert response.status == 429
        assert "Retry-After" in response.headers
        assert "ebd_session" not in response.cookies


async def test_signing_out_ends_the_session_at_once(api: Client) -> None:
    pid, _ = await person(api, ["viewer"])
    csrf = await sign_in(api.session, str(api.make_url("")), pid)
    await answer(await api.get(ME), 200)
    await answer(await api.delete("/api/v1/session", headers={"X-CSRF-Token": csrf}), 200)
    api.session.cookie_jar.clear()
    await answer(await api.get(ME), 401)


async def test_a_stolen_cookie_is_useless_after_sign_out(api: Client) -> None:
    pid, _ = await person(api, ["viewer"])
    await sign_in(api.session, str(api.make_url("")), pid)
    stolen = api.session.cookie_jar.filter_cookies(api.make_url("/"))["ebd_session"].value
    csrf = (await answer(await api.get(ME), 200))["csrf"]
    await answer(await api.delete("/api/v1/session", headers={"X-CSRF-Token": csrf}), 200)
    api.session.cookie_jar.clear()
    ended = await answer(await api.get(ME, cookies={"ebd_session": stolen}), 401)
    assert "sign in again at /login" in ended["error"]["message"]


# CSRF --------------------------------------------------------------------------------------


async def test_a_change_with_the_cookie_but_no_csrf_token_is_refused_and_changes_nothing(
    api: Client, rdb: redis.Redis
) -> None:
    admin, _ = await person(api, ["admin"])
    csrf = await sign_in(api.session, str(api.make_url("")), admin)
    new: dict[str, Any] = {
        "id": login_id(),
        "name": "李四",
        "roles": ["viewer"],
        "password": "a-long-password",
    }
    for headers in ({}, {"X-CSRF-Token": "forged"}, {"X-CSRF-Token": ""}):
        refused = await answer(await api.post("/api/v1/people", json=new, headers=headers), 403)
        assert refused["error"]["code"] == "csrf"
        assert "X-CSRF-Token" in refused["error"]["message"]
    assert not rdb.hexists(keys.PEOPLE, new["id"])
    # With the page's token it goes through.
    await answer(await api.post("/api/v1/people", json=new, headers={"X-CSRF-Token": csrf}), 201)
    assert rdb.hexists(keys.PEOPLE, new["id"])


async def test_a_bearer_request_needs_no_csrf_token(api: Client) -> None:
    _, token = await person(api, ["admin"])
    new = {"id": login_id(), "name": "王五", "roles": ["viewer"], "password": "a-long-password"}
    await answer(await api.post("/api/v1/people", json=new, headers=bearer(token)), 201)


# Person tokens -----------------------------------------------------------------------------


async def test_a_person_token_works_until_it_is_revoked(api: Client) -> None:
    pid, token = await person(api, ["viewer"])
    me = await answer(await api.get(ME, headers=bearer(token)), 200)
    assert me["person"]["id"] == pid
    listed = await answer(await api.get("/api/v1/people", headers=GULOU), 200)
    (entry,) = [p for p in listed["people"] if p["id"] == pid]
    (issued,) = entry["tokens"]
    assert set(issued) == {"id", "issued_at"}  # never the token nor its hash
    revoked = await api.delete(f"/api/v1/people/{pid}/tokens/{issued['id']}", headers=GULOU)
    await answer(revoked, 200)
    refused = await answer(await api.get(ME, headers=bearer(token)), 401)
    assert "revoked" in refused["error"]["message"]
    again = await api.delete(f"/api/v1/people/{pid}/tokens/{issued['id']}", headers=GULOU)
    await answer(again, 404)


async def test_disabling_a_person_stops_their_token_and_session_at_once(api: Client) -> None:
    pid, token = await person(api, ["viewer"])
    await sign_in(api.session, str(api.make_url("")), pid)
    await answer(await api.get(ME), 200)
    disabled = await answer(await api.post(f"/api/v1/people/{pid}/disable", headers=GULOU), 200)
    assert disabled["person"]["disabled"] is True
    await answer(await api.get(ME), 401)
    refused = await answer(await api.get(ME, headers=bearer(token)), 401)
    assert "disabled" in refused["error"]["message"]
    signin = {"login": pid, "password": DEFAULT_PASSWORD}
    assert (
        "disabled"
        in (await answer(await api.post("/api/v1/session", json=signin), 401))["error"]["message"]
    )
    await answer(await api.post(f"/api/v1/people/{pid}/enable", headers=GULOU), 200)
    await answer(await api.get(ME, headers=bearer(token)), 200)


async def test_a_made_up_person_token_is_refused(api: Client) -> None:
    refused = await answer(await api.get(ME, headers=bearer("ebdp_made-up")), 401)
    assert refused["error"]["code"] == "unauthorized"


# Roles -------------------------------------------------------------------------------------


async def test_a_viewer_reads_but_cannot_plan_a_drill_or_register_a_terminal(
    api: Client, rdb: redis.Redis
) -> None:
    _, token = await person(api, ["viewer"], office="tok-province")
    viewer = bearer(token)
    await answer(await api.get("/api/v1/terminals", headers=viewer), 200)
    await answer(await api.get("/api/v1/alerts", headers=viewer), 200)
    await answer(await api.get("/api/v1/drills?year=2027", headers=viewer), 200)
    terminal = unique("t-viewer")
    refused = await answer(
        await api.post(
            "/api/v1/terminals", json=[{"id": terminal, "region": ZHONGSHAN}], headers=viewer
        ),
        403,
    )
    assert "admin" in refused["error"]["message"]
    assert not rdb.hexists(keys.TERMS_REGION, terminal)
    drills_before = rdb.hlen(keys.DRILLS)
    refused = await answer(
        await api.post("/api/v1/drills/plan", json={"year": 2031}, headers=viewer), 403
    )
    assert "coordinator" in refused["error"]["message"]
    assert rdb.hlen(keys.DRILLS) == drills_before


async def test_an_admin_registers_terminals(api: Client, rdb: redis.Redis) -> None:
    _, token = await person(api, ["admin"], office="tok-province")
    terminal = unique("t-admin")
    body = [{"id": terminal, "region": ZHONGSHAN}]
    await answer(await api.post("/api/v1/terminals", json=body, headers=bearer(token)), 200)
    assert rdb.hget(keys.TERMS_REGION, terminal) == ZHONGSHAN


# Managing people ---------------------------------------------------------------------------


async def test_an_admin_cannot_create_or_manage_people_of_another_office(
    api: Client, rdb: redis.Redis
) -> None:
    _, admin_token = await person(api, ["admin"])
    admin = bearer(admin_token)
    elsewhere: dict[str, Any] = {
        "id": login_id(),
        "name": "赵六",
        "roles": ["admin"],
        "password": "a-long-password",
        "office": "fz-taijiang",
    }
    refused = await answer(await api.post("/api/v1/people", json=elsewhere, headers=admin), 403)
    assert "fz-taijiang" in refused["error"]["message"]
    assert not rdb.hexists(keys.PEOPLE, elsewhere["id"])
    theirs, _ = await person(api, ["viewer"], office=TAIJIANG_TOKEN)
    for path in ("disable", "enable", "password", "tokens"):
        body = {"password": "another-long-one"} if path == "password" else None
        response = await api.post(f"/api/v1/people/{theirs}/{path}", json=body, headers=admin)
        await answer(response, 403)
    assert json.loads(rdb.hget(keys.PEOPLE, theirs) or "{}")["disabled"] is False
    assert rdb.hlen(keys.person_tokens_key(theirs)) == 1
    listed = await answer(await api.get("/api/v1/people", headers=admin), 200)
    assert theirs not in {p["id"] for p in listed["people"]}


async def test_only_admins_manage_people(api: Client) -> None:
    pid, token = await person(api, ["composer", "approver", "coordinator", "viewer"])
    new = {"id": login_id(), "name": "钱七", "roles": ["admin"], "password": "a-long-password"}
    refused = await answer(await api.post("/api/v1/people", json=new, headers=bearer(token)), 403)
    assert "admin" in refused["error"]["message"]
    await answer(await api.get("/api/v1/people", headers=bearer(token)), 403)
    # Not even to make themselves an admin by another door.
    await answer(await api.post(f"/api/v1/people/{pid}/enable", headers=bearer(token)), 403)


async def test_a_login_id_is_unique_across_offices(api: Client) -> None:
    pid, _ = await person(api, ["viewer"])
    again = {"id": pid, "name": "重名", "roles": ["viewer"], "password": "a-long-password"}
    taken = await answer(
        await api.post("/api/v1/people", json=again, headers=bearer(TAIJIANG_TOKEN)), 409
    )
    assert "taken" in taken["error"]["message"]


async def test_a_person_changes_their_own_password_with_the_current_one(api: Client) -> None:
    pid, token = await person(api, ["viewer"])
    path = f"/api/v1/people/{pid}/password"
    missing = await answer(
        await api.post(path, json={"password": "new-long-password"}, headers=bearer(token)), 422
    )
    assert missing["error"]["details"][0]["field"] == "current"
    wrong = {"password": "new-long-password", "current": "not-it-at-all"}
    await answer(await api.post(path, json=wrong, headers=bearer(token)), 401)
    right = {"password": "new-long-password", "current": DEFAULT_PASSWORD}
    await answer(await api.post(path, json=right, headers=bearer(token)), 200)
    old = {"login": pid, "password": DEFAULT_PASSWORD}
    await answer(await api.post("/api/v1/session", json=old), 401)
    new = {"login": pid, "password": "new-long-password"}
    await answer(await api.post("/api/v1/session", json=new), 200)


async def test_a_new_password_ends_the_persons_sessions(api: Client) -> None:
    pid, _ = await person(api, ["viewer"])
    await sign_in(api.session, str(api.make_url("")), pid)
    await answer(await api.get(ME), 200)
    reset = {"password": "reset-by-the-admin"}
    await answer(await api.post(f"/api/v1/people/{pid}/password", json=reset, headers=GULOU), 200)
    await answer(await api.get(ME), 401)


# Audit and secrets -------------------------------------------------------------------------


async def test_the_audit_record_names_the_person(api: Client) -> None:
    admin, token = await person(api, ["admin"])
    new = {"id": login_id(), "name": "孙八", "roles": ["viewer"], "password": "a-long-password"}
    await answer(await api.post("/api/v1/people", json=new, headers=bearer(token)), 201)
    await answer(await api.post(f"/api/v1/people/{new['id']}/disable", headers=bearer(token)), 200)
    created = [
        r for r in await audit_records(api, "person.create") if r["target"] == f"person:{new['id']}"
    ]
    assert [(r["office"], r["person"]) for r in created] == [("fz-gulou", admin)]
    assert created[0]["detail"] == {"name": "孙八", "roles": ["viewer"]}
    disabled = [
        r
        for r in await audit_records(api, "person.disable")
        if r["target"] == f"person:{new['id']}"
    ]
    assert [r["person"] for r in disabled] == [admin]
    # The office token is a machine: its records name no person.
    machine = [
        r for r in await audit_records(api, "person.create") if r["target"] == f"person:{admin}"
    ]
    assert [r["person"] for r in machine] == [None]


async def test_passwords_never_show_in_answers_logs_or_redis(api: Client, rdb: redis.Redis) -> None:
    secret = "pw-" + unique("secret")
    pid = login_id()
    with capture_logs() as logs:
        created = await api.post(
            "/api/v1/people",
            json={"id": pid, "name": "周九", "roles": ["viewer"], "password": secret},
            headers=GULOU,
        )
        texts = [await created.text()]
        for password in (secret, "wrong-" + secret):
            response = await api.post("/api/v1/session", json={"login": pid, "password": password})
            texts.append(await response.text())
        short = await api.post(
            "/api/v1/people",
            json={"id": login_id(), "name": "x", "roles": ["viewer"], "password": "short"},
            headers=GULOU,
        )
        texts.append(await short.text())
        reset = await api.post(
            f"/api/v1/people/{pid}/password", json={"password": secret + "2"}, headers=GULOU
        )
        texts.append(await reset.text())
        texts.append(await (await api.get("/api/v1/people", headers=GULOU)).text())
        texts.append(await (await api.get("/api/v1/audit?limit=1000", headers=PROVINCE)).text())
    assert short.status == 422
    for text in texts:
        assert secret not in text
        assert "short" not in json.loads(text).get("password", "")
        assert "scrypt" not in text
    logged = json.dumps(logs, default=str)
    assert secret not in logged
    assert 'short"' not in logged
    assert any(entry["event"] == "auth.failed" for entry in logs)
    stored = rdb.hget(keys.PEOPLE, pid) or ""
    assert secret not in stored
    assert json.loads(stored)["password"].startswith("scrypt$n=16384")


# Bad input ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"id": "A", "name": "n", "roles": ["viewer"], "password": "a-long-password"}, "id"),
        ({"id": "-lead", "name": "n", "roles": ["viewer"], "password": "a-long-password"}, "id"),
        ({"id": "x" * 33, "name": "n", "roles": ["viewer"], "password": "a-long-password"}, "id"),
        ({"id": "ok.id", "name": "", "roles": ["viewer"], "password": "a-long-password"}, "name"),
        ({"id": "ok.id", "name": "a\nb", "roles": ["viewer"], "password": "a-long-pass"}, "name"),
        ({"id": "ok.id", "name": "n" * 33, "roles": ["viewer"], "password": "a-long-pass"}, "name"),
        ({"id": "ok.id", "name": "n", "roles": [], "password": "a-long-password"}, "roles"),
        ({"id": "ok.id", "name": "n", "roles": ["root"], "password": "a-long-password"}, "roles.0"),
        (
            {"id": "ok.id", "name": "n", "roles": ["viewer", "viewer"], "password": "a-long-pw"},
            "roles",
        ),
        ({"id": "ok.id", "name": "n", "roles": ["viewer"], "password": "123456789"}, "password"),
        (
            {"id": "ok.id", "name": "n", "roles": ["viewer"], "password": "a\tlong-password"},
            "password",
        ),
        ({"id": "ok.id", "name": "n", "roles": ["viewer"], "password": 1234567890}, "password"),
        ({"id": "ok.id", "name": "n", "roles": ["viewer"]}, "password"),
        ({"id": "ok.id", "name": "n", "roles": ["viewer"], "password": "a-long-pw", "x": 1}, "x"),
    ],
)
async def test_bad_people_are_refused_with_the_field_named(
    api: Client, body: dict[str, Any], field: str
) -> None:
    refused = await answer(await api.post("/api/v1/people", json=body, headers=GULOU), 422)
    assert field in [d["field"] for d in refused["error"]["details"]], refused


@pytest.mark.parametrize(
    ("method", "path", "kwargs", "status"),
    [
        (
            "post",
            "/api/v1/people",
            {"data": b"{not json", "headers": {"Content-Type": "application/json"}},
            400,
        ),
        ("post", "/api/v1/people", {"data": b"id=x"}, 415),
        ("post", "/api/v1/people", {"json": ["a list"]}, 422),
        ("post", "/api/v1/people?office=x", {"json": {}}, 400),
        ("post", "/api/v1/session", {"json": {"login": "x"}}, 422),
        ("post", "/api/v1/session", {"json": {"login": "x", "password": "y" * 300}}, 422),
        ("post", "/api/v1/session", {"json": "login"}, 422),
        ("post", "/api/v1/people/NO%20SUCH/disable", {}, 404),
        ("post", "/api/v1/people/nobody-here/enable", {}, 404),
        (
            "post",
            "/api/v1/people/nobody-here/password",
            {"json": {"password": "long-enough-1"}},
            404,
        ),
        ("post", "/api/v1/people/nobody-here/tokens", {}, 404),
        ("delete", "/api/v1/people/nobody-here/tokens/abc", {}, 404),
        ("get", "/api/v1/me?x=1", {}, 400),
    ],
)
async def test_bad_requests_get_clear_errors(
    api: Client, method: str, path: str, kwargs: dict[str, Any], status: int
) -> None:
    headers = {**GULOU, **kwargs.pop("headers", {})}
    response = await getattr(api, method)(path, headers=headers, **kwargs)
    body = await answer(response, status)
    assert body["error"]["message"]


@pytest.mark.parametrize(
    "path",
    [
        ("get", ME),
        ("get", "/api/v1/people"),
        ("post", "/api/v1/people"),
        ("post", "/api/v1/people/someone/disable"),
        ("post", "/api/v1/people/someone/tokens"),
        ("delete", "/api/v1/people/someone/tokens/abc"),
    ],
)
async def test_every_people_endpoint_needs_a_credential(api: Client, path: tuple[str, str]) -> None:
    method, url = path
    refused = await answer(await getattr(api, method)(url, json={}), 401)
    assert "sign in at /login" in refused["error"]["message"]


async def test_a_bad_session_cookie_is_refused(api: Client) -> None:
    for value in ("made-up", "x" * 300):
        refused = await answer(await api.get(ME, cookies={"ebd_session": value}), 401)
        assert "/login" in refused["error"]["message"]


# The ebd command ---------------------------------------------------------------------------


async def test_ebd_people_creates_lists_issues_a_token_and_disables(
    api: Client, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("EBD_TOKEN", "tok-gulou")
    url = base_url(api)
    pid = login_id()
    secret = tmp_path / "password"
    secret.write_text("cli-long-password\n", encoding="utf-8")
    created = ("people", "create", pid, "--name", "陈十", "--role", "composer", "--role", "viewer")
    assert await ebd(*created, "--password-file", str(secret), "--api", url) == 0
    assert f"已创建 {pid}（陈十）" in capsys.readouterr().out
    assert await ebd("people", "list", "-o", "json", "--api", url) == 0
    listed = json.loads(capsys.readouterr().out)
    (entry,) = [p for p in listed["people"] if p["id"] == pid]
    assert entry["roles"] == ["composer", "viewer"]
    out = tmp_path / "token"
    assert await ebd("people", "token", pid, "--out", str(out), "--api", url) == 0
    assert out.stat().st_mode & 0o777 == 0o600
    token = out.read_text(encoding="utf-8").strip()
    assert token not in capsys.readouterr().out
    await answer(await api.get(ME, headers=bearer(token)), 200)
    assert await ebd("people", "disable", pid, "--api", url) == 0
    await answer(await api.get(ME, headers=bearer(token)), 401)
    assert await ebd("people", "enable", pid, "--api", url) == 0
    await answer(await api.get(ME, headers=bearer(token)), 200)
    session = {"login": pid, "password": "cli-long-password"}
    await answer(await api.post("/api/v1/session", json=session), 200)


async def test_ebd_people_create_refuses_a_short_password_before_asking_the_engine(
    api: Client, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("EBD_TOKEN", "tok-gulou")
    pid = login_id()
    secret = tmp_path / "password"
    secret.write_text("short\n", encoding="utf-8")
    command = ("people", "create", pid, "--name", "短", "--role", "viewer")
    assert await ebd(*command, "--password-file", str(secret), "--api", base_url(api)) != 0
    err = capsys.readouterr().err
    assert "at least 10 characters" in err
    assert "short" not in err.replace("shortest", "")
    missing = tmp_path / "missing"
    assert await ebd(*command, "--password-file", str(missing), "--api", base_url(api)) != 0
    assert "cannot read the password file" in capsys.readouterr().err
    listed = await answer(await api.get("/api/v1/people", headers=GULOU), 200)
    assert pid not in {p["id"] for p in listed["people"]}


def test_ebd_people_create_takes_no_password_argument(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["people", "create", "x.y", "--name", "n", "--role", "viewer", "--password", "pw"])
    assert "--password-file" in capsys.readouterr().err


# More attacks ------------------------------------------------------------------------------


async def test_the_session_lasts_session_hours_in_redis_and_in_the_cookie(
    redis_url: str, mqtt_url: str, tmp_path: Path, rdb: redis.Redis
) -> None:
    async with running_engine(
        redis_url, mqtt_url, tmp_path / "state", api={"session_hours": 2}
    ) as api:
        pid, _ = await person(api, ["viewer"])
        response = await api.post(
            "/api/v1/session", json={"login": pid, "password": DEFAULT_PASSWORD}
        )
        await answer(response, 200)
        cookie = SimpleCookie(response.headers["Set-Cookie"])["ebd_session"]
        assert cookie["max-age"] == "7200"
        sessions: set[str] = rdb.smembers(keys.person_sessions_key(pid))  # type: ignore[assignment]
        (session,) = sessions
        ttl: int = rdb.ttl(keys.session_key(session))
        assert 7100 < ttl <= 7200
        # Redis ending the session (its expiry) ends the sign-in.
        rdb.delete(keys.session_key(session))
        await answer(await api.get(ME), 401)


async def test_signing_out_with_the_cookie_needs_the_csrf_token(api: Client) -> None:
    pid, _ = await person(api, ["viewer"])
    await sign_in(api.session, str(api.make_url("")), pid)
    refused = await answer(await api.delete("/api/v1/session"), 403)
    assert refused["error"]["code"] == "csrf"
    await answer(await api.get(ME), 200)  # still signed in


async def test_a_person_manages_only_their_own_tokens_unless_admin(api: Client) -> None:
    me, token = await person(api, ["viewer"])
    other, _ = await person(api, ["viewer"])
    refused = await answer(
        await api.post(f"/api/v1/people/{other}/tokens", headers=bearer(token)), 403
    )
    assert "admin" in refused["error"]["message"]
    own = await answer(await api.post(f"/api/v1/people/{me}/tokens", headers=bearer(token)), 201)
    assert own["token"].startswith("ebdp_")
    await answer(await api.get(ME, headers=bearer(own["token"])), 200)
    # Nor may a viewer reset another person's password and sign in as them.
    reset = await api.post(
        f"/api/v1/people/{other}/password",
        json={"password": "taken-over-now"},
        headers=bearer(token),
    )
    await answer(reset, 403)
    taken = {"login": other, "password": "taken-over-now"}
    await answer(await api.post("/api/v1/session", json=taken), 401)


async def test_an_admin_cannot_disable_themselves(api: Client) -> None:
    admin, token = await person(api, ["admin"])
    refused = await answer(
        await api.post(f"/api/v1/people/{admin}/disable", headers=bearer(token)), 409
    )
    assert "another administrator" in refused["error"]["message"]


async def test_a_bearer_token_wins_over_a_cookie(api: Client) -> None:
    """A signed-in browser that also sends an office token acts as the office (the header is
    what a script chose); a forged cookie beside a good token changes nothing either."""
    pid, _ = await person(api, ["viewer"])
    await sign_in(api.session, str(api.make_url("")), pid)
    me = await answer(await api.get(ME, headers=GULOU), 200)
    assert me["person"] is None
    me = await answer(await api.get(ME, headers=GULOU, cookies={"ebd_session": "forged"}), 200)
    assert me["office"]["id"] == "fz-gulou"


@pytest.mark.parametrize(
    "header",
    ["Bearer ebdp_", "Bearer ebdp_" + "x" * 300, "Bearer ebdp_\u00e9t\u00e9", "Basic ebdp_abc"],
)
async def test_malformed_person_tokens_are_refused(api: Client, header: str) -> None:
    response = await api.get(ME, headers={"Authorization": header.encode().decode("latin-1")})
    await answer(response, 401)
