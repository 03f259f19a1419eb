"""The SMS gateway adapters against real test gateway servers (``adapters/sms/sandbox.py``):
what each answer and each network failure becomes, status lookups, receipts and their
signatures, the Aliyun signer against Aliyun's published examples, and the servers' books."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from typing import Self, TypeVar

import pytest
from aiohttp import web

from adapters.sms.aliyun import (
    SHANGHAI,
    AliyunGateway,
    aliyun_phone,
    e164_phone,
    percent_encode,
    report_signature,
    rpc_signature,
    string_to_sign,
)
from adapters.sms.gateway import (
    DeliveryStatus,
    Message,
    Receipt,
    SmsGateway,
    SubmitStatus,
    out_id,
)
from adapters.sms.generic import GenericGateway, receipt_signature
from adapters.sms.http import parse_retry_after
from adapters.sms.registry import build_gateway
from dispatcher.core.errors import ReceiptMalformed, ReceiptRejected
from tests.helpers import wait_for
from tests.support.sms_sandbox import (
    Accepted,
    AliyunGatewayServer,
    GatewayServer,
    GenericGatewayServer,
    peak_in_window,
    unused_port,
)

P1, P2, P3, P4 = "+8613800138000", "+8613800138001", "+8613800138002", "+8613800138003"
ABROAD = "+4915112345678"
SIGNATURE = "福建省应急管理厅"
BODY = "鼓楼区暴雨橙色预警：预计未来6小时降雨量将达50毫米以上，请远离低洼地带。"
# Over 70 characters with the signature, so Aliyun bills it as two parts.
LONG_BODY = BODY * 2

G = TypeVar("G", bound=SmsGateway)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def message(phone: str, job: str = "fj-alert-1", *, body: str = BODY, segments: int = 1) -> Message:
    return Message(
        job_id=job,
        out_id=out_id(job, phone),
        phone=phone,
        signature=SIGNATURE,
        body=body,
        text=f"【{SIGNATURE}】{body}",
        segments=segments,
    )


@contextlib.asynccontextmanager
async def started(adapter: G) -> AsyncIterator[G]:
    await adapter.start()
    try:
        yield adapter
    finally:
        await adapter.close()


class TinyServer:
    """One handler for every path on a free loopback port."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self._runner: web.AppRunner | None = None
        self.url = ""

    async def __aenter__(self) -> Self:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self.handler)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}/receipts/gw1"
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        assert self._runner is not None
        await self._runner.cleanup()


class ReceiptSink(TinyServer):
    """The engine's receipt endpoint in miniature: the adapter checks and reads each post."""

    def __init__(self, adapter: GenericGateway | AliyunGateway) -> None:
        super().__init__(self._receive)
        self.adapter = adapter
        self.receipts: list[Receipt] = []
        self.refused: list[str] = []

    async def _receive(self, request: web.Request) -> web.StreamResponse:
        try:
            receipts = self.adapter.parse_receipts(
                url=str(request.url), headers=request.headers, body=await request.read()
            )
        except ReceiptRejected as exc:
            self.refused.append(f"rejected: {exc.reason}")
            return web.Response(status=401)
        except ReceiptMalformed as exc:
            self.refused.append(f"malformed: {exc.reason}")
            return web.Response(status=400)
        self.receipts.extend(receipts)
        status, content_type, body = self.adapter.receipt_answer()
        return web.Response(status=status, body=body, content_type=content_type)


def scripted(status: int, body: bytes, headers: dict[str, str] | None = None) -> TinyServer:
    """A gateway that gives one fixed answer: for answers the test gateways never give."""

    async def answer(request: web.Request) -> web.StreamResponse:
        await request.read()
        return web.Response(status=status, body=body, headers=headers)

    return TinyServer(answer)


@pytest.fixture
async def generic_gw() -> AsyncIterator[GenericGatewayServer]:
    async with GenericGatewayServer() as gw:
        yield gw


@pytest.fixture
async def aliyun_gw() -> AsyncIterator[AliyunGatewayServer]:
    async with AliyunGatewayServer() as gw:
        yield gw


# -- generic: submit --------------------------------------------------------------------------


