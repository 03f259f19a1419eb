"""Approval of actual red and orange warnings, against a real engine (real Redis and broker,
people through the accounts API, simulated terminals where a warning must be heard).

A composer's warning that needs approval waits (202) and reaches no terminal; an approver of
the same or a higher office, never the composer and never a machine, approves it and only then
it goes out; a rejection needs a reason; an expired or decided submission cannot be approved.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import redis

from dispatcher.core.auth import hash_token
from dispatcher.core.models import utcnow
from dispatcher.store.keys import alert_key, approval_key
from receiver.simulator import SimTerminal
from tests.helpers import (
    GUDONG,
    GULOU_COUNTY,
    OFFICES,
    TAIJIANG_COUNTY,
    TAIJIANG_VILLAGE,
    ZHONGSHAN,
    alert_body,
)
from tests.integration.engine import (
    PROVINCE,
    Client,
    base_url,
    ebd,
    online,
    register,
    running_engine,
    terminals_in,
)
from tests.support.people import add_person

GULOU_TOKEN = "tok-gulou"
ALERTS = "/api/v1/alerts"


def login(prefix: str) -> str:
    """A login name of this test's own (the session's Redis keeps every test's people)."""
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


async def person(api: Client, office_token: str, prefix: str, *roles: str) -> dict[str, str]:
    """A new person of the office of ``office_token`` with ``roles``: their API headers."""
    token = await add_person(api.session, base_url(api), office_token, login(prefix), roles)
    return {"Authorization": f"Bearer {token}"}


async def call(
    api: Client, method: str, path: str, headers: dict[str, str], status: int, body: Any = None
) -> dict[str, Any]:
    response = await api.request(method, path, headers=headers, json=body)
    data: dict[str, Any] = await response.json()
    assert response.status == status, (status, data)
    return data


async def previewed(api: Client, headers: dict[str, str], body: dict[str, Any]) -> dict[str, Any]:
    """``body`` with the preview_id of its dry run, as the console sends it."""
    preview = await call(api, "POST", f"{ALERTS}?dry_run=1", headers, 200, body)
    return {**body, "preview_id": preview["preview_id"]}


async def send(api: Client, headers: dict[str, str], expect: int, **fields: Any) -> dict[str, Any]:
    """Previews ``alert_body(**fields)`` and sends it with the preview's id; ``expect``: the
    status it must get."""
    body = await previewed(api, headers, alert_body(**fields))
    return await call(api, "POST", ALERTS, headers, expect, body)


@pytest.fixture
async def reachable(api: Client) -> None:
    """A terminal registered in 中山社区, so 鼓楼区's warnings reach someone."""
    await register(api, [SimTerminal(login("appr"), ZHONGSHAN)])


