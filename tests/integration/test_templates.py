"""``/api/v1/templates`` against a real engine: listing, the alert a template gives, an office's
edits (its own, checked, audited, reset) and who may make them."""

from __future__ import annotations

from typing import Any

import pytest

from dispatcher.core.warning_templates import BUILT_IN
from tests.helpers import GULOU_COUNTY, TAIJIANG_COUNTY
from tests.integration.engine import GULOU, PROVINCE, TAIJIANG, Client, base_url, ebd

EDIT = {
    "headline": {"zh": "{area}台风红色预警（鼓楼）", "en": "Red typhoon warning, {area}"},
    "expires_in": 7200,
}


async def call(
    api: Client,
    method: str,
    path: str,
    headers: dict[str, str],
    status: int,
    body: Any = None,
) -> dict[str, Any]:
    response = await api.request(method, path, json=body, headers=headers)
    data: dict[str, Any] = await response.json()
    assert response.status == status, data
    return data


async def audit_targets(api: Client, action: str) -> list[str]:
    found = await call(api, "GET", f"/api/v1/audit?action={action}", PROVINCE, 200)
    return [record["target"] for record in found["records"]]


async def person_token(api: Client, office: dict[str, str], login: str, role: str) -> str:
    """A person of ``office`` with ``role`` and an API token of theirs."""
    person = {"id": login, "name": "测试员", "roles": [role], "password": "a-long-passphrase-7"}
    await call(api, "POST", "/api/v1/people", office, 201, person)
    issued = await call(api, "POST", f"/api/v1/people/{login}/tokens", office, 201)
    return str(issued["token"])


async def test_the_list_has_every_template_unedited(api: Client) -> None:
    listed = await call(api, "GET", "/api/v1/templates", GULOU, 200)
    assert listed["count"] == 36
    assert [t["id"] for t in listed["templates"]] == list(BUILT_IN)
    assert not any(t["edited"] for t in listed["templates"])
    typhoon = await call(api, "GET", "/api/v1/templates?hazard=typhoon", GULOU, 200)
    assert [t["id"] for t in typhoon["templates"]] == [
        "typhoon-red", "typhoon-orange", "typhoon-yellow", "typhoon-blue",
    ]  # fmt: skip
    red = await call(api, "GET", "/api/v1/templates?severity=red", GULOU, 200)
    assert {t["severity"] for t in red["templates"]} == {"red"}
    assert red["count"] == 9


async def test_a_template_gives_an_alert_body_the_engine_takes(api: Client) -> None:
    path = f"/api/v1/templates/rainstorm-orange?areas={GULOU_COUNTY}&lang=zh"
    body = await call(api, "GET", path, GULOU, 200)
    assert body["headline"] == "鼓楼区暴雨橙色预警"
    assert body["areas"] == [GULOU_COUNTY]
    assert (body["event"], body["event_code"], body["severity"]) == ("暴雨", "11B03", "orange")
    # No SMS gateway here: the body does not ask for the SMS channel.
    assert body["channels"] == ["loudspeaker"]
    assert "sms_text" not in body
    preview = await call(api, "POST", "/api/v1/previews", GULOU, 200, body)
    assert preview["areas"] == [{"code": GULOU_COUNTY, "name": "鼓楼区"}]
    english = await call(api, "GET", path.replace("lang=zh", "lang=en"), GULOU, 200)
    assert english["headline"] == "Orange rainstorm warning for 鼓楼区"
    assert english["event"] == "Rainstorm"
    several = f"/api/v1/templates/fog-red?areas={GULOU_COUNTY},{GULOU_COUNTY}001"
    covered = await call(api, "GET", several, PROVINCE, 200)
    assert covered["areas"] == [GULOU_COUNTY]  # the township lies inside the county


@pytest.mark.parametrize(
    ("path", "headers", "status", "says"),
    [
        ("/api/v1/templates/tsunami-red", GULOU, 404, "no template 'tsunami-red'"),
        ("/api/v1/templates/typhoon-red?areas=3501x", GULOU, 422, "malformed"),
        ("/api/v1/templates/typhoon-red?areas=350199", GULOU, 422, "not in the loaded"),
        ("/api/v1/templates/typhoon-red?areas=,", GULOU, 422, "1 to 500 region codes"),
        (f"/api/v1/templates/typhoon-red?areas={TAIJIANG_COUNTY}", GULOU, 403, "350103"),
        ("/api/v1/templates/typhoon-red?lang=fr", GULOU, 422, "lang must be one of"),
        ("/api/v1/templates/typhoon-red?area=350102", GULOU, 400, "unknown query parameter"),
        ("/api/v1/templates?hazard=volcano", GULOU, 422, "hazard must be one of"),
        ("/api/v1/templates", {"Authorization": "Bearer nope"}, 401, ""),
    ],
)
async def test_bad_template_requests_are_refused(
    api: Client, path: str, headers: dict[str, str], status: int, says: str
) -> None:
    refused = await call(api, "GET", path, headers, status)
    assert says in refused["error"]["message"]