async def test_generic_accepts_with_message_ids(generic_gw: GenericGatewayServer) -> None:
    batch = [message(P1), message(P2), message(ABROAD)]
    async with started(GenericGateway(generic_gw.settings())) as adapter:
        results = await adapter.submit(batch)
    assert [r.out_id for r in results] == [m.out_id for m in batch]
    assert {r.status for r in results} == {SubmitStatus.ACCEPTED}
    ids = [r.message_id for r in results]
    assert None not in ids
    assert len(set(ids)) == 3
    assert [(a.key, a.phone, a.text) for a in generic_gw.accepted] == [
        (m.out_id, m.phone, m.text) for m in batch
    ]
    assert generic_gw.sent_count(P1, "fj-alert-1") == 1
    assert generic_gw.sent_count(P1, "other-job") == 0


async def test_generic_sends_the_auth_header() -> None:
    async with GenericGatewayServer(auth=("Authorization", "Bearer s3cret")) as gw:
        async with started(GenericGateway(gw.settings())) as adapter:
            good = await adapter.submit([message(P1)])
        wrong = gw.settings(auth_value="Bearer wrong")
        async with started(GenericGateway(wrong)) as adapter:
            bad = await adapter.submit([message(P2)])
    assert good[0].status is SubmitStatus.ACCEPTED
    assert bad[0].status is SubmitStatus.REJECTED
    assert bad[0].error is not None
    assert "401" in bad[0].error
    assert gw.sent_count(P2) == 0


async def test_generic_rejects_one_message_and_takes_the_rest(
    generic_gw: GenericGatewayServer,
) -> None:
    generic_gw.reject_phones.add(P2)
    async with started(GenericGateway(generic_gw.settings())) as adapter:
        results = await adapter.submit([message(P1), message(P2)])
    assert [r.status for r in results] == [SubmitStatus.ACCEPTED, SubmitStatus.REJECTED]
    assert results[1].error == "invalid number"


async def test_generic_injected_throttle_is_retry_with_retry_after(
    generic_gw: GenericGatewayServer,
) -> None:
    generic_gw.retry_after = 2.5
    generic_gw.fail_next(1, "throttle")
    async with started(GenericGateway(generic_gw.settings())) as adapter:
        first = await adapter.submit([message(P1)])
        second = await adapter.submit([message(P1)])
    assert first[0].status is SubmitStatus.RETRY
    assert first[0].retry_after == pytest.approx(2.5)
    assert second[0].status is SubmitStatus.ACCEPTED
    assert generic_gw.sent_count(P1) == 1


async def test_generic_rate_limit_throttles_the_request_over_it() -> None:
    async with GenericGatewayServer(rate_limit=2) as gw:
        adapter = GenericGateway(gw.settings())
        async with started(adapter):
            taken = await adapter.submit([message(P1), message(P2)])
            over = await adapter.submit([message(P3)])
    assert {r.status for r in taken} == {SubmitStatus.ACCEPTED}
    assert over[0].status is SubmitStatus.RETRY
    assert over[0].retry_after is not None
    assert 0 < over[0].retry_after <= 1.0
    assert (gw.throttled, gw.peak_rate, gw.sent_count(P3)) == (1, 2, 0)


async def test_generic_5xx_is_retry_and_400_rejects_the_batch(
    generic_gw: GenericGatewayServer,
) -> None:
    generic_gw.fail_next(1, "500")
    generic_gw.fail_next(1, "400")
    async with started(GenericGateway(generic_gw.settings())) as adapter:
        server_error = await adapter.submit([message(P1), message(P2)])
        client_error = await adapter.submit([message(P1), message(P2)])
    assert {r.status for r in server_error} == {SubmitStatus.RETRY}
    assert {r.status for r in client_error} == {SubmitStatus.REJECTED}
    assert client_error[0].error == "HTTP 400: injected bad request"
    assert generic_gw.accepted == []


async def test_generic_dedups_by_id(generic_gw: GenericGatewayServer) -> None:
    async with started(GenericGateway(generic_gw.settings())) as adapter:
        first = await adapter.submit([message(P1)])
        again = await adapter.submit([message(P1), message(P2)])
    assert again[0].status is SubmitStatus.ACCEPTED
    assert again[0].message_id == first[0].message_id
    assert generic_gw.duplicates == 1
    assert generic_gw.sent_count(P1) == 1
    assert len(generic_gw.accepted) == 2


