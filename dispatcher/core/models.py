"""Pydantic models of what crosses the engine's edges: alerts (CAP 1.2-aligned), acks, terminals.

Pure: no I/O. The API, the dispatch worker, the ack ingester and the receiver share these, so an
alert means the same thing on every surface.
"""

from __future__ import annotations

import re
import secrets
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Annotated, Literal, Self

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
    model_validator,
)

from dispatcher.core.validation import speakable
from dispatcher.core.wire import ALERT_ID_PATTERN, TERMINAL_ID_PATTERN, AckState

MAX_AREAS = 500
MAX_REFERENCES = 20
MAX_EXPIRES_IN = 7 * 86400
MIN_EXPIRES_IN = 60
_EVENT_CODE = re.compile(r"^[0-9]{2}[A-Z][0-9]{2}$")
# ASCII digits only: \d would also take full-width ３５.
_REGION_CODE = re.compile(r"^[0-9]{2}([0-9]{2}([0-9]{2}([0-9]{3}([0-9]{3})?)?)?)?$")

AlertId = Annotated[str, StringConstraints(pattern=ALERT_ID_PATTERN)]
TerminalId = Annotated[str, StringConstraints(pattern=TERMINAL_ID_PATTERN)]
RegionCode = Annotated[str, StringConstraints(strip_whitespace=True, min_length=2, max_length=12)]


def well_formed_region(value: str) -> str:
    """A region field's check: 2, 4, 6, 9 or 12 ASCII digits (existence is the tree's job)."""
    if not _REGION_CODE.match(value):
        raise ValueError(f"region {value!r} is malformed: a code is 2, 4, 6, 9 or 12 digits")
    return value


# Bidi embeddings/overrides, isolates and marks: they make a text display in another order
# than it is read out or sent, so a warning could say what its reviewers did not see.
_BIDI = frozenset([*range(0x202A, 0x202F), *range(0x2066, 0x206A), 0x200E, 0x200F, 0x061C])


def _refused_char(ch: str, *, multiline: bool) -> bool:
    code = ord(ch)
    if multiline and ch in "\n\t":
        return False
    return code < 0x20 or 0x7F <= code <= 0x9F or code in _BIDI


def plain_text(value: str | None, *, multiline: bool) -> str | None:
    """An alert text's check: no C0/C1 control characters (but newline and tab where
    ``multiline``) and no bidi controls; the error names the first one as U+XXXX."""
    if value is None:
        return None
    for index, ch in enumerate(value):
        if _refused_char(ch, multiline=multiline):
            kind = "bidi control" if ord(ch) in _BIDI else "control"
            allowed = " (only newline and tab are allowed)" if multiline else ""
            raise ValueError(
                f"contains {kind} character U+{ord(ch):04X} at position {index}{allowed}; remove it"
            )
    return value


def utcnow() -> datetime:
    return datetime.now(UTC)


class Severity(StrEnum):
    """The four warning colours of Chinese early-warning signals (I red … IV blue)."""

    RED = "red"
    ORANGE = "orange"
    YELLOW = "yellow"
    BLUE = "blue"

    @property
    def cap(self) -> str:
        return _CAP_SEVERITY[self]

    @property
    def label_zh(self) -> str:
        return _SEVERITY_ZH[self]

    @classmethod
    def from_cap(cls, value: str) -> Severity:
        for severity, cap in _CAP_SEVERITY.items():
            if cap == value:
                return severity
        raise ValueError(f"CAP severity {value!r} has no warning colour")


_CAP_SEVERITY = {
    Severity.RED: "Extreme",
    Severity.ORANGE: "Severe",
    Severity.YELLOW: "Moderate",
    Severity.BLUE: "Minor",
}
_SEVERITY_ZH = {
    Severity.RED: "红色预警",
    Severity.ORANGE: "橙色预警",
    Severity.YELLOW: "黄色预警",
    Severity.BLUE: "蓝色预警",
}


class Status(StrEnum):
    ACTUAL = "actual"
    EXERCISE = "exercise"
    TEST = "test"


class MsgType(StrEnum):
    ALERT = "alert"
    UPDATE = "update"
    CANCEL = "cancel"


class Channel(StrEnum):
    LOUDSPEAKER = "loudspeaker"
    SMS = "sms"