@pytest.mark.usefixtures("reachable")
async def test_a_composers_red_warning_waits_and_a_city_approver_sends_it(
    api: Client, mqtt_url: str, rdb: redis.Redis
) -> None:
    composer = await person(api, GULOU_TOKEN, "gl-composer", "composer")
    approver = await person(api, "tok-fuzhou", "fz-approver", "approver")
    async with online(api, terminals_in(GUDONG, 2, login("appr-sim")), mqtt_url) as sim:
        pending = await send(api, composer, 202, areas=[GUDONG])
        assert pending["state"] == "pending"
        assert pending["office_id"] == "fz-gulou"
        assert pending["links"]["approve"] == f"/api/v1/approvals/{pending['id']}/approve"
        assert not rdb.exists(alert_key(pending["id"]))
        # A blue warning goes straight out, through the same outbox: once the terminals
        # played it, the red one would have reached them first had it been queued.
        blue = await send(api, composer, 201, areas=[GUDONG], severity="blue")
        await sim.wait_played(blue["id"], 2, timeout=30)
        assert sim.received(pending["id"]) == 0
        seen = await call(api, "GET", f"/api/v1/approvals/{pending['id']}", approver, 200)
        assert seen["preview"]["preview_id"] == pending["preview_id"]
        assert seen["preview"]["totals"]["terminals"] >= 2
        assert seen["body"]["areas"] == [GUDONG]
        assert "preview_id" not in seen["body"]

        sent = await call(api, "POST", f"/api/v1/approvals/{pending['id']}/approve", approver, 201)
        assert sent["id"] == pending["id"]
        assert sent["sender"] == "fz-gulou"
        assert sent["severity"] == "red"
        await sim.wait_played(pending["id"], 2, timeout=30)

    detail = await call(api, "GET", f"{ALERTS}/{pending['id']}", PROVINCE, 200)
    approval = detail["approval"]
    assert approval["approver"] is not None
    assert approval["composer"] == seen["composer"]
    assert approval["submitted_at"] == pending["submitted_at"]
    assert approval["approved_at"] == detail["sent"]
    assert blue["id"] != pending["id"]
    assert (await call(api, "GET", f"{ALERTS}/{blue['id']}", PROVINCE, 200))["approval"] is None
    decided = await call(api, "GET", f"/api/v1/approvals/{pending['id']}", composer, 200)
    assert decided["state"] == "sent"
    assert decided["decided_by"] == approval["approver"]
    # Decided once: a second approval would send it twice.
    again = await call(api, "POST", f"/api/v1/approvals/{pending['id']}/approve", approver, 409)
    assert again["error"]["details"]["state"] == "sent"
    # The composer's cancel never waits for an approver.
    cancel = await call(api, "POST", f"{ALERTS}/{pending['id']}/cancel", composer, 201, {})
    assert cancel["msg_type"] == "cancel"
    since = quote(pending["submitted_at"])
    for action in ("alert.submit", "alert.approve"):
        records = await call(
            api, "GET", f"/api/v1/audit?action={action}&since={since}", PROVINCE, 200
        )
        assert [r["target"] for r in records["records"]].count(pending["id"]) == 1, action


@pytest.mark.usefixtures("reachable")
async def test_no_one_but_another_approver_of_the_office_or_above_may_approve(
    api: Client,
) -> None:
    both = await person(api, GULOU_TOKEN, "gl-both", "composer", "approver")
    pending = await send(api, both, 202)
    path = f"/api/v1/approvals/{pending['id']}/approve"
    refused = await call(api, "POST", path, both, 403)
    assert "cannot approve" in refused["error"]["message"]
    neighbour = await person(api, "tok-taijiang", "tj-approver", "approver")
    refused = await call(api, "POST", path, neighbour, 403)
    assert "fz-gulou" in refused["error"]["message"]
    viewer = await person(api, GULOU_TOKEN, "gl-viewer", "viewer")
    refused = await call(api, "POST", path, viewer, 403)
    assert "approver" in refused["error"]["message"]
    # An admin holds no other role: it manages people, it does not approve warnings.
    admin = await person(api, GULOU_TOKEN, "gl-admin", "admin")
    await call(api, "POST", path, admin, 403)
    for token in (GULOU_TOKEN, "tok-province"):
        refused = await call(api, "POST", path, {"Authorization": f"Bearer {token}"}, 403)
        assert "office token cannot approve" in refused["error"]["message"]
    await call(api, "POST", path, {"Authorization": "Bearer ebdp_forged"}, 401)
    state = await call(api, "GET", f"/api/v1/approvals/{pending['id']}", both, 200)
    assert state["state"] == "pending"
    # A second person of the same office may, approving the warning as stored.
    colleague = await person(api, GULOU_TOKEN, "gl-approver", "approver")
    changed = await call(api, "POST", path, colleague, 422, {"areas": ["350102"]})
    assert "no body" in changed["error"]["message"]
    response = await api.post(path, headers=colleague, data=b"yes")
    assert response.status == 415
    sent = await call(api, "POST", path, colleague, 201)
    assert sent["id"] == pending["id"]


@pytest.mark.usefixtures("reachable")
async def test_two_approvers_at_once_send_it_once(api: Client) -> None:
    composer = await person(api, GULOU_TOKEN, "gl-composer", "composer")
    pending = await send(api, composer, 202)
    first = await person(api, GULOU_TOKEN, "gl-appr-a", "approver")
    second = await person(api, "tok-fuzhou", "fz-appr-b", "approver")
    path = f"/api/v1/approvals/{pending['id']}/approve"
    answers = await asyncio.gather(api.post(path, headers=first), api.post(path, headers=second))
    assert sorted(a.status for a in answers) == [201, 409]
    listed = await call(api, "GET", f"{ALERTS}?limit=500", PROVINCE, 200)
    assert [a["id"] for a in listed["alerts"]].count(pending["id"]) == 1


