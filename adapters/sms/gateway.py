"""What every SMS gateway adapter offers the engine, and the values that cross that line.

An adapter speaks one gateway protocol: it makes one request per ``submit`` (a batch of at most
the gateway's ``batch_size`` messages, all of one job and one text), looks messages up with
``query``, and reads the gateway's delivery receipts. It never retries, throttles or fails
over: the SMS worker does, because only it knows what was already accepted.

Its one hard rule is to tell "the gateway did not take it" (``RETRY``: throttled, 5xx, no
connection) from "we do not know" (``UNKNOWN``: the request went out and no answer came back).
A message in the second state may have reached the phone; sending it again would text a person
twice, so it waits for a receipt or a ``query`` instead.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Final, Protocol

from adapters.sms.settings import GatewaySettings


def recipient_key(phone: str) -> str:
    """A short stable key of an E.164 number: ids and logs carry it instead of the number."""
    return hashlib.sha256(phone.encode()).hexdigest()[:16]


# A concatenated text numbers its parts in one byte of its header, so none has more than 255.
MAX_PARTS: Final = 255


def part_number(value: object) -> int | None:
    """A part number or count in a receipt (an int, a whole float or a string of digits) if
    it is 1 to ``MAX_PARTS``; None for anything else (a bool, 1e400, Infinity, 10**400, "x"),
    so a hostile number is refused here and never reaches Redis."""
    if isinstance(value, bool):
        return None
    if isinstance(value, float):
        # NaN and the infinities are not integers either.
        value = int(value) if value.is_integer() and abs(value) <= MAX_PARTS else None
    elif isinstance(value, str):
        digits = value.strip()
        value = int(digits) if digits.isascii() and digits.isdigit() and len(digits) <= 3 else None
    if not isinstance(value, int):
        return None
    return value if 1 <= value <= MAX_PARTS else None


def out_id(job_id: str, phone: str) -> str:
    """The idempotency key of one message: its job (alert) and its recipient."""
    return f"{job_id}.{recipient_key(phone)}"


def split_out_id(value: str) -> tuple[str, str]:
    """(job id, recipient key) of an out-id; job ids may contain dots, keys never do."""
    job, sep, key = value.rpartition(".")
    if not sep or not job or len(key) != 16:
        raise ValueError(f"not an out-id of this engine: {value!r}")
    return job, key


@dataclass(frozen=True, slots=True)
class Message:
    job_id: str
    out_id: str
    phone: str  # E.164, e.g. +8613800138000
    signature: str  # without the brackets: 福建省应急管理厅
    body: str  # the text after the signature
    text: str  # what the handset shows: 【signature】body
    segments: int

    @property
    def key(self) -> str:
        """The recipient's key, the tail of the out-id."""
        return self.out_id.rpartition(".")[2]


class SubmitStatus(StrEnum):
    ACCEPTED = "accepted"  # the gateway took it; a receipt follows
    REJECTED = "rejected"  # permanent: bad number, blocked content; never sent again
    RETRY = "retry"  # the gateway did not take it (throttled, 5xx, no connection)
    UNKNOWN = "unknown"  # the request went out and no answer came: settle, never resend


@dataclass(frozen=True, slots=True)
class SubmitResult:
    out_id: str
    status: SubmitStatus
    message_id: str | None = None
    error: str | None = None
    # Seconds the gateway asked us to wait (Retry-After, a throttling answer).
    retry_after: float | None = None


class DeliveryStatus(StrEnum):
    ACCEPTED = "accepted"  # the gateway has it and no final receipt yet
    DELIVERED = "delivered"
    FAILED = "failed"
    NOT_FOUND = "not_found"  # the gateway never took it: safe to send again


@dataclass(frozen=True, slots=True)
class Receipt:
    out_id: str
    status: DeliveryStatus  # DELIVERED or FAILED
    part: int = 1
    parts: int = 1
    message_id: str | None = None
    error: str | None = None
    at: datetime | None = None


class SmsGateway(Protocol):
    name: str
    settings: GatewaySettings

    async def start(self) -> None:
        """Open connections; called once before the first request."""

    async def close(self) -> None: ...

    async def submit(self, messages: Sequence[Message]) -> list[SubmitResult]:
        """One request with these messages; one result per message, in order. Never raises
        for a gateway's answer or a network failure: those are results."""

    async def query(self, messages: Sequence[Message]) -> dict[str, DeliveryStatus]:
        """What the gateway knows of each message, by out-id; missing = could not tell."""

    def parse_receipts(self, *, url: str, headers: Mapping[str, str], body: bytes) -> list[Receipt]:
        """Check a receipt callback's authenticity and read it (raises ReceiptRejected or
        ReceiptMalformed)."""

    def receipt_answer(self) -> tuple[int, str, bytes]:
        """(status, content type, body) the gateway expects after a receipt was taken."""

    def receipt_replay_key(self, headers: Mapping[str, str]) -> tuple[str, float]:
        """What identifies a receipt post ``parse_receipts`` accepted (its signature), and for
        how many seconds to remember it: the same post again within them is a replay."""
