"""The HTTP API against a real engine: auth, jurisdiction, validation, idempotency, limits."""

from __future__ import annotations

import asyncio
import io
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from tests.helpers import wait_for
from tests.integration.engine import GULOU, PROVINCE, TAIJIANG, alert_body

Client = TestClient[Any, Any]


async def error_of(response: Any, status: int) -> dict[str, Any]:
    assert response.status == status, await response.text()
    body = await response.json()
    assert set(body) == {"error"}
    assert body["error"]["message"]
    return dict(body["error"])


@pytest.mark.parametrize(
    ("headers", "fragment"),
    [
        ({}, "missing Authorization"),
        ({"Authorization": "Bearer nope"}, "unknown token"),
        ({"Authorization": "Basic dXNlcjpwYXNz"}, "Bearer <token>"),
        ({"Authorization": "Bearer "}, "Bearer <token>"),
    ],
)
async def test_bad_or_missing_token_is_401(
    api: Client, headers: dict[str, str], fragment: str
) -> None:
    for method, path in [
        ("POST", "/api/v1/alerts"),
        ("GET", "/api/v1/alerts"),
        ("GET", "/api/v1/terminals"),
    ]:
        response = await api.request(method, path, headers=headers, json=alert_body())
        error = await error_of(response, 401)
        assert fragment in error["message"]


@pytest.mark.parametrize(
    ("headers", "areas", "outside"),
    [
        (GULOU, ["35"], ["35"]),
        (GULOU, ["350103"], ["350103"]),
        (GULOU, ["350102001", "350103001"], ["350103001"]),
        (TAIJIANG, ["350102001001", "350103001", "3502"], ["350102001001", "3502"]),
    ],
)
async def test_areas_outside_the_office_are_403_naming_them(
    api: Client, headers: dict[str, str], areas: list[str], outside: list[str]
) -> None:
    response = await api.post("/api/v1/alerts", headers=headers, json=alert_body(areas=areas))
    error = await error_of(response, 403)
    assert error["details"]["region_codes"] == outside
    for code in outside:
        assert code in error["message"]


async def test_office_inside_its_region_gets_201_with_minimal_cover(api: Client) -> None:
    response = await api.post(
        "/api/v1/alerts",
        headers=GULOU,
        json=alert_body(areas=["350102001001", "350102001", "350102002"]),
    )
    assert response.status == 201, await response.text()
    body = await response.json()
    assert body["areas"] == ["350102001", "350102002"]
    assert body["severity_cap"] == "Extreme"
    assert body["sender"] == "fz-gulou"
    assert response.headers["Location"] == f"/api/v1/alerts/{body['id']}"
    sent = datetime.fromisoformat(body["sent"])
    assert sent.tzinfo is not None
    assert datetime.fromisoformat(body["expires"]) - sent == timedelta(hours=1)


def _past() -> str:
    return (datetime.now(UTC) - timedelta(minutes=1)).isoformat()


@pytest.mark.parametrize(
    ("fields", "field", "fragment"),
    [
        ({"severity": "purple"}, "severity", "red"),
        ({"headline": ""}, "headline", "at least 1"),
        ({"headline": "x" * 121}, "headline", "at most 120"),
        ({"text": "长" * 1001}, "text", "at most 1000"),
        ({"instruction": "y" * 501}, "instruction", "at most 500"),
        ({"areas": []}, "areas", "at least 1"),
        ({"areas": ["35010"]}, "areas", "malformed"),
        ({"areas": ["3501x2"]}, "areas", "malformed"),
        ({"areas": ["350102"] * 501}, "areas", "at most 500"),
        ({"event_code": "typhoon"}, "event_code", "GB/T 35561"),
        ({"expires_in": 10}, "expires_in", "greater than or equal to 60"),
        ({"expires_in": None}, "body", "exactly one of expires"),
        ({"expires": "2099-01-01T00:00:00+08:00"}, "body", "exactly one of expires"),
        ({"expires_in": None, "expires": "2026-12-01T00:00:00"}, "expires", "timezone"),
        ({"expires_in": None, "expires": "soon"}, "expires", "datetime"),
        ({"msg_type": "update"}, "body", "references"),
        ({"references": ["abc"]}, "body", "references are for"),
        ({"status": "drill"}, "status", "exercise"),
        ({"channels": ["fax"]}, "channels", "loudspeaker"),
        ({"channels": ["sms"]}, "channels", "not configured"),
        ({"colour": "red"}, "colour", "Extra inputs"),
        ({"event": None}, "event", "Field required"),
        ({"repeat": 0}, "repeat", "greater than or equal to 1"),
        ({"msg_type": "cancel", "references": ["x-1"]}, "msg_type", "cancel endpoint"),
    ],
)
async def test_invalid_alerts_are_422_naming_the_field(
    api: Client, fields: dict[str, Any], field: str, fragment: str
) -> None:
    response = await api.post("/api/v1/alerts", headers=PROVINCE, json=alert_body(**fields))
    error = await error_of(response, 422)
    assert any(
        d["field"].startswith(field) and fragment in d["message"] for d in error["details"]
    ), error


