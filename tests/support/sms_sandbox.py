"""Sandbox SMS gateways: real servers of the two protocols of ``docs/sms-gateways.md``, served
by aiohttp on a free 127.0.0.1 port, for the tests, the benchmarks and trying the engine out
without a commercial account. They text nobody; they keep books of what they were sent.

    async with GenericGatewayServer(rate_limit=50) as gw:
        adapter = GenericGateway(gw.settings("gw1"), callback_url)
        ...
        assert gw.peak_rate <= 50 and gw.sent_count("+8613800138000", job) == 1

Both servers keep the books a test needs (every accepted message with its monotonic time, the
duplicates they refused to send twice, throttling answers, receipt posts and how they were
answered) and have knobs that may be changed at any time during a test:

``rate_limit``
    messages per second over a sliding 1-second window; a request that would take the window
    over it gets the protocol's throttling answer and is not counted. None: unlimited.
``latency``
    seconds to wait before handling a submit.
``fail_next(n, kind)``
    the next ``n`` submits fail as ``kind`` (see ``FaultKind``); status lookups are unaffected.
``reject_phones``
    E.164 numbers the gateway refuses (generic: that message; aliyun: the whole batch).
``receipt_mode``
    ``"after"``: messages are delivered when taken and receipts posted once the submit was
    answered; ``"before"``: the receipts are posted, and answered, before the submit is
    answered; ``"none"``: messages stay "accepted" (not delivered) and no receipt is posted.
``callback_url``, ``parts_receipts``, ``fail_receipt_phones``, ``bad_signature``
    where receipts go (generic: the request's ``callback_url`` wins), one receipt per segment
    in shuffled order (generic), numbers whose messages fail, receipts signed with a wrong key.
``clock``
    the wall-clock time messages are filed under (aliyun ``SendDate``) and receipts carry.
"""

from __future__ import annotations

import asyncio
import gc
import json
import math
import random
import socket
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar, Literal, NamedTuple, Self

import aiohttp
from aiohttp import web

from adapters.sms.aliyun import (
    API_VERSION,
    SHANGHAI,
    aliyun_phone,
    e164_phone,
    report_signature,
    rpc_signature,
    string_to_sign,
)
from adapters.sms.gateway import out_id, split_out_id
from adapters.sms.generic import MAX_STATUS_IDS, receipt_signature
from adapters.sms.settings import GatewaySettings

__all__ = [
    "DEFAULT_SECRET",
    "Accepted",
    "AliyunGatewayServer",
    "FaultKind",
    "GatewayServer",
    "GenericGatewayServer",
    "ReceiptMode",
    "SentMessage",
    "peak_in_window",
    "unused_port",
]

FaultKind = Literal["500", "400", "throttle", "accept_then_hang", "drop_connection"]
"""What ``fail_next`` makes a submit do.

``"500"``: answer 500, take nothing. ``"400"``: answer the protocol's client error, take
nothing. ``"throttle"``: the protocol's throttling answer. ``"accept_then_hang"``: take and
record the messages (deliver them as ``receipt_mode`` says), then never answer; the request is
held open until the client gives up or the server closes. ``"drop_connection"``: take nothing
and close the connection without an answer.
"""
ReceiptMode = Literal["after", "before", "none"]
Key = str | tuple[str, str]

DEFAULT_SECRET = "test-callback-secret-0123456789abcdef"
DEFAULT_ACCESS_KEY_ID = "LTAItestkeyid"
DEFAULT_ACCESS_KEY_SECRET = "test-access-key-secret"
DEFAULT_TEMPLATE = "SMS_000000001"
_WINDOW = 1.0
_TIMESTAMP_SKEW = timedelta(minutes=15)
_SEND_DATE_FORMAT = "%Y-%m-%d %H:%M:%S"


class Accepted(NamedTuple):
    """One message a server took (duplicates are not listed again)."""

    at: float  # time.monotonic() when it was taken
    key: Key  # generic: the message id (out-id); aliyun: (OutId, E.164 phone)
    phone: str  # E.164
    text: str  # what the handset shows