@pytest.mark.parametrize(
    ("status", "body", "headers", "expected"),
    [
        (200, b"<html>oops</html>", {}, [SubmitStatus.UNKNOWN, SubmitStatus.UNKNOWN]),
        (
            200,
            b'{"results": [{"id": "ID1", "status": "accepted", "message_id": "m1"}]}',
            {},
            [SubmitStatus.ACCEPTED, SubmitStatus.RETRY],
        ),
        (
            200,
            b'{"results": [{"id": "ID1", "status": "queued"},'
            b' {"id": "ID2", "status": "throttled"}]}',
            {"Retry-After": "3"},
            [SubmitStatus.UNKNOWN, SubmitStatus.RETRY],
        ),
        (503, b"busy", {}, [SubmitStatus.RETRY, SubmitStatus.RETRY]),
        (404, b"no such path", {}, [SubmitStatus.REJECTED, SubmitStatus.REJECTED]),
        (302, b"", {"Location": "http://example.invalid/"}, [SubmitStatus.REJECTED] * 2),
    ],
)
async def test_generic_answers_the_test_gateway_never_gives(
    status: int, body: bytes, headers: dict[str, str], expected: list[SubmitStatus]
) -> None:
    batch = [message(P1), message(P2)]
    body = body.replace(b"ID1", batch[0].out_id.encode()).replace(b"ID2", batch[1].out_id.encode())
    async with scripted(status, body, headers) as server:
        settings = GenericGatewayServer().settings(url=server.url)
        async with started(GenericGateway(settings)) as adapter:
            results = await adapter.submit(batch)
    assert [r.status for r in results] == expected
    if headers.get("Retry-After"):
        assert results[1].retry_after == 3.0


# -- both: network failures -------------------------------------------------------------------


@pytest.mark.parametrize("protocol", ["generic", "aliyun"])
async def test_connection_refused_is_retry(protocol: str) -> None:
    server = GenericGatewayServer() if protocol == "generic" else AliyunGatewayServer()
    settings = server.settings(url=f"http://127.0.0.1:{unused_port()}/", connect_timeout=2)
    async with started(build_gateway(settings, None)) as adapter:
        results = await adapter.submit([message(P1), message(P2)])
    assert {r.status for r in results} == {SubmitStatus.RETRY}
    assert all((r.error or "").startswith("no connection") for r in results)


@pytest.mark.parametrize("server_class", [GenericGatewayServer, AliyunGatewayServer])
async def test_accept_then_hang_is_unknown_and_the_gateway_has_it(
    server_class: type[GenericGatewayServer] | type[AliyunGatewayServer],
) -> None:
    async with server_class(receipt_mode="none") as gw:
        gw.fail_next(1, "accept_then_hang")
        adapter = build_gateway(gw.settings(timeout=0.3), None)
        async with started(adapter):
            hung = await adapter.submit([message(P1)])
            assert hung[0].status is SubmitStatus.UNKNOWN
            # The gateway has it: sending again would text the person twice, unless the
            # gateway deduplicates, which both test gateways do.
            assert gw.sent_count(P1, "fj-alert-1") == 1
            again = await adapter.submit([message(P1)])
    assert again[0].status is SubmitStatus.ACCEPTED
    assert gw.duplicates == 1
    assert gw.sent_count(P1, "fj-alert-1") == 1


async def test_waiting_for_a_connection_past_connect_timeout_is_retry(
    generic_gw: GenericGatewayServer,
) -> None:
    # concurrency=1 gives a pool of 6 connections; 6 hanging requests hold all of them, so
    # the 7th waits for a connection, never sends, and must come back as RETRY.
    generic_gw.fail_next(6, "accept_then_hang")
    adapter = GenericGateway(generic_gw.settings(concurrency=1, connect_timeout=0.3, timeout=30))
    async with started(adapter):
        hanging = [
            asyncio.create_task(adapter.submit([message(f"+86136{n:08d}")])) for n in range(6)
        ]
        await wait_for(lambda: generic_gw.requests == 6, timeout=5)
        results = await adapter.submit([message(P1)])
        await generic_gw.close()  # the hanging requests end without an answer
        held = await asyncio.gather(*hanging)
    assert results[0].status is SubmitStatus.RETRY
    assert (results[0].error or "").startswith("no connection: ConnectionTimeoutError")
    assert generic_gw.sent_count(P1) == 0
    assert {r[0].status for r in held} == {SubmitStatus.UNKNOWN}


@pytest.mark.parametrize("server_class", [GenericGatewayServer, AliyunGatewayServer])
async def test_dropped_connection_is_unknown(
    server_class: type[GenericGatewayServer] | type[AliyunGatewayServer],
) -> None:
    async with server_class() as gw:
        gw.fail_next(1, "drop_connection")
        async with started(build_gateway(gw.settings(), None)) as adapter:
            results = await adapter.submit([message(P1), message(P2)])
    assert {r.status for r in results} == {SubmitStatus.UNKNOWN}
    assert gw.accepted == []


