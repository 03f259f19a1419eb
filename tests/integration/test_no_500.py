"""Hostile input that once got a 500 (or a 503 blaming Redis): each is now a 4xx with the JSON
error body saying what is wrong, and the engine keeps answering. Requests the aiohttp client
would not send (bytes that are not UTF-8 in a header) go over a raw socket."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import redis
from aiohttp import web

from adapters.sms.aliyun import report_signature
from adapters.sms.gateway import out_id
from adapters.sms.generic import receipt_signature
from dispatcher.http.middleware import JsonErrorRunner, error_middleware
from dispatcher.store.keys import dispatch_key
from tests.helpers import alert_body
from tests.integration.engine import PROVINCE, Client
from tests.integration.test_sms import engine_with
from tests.support.sms_sandbox import AliyunGatewayServer, GenericGatewayServer

# Numbers a JSON parser takes that are no count of parts: float overflow, JSON5's Infinity,
# an integer Redis's Lua cannot hold.
HUGE_NUMBERS = ("1e400", "Infinity", "-Infinity", "NaN", "1" + "0" * 400, "256", "0", "1.5")


async def raw_request(
    api: Client, head: bytes, body: bytes = b""
) -> tuple[int, dict[str, str], Any]:
    """``raw_socket`` to the engine behind ``api``."""
    port = api.server.port
    assert port is not None
    return await raw_socket(port, head, body)


async def raw_socket(port: int, head: bytes, body: bytes = b"") -> tuple[int, dict[str, str], Any]:
    """Sends ``head`` (request line and headers, without the blank line) and ``body`` as they
    are to the server on ``port``; the status, headers and JSON body of the answer."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        length = f"\r\nContent-Length: {len(body)}" if body else ""
        writer.write(head + length.encode() + b"\r\nConnection: close\r\n\r\n" + body)
        await writer.drain()
        async with asyncio.timeout(10):
            answer = await reader.read()
    finally:
        writer.close()
    header_block, _, payload = answer.partition(b"\r\n\r\n")
    status_line, *lines = header_block.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (x.partition(":") for x in lines)}
    return int(status_line.split()[1]), headers, json.loads(payload)


def error_of(data: Any) -> dict[str, Any]:
    """The JSON error body's ``error``, after checking it has the documented shape."""
    assert set(data) == {"error"}, data
    error: dict[str, Any] = data["error"]
    assert isinstance(error["code"], str), data
    assert isinstance(error["message"], str), data
    return error


async def test_an_empty_alert_id_filter_is_a_clear_422(api: Client) -> None:
    response = await api.get("/api/v1/escalations?alert_id=", headers=PROVINCE)
    assert response.status == 422
    assert "alert_id" in error_of(await response.json())["message"]
    # The filter still works with a real id, and without it.
    response = await api.get("/api/v1/escalations", headers=PROVINCE)
    assert response.status == 200, await response.text()


@pytest.mark.parametrize("authorization", [b"Bearer tok-\xff", b"Bearer \xc3\x28", b"\xff\xfe"])
async def test_a_token_that_is_not_text_is_401(api: Client, authorization: bytes) -> None:
    head = b"GET /api/v1/alerts HTTP/1.1\r\nHost: ebd\r\nAuthorization: " + authorization
    status, _, data = await raw_request(api, head)
    assert status == 401, data
    assert "Bearer" in error_of(data)["message"] or "token" in error_of(data)["message"]
    # The engine is unharmed: a good token still works.
    response = await api.get("/api/v1/alerts", headers=PROVINCE)
    assert response.status == 200