async def test_expired_or_far_expiry_is_422(api: Client) -> None:
    for expires, fragment in [(_past(), "in the future"), ("2099-01-01T00:00:00+08:00", "7 days")]:
        body = alert_body(expires_in=None, expires=expires)
        error = await error_of(await api.post("/api/v1/alerts", headers=PROVINCE, json=body), 422)
        assert fragment in error["message"]


@pytest.mark.parametrize(
    ("areas", "code"),
    [(["350199"], "350199"), (["350102", "359999999999"], "359999999999")],
)
async def test_unknown_area_is_422_naming_the_code(
    api: Client, areas: list[str], code: str
) -> None:
    response = await api.post("/api/v1/alerts", headers=PROVINCE, json=alert_body(areas=areas))
    error = await error_of(response, 422)
    assert error["code"] == "unknown_region"
    assert code in error["message"]


async def test_unreadable_bodies(api: Client) -> None:
    response = await api.post(
        "/api/v1/alerts", headers={**PROVINCE, "Content-Type": "application/json"}, data=b"{nope"
    )
    assert (await error_of(response, 400))["code"] == "bad_request"
    response = await api.post(
        "/api/v1/alerts", headers={**PROVINCE, "Content-Type": "text/plain"}, data=b"{}"
    )
    assert "application/json" in (await error_of(response, 415))["message"]
    response = await api.post("/api/v1/alerts", headers=PROVINCE, json=["not", "an", "object"])
    assert "JSON object" in (await error_of(response, 422))["message"]
    response = await api.post(
        "/api/v1/alerts",
        headers={**PROVINCE, "Content-Type": "application/json"},
        data=b"\xff\xfe",
    )
    await error_of(response, 400)


@pytest.mark.parametrize(
    "raw",
    [
        b'{"repeat": ' + b"9" * 5000 + b"}",  # an integer Python will not convert
        b"[" * 100_000 + b"]" * 100_000,  # nesting deeper than the parser's recursion limit
    ],
    ids=["huge-integer", "deep-nesting"],
)
async def test_hostile_json_is_400_not_500(api: Client, raw: bytes) -> None:
    response = await api.post(
        "/api/v1/alerts", headers={**PROVINCE, "Content-Type": "application/json"}, data=raw
    )
    await error_of(response, 400)


async def test_non_ascii_digits_in_a_query_are_422(api: Client) -> None:
    await error_of(await api.get("/api/v1/alerts?limit=²", headers=PROVINCE), 422)


async def test_a_retry_after_the_alert_expired_still_gets_the_first_answer(api: Client) -> None:
    soon = (datetime.now(UTC) + timedelta(seconds=1)).isoformat()
    headers = {**PROVINCE, "Idempotency-Key": "short-lived"}
    body = alert_body(expires_in=None, expires=soon)
    first = await api.post("/api/v1/alerts", headers=headers, json=body)
    assert first.status == 201
    alert_id = (await first.json())["id"]
    await wait_for(lambda: datetime.now(UTC) > datetime.fromisoformat(soon), timeout=5)
    again = await api.post("/api/v1/alerts", headers=headers, json=body)
    assert again.status == 201, await again.text()
    assert (await again.json())["id"] == alert_id
    # The same for a cancel retried after the first cancel went through.
    cancel_headers = {**PROVINCE, "Idempotency-Key": "cancel-once"}
    live = await api.post("/api/v1/alerts", headers=PROVINCE, json=alert_body())
    live_id = (await live.json())["id"]
    c1 = await api.post(f"/api/v1/alerts/{live_id}/cancel", headers=cancel_headers)
    c2 = await api.post(f"/api/v1/alerts/{live_id}/cancel", headers=cancel_headers)
    assert (c1.status, c2.status) == (201, 201)
    assert (await c1.json())["id"] == (await c2.json())["id"]