# -- generic: status and receipts -------------------------------------------------------------


async def test_generic_query_tells_every_state(generic_gw: GenericGatewayServer) -> None:
    generic_gw.fail_receipt_phones.add(P2)
    delivered, failed, waiting, never = message(P1), message(P2), message(P3), message(P4)
    async with started(GenericGateway(generic_gw.settings())) as adapter:
        await adapter.submit([delivered, failed])
        generic_gw.receipt_mode = "none"
        await adapter.submit([waiting])
        found = await adapter.query([delivered, failed, waiting, never])
    assert found == {
        delivered.out_id: DeliveryStatus.DELIVERED,
        failed.out_id: DeliveryStatus.FAILED,
        waiting.out_id: DeliveryStatus.ACCEPTED,
        never.out_id: DeliveryStatus.NOT_FOUND,
    }


async def test_generic_query_splits_into_calls_of_100_ids(
    generic_gw: GenericGatewayServer,
) -> None:
    batch = [message(f"+86139{n:08d}") for n in range(150)]
    async with started(GenericGateway(generic_gw.settings())) as adapter:
        await adapter.submit(batch[:120])
        found = await adapter.query(batch)
    # The gateway refuses more than 100 ids per call, so all 150 answers prove the split.
    assert len(found) == 150
    assert sum(s is DeliveryStatus.DELIVERED for s in found.values()) == 120


async def test_generic_query_that_fails_tells_nothing(generic_gw: GenericGatewayServer) -> None:
    settings = generic_gw.settings(status_url=f"http://127.0.0.1:{unused_port()}/status")
    async with started(GenericGateway(settings)) as adapter:
        await adapter.submit([message(P1)])
        assert await adapter.query([message(P1)]) == {}


async def test_generic_receipts_per_part(generic_gw: GenericGatewayServer) -> None:
    generic_gw.parts_receipts = True
    generic_gw.fail_receipt_phones.add(P2)
    adapter = GenericGateway(generic_gw.settings())
    async with ReceiptSink(adapter) as sink, started(adapter):
        adapter.callback_url = sink.url
        await adapter.submit([message(P1, segments=3), message(P2, segments=2)])
        await generic_gw.receipts_done()
    assert generic_gw.receipt_answers == [200]
    parts = sorted((r.out_id, r.part, r.parts, r.status) for r in sink.receipts)
    ok, bad = out_id("fj-alert-1", P1), out_id("fj-alert-1", P2)
    assert parts == sorted(
        [(ok, k, 3, DeliveryStatus.DELIVERED) for k in (1, 2, 3)]
        + [(bad, k, 2, DeliveryStatus.FAILED) for k in (1, 2)]
    )
    assert all(r.at is not None for r in sink.receipts)
    assert all(r.at.tzinfo is not None for r in sink.receipts if r.at)
    assert {r.error for r in sink.receipts if r.status is DeliveryStatus.FAILED} == {"UNDELIV"}


async def test_generic_receipt_before_the_answer(generic_gw: GenericGatewayServer) -> None:
    generic_gw.receipt_mode = "before"
    adapter = GenericGateway(generic_gw.settings())
    async with ReceiptSink(adapter) as sink, started(adapter):
        adapter.callback_url = sink.url
        results = await adapter.submit([message(P1)])
        # No waiting: the receipt was taken before the submit was answered.
        assert [r.out_id for r in sink.receipts] == [results[0].out_id]
    assert results[0].status is SubmitStatus.ACCEPTED
    assert sink.receipts[0].message_id == results[0].message_id


@pytest.mark.parametrize("server_class", [GenericGatewayServer, AliyunGatewayServer])
async def test_a_receipt_with_a_wrong_signature_is_refused(
    server_class: type[GatewayServer],
) -> None:
    async with server_class() as gw:
        gw.bad_signature = True
        adapter = build_gateway(gw.settings(), None)
        assert isinstance(adapter, GenericGateway | AliyunGateway)
        async with ReceiptSink(adapter) as sink, started(adapter):
            # The generic protocol names the receipt address per batch; Aliyun's console does.
            adapter.callback_url = gw.callback_url = sink.url
            await adapter.submit([message(P1)])
            await gw.receipts_done()
    assert gw.receipt_answers == [401]
    assert sink.receipts == []
    assert [reason.split(":")[0] for reason in sink.refused] == ["rejected"], sink.refused


def _signed(secret: str, body: bytes, at: float | None = None) -> dict[str, str]:
    timestamp = str(int(time.time() if at is None else at))
    return {
        "X-Ebd-Timestamp": timestamp,
        "X-Ebd-Signature": receipt_signature(secret, timestamp, body),
    }