@pytest.mark.parametrize("escaped", ["\\ud800", "\\udfff", "x\\ud83dy"])
async def test_a_lone_surrogate_in_a_body_is_400_with_or_without_idempotency(
    api: Client, escaped: str
) -> None:
    body = json.dumps(alert_body()).replace('"headline": "', f'"headline": "{escaped}', 1)
    assert escaped in body
    for extra in ({}, {"Idempotency-Key": "surrogate-1"}):
        response = await api.post(
            "/api/v1/alerts",
            data=body.encode(),
            headers={**PROVINCE, **extra, "Content-Type": "application/json"},
        )
        assert response.status == 400, await response.text()
        assert "surrogate" in error_of(await response.json())["message"]
    # A proper pair (an emoji, escaped) is text, and only refused for what it is.
    paired = json.dumps(alert_body()).replace('"headline": "', '"headline": "\\ud83d\\ude00', 1)
    response = await api.post(
        "/api/v1/alerts", data=paired, headers={**PROVINCE, "Content-Type": "application/json"}
    )
    assert response.status in (201, 422), await response.text()


@pytest.mark.parametrize("body", [b"\x0b", b"\x0c", b" \x0b "])
async def test_an_optional_body_of_what_json_calls_no_whitespace_is_400(
    api: Client, body: bytes
) -> None:
    """An endpoint whose body may be left out takes JSON's own whitespace as no body, and
    nothing else: a vertical tab is not an empty body (schemathesis found it was)."""
    alert = await (await api.post("/api/v1/alerts", json=alert_body(), headers=PROVINCE)).json()
    headers = {**PROVINCE, "Content-Type": "application/json"}
    path = f"/api/v1/alerts/{alert['id']}/cancel"
    response = await api.post(path, data=body, headers=headers)
    assert response.status == 400
    assert "not valid JSON" in (await response.json())["error"]["message"]
    # And it cancelled nothing: the same cancel with no body still does.
    response = await api.post(path, data=b" \n", headers=headers)
    assert response.status == 201


async def test_a_wrong_method_is_405_with_allow_and_the_json_body(api: Client) -> None:
    response = await api.request("PATCH", "/api/v1/alerts", headers=PROVINCE)
    assert response.status == 405
    assert set(response.headers["Allow"].split(",")) >= {"GET", "POST"}
    assert response.content_type == "application/json"
    assert "PATCH" in error_of(await response.json())["message"]


# -- SMS receipts: signed, but with what no gateway sends ------------------------------------


@pytest.fixture
async def texting(
    redis_url: str, mqtt_url: str, tmp_path: Path
) -> AsyncIterator[tuple[Client, str, str]]:
    """An engine with a generic gateway (gw1) and an Aliyun-style one (gw2); their receipt
    secrets."""
    async with (
        GenericGatewayServer(receipt_mode="none") as generic,
        AliyunGatewayServer() as aliyun,
        engine_with(redis_url, mqtt_url, tmp_path, [generic, aliyun]) as client,
    ):
        yield client, generic.secret, aliyun.secret


def generic_receipt(secret: str, parts: str) -> tuple[bytes, dict[str, str]]:
    row = f'{{"id": "{out_id("a1", "+8613800000000")}", "status": "delivered", "parts": {parts}}}'
    body = f'{{"receipts": [{row}]}}'.encode()
    timestamp = str(int(time.time()))
    return body, {
        "Content-Type": "application/json",
        "X-Ebd-Timestamp": timestamp,
        "X-Ebd-Signature": receipt_signature(secret, timestamp, body),
    }


def aliyun_report(secret: str, size: str) -> tuple[bytes, dict[str, str]]:
    body = (
        '[{"phone_number": "13800000000", "success": true, "out_id": "a1", '
        f'"sms_size": {size}, "biz_id": "b1"}}]'
    ).encode()
    return body, {
        "Content-Type": "application/json",
        "X-Sms-Signature": report_signature(secret, body),
    }


@pytest.mark.parametrize("number", HUGE_NUMBERS)
async def test_a_signed_receipt_with_an_impossible_part_count_is_400(
    texting: tuple[Client, str, str], number: str
) -> None:
    client, generic_secret, aliyun_secret = texting
    for gateway, (body, headers) in (
        ("gw1", generic_receipt(generic_secret, number)),
        ("gw2", aliyun_report(aliyun_secret, number)),
        # The same number as a string, as Aliyun sends sms_size.
        ("gw2", aliyun_report(aliyun_secret, json.dumps(number))),
    ):
        response = await client.post(f"/api/v1/sms/receipts/{gateway}", data=body, headers=headers)
        assert response.status == 400, (gateway, number, await response.text())
        message = error_of(await response.json())["message"]
        assert "255" in message, message
        assert "Redis" not in message, message