async def test_body_over_the_limit_is_413(api: Client) -> None:
    big = alert_body(text="风" * 2_000_000)  # 6 MB: far over an alert request's limit
    response = await api.post(
        "/api/v1/alerts",
        headers={**PROVINCE, "Content-Type": "application/json"},
        data=io.BytesIO(json.dumps(big, ensure_ascii=False).encode()),
    )
    error = await error_of(response, 413)
    assert "too large" in error["message"]


async def test_an_import_over_its_own_limit_is_413(api: Client) -> None:
    """Imports take up to 32 MiB (100,000 rows); past that, refused before it is read."""
    rows = b",".join(b'{"id": "t%d", "region": "350102001001"}' % i for i in range(10))
    padded = b"[" + rows + b" " * (33 * 1024 * 1024) + b"]"
    response = await api.post(
        "/api/v1/terminals",
        headers={**PROVINCE, "Content-Type": "application/json"},
        data=io.BytesIO(padded),
    )
    error = await error_of(response, 413)
    assert "too large" in error["message"]


async def test_idempotency_key_replays_or_refuses(api: Client) -> None:
    headers = {**PROVINCE, "Idempotency-Key": "typhoon-2026-11-27-a"}
    first = await api.post("/api/v1/alerts", headers=headers, json=alert_body())
    assert first.status == 201
    again = await api.post("/api/v1/alerts", headers=headers, json=alert_body())
    assert again.status == 201
    assert again.headers["Idempotent-Replayed"] == "true"
    assert (await again.json())["id"] == (await first.json())["id"]
    other = await api.post("/api/v1/alerts", headers=headers, json=alert_body(headline="另一个"))
    error = await error_of(other, 422)
    assert error["code"] == "idempotency_key_reused"
    assert error["details"]["alert_id"] == (await first.json())["id"]
    # Keys belong to an office: the same key from another office is a new alert.
    gulou = await api.post(
        "/api/v1/alerts",
        headers={**GULOU, "Idempotency-Key": "typhoon-2026-11-27-a"},
        json=alert_body(),
    )
    assert gulou.status == 201
    assert (await gulou.json())["id"] != (await first.json())["id"]
    listing = await (await api.get("/api/v1/alerts", headers=PROVINCE)).json()
    assert listing["count"] == 2
    bad_key = await api.post(
        "/api/v1/alerts", headers={**PROVINCE, "Idempotency-Key": "has space"}, json=alert_body()
    )
    await error_of(bad_key, 422)


async def test_alerts_are_visible_only_to_offices_they_concern(api: Client) -> None:
    response = await api.post("/api/v1/alerts", headers=GULOU, json=alert_body())
    alert_id = (await response.json())["id"]
    assert (await api.get(f"/api/v1/alerts/{alert_id}", headers=PROVINCE)).status == 200
    assert (await api.get(f"/api/v1/alerts/{alert_id}", headers=GULOU)).status == 200
    await error_of(await api.get(f"/api/v1/alerts/{alert_id}", headers=TAIJIANG), 403)
    await error_of(await api.get("/api/v1/alerts/no-such-alert", headers=PROVINCE), 404)
    taijiang_list = await (await api.get("/api/v1/alerts", headers=TAIJIANG)).json()
    assert taijiang_list["alerts"] == []
    await error_of(await api.get("/api/v1/alerts?limit=0", headers=PROVINCE), 422)
    await error_of(await api.get(f"/api/v1/alerts/{alert_id}?detail=galaxy", headers=PROVINCE), 422)


async def test_regions_endpoint(api: Client) -> None:
    body = await (await api.get("/api/v1/regions/350102001", headers=GULOU)).json()
    assert body["name"] == "鼓东街道"
    assert body["level"] == "township"
    assert body["topic"] == "eb/v1/alert/35/3501/350102/350102001"
    assert [p["code"] for p in body["path"]] == ["35", "3501", "350102", "350102001"]
    assert body["children"]
    error = await error_of(await api.get("/api/v1/regions/350199", headers=GULOU), 404)
    assert "350199" in error["message"]
    error = await error_of(await api.get("/api/v1/regions/3501x", headers=GULOU), 422)
    assert "3501x" in error["message"]
    await error_of(await api.get("/api/v1/regions/35"), 401)