def test_generic_receipt_checks() -> None:
    secret = "0123456789abcdef-secret"
    adapter = GenericGateway(GenericGatewayServer(secret=secret).settings())
    body = json.dumps(
        {"receipts": [{"id": out_id("j", P1), "message_id": "m1", "status": "delivered"}]}
    ).encode()
    parse = adapter.parse_receipts
    [receipt] = parse(url="/", headers=_signed(secret, body), body=body)
    assert (receipt.status, receipt.part, receipt.parts) == (DeliveryStatus.DELIVERED, 1, 1)
    # Header names are case-insensitive even in a plain dict.
    lower = {k.lower(): v for k, v in _signed(secret, body).items()}
    assert parse(url="/", headers=lower, body=body) == [receipt]
    with pytest.raises(ReceiptRejected, match="missing"):
        parse(url="/", headers={}, body=body)
    with pytest.raises(ReceiptRejected, match="bad signature"):
        parse(url="/", headers=_signed("another-secret-0123456", body), body=body)
    with pytest.raises(ReceiptRejected, match="300 s"):
        parse(url="/", headers=_signed(secret, body, time.time() - 301), body=body)
    with pytest.raises(ReceiptRejected, match="300 s"):
        parse(url="/", headers=_signed(secret, body, time.time() + 301), body=body)
    with pytest.raises(ReceiptMalformed):
        parse(url="/", headers=_signed(secret, b"{not json"), body=b"{not json")
    partless = b'{"receipts": [{"id": "x.0123456789abcdef", "status": "delivered", "part": 3,'
    partless += b' "parts": 2}]}'
    with pytest.raises(ReceiptMalformed, match="part 3 of 2"):
        parse(url="/", headers=_signed(secret, partless), body=partless)


# -- aliyun: signing --------------------------------------------------------------------------


def test_aliyun_signer_matches_aliyuns_published_examples() -> None:
    # Aliyun's RPC signature example (DescribeRegions, secret "testsecret"), as published at
    # https://developer.aliyun.com/ask/210168 ("API 签名机制(示例)"). It signs a GET; the
    # algorithm is the same for POST apart from the method at the front of StringToSign.
    describe_regions = {
        "TimeStamp": "2016-02-23T12:46:24Z",
        "Format": "XML",
        "AccessKeyId": "testid",
        "Action": "DescribeRegions",
        "SignatureMethod": "HMAC-SHA1",
        "SignatureNonce": "3ee8c1b8-83d3-44af-a94f-4e0ad82fd6cf",
        "Version": "2014-05-26",
        "SignatureVersion": "1.0",
    }
    # The page prints the pairs joined by a bare "&"; the signature it gives is that of the
    # encoded form, "%26", which is what the algorithm says.
    assert string_to_sign(describe_regions, "GET") == (
        "GET&%2F&AccessKeyId%3Dtestid%26Action%3DDescribeRegions%26Format%3DXML"
        "%26SignatureMethod%3DHMAC-SHA1%26SignatureNonce%3D3ee8c1b8-83d3-44af-a94f-4e0ad82fd6cf"
        "%26SignatureVersion%3D1.0%26TimeStamp%3D2016-02-23T12%253A46%253A24Z"
        "%26Version%3D2014-05-26"
    )
    assert rpc_signature(describe_regions, "testsecret", "GET") == "CT9X0VtwR86fNWSnsc6v8YGOjuE="
    # The SendSms example of Aliyun's SMS signing guide (secret "testSecret"): Chinese
    # SignName and a JSON TemplateParam, so UTF-8 percent-encoding is exercised too.
    send_sms = {
        "AccessKeyId": "testId",
        "Action": "SendSms",
        "Format": "XML",
        "OutId": "123",
        "PhoneNumbers": "15300000001",
        "RegionId": "cn-hangzhou",
        "SignName": "阿里云短信测试专用",
        "SignatureMethod": "HMAC-SHA1",
        "SignatureNonce": "45e25e9b-0a6f-4070-8c85-2956eda1b466",
        "SignatureVersion": "1.0",
        "TemplateCode": "SMS_71390007",
        "TemplateParam": '{"customer":"test"}',
        "Timestamp": "2017-07-12T02:42:19Z",
        "Version": "2017-05-25",
    }
    assert rpc_signature(send_sms, "testSecret", "GET") == "zJDF+Lrzhj/ThnlvIToysFRq6t4="