@dataclass(slots=True)
class SentMessage:
    """A taken message as the gateway tracks it for status lookups and receipts."""

    key: Key
    out_id: str  # the engine's out-id, also for aliyun where it is rebuilt from job and phone
    job: str
    phone: str
    text: str
    segments: int
    message_id: str  # generic: the gateway's id; aliyun: the request's BizId
    sent_at: datetime  # from the server's clock, UTC
    state: Literal["accepted", "delivered", "failed"] = "accepted"


def peak_in_window(times: Iterable[float], window: float = _WINDOW) -> int:
    """The most timestamps in any window ``(t - window, t]``: the rate a gateway contract
    measures, computed exactly with two pointers over the sorted times."""
    ordered = sorted(times)
    best = 0
    low = 0
    for high, now in enumerate(ordered):
        while ordered[low] <= now - window:
            low += 1
        best = max(best, high - low + 1)
    return best


def unused_port() -> int:
    """A loopback port nothing listens on (for "connection refused" tests)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def aliyun_segments(text: str) -> int:
    """Parts Aliyun bills a Chinese text in: 70 characters fit one, longer ones 67 each."""
    return 1 if len(text) <= 70 else math.ceil(len(text) / 67)


class GatewayServer:
    """What both test gateways share: the listening socket, the knobs, the books, faults,
    rate limiting and receipt posting. Subclasses add the protocol's routes.

    Constructor arguments set the knobs of the same name: ``secret`` (the callback secret
    receipts are signed with, and ``settings()``'s ``callback_secret``), ``rate_limit``,
    ``latency``, ``callback_url``, ``receipt_mode``, ``retry_after`` (the Retry-After of an
    injected generic throttle) and ``seed`` (for the shuffled part receipts).

    Books: ``accepted`` (``Accepted`` per message taken, in order), ``sent`` (the gateway's
    record per key, with its delivery ``state``), ``peak_rate``, ``requests``, ``throttled``,
    ``duplicates``, ``faults_injected`` and ``receipt_answers``. ``url`` and ``settings()``
    are valid once the server has started.
    """

    protocol: ClassVar[Literal["generic", "aliyun"]]
    path: ClassVar[str] = "/"

    def __init__(
        self,
        *,
        secret: str = DEFAULT_SECRET,
        rate_limit: float | None = None,
        latency: float = 0.0,
        callback_url: str | None = None,
        receipt_mode: ReceiptMode = "after",
        retry_after: float = 1.0,
        seed: int = 0,
    ) -> None:
        self.secret = secret
        # Knobs.
        self.rate_limit = rate_limit
        self.latency = latency
        self.callback_url = callback_url
        self.receipt_mode: ReceiptMode = receipt_mode
        # Retry-After of an injected throttle (a rate-limit one says when the window frees).
        self.retry_after = retry_after
        self.reject_phones: set[str] = set()
        self.fail_receipt_phones: set[str] = set()
        self.parts_receipts = False
        self.bad_signature = False
        self.clock: Callable[[], datetime] = lambda: datetime.now(UTC)
        # Books.
        self.accepted: list[Accepted] = []
        self.sent: dict[Key, SentMessage] = {}
        self.requests = 0  # submit requests, whatever became of them
        self.throttled = 0  # submits refused by rate_limit (injected throttles not counted)
        self.duplicates = 0  # messages taken before, answered as taken and not sent again
        self.faults_injected = 0
        self.receipt_answers: list[int] = []  # HTTP status per receipt post; 0 = no answer
        self.random = random.Random(seed)  # noqa: S311 - shuffles receipts, not a secret
        self._faults: deque[FaultKind] = deque()
        self._window: deque[float] = deque()
        self._admitted_at: float | None = None
        self._receipt_tasks: set[asyncio.Task[None]] = set()
        self._closing = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self._client: aiohttp.ClientSession | None = None
        self._port = 0

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        self._closing = asyncio.Event()
        self._client = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))
        app = web.Application()
        self._routes(app)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self._port = int(self._runner.addresses[0][1])

    async def close(self) -> None:
        self._closing.set()  # releases the hanging requests
        for task in list(self._receipt_tasks):
            task.cancel()
        await asyncio.gather(*self._receipt_tasks, return_exceptions=True)
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._client is not None:
            await self._client.close()
            self._client = None

    async def __aenter__(self) -> Self:
        # The gateway stamps arrivals on the test process's loop: a full garbage collection
        # walking what earlier tests left (a 60-100 ms pause) stamps a request late, keeps it
        # in the rate window too long and throttles one the engine paced right. What exists
        # now is out of the collector's sight while the gateway runs.
        gc.collect()
        gc.freeze()
        await self.start()
        return self

    async def __aexit__(self, *_exc: object) -> None:
        try:
            await self.close()
        finally:
            gc.unfreeze()

    port = property(lambda self: self._port, doc="The port it listens on (known once started).")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._port}{self.path}"

    def settings(self, name: str = "gw1", **overrides: Any) -> GatewaySettings:
        """A gateway config pointing at this server with its credentials; ``overrides`` win."""
        fields: dict[str, Any] = {
            "name": name,
            "protocol": self.protocol,
            "url": self.url,
            "callback_secret": self.secret,
            **self._settings_fields(),
        }
        fields.update(overrides)
        return GatewaySettings(**fields)

    def _settings_fields(self) -> dict[str, Any]:
        return {}

    def _routes(self, app: web.Application) -> None:
        raise NotImplementedError

    # -- knobs and books -------------------------------------------------------------------

    def fail_next(self, n: int = 1, kind: FaultKind = "500") -> None:
        """Make the next ``n`` submit requests fail as ``kind``."""
        self._faults.extend([kind] * n)

    @property
    def peak_rate(self) -> int:
        """The most messages taken in any 1-second window."""
        return peak_in_window(a.at for a in self.accepted)

    def sent_count(self, phone: str, job: str | None = None) -> int:
        """Messages taken for ``phone`` (of ``job``, if given): more than 1 is a double text."""
        return sum(
            1
            for a in self.accepted
            if a.phone == phone and (job is None or self._job_of(a.key) == job)
        )

    async def receipts_done(self, timeout: float = 10.0) -> None:
        """Wait until every receipt post scheduled so far has been answered or has failed."""
        async with asyncio.timeout(timeout):
            while self._receipt_tasks:
                await asyncio.gather(*self._receipt_tasks, return_exceptions=True)

    @staticmethod
    def _job_of(key: Key) -> str:
        if isinstance(key, tuple):
            return key[0]
        try:
            return split_out_id(key)[0]
        except ValueError:
            return key

    # -- for the protocol handlers ---------------------------------------------------------

    def _take_fault(self) -> FaultKind | None:
        if not self._faults:
            return None
        self._admitted_at = None  # a faulty request is booked when it is taken
        self.faults_injected += 1
        return self._faults.popleft()

    def _admit(self, count: int) -> float | None:
        """Take ``count`` messages into the rate window now; if that would exceed the limit,
        count nothing and return the seconds until it would fit."""
        now = time.monotonic()
        # The messages of an admitted request are booked at this instant, not as each is
        # recorded: otherwise the peak would count a request's tail in the next window.
        self._admitted_at = now
        while self._window and self._window[0] <= now - _WINDOW:
            self._window.popleft()
        if self.rate_limit is None or count == 0:
            self._window.extend([now] * count)
            return None
        if len(self._window) + count <= self.rate_limit:
            self._window.extend([now] * count)
            return None
        self.throttled += 1
        must_expire = len(self._window) + count - int(self.rate_limit)
        if must_expire > len(self._window):
            return _WINDOW  # the batch alone is over the limit
        return max(0.0, self._window[must_expire - 1] + _WINDOW - now)

    def _record(self, message: SentMessage) -> None:
        """Book a newly taken message; with receipts on, the handset has it at once."""
        self.sent[message.key] = message
        at = self._admitted_at if self._admitted_at is not None else time.monotonic()
        self.accepted.append(Accepted(at, message.key, message.phone, message.text))
        if self.receipt_mode != "none":
            failed = message.phone in self.fail_receipt_phones
            message.state = "failed" if failed else "delivered"

    async def _hang(self, request: web.Request) -> None:
        """Hold the request until the client gives up on it or the server closes."""
        while not self._closing.is_set():
            transport = request.transport
            if transport is None or transport.is_closing():
                return
            try:
                await asyncio.wait_for(self._closing.wait(), 0.05)
            except TimeoutError:
                continue

    @staticmethod
    def _drop(request: web.Request) -> web.Response:
        if request.transport is not None:
            request.transport.close()
        return web.Response(status=500)  # never reaches the client

    async def _answer_then_receipts(
        self, request: web.Request, response: web.StreamResponse, batch: list[SentMessage]
    ) -> web.StreamResponse:
        """Send ``response``, posting ``batch``'s receipts before or after it as configured."""
        if not batch or self.receipt_mode == "none":
            return response
        if self.receipt_mode == "before":
            await self._post_receipts(batch)
            return response
        await response.prepare(request)
        await response.write_eof()
        self._schedule_receipts(batch)
        return response

    def _schedule_receipts(self, batch: list[SentMessage]) -> None:
        if self.receipt_mode == "none" or not batch:
            return
        task = asyncio.create_task(self._post_receipts(batch))
        self._receipt_tasks.add(task)
        task.add_done_callback(self._receipt_tasks.discard)

    async def _post_receipts(self, batch: list[SentMessage]) -> None:
        url = self._receipt_url(batch)
        if url is None or self._client is None:
            return
        body, headers = self._receipt_request(batch)
        try:
            async with self._client.post(url, data=body, headers=headers) as response:
                await response.read()
                self.receipt_answers.append(response.status)
        except (TimeoutError, aiohttp.ClientError):
            self.receipt_answers.append(0)

    def _receipt_url(self, batch: list[SentMessage]) -> str | None:
        return self.callback_url

    def _receipt_request(self, batch: list[SentMessage]) -> tuple[bytes, dict[str, str]]:
        raise NotImplementedError

    @property
    def _signing_secret(self) -> str:
        return "not-" + self.secret if self.bad_signature else self.secret


# -- generic --------------------------------------------------------------------------------


class GenericGatewayServer(GatewayServer):
    """The generic JSON protocol at ``/v1/messages`` (status at ``/v1/messages/status``).

    ``auth``: (header, value) every request must carry, or it is answered 401.
    ``max_batch``: more messages in one submit are answered 413.
    """

    protocol = "generic"
    path = "/v1/messages"

    def __init__(
        self, *, auth: tuple[str, str] | None = None, max_batch: int = 1000, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.auth = auth
        self.max_batch = max_batch
        self._callback_of: dict[Key, str | None] = {}
        self._next_id = 0

    def _settings_fields(self) -> dict[str, Any]:
        if self.auth is None:
            return {}
        return {"auth_header": self.auth[0], "auth_value": self.auth[1]}

    def _routes(self, app: web.Application) -> None:
        app.router.add_post(self.path, self._submit)
        app.router.add_get(self.path + "/status", self._status)

    def _authorised(self, request: web.Request) -> bool:
        return self.auth is None or request.headers.get(self.auth[0]) == self.auth[1]

    async def _submit(self, request: web.Request) -> web.StreamResponse:
        self.requests += 1
        if not self._authorised(request):
            return web.json_response({"error": "bad credentials"}, status=401)
        try:
            messages, callback = _generic_payload(await request.read())
        except ValueError as exc:
            return web.json_response({"error": str(exc)}, status=400)
        if len(messages) > self.max_batch:
            return web.json_response({"error": f"at most {self.max_batch}"}, status=413)
        if self.latency:
            await asyncio.sleep(self.latency)
        fault = self._take_fault()
        if fault is not None:
            return await self._fault(request, fault, messages, callback)
        new = [
            m for m in messages if m["id"] not in self.sent and m["to"] not in self.reject_phones
        ]
        wait = self._admit(len(new))
        if wait is not None:
            return _throttled(wait)
        results, batch = self._take(messages, callback)
        return await self._answer_then_receipts(
            request, web.json_response({"results": results}), batch
        )

    async def _fault(
        self,
        request: web.Request,
        fault: FaultKind,
        messages: list[dict[str, Any]],
        callback: str | None,
    ) -> web.StreamResponse:
        if fault == "500":
            return web.json_response({"error": "injected failure"}, status=500)
        if fault == "400":
            return web.json_response({"error": "injected bad request"}, status=400)
        if fault == "throttle":
            return _throttled(self.retry_after)
        if fault == "drop_connection":
            return self._drop(request)
        _, batch = self._take(messages, callback)
        self._schedule_receipts(batch)
        await self._hang(request)
        return self._drop(request)  # no answer, not even when the server closes

    def _take(
        self, messages: list[dict[str, Any]], callback: str | None
    ) -> tuple[list[dict[str, Any]], list[SentMessage]]:
        """Per-message results, and the newly taken messages."""
        results: list[dict[str, Any]] = []
        batch: list[SentMessage] = []
        for m in messages:
            known = self.sent.get(m["id"])
            if known is not None:
                self.duplicates += 1
                results.append(
                    {"id": m["id"], "status": "accepted", "message_id": known.message_id}
                )
            elif m["to"] in self.reject_phones:
                results.append({"id": m["id"], "status": "rejected", "error": "invalid number"})
            else:
                sent = self._new_message(m)
                self._callback_of[sent.key] = callback
                self._record(sent)
                batch.append(sent)
                results.append({"id": m["id"], "status": "accepted", "message_id": sent.message_id})
        return results, batch

    def _new_message(self, m: Mapping[str, Any]) -> SentMessage:
        self._next_id += 1
        return SentMessage(
            key=m["id"],
            out_id=m["id"],
            job=self._job_of(m["id"]),
            phone=m["to"],
            text=m["text"],
            segments=m["segments"],
            message_id=f"gm-{self._next_id}",
            sent_at=self.clock(),
        )

    async def _status(self, request: web.Request) -> web.Response:
        if not self._authorised(request):
            return web.json_response({"error": "bad credentials"}, status=401)
        ids = request.query.getall("id", [])
        if not ids or len(ids) > MAX_STATUS_IDS:
            return web.json_response({"error": f"1 to {MAX_STATUS_IDS} ids"}, status=400)
        rows = []
        for identifier in ids:
            sent = self.sent.get(identifier)
            rows.append({"id": identifier, "status": sent.state if sent else "not_found"})
        return web.json_response({"messages": rows})

    def _receipt_url(self, batch: list[SentMessage]) -> str | None:
        return self._callback_of.get(batch[0].key) or self.callback_url

    def _receipt_request(self, batch: list[SentMessage]) -> tuple[bytes, dict[str, str]]:
        receipts: list[dict[str, Any]] = []
        at = self.clock().isoformat()
        for sent in batch:
            parts = range(1, sent.segments + 1) if self.parts_receipts else [sent.segments]
            for part in parts:
                receipt: dict[str, Any] = {
                    "id": sent.out_id,
                    "message_id": sent.message_id,
                    "status": sent.state,
                    "part": part,
                    "parts": sent.segments,
                    "at": at,
                }
                if sent.state == "failed":
                    receipt["error"] = "UNDELIV"
                receipts.append(receipt)
        if self.parts_receipts:
            self.random.shuffle(receipts)
        body = json.dumps({"receipts": receipts}, ensure_ascii=False).encode()
        timestamp = str(int(time.time()))
        return body, {
            "Content-Type": "application/json",
            "X-Ebd-Timestamp": timestamp,
            "X-Ebd-Signature": receipt_signature(self._signing_secret, timestamp, body),
        }


def _throttled(retry_after: float) -> web.Response:
    return web.json_response(
        {"error": "throttled"}, status=429, headers={"Retry-After": f"{retry_after:.3f}"}
    )


def _generic_payload(raw: bytes) -> tuple[list[dict[str, Any]], str | None]:
    """The messages and callback URL of a submit; ValueError says what is wrong."""
    try:
        payload = json.loads(raw)
    except ValueError:
        raise ValueError("body is not JSON") from None
    if not isinstance(payload, dict) or not isinstance(payload.get("messages"), list):
        raise ValueError('expected {"messages": [...]}')
    callback = payload.get("callback_url")
    if callback is not None and not isinstance(callback, str):
        raise ValueError("callback_url must be a string or null")
    messages: list[dict[str, Any]] = payload["messages"]
    for index, m in enumerate(messages):
        ok = (
            isinstance(m, dict)
            and isinstance(m.get("id"), str)
            and isinstance(m.get("to"), str)
            and m["to"].startswith("+")
            and isinstance(m.get("text"), str)
            and isinstance(m.get("segments"), int)
            and m["segments"] >= 1
        )
        if not ok:
            raise ValueError(f"message {index}: needs id, to (+E.164), text and segments >= 1")
    return messages, callback


# -- aliyun ---------------------------------------------------------------------------------


class AliyunGatewayServer(GatewayServer):
    """Aliyun Dysmsapi's ``SendSms`` and ``QuerySendDetails`` at ``/``, RPC style.

    Every request's ``Signature`` is recomputed from its parameters with
    ``access_key_secret``: a mismatch is answered ``SignatureDoesNotMatch`` (HTTP 400), an
    unknown ``AccessKeyId`` ``InvalidAccessKeyId.NotFound`` (404), a reused nonce
    ``SignatureNonceUsed`` and a timestamp 15 minutes off ``InvalidTimeStamp.Expired``. Only
    ``template_code`` is accepted as TemplateCode. Messages are deduplicated by
    (OutId, phone).
    """

    protocol = "aliyun"
    path = "/"

    def __init__(
        self,
        *,
        access_key_id: str = DEFAULT_ACCESS_KEY_ID,
        access_key_secret: str = DEFAULT_ACCESS_KEY_SECRET,
        template_code: str = DEFAULT_TEMPLATE,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.access_key_id = access_key_id
        self.access_key_secret = access_key_secret
        self.template_code = template_code
        self.queries = 0  # QuerySendDetails requests
        self._nonces: set[str] = set()
        self._next_biz = 900000000000000000

    def _settings_fields(self) -> dict[str, Any]:
        return {
            "access_key_id": self.access_key_id,
            "access_key_secret": self.access_key_secret,
            "template_code": self.template_code,
        }

    def _routes(self, app: web.Application) -> None:
        app.router.add_route("*", self.path, self._rpc)

    async def _rpc(self, request: web.Request) -> web.StreamResponse:
        if request.method == "POST":
            params = {k: str(v) for k, v in (await request.post()).items()}
        else:
            params = dict(request.query)
        action = params.get("Action")
        if action == "SendSms":
            self.requests += 1
        elif action == "QuerySendDetails":
            self.queries += 1
        refusal = self._check_request(request.method, params)
        if refusal is not None:
            return refusal
        if action == "SendSms":
            return await self._send_sms(request, params)
        if action == "QuerySendDetails":
            return self._query(params)
        return _aliyun_error("InvalidAction.NotFound", f"no action {action!r}", status=404)

    def _check_request(self, method: str, params: dict[str, str]) -> web.Response | None:
        """The RPC checks every real Aliyun request passes before its action runs."""
        missing = [
            name
            for name in (
                "AccessKeyId",
                "Action",
                "Format",
                "SignatureMethod",
                "SignatureNonce",
                "SignatureVersion",
                "Timestamp",
                "Version",
                "Signature",
            )
            if not params.get(name)
        ]
        if missing:
            return _aliyun_error("MissingParameter", f"missing {', '.join(missing)}")
        if params["AccessKeyId"] != self.access_key_id:
            return _aliyun_error(
                "InvalidAccessKeyId.NotFound", "Specified access key is not found.", status=404
            )
        expected = rpc_signature(params, self.access_key_secret, method)
        if params["Signature"] != expected:
            return _aliyun_error(
                "SignatureDoesNotMatch",
                "Specified signature is not matched with our calculation. "
                f"server string to sign is:{string_to_sign(params, method)}",
            )
        if params["Version"] != API_VERSION or params["SignatureMethod"] != "HMAC-SHA1":
            return _aliyun_error("InvalidVersion", "Specified parameter Version is not valid.")
        try:
            stamp = datetime.strptime(params["Timestamp"], "%Y-%m-%dT%H:%M:%SZ")
        except ValueError:
            return _aliyun_error("InvalidTimeStamp.Format", "Specified time stamp is not valid.")
        if abs(stamp.replace(tzinfo=UTC) - datetime.now(UTC)) > _TIMESTAMP_SKEW:
            return _aliyun_error("InvalidTimeStamp.Expired", "Specified time stamp is expired.")
        if params["SignatureNonce"] in self._nonces:
            return _aliyun_error("SignatureNonceUsed", "Specified signature nonce was used.")
        self._nonces.add(params["SignatureNonce"])
        return None

    async def _send_sms(self, request: web.Request, params: dict[str, str]) -> web.StreamResponse:
        invalid = self._invalid_send(params)
        if invalid is not None:
            return invalid
        phones = [e164_phone(p) for p in params["PhoneNumbers"].split(",")]
        job = params.get("OutId", "")
        text = f"【{params['SignName']}】{json.loads(params['TemplateParam'])['content']}"
        if self.latency:
            await asyncio.sleep(self.latency)
        fault = self._take_fault()
        if fault is not None:
            return await self._fault(request, fault, job, phones, text)
        if any(p in self.reject_phones for p in phones):
            return _aliyun_error("isv.MOBILE_NUMBER_ILLEGAL", "非法手机号", status=200)
        new = [p for p in phones if (job, p) not in self.sent]
        if self._admit(len(new)) is not None:
            return _business_limit()
        biz_id, batch = self._take(job, phones, text)
        body = {"Code": "OK", "Message": "OK", "BizId": biz_id, "RequestId": _request_id()}
        return await self._answer_then_receipts(request, web.json_response(body), batch)

    def _invalid_send(self, params: Mapping[str, str]) -> web.Response | None:
        numbers = params.get("PhoneNumbers", "")
        if not numbers or not all(p.isdigit() for p in numbers.split(",")):
            return _aliyun_error("isv.MOBILE_NUMBER_ILLEGAL", "非法手机号", status=200)
        if not params.get("SignName"):
            return _aliyun_error("isv.SMS_SIGNATURE_ILLEGAL", "签名不合法", status=200)
        if params.get("TemplateCode") != self.template_code:
            return _aliyun_error("isv.SMS_TEMPLATE_ILLEGAL", "模板不合法", status=200)
        try:
            content = json.loads(params.get("TemplateParam", ""))["content"]
        except (ValueError, KeyError, TypeError):
            content = None
        if not isinstance(content, str):
            return _aliyun_error("isv.TEMPLATE_MISSING_PARAMETERS", "模板缺少变量", status=200)
        return None

    async def _fault(
        self, request: web.Request, fault: FaultKind, job: str, phones: list[str], text: str
    ) -> web.StreamResponse:
        if fault == "500":
            return _aliyun_error("InternalError", "injected failure", status=500)
        if fault == "400":
            return _aliyun_error("isv.INVALID_PARAMETERS", "injected bad request", status=400)
        if fault == "throttle":
            return _business_limit()
        if fault == "drop_connection":
            return self._drop(request)
        _, batch = self._take(job, phones, text)
        self._schedule_receipts(batch)
        await self._hang(request)
        return self._drop(request)

    def _take(self, job: str, phones: list[str], text: str) -> tuple[str, list[SentMessage]]:
        self._next_biz += 1
        biz_id = f"{self._next_biz}^0"
        batch: list[SentMessage] = []
        for phone in phones:
            if (job, phone) in self.sent:
                self.duplicates += 1
                continue
            sent = SentMessage(
                key=(job, phone),
                out_id=out_id(job, phone),
                job=job,
                phone=phone,
                text=text,
                segments=aliyun_segments(text),
                message_id=biz_id,
                sent_at=self.clock(),
            )
            self._record(sent)
            batch.append(sent)
        return biz_id, batch

    def _query(self, params: Mapping[str, str]) -> web.Response:
        try:
            phone = e164_phone(params["PhoneNumber"])
            day = datetime.strptime(params["SendDate"], "%Y%m%d").date()
            size = int(params.get("PageSize", "10"))
            page = int(params.get("CurrentPage", "1"))
        except (KeyError, ValueError):
            return _aliyun_error("isv.INVALID_PARAMETERS", "参数异常")
        if not 1 <= size <= 50 or page < 1:
            return _aliyun_error("isv.INVALID_PARAMETERS", "PageSize 1..50, CurrentPage >= 1")
        rows = [
            s
            for s in self.sent.values()
            if s.phone == phone
            and s.sent_at.astimezone(SHANGHAI).date() == day
            and params.get("BizId") in (None, "", s.message_id)
        ]
        rows.sort(key=lambda s: s.sent_at)
        shown = rows[(page - 1) * size : page * size]
        return web.json_response(
            {
                "Code": "OK",
                "Message": "OK",
                "RequestId": _request_id(),
                "TotalCount": len(rows),
                "SmsSendDetailDTOs": {"SmsSendDetailDTO": [_detail(s) for s in shown]},
            }
        )

    def _receipt_request(self, batch: list[SentMessage]) -> tuple[bytes, dict[str, str]]:
        now = _local(self.clock())
        reports = [
            {
                "phone_number": aliyun_phone(s.phone),
                "send_time": _local(s.sent_at),
                "report_time": now,
                "success": s.state == "delivered",
                "err_code": "DELIVERED" if s.state == "delivered" else "UNDELIV",
                "err_msg": "用户接收成功" if s.state == "delivered" else "用户接收失败",
                "sms_size": str(s.segments),
                "biz_id": s.message_id,
                "out_id": s.job,
            }
            for s in batch
        ]
        body = json.dumps(reports, ensure_ascii=False).encode()
        return body, {
            "Content-Type": "application/json",
            "X-Sms-Signature": report_signature(self._signing_secret, body),
        }


def _detail(s: SentMessage) -> dict[str, Any]:
    status = {"accepted": 1, "failed": 2, "delivered": 3}[s.state]
    return {
        "PhoneNum": aliyun_phone(s.phone),
        "SendStatus": status,
        "ErrCode": {1: "", 2: "UNDELIV", 3: "DELIVERED"}[status],
        "TemplateCode": "",
        "Content": s.text,
        "SendDate": _local(s.sent_at),
        "ReceiveDate": "" if status == 1 else _local(s.sent_at),
        "OutId": s.job,
    }


def _local(at: datetime) -> str:
    return at.astimezone(SHANGHAI).strftime(_SEND_DATE_FORMAT)


def _request_id() -> str:
    return str(uuid.uuid4()).upper()


def _aliyun_error(code: str, message: str, *, status: int = 400) -> web.Response:
    body = {"Code": code, "Message": message, "RequestId": _request_id()}
    return web.json_response(body, status=status, dumps=lambda o: json.dumps(o, ensure_ascii=False))


def _business_limit() -> web.Response:
    return _aliyun_error("isv.BUSINESS_LIMIT_CONTROL", "触发分钟级流控Permits:1", status=200)