async def test_terminal_registration_is_all_or_nothing(api: Client) -> None:
    good = [{"id": f"gl-{i}", "region": "350102001001"} for i in range(3)]
    bad = [
        *good,
        {"id": "bad/id", "region": "350102001001"},
        {"id": "x1", "region": "350199001001"},
        {"id": "x2"},
        {"id": "gl-0", "region": "350102001002"},
        {"id": "x3", "region": "350102001001", "kind": "siren"},
    ]
    error = await error_of(await api.post("/api/v1/terminals", headers=PROVINCE, json=bad), 422)
    assert error["code"] == "invalid"
    assert {d["item"] for d in error["details"]} == {3, 4, 5, 6, 7}
    assert "nothing was imported" in error["message"]
    listing = await (await api.get("/api/v1/terminals", headers=PROVINCE)).json()
    assert listing["total"] == 0
    # Jurisdiction: Taijiang may not register Gulou's terminals.
    error = await error_of(await api.post("/api/v1/terminals", headers=TAIJIANG, json=good), 403)
    assert error["details"]["region_codes"] == ["350102001001"]
    result = await (await api.post("/api/v1/terminals", headers=GULOU, json=good)).json()
    assert counts_of(result) == {"created": 3, "updated": 0, "unchanged": 0}
    # Each new terminal gets its broker account, once.
    assert sorted(c["id"] for c in result["credentials"]) == ["gl-0", "gl-1", "gl-2"]
    assert all(len(c["password"]) >= 32 for c in result["credentials"])
    assert result["broker"]["url"].startswith("mqtts://")
    assert "BEGIN CERTIFICATE" in result["broker"]["ca_pem"]
    assert result["keyring"]["keys"]
    moved = [{"id": "gl-0", "region": "350102001002"}, *good[1:]]
    result = await (await api.post("/api/v1/terminals", headers=GULOU, json=moved)).json()
    assert counts_of(result) == {"created": 0, "updated": 1, "unchanged": 2}
    assert result["credentials"] == [], "a move hands out no new password"
    listing = await (await api.get("/api/v1/terminals?region=350102001001", headers=GULOU)).json()
    assert [t["id"] for t in listing["terminals"]] == ["gl-1", "gl-2"]
    region = await (await api.get("/api/v1/regions/350102", headers=GULOU)).json()
    assert region["terminals"] == 3
    await error_of(await api.get("/api/v1/terminals?region=350103", headers=GULOU), 403)
    await error_of(await api.post("/api/v1/terminals", headers=GULOU, json=[]), 422)
    await error_of(await api.post("/api/v1/terminals", headers=GULOU, json={"x": 1}), 422)


def counts_of(result: dict[str, Any]) -> dict[str, int]:
    return {k: result[k] for k in ("created", "updated", "unchanged")}


async def test_service_endpoints(api: Client) -> None:
    assert (await (await api.get("/healthz")).json()) == {"status": "ok"}
    ready = await api.get("/readyz")
    assert ready.status == 200
    assert (await ready.json())["ready"] is True
    metrics = await (await api.get("/metrics")).text()
    assert "ebd_mqtt_connected 1.0" in metrics
    spec = await (await api.get("/api/v1/openapi.json")).json()
    for path in [
        "/api/v1/alerts",
        "/api/v1/alerts/{alert_id}",
        "/api/v1/alerts/{alert_id}/cancel",
        "/api/v1/regions/{code}",
        "/api/v1/terminals",
        "/healthz",
    ]:
        assert path in spec["paths"]
    assert "AlertRequest" in spec["components"]["schemas"]
    error = await error_of(await api.get("/api/v1/nothing-here"), 404)
    assert "openapi" in error["message"]
    await error_of(await api.delete("/api/v1/alerts", headers=PROVINCE), 405)


async def test_concurrent_moves_leave_a_terminal_in_one_region(api: Client) -> None:
    villages = ["350102001001", "350102001002"]
    await api.post("/api/v1/terminals", headers=GULOU, json=[{"id": "mv-1", "region": "350102"}])
    moves = [
        api.post("/api/v1/terminals", headers=GULOU, json=[{"id": "mv-1", "region": v}])
        for v in villages * 5
    ]
    assert {r.status for r in await asyncio.gather(*moves)} == {200}
    counts = []
    for village in villages:
        body = await (await api.get(f"/api/v1/regions/{village}", headers=GULOU)).json()
        counts.append(body["terminals"])
    assert sum(counts) == 1
