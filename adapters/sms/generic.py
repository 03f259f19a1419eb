"""The generic gateway adapter: our own JSON-over-HTTP protocol (``docs/sms-gateways.md``).

The generic protocol in short: ``POST {url}`` with a batch of messages, one result per message;
``GET {status_url}?id=…`` to look messages up; receipts ``POST``ed to us signed with
HMAC-SHA256 over a timestamp and the body.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Final

import structlog

from adapters.sms.gateway import (
    MAX_PARTS,
    DeliveryStatus,
    Message,
    Receipt,
    SubmitResult,
    SubmitStatus,
    part_number,
    split_out_id,
)
from adapters.sms.http import (
    HttpAnswer,
    HttpFailure,
    HttpGateway,
    decode_json,
    error_text,
    get_header,
    log_submit,
    parse_retry_after,
    results_for_all,
    signature_matches,
)
from dispatcher.core.errors import ReceiptMalformed, ReceiptRejected
from dispatcher.core.masking import mask_phones

log = structlog.get_logger(__name__)

__all__ = [
    "MAX_STATUS_IDS",
    "RECEIPT_MAX_AGE",
    "GenericGateway",
    "receipt_signature",
]

MAX_STATUS_IDS: Final = 100
# A receipt whose timestamp is further than this from our clock is refused: it is either a
# replay or the gateway's clock is badly wrong, and both need a person to look.
RECEIPT_MAX_AGE: Final = 300.0
TIMESTAMP_HEADER: Final = "X-Ebd-Timestamp"
SIGNATURE_HEADER: Final = "X-Ebd-Signature"


def receipt_signature(secret: str, timestamp: str, body: bytes) -> str:
    """The ``X-Ebd-Signature`` value of a generic receipt post."""
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return "sha256=" + digest.hexdigest()


class GenericGateway(HttpGateway):
    """A gateway speaking the generic JSON protocol.

    ``callback_url`` is sent with every batch so the gateway knows where receipts go.
    """

    def _default_headers(self) -> dict[str, str]:
        s = self.settings
        if s.auth_header and s.auth_value:
            return {s.auth_header: s.auth_value}
        return {}

    @property
    def status_url(self) -> str:
        return self.settings.status_url or self.settings.url.rstrip("/") + "/status"

    async def submit(self, messages: Sequence[Message]) -> list[SubmitResult]:
        if not messages:
            return []
        payload = {
            "messages": [
                {"id": m.out_id, "to": m.phone, "text": m.text, "segments": m.segments}
                for m in messages
            ],
            "callback_url": self.callback_url,
        }
        answer = await self._exchange("POST", self.settings.url, json_body=payload)
        results = self._results(messages, answer)
        log_submit(self.name, results)
        return results

    def _results(
        self, messages: Sequence[Message], answer: HttpAnswer | HttpFailure
    ) -> list[SubmitResult]:
        if isinstance(answer, HttpFailure):
            return results_for_all(messages, answer.status, error=answer.error)
        status = answer.status
        if 200 <= status < 300:
            return self._per_message(messages, answer)
        if status == 429:
            retry_after = parse_retry_after(get_header(answer.headers, "Retry-After"))
            return results_for_all(
                messages, SubmitStatus.RETRY, error=error_text(answer), retry_after=retry_after
            )
        # 408: the server gave up reading the request, so it did not take it.
        if status >= 500 or status == 408:
            return results_for_all(messages, SubmitStatus.RETRY, error=error_text(answer))
        # Anything else is a config problem (wrong URL, credentials, a payload the gateway will
        # never take): retrying cannot help, the engine reports it.
        body = decode_json(answer.body)
        detail = body.get("error") if isinstance(body, dict) else None
        return results_for_all(
            messages,
            SubmitStatus.REJECTED,
            error=error_text(answer, str(detail) if detail is not None else None),
        )

    def _per_message(self, messages: Sequence[Message], answer: HttpAnswer) -> list[SubmitResult]:
        body = decode_json(answer.body)
        rows = body.get("results") if isinstance(body, dict) else None
        if not isinstance(rows, list):
            # The gateway said 200, so it may well have taken the batch: in doubt.
            log.warning("sms.gateway.unreadable_answer", gateway=self.name, http=answer.status)
            return results_for_all(
                messages, SubmitStatus.UNKNOWN, error=error_text(answer, "unreadable")
            )
        by_id = {row["id"]: row for row in rows if isinstance(row, dict) and _has_str_id(row)}
        retry_after = parse_retry_after(get_header(answer.headers, "Retry-After"))
        results = [self._one(m, by_id.get(m.out_id), retry_after) for m in messages]
        missing = [m.out_id for m in messages if m.out_id not in by_id]
        if missing:
            log.warning(
                "sms.gateway.results_missing", gateway=self.name, count=len(missing), ids=missing
            )
        return results

    def _one(
        self, message: Message, row: Mapping[str, Any] | None, retry_after: float | None
    ) -> SubmitResult:
        if row is None:
            return SubmitResult(message.out_id, SubmitStatus.RETRY, error="not in the answer")
        status = row.get("status")
        message_id = _str_or_none(row.get("message_id"))
        error = _str_or_none(row.get("error"))
        error = mask_phones(error) if error else None
        if status == "accepted":
            return SubmitResult(message.out_id, SubmitStatus.ACCEPTED, message_id=message_id)
        if status == "rejected":
            return SubmitResult(message.out_id, SubmitStatus.REJECTED, error=error or "rejected")
        if status == "throttled":
            return SubmitResult(
                message.out_id,
                SubmitStatus.RETRY,
                error=error or "throttled",
                retry_after=retry_after,
            )
        # An answer we cannot read for a message the gateway did see: it may have taken it.
        return SubmitResult(
            message.out_id,
            SubmitStatus.UNKNOWN,
            message_id=message_id,
            error=f"unknown status {status!r}",
        )

    async def query(self, messages: Sequence[Message]) -> dict[str, DeliveryStatus]:
        ids = list(dict.fromkeys(m.out_id for m in messages))
        found: dict[str, DeliveryStatus] = {}
        for start in range(0, len(ids), MAX_STATUS_IDS):
            found.update(await self._query_chunk(ids[start : start + MAX_STATUS_IDS]))
        return found

    async def _query_chunk(self, ids: Sequence[str]) -> dict[str, DeliveryStatus]:
        answer = await self._exchange("GET", self.status_url, params=[("id", i) for i in ids])
        if isinstance(answer, HttpFailure) or answer.status != 200:
            error = answer.error if isinstance(answer, HttpFailure) else error_text(answer)
            log.warning("sms.gateway.query_failed", gateway=self.name, count=len(ids), error=error)
            return {}
        body = decode_json(answer.body)
        rows = body.get("messages") if isinstance(body, dict) else None
        if not isinstance(rows, list):
            log.warning("sms.gateway.query_unreadable", gateway=self.name, count=len(ids))
            return {}
        wanted = set(ids)
        found: dict[str, DeliveryStatus] = {}
        for row in rows:
            if not isinstance(row, dict) or row.get("id") not in wanted:
                continue
            try:
                found[row["id"]] = DeliveryStatus(str(row.get("status")))
            except ValueError:
                continue  # a status we do not know: we cannot tell, so leave it out
        return found

    def parse_receipts(self, *, url: str, headers: Mapping[str, str], body: bytes) -> list[Receipt]:
        self._check_signature(headers, body)
        data = decode_json(body)
        rows = data.get("receipts") if isinstance(data, dict) else None
        if not isinstance(rows, list):
            raise ReceiptMalformed('expected a JSON object {"receipts": [...]}')
        receipts = [_receipt(row, index) for index, row in enumerate(rows)]
        ours = [r for r in receipts if _is_ours(r.out_id)]
        if len(ours) < len(receipts):
            log.warning(
                "sms.gateway.foreign_receipts",
                gateway=self.name,
                count=len(receipts) - len(ours),
            )
        return ours

    def _check_signature(self, headers: Mapping[str, str], body: bytes) -> None:
        timestamp = get_header(headers, TIMESTAMP_HEADER)
        signature = get_header(headers, SIGNATURE_HEADER)
        if not timestamp or not signature:
            raise ReceiptRejected(f"missing {TIMESTAMP_HEADER} or {SIGNATURE_HEADER}")
        try:
            sent = float(timestamp)
        except ValueError:
            raise ReceiptRejected(f"bad {TIMESTAMP_HEADER}: {timestamp[:40]!r}") from None
        if not abs(time.time() - sent) <= RECEIPT_MAX_AGE:
            raise ReceiptRejected(f"{TIMESTAMP_HEADER} more than {RECEIPT_MAX_AGE:g} s off")
        expected = receipt_signature(self.settings.callback_secret, timestamp, body)
        if not signature_matches(expected, signature):
            raise ReceiptRejected("bad signature")

    def receipt_answer(self) -> tuple[int, str, bytes]:
        return 200, "application/json", b'{"ok": true}'

    def receipt_replay_key(self, headers: Mapping[str, str]) -> tuple[str, float]:
        # The signature covers timestamp and body, and a timestamp older than RECEIPT_MAX_AGE
        # is refused anyway: remembering it a little longer than twice that is enough.
        return (get_header(headers, SIGNATURE_HEADER) or "").strip(), 2 * RECEIPT_MAX_AGE + 60


def _receipt(row: object, index: int) -> Receipt:
    if not isinstance(row, dict):
        raise ReceiptMalformed(f"receipt {index} is not an object")
    try:
        status = DeliveryStatus(row["status"])
        identifier = row["id"]
    except (KeyError, ValueError) as exc:
        raise ReceiptMalformed(f"receipt {index}: missing or bad id/status ({exc})") from None
    if status not in (DeliveryStatus.DELIVERED, DeliveryStatus.FAILED) or not isinstance(
        identifier, str
    ):
        raise ReceiptMalformed(f"receipt {index}: status must be delivered or failed")
    parts = _part_number(row.get("parts", 1), index)
    # Without "part" the receipt is for the whole message.
    part = _part_number(row.get("part", parts), index)
    if part > parts:
        raise ReceiptMalformed(f"receipt {index}: part {part} of {parts}")
    return Receipt(
        out_id=identifier,
        status=status,
        part=part,
        parts=parts,
        message_id=_str_or_none(row.get("message_id")),
        error=mask_phones(str(row["error"])) if row.get("error") else None,
        at=_timestamp(row.get("at"), index),
    )


def _part_number(value: object, index: int) -> int:
    number = part_number(value)
    if number is None:
        raise ReceiptMalformed(
            f"receipt {index}: part and parts must be whole numbers from 1 to {MAX_PARTS} "
            f"(got {str(value)[:40]!r})"
        )
    return number


def _timestamp(value: object, index: int) -> datetime | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise ReceiptMalformed(f"receipt {index}: at must be an ISO-8601 string")
    try:
        at = datetime.fromisoformat(value)
    except ValueError:
        raise ReceiptMalformed(f"receipt {index}: bad time {value[:40]!r}") from None
    return at if at.tzinfo is not None else at.replace(tzinfo=UTC)


def _has_str_id(row: Mapping[str, Any]) -> bool:
    return isinstance(row.get("id"), str)


def _is_ours(value: str) -> bool:
    try:
        split_out_id(value)
    except ValueError:
        return False
    return True


def _str_or_none(value: object) -> str | None:
    return None if value is None else str(value)