def test_aliyun_percent_encoding_and_phone_forms() -> None:
    assert percent_encode("a b*c~d/e+f=g&h") == "a%20b%2Ac~d%2Fe%2Bf%3Dg%26h"
    assert percent_encode("应急") == "%E5%BA%94%E6%80%A5"
    assert aliyun_phone(P1) == "13800138000"
    assert aliyun_phone(ABROAD) == "004915112345678"
    assert [e164_phone(n) for n in ("13800138000", "004915112345678", "8613800138000")] == [
        P1,
        ABROAD,
        P1,
    ]
    with pytest.raises(ValueError, match=r"E\.164"):
        aliyun_phone("13800138000")


async def test_aliyun_wrong_secret_or_key_is_rejected(aliyun_gw: AliyunGatewayServer) -> None:
    wrong_secret = aliyun_gw.settings(access_key_secret="not-the-secret")
    wrong_key = aliyun_gw.settings(access_key_id="LTAIunknown")
    async with started(AliyunGateway(wrong_secret)) as adapter:
        bad_signature = await adapter.submit([message(P1), message(P2)])
    async with started(AliyunGateway(wrong_key)) as adapter:
        bad_key = await adapter.submit([message(P1)])
    assert {r.status for r in bad_signature} == {SubmitStatus.REJECTED}
    assert bad_signature[0].error is not None
    assert bad_signature[0].error.startswith("SignatureDoesNotMatch")
    assert bad_key[0].status is SubmitStatus.REJECTED
    assert bad_key[0].error is not None
    assert bad_key[0].error.startswith("InvalidAccessKey")
    assert aliyun_gw.accepted == []


# -- aliyun: submit ---------------------------------------------------------------------------


async def test_aliyun_accepts_a_batch_under_one_biz_id(aliyun_gw: AliyunGatewayServer) -> None:
    batch = [message(P1), message(P2), message(ABROAD)]
    async with started(AliyunGateway(aliyun_gw.settings())) as adapter:
        results = await adapter.submit(batch)
    assert {r.status for r in results} == {SubmitStatus.ACCEPTED}
    assert len({r.message_id for r in results}) == 1
    assert results[0].message_id
    # The server checked the signature over Chinese text, a JSON TemplateParam and numbers in
    # both forms, and rebuilt E.164 numbers and the handset text from the form.
    assert [(a.key, a.phone, a.text) for a in aliyun_gw.accepted] == [
        (("fj-alert-1", m.phone), m.phone, m.text) for m in batch
    ]


async def test_aliyun_batch_must_share_job_signature_and_body(
    aliyun_gw: AliyunGatewayServer,
) -> None:
    async with started(AliyunGateway(aliyun_gw.settings())) as adapter:
        with pytest.raises(ValueError, match="share"):
            await adapter.submit([message(P1), message(P2, job="fj-alert-2")])
    assert aliyun_gw.requests == 0


async def test_aliyun_failures(aliyun_gw: AliyunGatewayServer) -> None:
    aliyun_gw.fail_next(1, "throttle")
    aliyun_gw.fail_next(1, "500")
    async with started(AliyunGateway(aliyun_gw.settings())) as adapter:
        throttled = await adapter.submit([message(P1)])
        server_error = await adapter.submit([message(P1)])
        aliyun_gw.reject_phones.add(P2)
        bad_number = await adapter.submit([message(P1), message(P2)])
        aliyun_gw.rate_limit = 0
        limited = await adapter.submit([message(P1)])
    assert throttled[0].status is SubmitStatus.RETRY
    assert throttled[0].error is not None
    assert "BUSINESS_LIMIT_CONTROL" in throttled[0].error
    assert server_error[0].status is SubmitStatus.RETRY
    # Aliyun answers for the whole list: one bad number rejects both.
    assert {r.status for r in bad_number} == {SubmitStatus.REJECTED}
    assert all("MOBILE_NUMBER_ILLEGAL" in (r.error or "") for r in bad_number)
    assert limited[0].status is SubmitStatus.RETRY
    assert (aliyun_gw.throttled, aliyun_gw.accepted) == (1, [])


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        (200, b'{"Code": "isp.SYSTEM_ERROR", "Message": "x"}', SubmitStatus.RETRY),
        (400, b'{"Code": "Throttling.User", "Message": "x"}', SubmitStatus.RETRY),
        (200, b'{"Code": "isv.AMOUNT_NOT_ENOUGH", "Message": "x"}', SubmitStatus.REJECTED),
        (200, b'{"Code": "isv.SMS_SIGNATURE_ILLEGAL", "Message": "x"}', SubmitStatus.REJECTED),
        (200, b"not json", SubmitStatus.UNKNOWN),
        (502, b"<html>bad gateway</html>", SubmitStatus.RETRY),
        (403, b"<html>forbidden</html>", SubmitStatus.REJECTED),
    ],
)
async def test_aliyun_answer_codes(status: int, body: bytes, expected: SubmitStatus) -> None:
    async with scripted(status, body) as server:
        settings = AliyunGatewayServer().settings(url=server.url)
        async with started(AliyunGateway(settings)) as adapter:
            results = await adapter.submit([message(P1), message(P2)])
    assert [r.status for r in results] == [expected, expected]