async def test_an_edit_is_the_offices_own_audited_and_reset(api: Client) -> None:
    edited = await call(api, "PUT", "/api/v1/templates/typhoon-red", GULOU, 200, EDIT)
    assert edited["edited"] is True
    assert edited["headline"] == EDIT["headline"]
    assert edited["expires_in"] == 7200
    assert edited["text"] == BUILT_IN["typhoon-red"].text.as_dict()
    # A second edit of another field keeps the first.
    sms = {"sms_text": {"zh": "{area}台风红色预警，请立即避险。", "en": "Typhoon: take shelter."}}
    again = await call(api, "PUT", "/api/v1/templates/typhoon-red", GULOU, 200, sms)
    assert (again["headline"], again["sms_text"]) == (EDIT["headline"], sms["sms_text"])

    mine = await call(api, "GET", "/api/v1/templates/typhoon-red", GULOU, 200)
    assert mine["edited"] is True
    body = await call(api, "GET", f"/api/v1/templates/typhoon-red?areas={GULOU_COUNTY}", GULOU, 200)
    assert body["headline"] == "鼓楼区台风红色预警（鼓楼）"
    assert body["expires_in"] == 7200
    # Another office sees the built-in template.
    theirs = await call(api, "GET", "/api/v1/templates/typhoon-red", TAIJIANG, 200)
    assert theirs["edited"] is False
    assert theirs["headline"] == BUILT_IN["typhoon-red"].headline.as_dict()
    listed = await call(api, "GET", "/api/v1/templates", TAIJIANG, 200)
    assert not any(t["edited"] for t in listed["templates"])
    assert await audit_targets(api, "template.edit") == ["typhoon-red", "typhoon-red"]

    reset = await call(api, "DELETE", "/api/v1/templates/typhoon-red", GULOU, 200)
    assert reset == BUILT_IN["typhoon-red"].as_json()
    assert (await call(api, "GET", "/api/v1/templates/typhoon-red", GULOU, 200))["edited"] is False
    # Resetting what is not edited changes nothing and records nothing.
    await call(api, "DELETE", "/api/v1/templates/typhoon-red", GULOU, 200)
    assert await audit_targets(api, "template.reset") == ["typhoon-red"]


@pytest.mark.parametrize(
    ("body", "field", "says"),
    [
        ({"headline": {"zh": "台风\u202e警预色红", "en": "x"}}, "headline", "U+202E"),
        ({"text": {"zh": "台风来了\U0001f300", "en": "x"}}, "text", "U+1F300"),
        ({"instruction": {"zh": "请\u0085转移", "en": "x"}}, "instruction", "U+0085"),
        ({"sms_text": {"zh": "x", "en": "sms\x1b[2J"}}, "sms_text", "U+001B"),
        ({"headline": {"zh": "x"}}, "headline.en", "Field required"),
        ({"expires_in": 10**9}, "expires_in", "less than or equal"),
        ({"severity": "blue"}, "severity", "Extra inputs"),
        ({}, "body", "changes nothing"),
        (["headline"], "body", "must be a JSON object"),
    ],
)
async def test_a_bad_edit_is_refused_naming_the_field_and_nothing_changes(
    api: Client, body: Any, field: str, says: str
) -> None:
    refused = await call(api, "PUT", "/api/v1/templates/typhoon-red", GULOU, 422, body)
    message = refused["error"]["message"]
    assert says in message
    if field != "body":
        assert message.startswith(f"{field}: ") or message.startswith(f"{field}."), message
    assert (await call(api, "GET", "/api/v1/templates/typhoon-red", GULOU, 200))["edited"] is False
    assert await audit_targets(api, "template.edit") == []


async def test_an_unknown_template_cannot_be_edited(api: Client) -> None:
    await call(api, "PUT", "/api/v1/templates/tsunami-red", GULOU, 404, EDIT)
    await call(api, "DELETE", "/api/v1/templates/tsunami-red", GULOU, 404)


async def test_a_viewer_may_not_edit_a_composer_and_an_admin_may(api: Client) -> None:
    viewer = await person_token(api, GULOU, "viewer1", "viewer")
    composer = await person_token(api, GULOU, "composer1", "composer")
    admin = await person_token(api, GULOU, "admin1", "admin")
    as_viewer = {"Authorization": f"Bearer {viewer}"}
    refused = await call(api, "PUT", "/api/v1/templates/fog-red", as_viewer, 403, EDIT)
    assert "composer" in refused["error"]["message"]
    await call(api, "DELETE", "/api/v1/templates/fog-red", as_viewer, 403)
    # A viewer reads them.
    assert (await call(api, "GET", "/api/v1/templates", as_viewer, 200))["count"] == 36
    assert await audit_targets(api, "template.edit") == []
    as_composer = {"Authorization": f"Bearer {composer}"}
    await call(api, "PUT", "/api/v1/templates/fog-red", as_composer, 200, EDIT)
    records = (await call(api, "GET", "/api/v1/audit?action=template.edit", PROVINCE, 200))[
        "records"
    ]
    assert [(r["office"], r["person"]) for r in records] == [("fz-gulou", "composer1")]
    as_admin = {"Authorization": f"Bearer {admin}"}
    await call(api, "DELETE", "/api/v1/templates/fog-red", as_admin, 200)


async def test_ebd_templates_list_and_show(
    api: Client, tmp_path: Any, capsys: pytest.CaptureFixture[str], monkeypatch: Any
) -> None:
    monkeypatch.setenv("EBD_TOKEN", "tok-gulou")
    url = base_url(api)
    assert await ebd("--lang", "zh", "templates", "list", "--api", url, "--hazard", "fog") == 0
    out = capsys.readouterr().out
    assert "fog-red" in out
    assert "{area}大雾红色预警" in out
    assert "typhoon-red" not in out
    code = await ebd("templates", "show", "fog-red", "--api", url, "--areas", GULOU_COUNTY)
    assert code == 0
    assert '"headline": "鼓楼区大雾红色预警"' in capsys.readouterr().out
    assert await ebd("templates", "show", "fog-purple", "--api", url) != 0
    assert "no template 'fog-purple'" in capsys.readouterr().err
