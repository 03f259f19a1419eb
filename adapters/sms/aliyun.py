"""The Aliyun adapter, modelled on Dysmsapi ``SendSms`` / ``QuerySendDetails`` (2017-05-25).

Requests are RPC style: form-encoded common parameters plus the action's, signed with
signature v1 (HMAC-SHA1 over the sorted, percent-encoded parameters). One ``SendSms`` takes a
list of numbers that share one text, and Aliyun answers for the whole list: one bad number
rejects the batch, which is why the engine validates numbers before it sends.

The text goes through a template whose only variable ``${content}`` carries the message body;
the signature (``SignName``) is put in front by Aliyun, so the handset shows ``【签名】body``.
Receipts follow Aliyun's SmsReport HTTP push, one report per message.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import uuid
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, date, datetime, timedelta
from typing import Any, Final
from urllib.parse import quote
from zoneinfo import ZoneInfo

import structlog

from adapters.sms.gateway import (
    MAX_PARTS,
    DeliveryStatus,
    Message,
    Receipt,
    SubmitResult,
    SubmitStatus,
    out_id,
    part_number,
)
from adapters.sms.http import (
    HttpAnswer,
    HttpFailure,
    HttpGateway,
    decode_json,
    error_text,
    get_header,
    log_submit,
    results_for_all,
    signature_matches,
)
from adapters.sms.settings import GatewaySettings
from dispatcher.core.errors import ReceiptMalformed, ReceiptRejected
from dispatcher.core.masking import mask_phones

log = structlog.get_logger(__name__)

__all__ = [
    "API_VERSION",
    "SHANGHAI",
    "AliyunGateway",
    "aliyun_phone",
    "canonical_query",
    "e164_phone",
    "percent_encode",
    "report_signature",
    "rpc_signature",
    "string_to_sign",
]

API_VERSION: Final = "2017-05-25"
REGION_ID: Final = "cn-hangzhou"
SHANGHAI: Final = ZoneInfo("Asia/Shanghai")
SIGNATURE_HEADER: Final = "X-Sms-Signature"
PAGE_SIZE: Final = 50
# A person gets at most a few dozen texts a day from us; this only stops a runaway loop.
MAX_PAGES: Final = 20
_TIME_FORMAT: Final = "%Y-%m-%dT%H:%M:%SZ"
_REPORT_TIME_FORMAT: Final = "%Y-%m-%d %H:%M:%S"

# Codes that mean "not now": Aliyun did not take the batch and will later.
_RETRY_CODES: Final = frozenset(
    {"isv.BUSINESS_LIMIT_CONTROL", "ServiceUnavailable", "InternalError", "SystemBusy"}
)
_RETRY_PREFIXES: Final = ("isp.", "Throttling")
# QuerySendDetails' SendStatus.
_SEND_STATUS: Final = {
    1: DeliveryStatus.ACCEPTED,
    2: DeliveryStatus.FAILED,
    3: DeliveryStatus.DELIVERED,
}


def percent_encode(value: str) -> str:
    """RFC 3986 encoding of UTF-8 as Aliyun signs it: only ``A-Za-z0-9-_.~`` stay as they are,
    so a space is ``%20``, ``*`` is ``%2A`` and ``/`` is ``%2F``."""
    return quote(value, safe="~")


def canonical_query(params: Mapping[str, str]) -> str:
    """The sorted ``key=value`` pairs, each side percent-encoded, ``Signature`` left out."""
    pairs = sorted((k, v) for k, v in params.items() if k != "Signature")
    return "&".join(f"{percent_encode(k)}={percent_encode(v)}" for k, v in pairs)


def string_to_sign(params: Mapping[str, str], method: str = "POST") -> str:
    return f"{method.upper()}&{percent_encode('/')}&{percent_encode(canonical_query(params))}"


def rpc_signature(params: Mapping[str, str], secret: str, method: str = "POST") -> str:
    """Aliyun RPC signature v1: base64(HMAC-SHA1(secret + "&", StringToSign))."""
    digest = hmac.new(
        (secret + "&").encode(), string_to_sign(params, method).encode(), hashlib.sha1
    ).digest()
    return base64.b64encode(digest).decode()


def report_signature(secret: str, body: bytes) -> str:
    """The ``X-Sms-Signature`` of a receipt push: base64(HMAC-SHA1(secret, body))."""
    return base64.b64encode(hmac.new(secret.encode(), body, hashlib.sha1).digest()).decode()


def aliyun_phone(phone: str) -> str:
    """``+8613800138000`` → ``13800138000``; other countries ``+4915…`` → ``004915…``."""
    if not phone.startswith("+") or not phone[1:].isdigit():
        raise ValueError("not an E.164 number")
    if phone.startswith("+86"):
        return phone[3:]
    return "00" + phone[1:]


def e164_phone(number: str) -> str:
    """The inverse of ``aliyun_phone``, also taking ``86…`` and ``+…`` forms gateways use."""
    number = number.strip().replace(" ", "").replace("-", "")
    if number.startswith("+"):
        return number
    if number.startswith("00"):
        return "+" + number[2:]
    if len(number) == 13 and number.startswith("861"):
        return "+" + number
    return "+86" + number


class AliyunGateway(HttpGateway):
    """A gateway speaking Aliyun Dysmsapi.

    ``callback_url`` is kept for symmetry only: Aliyun's receipt address is configured in its
    console, not per request. ``clock`` gives the time whose Shanghai date a lookup's
    ``SendDate`` is (tests move it across midnight); ``query_concurrency`` bounds the
    ``QuerySendDetails`` calls in flight (default: the gateway's ``concurrency``).
    """

    def __init__(
        self,
        settings: GatewaySettings,
        callback_url: str | None = None,
        *,
        clock: Callable[[], datetime] | None = None,
        query_concurrency: int | None = None,
    ) -> None:
        super().__init__(settings, callback_url)
        self._clock = clock or (lambda: datetime.now(UTC))
        self.query_concurrency = query_concurrency or settings.concurrency

    # -- signing ---------------------------------------------------------------------------

    def _signed(self, action: str, params: Mapping[str, str]) -> dict[str, str]:
        s = self.settings
        form = {
            "AccessKeyId": s.access_key_id or "",
            "Action": action,
            "Format": "JSON",
            "RegionId": REGION_ID,
            "SignatureMethod": "HMAC-SHA1",
            "SignatureNonce": str(uuid.uuid4()),
            "SignatureVersion": "1.0",
            # The real time even under a test clock: Aliyun refuses a stale Timestamp.
            "Timestamp": datetime.now(UTC).strftime(_TIME_FORMAT),
            "Version": API_VERSION,
            **params,
        }
        form["Signature"] = rpc_signature(form, s.access_key_secret or "")
        return form

    # -- SendSms ---------------------------------------------------------------------------

    async def submit(self, messages: Sequence[Message]) -> list[SubmitResult]:
        if not messages:
            return []
        form = self._signed("SendSms", self._send_params(messages))
        answer = await self._exchange("POST", self.settings.url, data=form)
        results = self._results(messages, answer)
        log_submit(self.name, results)
        return results

    def _send_params(self, messages: Sequence[Message]) -> dict[str, str]:
        first = messages[0]
        for m in messages[1:]:
            # One SendSms carries one OutId, one SignName and one text for every number.
            if (m.job_id, m.signature, m.body) != (first.job_id, first.signature, first.body):
                raise ValueError("an aliyun batch must share job, signature and body")
        return {
            "PhoneNumbers": ",".join(aliyun_phone(m.phone) for m in messages),
            "SignName": first.signature,
            "TemplateCode": self.settings.template_code or "",
            "TemplateParam": json.dumps(
                {"content": first.body}, ensure_ascii=False, separators=(",", ":")
            ),
            "OutId": first.job_id,
        }

    def _results(
        self, messages: Sequence[Message], answer: HttpAnswer | HttpFailure
    ) -> list[SubmitResult]:
        if isinstance(answer, HttpFailure):
            return results_for_all(messages, answer.status, error=answer.error)
        if answer.status >= 500 or answer.status in (408, 429):
            return results_for_all(messages, SubmitStatus.RETRY, error=error_text(answer))
        body = decode_json(answer.body)
        if not isinstance(body, dict) or not isinstance(body.get("Code"), str):
            # A 2xx may mean Aliyun took the batch; anything else it did not.
            status = SubmitStatus.UNKNOWN if answer.status < 300 else SubmitStatus.REJECTED
            return results_for_all(messages, status, error=error_text(answer))
        code: str = body["Code"]
        if code == "OK":
            biz_id = body.get("BizId")
            return [
                SubmitResult(
                    m.out_id,
                    SubmitStatus.ACCEPTED,
                    message_id=None if biz_id is None else str(biz_id),
                )
                for m in messages
            ]
        error = mask_phones(f"{code}: {body.get('Message', '')}".rstrip(": "))
        return results_for_all(messages, _code_status(code), error=error)

    # -- QuerySendDetails ------------------------------------------------------------------

    async def query(self, messages: Sequence[Message]) -> dict[str, DeliveryStatus]:
        by_phone: dict[str, list[Message]] = {}
        for m in messages:
            by_phone.setdefault(m.phone, []).append(m)
        limit = asyncio.Semaphore(self.query_concurrency)
        found: dict[str, DeliveryStatus] = {}

        async def one(phone: str, group: list[Message]) -> None:
            async with limit:
                statuses = await self._query_phone(phone, {m.job_id for m in group})
            for m in group:
                if m.job_id in statuses:
                    found[m.out_id] = statuses[m.job_id]

        await asyncio.gather(*(one(phone, group) for phone, group in by_phone.items()))
        return found

    async def _query_phone(self, phone: str, jobs: set[str]) -> dict[str, DeliveryStatus]:
        """Each job's status for one phone; a job left out could not be told.

        The adapter does not know when a message was sent, so a job missing from today's list
        is looked for on the previous day too (a message sent at 23:59 is filed under that
        day); only when both lists were read and neither has it is it NOT_FOUND.
        """
        today = self._clock().astimezone(SHANGHAI).date()
        rows: dict[str, list[int]] = {}
        for day in (today, today - timedelta(days=1)):
            day_rows = await self._details(phone, day)
            if day_rows is None:
                return _combine(rows)
            for job, status in day_rows:
                if job in jobs:
                    rows.setdefault(job, []).append(status)
            if rows.keys() >= jobs:
                break
        combined = _combine(rows)
        for job in jobs - combined.keys():
            combined[job] = DeliveryStatus.NOT_FOUND
        return combined

    async def _details(self, phone: str, day: date) -> list[tuple[str, int]] | None:
        """(OutId, SendStatus) of every message to ``phone`` on ``day``; None if unreadable."""
        rows: list[tuple[str, int]] = []
        for page in range(1, MAX_PAGES + 1):
            params = {
                "PhoneNumber": aliyun_phone(phone),
                "SendDate": day.strftime("%Y%m%d"),
                "PageSize": str(PAGE_SIZE),
                "CurrentPage": str(page),
            }
            answer = await self._exchange(
                "POST", self.settings.url, data=self._signed("QuerySendDetails", params)
            )
            parsed = self._details_page(answer)
            if parsed is None:
                return None
            page_rows, total = parsed
            rows.extend(page_rows)
            if not page_rows or page * PAGE_SIZE >= total:
                return rows
        return rows

    def _details_page(
        self, answer: HttpAnswer | HttpFailure
    ) -> tuple[list[tuple[str, int]], int] | None:
        if isinstance(answer, HttpFailure):
            log.warning("sms.gateway.query_failed", gateway=self.name, error=answer.error)
            return None
        body = decode_json(answer.body)
        if not isinstance(body, dict) or body.get("Code") != "OK":
            log.warning("sms.gateway.query_failed", gateway=self.name, error=error_text(answer))
            return None
        dtos = body.get("SmsSendDetailDTOs") or {}
        items = dtos.get("SmsSendDetailDTO") if isinstance(dtos, dict) else None
        if not isinstance(items, list):
            items = []
        rows: list[tuple[str, int]] = []
        for item in items:
            if not isinstance(item, dict):
                continue
            try:
                rows.append((str(item["OutId"]), int(item["SendStatus"])))
            except (KeyError, TypeError, ValueError):
                continue
        try:
            total = int(body.get("TotalCount", len(rows)))
        except (TypeError, ValueError):
            total = len(rows)
        return rows, total

    # -- receipts --------------------------------------------------------------------------

    def parse_receipts(self, *, url: str, headers: Mapping[str, str], body: bytes) -> list[Receipt]:
        signature = get_header(headers, SIGNATURE_HEADER)
        if not signature:
            raise ReceiptRejected(f"missing {SIGNATURE_HEADER}")
        expected = report_signature(self.settings.callback_secret, body)
        if not signature_matches(expected, signature):
            raise ReceiptRejected("bad signature")
        rows = decode_json(body)
        if not isinstance(rows, list):
            raise ReceiptMalformed("expected a JSON array of reports")
        receipts: list[Receipt] = []
        for index, row in enumerate(rows):
            receipt = _report(row, index)
            if receipt is not None:
                receipts.append(receipt)
        if len(receipts) < len(rows):
            log.warning(
                "sms.gateway.foreign_receipts", gateway=self.name, count=len(rows) - len(receipts)
            )
        return receipts

    def receipt_answer(self) -> tuple[int, str, bytes]:
        body = json.dumps({"code": 0, "msg": "成功"}, ensure_ascii=False).encode()
        return 200, "application/json", body

    def receipt_replay_key(self, headers: Mapping[str, str]) -> tuple[str, float]:
        # Aliyun signs the body only, with no timestamp: the same body is the same push.
        # Remembered for a day, longer than Aliyun retries a push or an alert lives.
        return (get_header(headers, SIGNATURE_HEADER) or "").strip(), 86400.0


def _code_status(code: str) -> SubmitStatus:
    if code in _RETRY_CODES or code.startswith(_RETRY_PREFIXES):
        return SubmitStatus.RETRY
    # isv.* (bad number, no balance, bad signature or template), SignatureDoesNotMatch,
    # InvalidAccessKeyId.NotFound and anything unknown: sending the same again cannot help.
    return SubmitStatus.REJECTED


def _combine(rows: Mapping[str, list[int]]) -> dict[str, DeliveryStatus]:
    """One status per job; a resent message has several rows and the best one counts."""
    combined: dict[str, DeliveryStatus] = {}
    for job, statuses in rows.items():
        if 3 in statuses:
            combined[job] = DeliveryStatus.DELIVERED
        elif 1 in statuses:
            combined[job] = DeliveryStatus.ACCEPTED
        elif 2 in statuses:
            combined[job] = DeliveryStatus.FAILED
    return combined


def _report(row: object, index: int) -> Receipt | None:
    """One SmsReport row as a Receipt; None for a row not sent by this engine (no out_id)."""
    if not isinstance(row, dict):
        raise ReceiptMalformed(f"report {index} is not an object")
    job = row.get("out_id")
    if not job:
        return None
    try:
        phone = e164_phone(str(row["phone_number"]))
        success = row["success"]
        size = row.get("sms_size")
        # Absent or empty: one part. Zero is no count a gateway sends, so it is refused.
        parts = part_number(1 if size is None or size == "" else size)
    except (KeyError, TypeError, ValueError) as exc:
        raise ReceiptMalformed(f"report {index}: missing or bad field ({exc})") from None
    if parts is None:
        raise ReceiptMalformed(
            f"report {index}: sms_size must be a whole number from 1 to {MAX_PARTS} "
            f"(got {str(row.get('sms_size'))[:40]!r})"
        )
    if not isinstance(success, bool) or not phone[1:].isdigit():
        raise ReceiptMalformed(f"report {index}: bad success, sms_size or phone_number")
    error = None
    if not success:
        error = mask_phones(f"{row.get('err_code') or ''} {row.get('err_msg') or ''}".strip())
    return Receipt(
        out_id=out_id(str(job), phone),
        status=DeliveryStatus.DELIVERED if success else DeliveryStatus.FAILED,
        part=parts,
        parts=parts,
        message_id=None if row.get("biz_id") is None else str(row["biz_id"]),
        error=error or None,
        at=_report_time(row.get("report_time"), index),
    )


def _report_time(value: Any, index: int) -> datetime | None:
    if not value:
        return None
    try:
        return datetime.strptime(str(value), _REPORT_TIME_FORMAT).replace(tzinfo=SHANGHAI)
    except ValueError:
        raise ReceiptMalformed(f"report {index}: bad report_time {str(value)[:40]!r}") from None