SmsRole = Literal["village_head", "grid_worker", "duty_officer", "resident", "official"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class AlertRequest(_Strict):
    """What an office sends to ``POST /api/v1/alerts``."""

    # The OpenAPI document states _consistent's first rule: exactly one of them, not null.
    model_config = ConfigDict(
        json_schema_extra={
            "oneOf": [
                {"required": ["expires"], "properties": {"expires": {"type": "string"}}},
                {"required": ["expires_in"], "properties": {"expires_in": {"type": "integer"}}},
            ]
        }
    )

    event: str = Field(min_length=1, max_length=64, description="e.g. 台风 / typhoon")
    event_code: str | None = Field(
        default=None, description="GB/T 35561 event code, e.g. 11B01 (typhoon)"
    )
    severity: Severity
    headline: str = Field(min_length=1, max_length=120)
    text: str = Field(min_length=1, max_length=1000)
    instruction: str | None = Field(default=None, max_length=500)
    areas: list[RegionCode] = Field(min_length=1, max_length=MAX_AREAS)
    channels: list[Channel] = Field(default=[Channel.LOUDSPEAKER], min_length=1, max_length=4)
    expires: AwareDatetime | None = None
    expires_in: int | None = Field(default=None, ge=MIN_EXPIRES_IN, le=MAX_EXPIRES_IN)
    status: Status = Status.ACTUAL
    msg_type: MsgType = MsgType.ALERT
    references: list[AlertId] = Field(default=[], max_length=MAX_REFERENCES)
    repeat: int = Field(default=3, ge=1, le=10, description="times a terminal plays it")
    sms_text: str | None = Field(
        default=None, min_length=1, max_length=500, description="the SMS text, if not the alert's"
    )
    sms_roles: list[SmsRole] | None = Field(
        default=None, min_length=1, description="only recipients with these roles get the SMS"
    )
    speech_text: str | None = Field(
        default=None,
        min_length=1,
        max_length=1000,
        description="what the loudspeakers say instead of text and instruction, if not those",
    )
    recording: str | None = Field(
        default=None,
        pattern=r"^[0-9a-f]{64}$",
        description="the sha256 of a recording uploaded with POST /api/v1/audio: the "
        "loudspeakers play it instead of the engine's speech",
    )
    # Not part of the alert: what the sender saw before sending (dispatcher.core.approval).
    preview_id: str | None = Field(
        default=None,
        min_length=1,
        max_length=128,
        description="the preview_id of POST /api/v1/alerts?dry_run=1 with this body; a person "
        "must send it, and what is sent must still be what the preview showed",
    )

    @field_validator("event", "headline")
    @classmethod
    def _one_line(cls, value: str) -> str:
        plain_text(value, multiline=False)
        return value

    @field_validator("text", "instruction", "sms_text", "speech_text")
    @classmethod
    def _multiline(cls, value: str | None) -> str | None:
        return plain_text(value, multiline=True)

    @field_validator("headline", "text", "instruction", "speech_text")
    @classmethod
    def _spoken(cls, value: str | None) -> str | None:
        # The terminals read these out (docs/protocol.md, "What a terminal does").
        return speakable(value)

    @field_validator("event_code")
    @classmethod
    def _event_code(cls, value: str | None) -> str | None:
        if value is not None and not _EVENT_CODE.match(value):
            raise ValueError("event_code must be a GB/T 35561 code like 11B01 (typhoon)")
        return value

    @field_validator("areas")
    @classmethod
    def _areas(cls, value: list[str]) -> list[str]:
        bad = [code for code in value if not _REGION_CODE.match(code)]
        if bad:
            raise ValueError(
                f"malformed region codes {bad[:10]}: a code is 2, 4, 6, 9 or 12 digits"
            )
        return value

    @field_validator("channels")
    @classmethod
    def _channels(cls, value: list[Channel]) -> list[Channel]:
        return list(dict.fromkeys(value))

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if (self.expires is None) == (self.expires_in is None):
            raise ValueError("give exactly one of expires (ISO 8601 with offset) or expires_in")
        if self.expires is not None and self.expires <= utcnow():
            raise ValueError("expires must be in the future")
        if self.expires is not None and self.expires > utcnow() + timedelta(seconds=MAX_EXPIRES_IN):
            raise ValueError("expires must be at most 7 days ahead")
        if self.msg_type in (MsgType.UPDATE, MsgType.CANCEL) and not self.references:
            raise ValueError(
                f"msg_type {self.msg_type.value} must name the alert it replaces in references"
            )
        if self.msg_type is MsgType.ALERT and self.references:
            raise ValueError("references are for msg_type update or cancel")
        if (self.sms_text or self.sms_roles) and Channel.SMS not in self.channels:
            raise ValueError("sms_text and sms_roles need 'sms' in channels")
        if self.speech_text and Channel.LOUDSPEAKER not in self.channels:
            raise ValueError("speech_text needs 'loudspeaker' in channels")
        return self

    def expiry(self, sent: datetime) -> datetime:
        if self.expires is not None:
            return self.expires
        assert self.expires_in is not None  # noqa: S101  guaranteed by _consistent
        return sent + timedelta(seconds=self.expires_in)


class Alert(BaseModel):
    """An alert as stored and published; ``id`` is the CAP identifier."""

    model_config = ConfigDict(extra="forbid")

    id: AlertId
    sender: str
    sender_name: str
    sent: AwareDatetime
    status: Status
    msg_type: MsgType
    references: list[AlertId] = []
    event: str
    event_code: str | None = None
    severity: Severity
    headline: str
    text: str
    instruction: str | None = None
    expires: AwareDatetime
    areas: list[str]
    channels: list[Channel]
    repeat: int = 3
    sms_text: str | None = None
    sms_roles: list[SmsRole] | None = None
    # What the loudspeakers say instead of text and instruction (the SMS keeps sms_text/text).
    speech_text: str | None = None
    # An uploaded recording's sha256 (POST /api/v1/audio), played instead of the speech.
    recording: str | None = None

    @model_validator(mode="after")
    def _times(self) -> Self:
        if self.expires <= self.sent:
            raise ValueError("expires must be after sent")
        return self

    @classmethod
    def issue(
        cls,
        request: AlertRequest,
        *,
        office_id: str,
        office_name: str,
        areas: list[str],
        sent: datetime | None = None,
    ) -> Alert:
        sent = sent or utcnow()
        # Millisecond precision: what ISO strings, JSON clients and CAP carry without loss.
        sent = sent.replace(microsecond=sent.microsecond // 1000 * 1000)
        return cls(
            id=new_alert_id(office_id, sent),
            sender=office_id,
            sender_name=office_name,
            sent=sent,
            status=request.status,
            msg_type=request.msg_type,
            references=request.references,
            event=request.event,
            event_code=request.event_code,
            severity=request.severity,
            headline=request.headline,
            text=request.text,
            instruction=request.instruction,
            expires=request.expiry(sent),
            areas=areas,
            channels=request.channels,
            repeat=request.repeat,
            sms_text=request.sms_text,
            sms_roles=request.sms_roles,
            speech_text=request.speech_text,
            recording=request.recording,
        )

    def expired(self, now: datetime | None = None) -> bool:
        return self.expires <= (now or utcnow())

    @property
    def urgent(self) -> bool:
        """An actual red or orange warning (or its update or cancel): every queue of the
        engine serves these before drills, tests and lower colours."""
        return self.status is Status.ACTUAL and self.severity in (Severity.RED, Severity.ORANGE)

    def seconds_left(self, now: datetime | None = None) -> int:
        """Whole seconds until it expires: the MQTT 5 message expiry of what is sent, so the
        broker drops what a terminal could only get after the alert expired."""
        return int((self.expires - (now or utcnow())).total_seconds())


def new_alert_id(office_id: str, sent: datetime) -> str:
    """Unique, sortable by time, and readable: ``fj-province-20261127T051500Z-3f9a1c2b``."""
    stamp = sent.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")
    return f"{office_id}-{stamp}-{secrets.token_hex(4)}"


class CancelRequest(_Strict):
    reason: str | None = Field(default=None, max_length=200)

    @field_validator("reason")
    @classmethod
    def _reason(cls, value: str | None) -> str | None:
        return plain_text(value, multiline=True)


class Ack(BaseModel):
    """An acknowledgement as a terminal publishes it on ``eb/v1/term/{id}/ack``."""

    # Terminals in the field run many firmware versions: unknown keys are tolerated.
    model_config = ConfigDict(extra="ignore")

    v: Literal[1]
    alert_id: AlertId
    state: AckState
    at: AwareDatetime
    detail: str | None = Field(default=None, max_length=200)


class TerminalState(BaseModel):
    """The retained state a terminal publishes on ``eb/v1/term/{id}/state``."""

    model_config = ConfigDict(extra="ignore")

    v: Literal[1] = 1
    state: Literal["online", "offline"]
    region: str | None = None
    firmware: str | None = Field(default=None, max_length=64)
    at: AwareDatetime | None = None


class TerminalKind(StrEnum):
    LOUDSPEAKER = "loudspeaker"
    DISPLAY = "display"
    MONITOR = "monitor"


class TerminalIn(_Strict):
    """One terminal to register: ``POST /api/v1/terminals`` item and CSV row."""

    id: TerminalId
    region: RegionCode
    kind: TerminalKind = TerminalKind.LOUDSPEAKER

    @field_validator("region")
    @classmethod
    def _region(cls, value: str) -> str:
        return well_formed_region(value)