@pytest.mark.usefixtures("reachable")
async def test_a_rejection_needs_a_reason_and_ends_the_submission(api: Client) -> None:
    composer = await person(api, GULOU_TOKEN, "gl-composer", "composer")
    approver = await person(api, "tok-fuzhou", "fz-approver", "approver")
    pending = await send(api, composer, 202, severity="orange")
    path = f"/api/v1/approvals/{pending['id']}/reject"
    for bad in ({}, {"reason": ""}, {"reason": "   "}, {"reason": "长" * 201},
                {"reason": "区域有误\u202e"}, {"reason": "x", "extra": 1}):  # fmt: skip
        refused = await call(api, "POST", path, approver, 422, bad)
        assert refused["error"]["code"] == "invalid", bad
    response = await api.post(path, headers=approver, data=b"reason")
    assert response.status == 415
    await call(api, "POST", path, composer, 403, {"reason": "我自己撤回"})
    rejected = await call(api, "POST", path, approver, 200, {"reason": "区域应为全区"})
    assert rejected["state"] == "rejected"
    assert rejected["reason"] == "区域应为全区"
    assert "approve" not in rejected["links"]
    again = await call(api, "POST", f"/api/v1/approvals/{pending['id']}/approve", approver, 409)
    assert "rejected" in again["error"]["message"]
    await call(api, "POST", path, approver, 409, {"reason": "再驳回"})
    seen = await call(api, "GET", f"/api/v1/approvals/{pending['id']}", composer, 200)
    assert (seen["state"], seen["reason"]) == ("rejected", "区域应为全区")


@pytest.mark.usefixtures("reachable")
async def test_an_expired_submission_cannot_be_approved(api: Client, rdb: redis.Redis) -> None:
    composer = await person(api, GULOU_TOKEN, "gl-composer", "composer")
    approver = await person(api, "tok-fuzhou", "fz-approver", "approver")
    pending = await send(api, composer, 202)
    # An hour passes: the stored deadline is moved back instead of waiting for it.
    stored = json.loads(str(rdb.get(approval_key(pending["id"]))))
    stored["expires_at"] = (utcnow() - timedelta(seconds=1)).isoformat()
    rdb.set(approval_key(pending["id"]), json.dumps(stored))
    seen = await call(api, "GET", f"/api/v1/approvals/{pending['id']}", approver, 200)
    assert seen["state"] == "expired"
    refused = await call(api, "POST", f"/api/v1/approvals/{pending['id']}/approve", approver, 409)
    assert "expired" in refused["error"]["message"]
    assert refused["error"]["details"]["state"] == "expired"
    assert not rdb.exists(alert_key(pending["id"]))
    listed = await call(api, "GET", "/api/v1/approvals?state=expired&limit=500", approver, 200)
    assert pending["id"] in [s["id"] for s in listed["approvals"]]
    listed = await call(api, "GET", "/api/v1/approvals?state=pending&limit=500", approver, 200)
    assert pending["id"] not in [s["id"] for s in listed["approvals"]]


@pytest.mark.usefixtures("reachable")
@pytest.mark.parametrize(
    "fields",
    [
        {"status": "exercise"},
        {"status": "test"},
        {"severity": "yellow"},
        {"severity": "blue"},
    ],
)
async def test_drills_tests_and_lower_colours_go_straight_out(
    api: Client, fields: dict[str, str]
) -> None:
    composer = await person(api, GULOU_TOKEN, "gl-composer", "composer")
    issued = await send(api, composer, 201, **fields)
    assert issued["sender"] == "fz-gulou"
    assert issued["dispatch"]["state"] == "queued"