# -- aliyun: status and receipts --------------------------------------------------------------


async def test_aliyun_query_tells_every_state(aliyun_gw: AliyunGatewayServer) -> None:
    aliyun_gw.fail_receipt_phones.add(P2)
    delivered, failed = message(P1), message(P2)
    waiting = message(P3, job="fj-alert-2")
    never = message(P4)
    other_job = message(P1, job="fj-alert-3")  # P1 has a row, but of another job
    async with started(AliyunGateway(aliyun_gw.settings())) as adapter:
        await adapter.submit([delivered, failed])
        aliyun_gw.receipt_mode = "none"
        await adapter.submit([waiting])
        found = await adapter.query([delivered, failed, waiting, never, other_job])
    assert found == {
        delivered.out_id: DeliveryStatus.DELIVERED,
        failed.out_id: DeliveryStatus.FAILED,
        waiting.out_id: DeliveryStatus.ACCEPTED,
        never.out_id: DeliveryStatus.NOT_FOUND,
        other_job.out_id: DeliveryStatus.NOT_FOUND,
    }


async def test_aliyun_query_finds_yesterdays_message_after_midnight(
    aliyun_gw: AliyunGatewayServer,
) -> None:
    aliyun_gw.clock = lambda: datetime(2024, 5, 1, 23, 59, 30, tzinfo=SHANGHAI)
    after_midnight = datetime(2024, 5, 2, 0, 0, 30, tzinfo=SHANGHAI).astimezone(UTC)
    sent = message(P1)
    adapter = AliyunGateway(aliyun_gw.settings(), clock=lambda: after_midnight)
    async with started(adapter):
        await adapter.submit([sent])
        found = await adapter.query([sent])
    assert found == {sent.out_id: DeliveryStatus.DELIVERED}
    assert aliyun_gw.queries == 2  # 20240502 had nothing, 20240501 had it


async def test_aliyun_query_pages_through_a_busy_number(aliyun_gw: AliyunGatewayServer) -> None:
    jobs = [message(P1, job=f"fj-alert-{n}") for n in range(60)]
    async with started(AliyunGateway(aliyun_gw.settings())) as adapter:
        await asyncio.gather(*(adapter.submit([m]) for m in jobs))
        found = await adapter.query(jobs)
    assert set(found.values()) == {DeliveryStatus.DELIVERED}
    assert len(found) == 60
    assert aliyun_gw.queries == 2  # two pages of 50


async def test_aliyun_query_that_fails_tells_nothing(aliyun_gw: AliyunGatewayServer) -> None:
    async with started(AliyunGateway(aliyun_gw.settings())) as adapter:
        await adapter.submit([message(P1)])
    bad = AliyunGateway(aliyun_gw.settings(access_key_secret="wrong"))
    async with started(bad):
        assert await bad.query([message(P1), message(P2)]) == {}


async def test_aliyun_receipts_carry_the_sms_size(aliyun_gw: AliyunGatewayServer) -> None:
    aliyun_gw.fail_receipt_phones.add(P2)
    adapter = AliyunGateway(aliyun_gw.settings())
    long_text = [message(P1, body=LONG_BODY, segments=2), message(P2, body=LONG_BODY)]
    async with ReceiptSink(adapter) as sink, started(adapter):
        aliyun_gw.callback_url = sink.url
        results = await adapter.submit(long_text)
        await aliyun_gw.receipts_done()
    assert aliyun_gw.receipt_answers == [200]
    by_id = {r.out_id: r for r in sink.receipts}
    assert by_id.keys() == {m.out_id for m in long_text}
    ok, bad = by_id[long_text[0].out_id], by_id[long_text[1].out_id]
    assert (ok.status, ok.part, ok.parts) == (DeliveryStatus.DELIVERED, 2, 2)
    assert ok.message_id == results[0].message_id
    assert bad.status is DeliveryStatus.FAILED
    assert bad.error is not None
    assert bad.error.startswith("UNDELIV")
    assert ok.at is not None
    assert ok.at.tzinfo is not None