async def test_a_signature_header_that_is_not_text_is_401(
    texting: tuple[Client, str, str],
) -> None:
    client, generic_secret, _ = texting
    body, headers = generic_receipt(generic_secret, "1")
    for name, value in (
        ("X-Ebd-Signature", b"\xff" + headers["X-Ebd-Signature"].encode()[1:]),
        ("X-Ebd-Timestamp", b"\xff\xfe"),
    ):
        lines = [f"{k}: {v}".encode() for k, v in headers.items() if k != name]
        head = b"\r\n".join(
            [
                b"POST /api/v1/sms/receipts/gw1 HTTP/1.1",
                b"Host: ebd",
                *lines,
                name.encode() + b": " + value,
            ]
        )
        status, _, data = await raw_request(client, head, body)
        assert status == 401, (name, data)
        assert "receipt rejected" in error_of(data)["message"]
    # The same receipt, correctly signed, is read (the message is unknown here: taken, ignored).
    response = await client.post("/api/v1/sms/receipts/gw1", data=body, headers=headers)
    assert response.status == 200, await response.text()


@pytest.mark.parametrize(
    "query", ["%ff=1", "%ED%A0%80=1", "limit=%ff", "limit=1&limit=2", "x=%ED%A0%80"]
)
async def test_a_query_of_bytes_that_are_not_text_is_a_json_4xx(api: Client, query: str) -> None:
    response = await api.get(f"/api/v1/alerts?{query}", headers=PROVINCE)
    assert response.status in (400, 422), await response.text()
    error_of(await response.json())


@pytest.mark.parametrize(
    "line", [b"GET /api/v1/alerts?x=\xff HTTP/1.1", b"GET /api/v1/al\xffrts HTTP/1.1"]
)
async def test_a_request_aiohttp_cannot_parse_gets_the_json_error_body(line: bytes) -> None:
    """What the engine's runner (``JsonErrorRunner``) serves: the parser's refusal in the same
    JSON body as every other error, not aiohttp's plain text."""

    async def alerts(request: web.Request) -> web.Response:
        return web.json_response({"alerts": []})

    app = web.Application(middlewares=[error_middleware])
    app.router.add_get("/api/v1/alerts", alerts)
    runner = JsonErrorRunner(app, access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        status, headers, data = await raw_socket(port, line + b"\r\nHost: ebd")
        assert status == 400
        assert headers["content-type"].startswith("application/json")
        assert "percent-encode" in error_of(data)["message"]
        # A well-formed request on the same runner is served as usual.
        status, _, data = await raw_socket(port, b"GET /api/v1/alerts HTTP/1.1\r\nHost: ebd")
        assert (status, data) == (200, {"alerts": []})
    finally:
        await runner.cleanup()


async def test_a_refusal_by_redis_is_no_outage_and_shows_no_reply(
    api: Client, redis_url: str
) -> None:
    """A key of the wrong type (damage, or a bug) makes Redis answer with an error: the caller
    gets a 500 that names no Redis reply and does not ask to retry, unlike an outage (503)."""
    response = await api.post("/api/v1/alerts", json=alert_body(), headers=PROVINCE)
    assert response.status == 201, await response.text()
    alert_id = (await response.json())["id"]
    rdb = redis.Redis.from_url(redis_url)
    try:
        rdb.delete(dispatch_key(alert_id))
        rdb.set(dispatch_key(alert_id), "not a hash")
        response = await api.get(f"/api/v1/alerts/{alert_id}", headers=PROVINCE)
    finally:
        rdb.close()
    assert response.status == 500
    error = (await response.json())["error"]
    assert error["code"] == "store_refused"
    assert "WRONGTYPE" not in json.dumps(error)
    assert "retry" not in error["message"]