@pytest.mark.usefixtures("reachable")
async def test_a_person_must_send_what_the_preview_showed(api: Client) -> None:
    composer = await person(api, GULOU_TOKEN, "gl-composer", "composer")
    before = await call(api, "GET", f"{ALERTS}?limit=500", PROVINCE, 200)
    body = alert_body(severity="blue", areas=[GUDONG])
    missing = await call(api, "POST", ALERTS, composer, 428, body)
    assert missing["error"]["code"] == "preview_required"
    assert "dry_run=1" in missing["error"]["message"]
    seen = await previewed(api, composer, body)
    # The areas widened to the whole county, the text or colour changed, a made-up id.
    for changed in (
        {**seen, "areas": [GULOU_COUNTY]},
        {**seen, "text": "另一段文字。"},
        {**seen, "severity": "yellow"},
        {**seen, "preview_id": "0" * 64},
    ):
        refused = await call(api, "POST", ALERTS, composer, 409, changed)
        assert refused["error"]["code"] == "preview_stale", changed
        assert "preview again" in refused["error"]["message"]
    # Outside the office's region it is refused before any preview is looked at.
    await call(api, "POST", ALERTS, composer, 403, {**seen, "areas": [GUDONG, TAIJIANG_COUNTY]})
    for bad in ("", "x" * 129, 7, ["a"]):
        await call(api, "POST", ALERTS, composer, 422, {**seen, "preview_id": bad})
    after = await call(api, "GET", f"{ALERTS}?limit=500", PROVINCE, 200)
    assert [a["id"] for a in after["alerts"]] == [a["id"] for a in before["alerts"]]
    # The expiry is not what the preview showed: "in two hours" a minute later is the same.
    await call(api, "POST", ALERTS, composer, 201, {**seen, "expires_in": 7200})


@pytest.mark.usefixtures("reachable")
async def test_people_without_the_composer_role_may_not_issue_or_cancel(api: Client) -> None:
    viewer = await person(api, GULOU_TOKEN, "gl-viewer", "viewer")
    approver = await person(api, GULOU_TOKEN, "gl-approver", "approver")
    composer = await person(api, GULOU_TOKEN, "gl-composer", "composer")
    issued = await send(api, composer, 201, severity="blue")
    for headers in (viewer, approver):
        refused = await call(api, "POST", ALERTS, headers, 403, alert_body(severity="blue"))
        assert "composer" in refused["error"]["message"]
        await call(api, "POST", f"{ALERTS}/{issued['id']}/cancel", headers, 403, {})
        body = alert_body(msg_type="update", references=[issued["id"]], severity="blue")
        await call(api, "POST", ALERTS, headers, 403, body)


@pytest.mark.usefixtures("reachable")
async def test_submissions_are_seen_by_their_office_and_the_offices_above(api: Client) -> None:
    composer = await person(api, GULOU_TOKEN, "gl-composer", "composer")
    pending = await send(api, composer, 202)
    city = await person(api, "tok-fuzhou", "fz-viewer", "viewer")
    neighbour = await person(api, "tok-taijiang", "tj-approver", "approver")

    async def listed(headers: dict[str, str]) -> list[str]:
        found = await call(api, "GET", "/api/v1/approvals?state=pending&limit=500", headers, 200)
        return [s["id"] for s in found["approvals"]]

    assert pending["id"] in await listed(city)
    assert pending["id"] in await listed(composer)
    assert pending["id"] in await listed({"Authorization": "Bearer tok-province"})
    assert pending["id"] not in await listed(neighbour)
    refused = await call(api, "GET", f"/api/v1/approvals/{pending['id']}", neighbour, 403)
    assert "fz-gulou" in refused["error"]["message"]


async def test_bad_requests_to_the_approvals_api_are_refused(api: Client) -> None:
    approver = await person(api, "tok-fuzhou", "fz-approver", "approver")
    for query, status in (("state=bogus", 422), ("limit=0", 422), ("limit=x", 422),
                          ("state=pending&state=sent", 400), ("sort=new", 400)):  # fmt: skip
        await call(api, "GET", f"/api/v1/approvals?{query}", approver, status)
    for name in ("fz-gulou-20260101T000000Z-00000000", "../alerts", "x" * 200):
        path = f"/api/v1/approvals/{quote(name, safe='')}"
        await call(api, "GET", path, approver, 404)
        await call(api, "POST", f"{path}/approve", approver, 404)
        await call(api, "POST", f"{path}/reject", approver, 404, {"reason": "无"})
    await call(api, "GET", "/api/v1/approvals", {}, 401)