def test_aliyun_receipt_checks() -> None:
    secret = "0123456789abcdef-secret"
    adapter = AliyunGateway(AliyunGatewayServer(secret=secret).settings())
    row = {
        "phone_number": "13800138000",
        "send_time": "2024-05-01 10:00:00",
        "report_time": "2024-05-01 10:00:05",
        "success": True,
        "err_code": "DELIVERED",
        "err_msg": "用户接收成功",
        "sms_size": "3",
        "biz_id": "932702304080415357^0",
        "out_id": "fj-alert-9",
    }
    foreign = {**row, "out_id": ""}  # sent by someone else on the same account
    body = json.dumps([row, foreign], ensure_ascii=False).encode()
    headers = {"X-Sms-Signature": report_signature(secret, body)}
    [receipt] = adapter.parse_receipts(url="/", headers=headers, body=body)
    assert receipt.out_id == out_id("fj-alert-9", P1)
    assert (receipt.part, receipt.parts, receipt.message_id) == (3, 3, "932702304080415357^0")
    assert receipt.at == datetime(2024, 5, 1, 2, 0, 5, tzinfo=UTC)
    with pytest.raises(ReceiptRejected, match="missing"):
        adapter.parse_receipts(url="/", headers={}, body=body)
    with pytest.raises(ReceiptRejected, match="bad signature"):
        adapter.parse_receipts(
            url="/", headers={"X-Sms-Signature": report_signature("wrong", body)}, body=body
        )
    junk = b'{"not": "a list"}'
    with pytest.raises(ReceiptMalformed):
        adapter.parse_receipts(
            url="/", headers={"X-Sms-Signature": report_signature(secret, junk)}, body=junk
        )
    assert adapter.receipt_answer() == (
        200,
        "application/json",
        '{"code": 0, "msg": "成功"}'.encode(),
    )


# -- the servers' books and the small pieces ---------------------------------------------------


def test_peak_in_window_on_crafted_times() -> None:
    # (t - 1, t]: 0.0 leaves the window the moment 1.0 arrives.
    assert peak_in_window([0.0, 0.1, 0.5, 0.99, 1.0, 1.5, 2.6]) == 4
    assert peak_in_window([0.0, 0.0, 0.0, 1.0]) == 3
    assert peak_in_window([5.0, 0.2, 0.4, 5.5, 5.9, 0.3, 5.95]) == 4  # unsorted input
    assert peak_in_window([]) == 0
    gw = GenericGatewayServer()
    # 10.0 is out of every window holding 11.0; (10.1, 11.1] holds four.
    times = (10.0, 10.2, 10.999, 11.0, 11.1)
    gw.accepted = [Accepted(t, f"k{t}", P1, "x") for t in times]
    assert gw.peak_rate == 4
    gw.accepted.pop()
    assert gw.peak_rate == 3


async def test_server_rate_limit_holds_under_concurrent_requests() -> None:
    async with GenericGatewayServer(rate_limit=5) as gw:
        adapter = GenericGateway(gw.settings(concurrency=8))
        async with started(adapter):
            batches = [[message(f"+86137{n:08d}")] for n in range(8)]
            results = await asyncio.gather(*(adapter.submit(b) for b in batches))
    statuses = [r[0].status for r in results]
    assert statuses.count(SubmitStatus.ACCEPTED) == 5
    assert statuses.count(SubmitStatus.RETRY) == 3
    assert (gw.peak_rate, gw.throttled) == (5, 3)


def test_retry_after_forms() -> None:
    now = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)
    assert parse_retry_after("2") == 2.0
    assert parse_retry_after("0.25") == 0.25
    assert parse_retry_after("Wed, 01 May 2024 12:00:30 GMT", now) == 30.0
    assert parse_retry_after("soon") is None
    assert parse_retry_after(None) is None
    assert parse_retry_after("-5") == 0.0
    assert parse_retry_after("inf") is None


def test_build_gateway_picks_the_protocol() -> None:
    generic = build_gateway(GenericGatewayServer().settings("a"), "http://engine/cb")
    aliyun = build_gateway(AliyunGatewayServer().settings("b"), None)
    assert isinstance(generic, GenericGateway)
    assert generic.callback_url == "http://engine/cb"
    assert isinstance(aliyun, AliyunGateway)
    assert aliyun.name == "b"