async def test_an_office_token_of_an_office_not_machine_approved_waits(
    redis_url: str, mqtt_url: str, tmp_path: Path
) -> None:
    """Fail-closed: an office token is trusted to skip approval only when its office says so;
    an office may also ask approval for more colours than the default."""
    offices = [
        {"id": oid, "name": name, "region": region, "token_sha256": hash_token(token)}
        | ({"approval_colours": ["red", "orange", "yellow"]} if oid == "fz-taijiang" else {})
        | ({"machine_approved": True} if oid == "fj-province" else {})
        for token, (oid, name, region) in OFFICES.items()
    ]
    async with running_engine(redis_url, mqtt_url, tmp_path / "state", offices=offices) as api:
        await register(api, [SimTerminal(login("appr"), ZHONGSHAN)])
        await register(api, [SimTerminal(login("appr"), TAIJIANG_VILLAGE)])
        gulou = {"Authorization": "Bearer tok-gulou"}
        pending = await call(api, "POST", ALERTS, gulou, 202, alert_body())
        assert (pending["state"], pending["composer"]) == ("pending", None)
        straight = await call(api, "POST", ALERTS, PROVINCE, 201, alert_body())
        assert straight["dispatch"]["state"] == "queued"
        await call(api, "POST", ALERTS, gulou, 201, alert_body(severity="yellow"))
        taijiang = await person(api, "tok-taijiang", "tj-composer", "composer")
        waits = await send(api, taijiang, 202, severity="yellow", areas=[TAIJIANG_COUNTY])
        assert waits["severity"] == "yellow"
        # A machine may approve nothing, even its own office's submission.
        path = f"/api/v1/approvals/{pending['id']}/approve"
        await call(api, "POST", path, gulou, 403)
        approver = await person(api, "tok-fuzhou", "fz-approver", "approver")
        sent = await call(api, "POST", path, approver, 201)
        assert sent["sender"] == "fz-gulou"


@pytest.mark.usefixtures("reachable")
async def test_the_cli_lists_approves_and_rejects(
    api: Client, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    composer = await person(api, GULOU_TOKEN, "gl-composer", "composer")
    approver = await person(api, "tok-fuzhou", "fz-approver", "approver")
    url = base_url(api)
    monkeypatch.setenv("EBD_TOKEN", composer["Authorization"].removeprefix("Bearer "))
    monkeypatch.setenv("EBD_LANG", "zh")
    issue = ("alerts", "issue", "--area", GULOU_COUNTY, "--severity", "红", "--event", "台风",
             "--headline", "台风红色预警", "--text", "请立即转移。", "--api", url)  # fmt: skip
    capsys.readouterr()
    # A person cannot skip the preview; with the dry run's id the warning waits (exit 0).
    assert await ebd(*issue) != 0
    assert "preview" in capsys.readouterr().err
    assert await ebd(*issue, "--dry-run", "-o", "json") == 0
    preview_id = json.loads(capsys.readouterr().out)["preview_id"]
    assert await ebd(*issue, "--preview-id", preview_id, "-o", "json") == 0
    first = json.loads(capsys.readouterr().out)
    assert first["state"] == "pending"
    second = await send(api, composer, 202, severity="orange")
    monkeypatch.setenv("EBD_TOKEN", approver["Authorization"].removeprefix("Bearer "))
    capsys.readouterr()
    assert await ebd("alerts", "pending", "--api", url) == 0
    listing = capsys.readouterr().out
    assert first["id"] in listing
    assert second["id"] in listing
    assert "待审批" in listing
    assert await ebd("alerts", "approve", first["id"], "--api", url, "-o", "json") == 0
    assert json.loads(capsys.readouterr().out)["id"] == first["id"]
    assert await ebd("alerts", "reject", second["id"], "--reason", "级别不对", "--api", url) == 0
    assert "已驳回" in capsys.readouterr().out
    # Refused by the engine: a non-zero exit, not a traceback.
    assert await ebd("alerts", "approve", second["id"], "--api", url) != 0
    assert await ebd("alerts", "reject", first["id"], "--reason", "晚了", "--api", url) != 0


@pytest.mark.usefixtures("reachable")
async def test_a_retried_submission_is_the_first_one(api: Client) -> None:
    composer = await person(api, GULOU_TOKEN, "gl-composer", "composer")
    approver = await person(api, "tok-fuzhou", "fz-approver", "approver")
    body = await previewed(api, composer, alert_body())
    key = {"Idempotency-Key": login("retry")}
    first = await call(api, "POST", ALERTS, composer | key, 202, body)
    response = await api.post(ALERTS, json=body, headers=composer | key)
    assert response.status == 202
    assert response.headers["Idempotent-Replayed"] == "true"
    assert (await response.json())["id"] == first["id"]
    other = await call(api, "POST", ALERTS, composer | key, 422, {**body, "text": "改了。"})
    assert other["error"]["code"] == "idempotency_key_reused"
    listed = await call(api, "GET", "/api/v1/approvals?state=pending&limit=500", approver, 200)
    assert [s["id"] for s in listed["approvals"]].count(first["id"]) == 1
    await call(api, "POST", f"/api/v1/approvals/{first['id']}/approve", approver, 201)
    # Once approved, the retry finds the alert it became.
    replayed = await call(api, "POST", ALERTS, composer | key, 201, body)
    assert replayed["id"] == first["id"]


@pytest.mark.usefixtures("reachable")
async def test_a_draft_is_submitted_by_whoever_saved_it(api: Client) -> None:
    composer = await person(api, GULOU_TOKEN, "gl-composer", "composer")
    colleague = await person(api, GULOU_TOKEN, "gl-colleague", "composer")
    approver = await person(api, "tok-fuzhou", "fz-approver", "approver")
    drafts = "/api/v1/approvals"
    refused = await call(api, "POST", drafts, composer, 422, alert_body())
    assert "draft" in refused["error"]["message"]
    await call(api, "POST", drafts, composer, 422, {**alert_body(), "draft": "yes"})
    await call(api, "POST", drafts, composer, 422, {**alert_body(areas=["35010x"]), "draft": True})
    await call(api, "POST", drafts, approver, 403, {**alert_body(), "draft": True})
    draft = await call(api, "POST", drafts, composer, 201, {**alert_body(), "draft": True})
    assert draft["state"] == "draft"
    assert draft["links"]["submit"] == f"/api/v1/approvals/{draft['id']}/submit"
    submit = f"/api/v1/approvals/{draft['id']}/submit"
    await call(api, "POST", f"/api/v1/approvals/{draft['id']}/approve", approver, 409)
    await call(api, "POST", submit, colleague, 403, {"preview_id": draft["preview_id"]})
    missing = await call(api, "POST", submit, composer, 428)
    assert missing["error"]["code"] == "preview_required"
    await call(api, "POST", submit, composer, 409, {"preview_id": "f" * 64})
    await call(api, "POST", submit, composer, 422, {"preview_id": draft["preview_id"], "x": 1})
    pending = await call(api, "POST", submit, composer, 202, {"preview_id": draft["preview_id"]})
    assert (pending["id"], pending["state"]) == (draft["id"], "pending")
    await call(api, "POST", submit, composer, 409, {"preview_id": draft["preview_id"]})
    sent = await call(api, "POST", f"/api/v1/approvals/{draft['id']}/approve", approver, 201)
    assert sent["id"] == draft["id"]
    # A draft that needs no approver is issued when submitted.
    blue = await call(api, "POST", drafts, composer, 201, {**alert_body(severity="blue"),
                                                             "draft": True})  # fmt: skip
    path = f"/api/v1/approvals/{blue['id']}/submit"
    issued = await call(api, "POST", path, composer, 201, {"preview_id": blue["preview_id"]})
    assert issued["id"] == blue["id"]
    assert issued["severity"] == "blue"
    seen = await call(api, "GET", f"/api/v1/approvals/{blue['id']}", composer, 200)
    assert seen["state"] == "sent"
