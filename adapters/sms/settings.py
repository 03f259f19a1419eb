"""The SMS channel's settings: its gateways, pace, retries and who is texted."""

from __future__ import annotations

from typing import Literal, Self
from urllib.parse import urlsplit

from pydantic import Field, field_validator, model_validator

from dispatcher.core.config import Section


def _http_url(value: str | None) -> str | None:
    """``value`` if it is an http(s) URL with a host (or None); a ValueError otherwise."""
    if value is None:
        return None
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"must be an http(s) URL, got {value!r}")
    return value


class GatewaySettings(Section):
    """One SMS gateway account. Secrets may come from EBD_SMS__GATEWAYS (JSON) instead."""

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,31}$")
    protocol: Literal["generic", "aliyun"]
    url: str
    # Lower first; the next one takes over while one is failing.
    priority: int = Field(default=1, ge=0)
    # The rate the gateway contract allows; no 1-second window ever sees more than this.
    rate: float = Field(default=100.0, ge=1, le=100_000)
    batch_size: int = Field(default=100, ge=1, le=1000)
    concurrency: int = Field(default=4, ge=1, le=64)
    # Seconds to wait for the gateway's answer; after that the batch's fate is unknown.
    timeout: float = Field(default=10.0, gt=0, le=120)
    connect_timeout: float = Field(default=3.0, gt=0, le=60)
    # generic: a header sent with every request, e.g. "Authorization: Bearer …".
    auth_header: str | None = None
    auth_value: str | None = None
    # generic: where sent messages can be looked up by id (defaults to URL + "/status").
    status_url: str | None = None
    # aliyun: RPC credentials and the template whose one variable ${content} carries the text.
    access_key_id: str | None = None
    access_key_secret: str | None = None
    template_code: str | None = None
    # Receipts posted to /api/v1/sms/receipts/{name} must be signed with this.
    callback_secret: str = Field(min_length=16)

    @field_validator("url", "status_url")
    @classmethod
    def _http(cls, value: str | None) -> str | None:
        return _http_url(value)

    @model_validator(mode="after")
    def _protocol_fields(self) -> Self:
        if self.protocol == "aliyun":
            missing = [
                name
                for name in ("access_key_id", "access_key_secret", "template_code")
                if not getattr(self, name)
            ]
            if missing:
                raise ValueError(f"an aliyun gateway needs {', '.join(missing)}")
        if (self.auth_header is None) != (self.auth_value is None):
            raise ValueError("give auth_header and auth_value together")
        return self


class SmsSettings(Section):
    """The SMS channel: who gets texts, how fast, and how failures are handled."""

    gateways: list[GatewaySettings] = Field(default_factory=list)
    # The engine's address as the gateways see it, for receipt callbacks.
    callback_base: str | None = None
    # Longer texts are shortened (ending in …) to fit; carriers join at most this many parts.
    max_segments: int = Field(default=6, ge=1, le=10)
    # Texts one person may get per hour (red warnings and cancels are exempt); 0 = no limit.
    per_recipient_per_hour: int = Field(default=30, ge=0)
    # Tries of one message on retryable failures (throttled, 5xx, no connection).
    # With the defaults a message is tried for about four minutes of gateway trouble.
    max_attempts: int = Field(default=8, ge=1, le=20)
    backoff: float = Field(default=2.0, gt=0)
    backoff_max: float = Field(default=60.0, gt=0)
    # A gateway failing this many requests in a row is skipped for cooldown seconds.
    failover_after: int = Field(default=3, ge=1)
    cooldown: float = Field(default=30.0, gt=0)
    # An in-doubt send (no answer) is looked up at its gateway after this many seconds.
    settle_after: float = Field(default=30.0, gt=0)
    # A text a gateway took is looked up if no receipt came within this many seconds (a
    # receipt lost on the way, or posted to an instance that died), and again as often.
    receipt_wait: float = Field(default=600.0, gt=0)
    # Roles texted when a village's terminal fails its last resend; for drills, duty officers.
    # What the gateway contract charges per segment (yuan): the preview's cost estimate.
    cost_per_segment_yuan: float = Field(default=0.045, ge=0, le=100)
    escalation_roles: list[str] = Field(default_factory=lambda: ["village_head", "grid_worker"])
    exercise_roles: list[str] = Field(default_factory=lambda: ["duty_officer"])

    @field_validator("gateways")
    @classmethod
    def _unique(cls, value: list[GatewaySettings]) -> list[GatewaySettings]:
        names = [g.name for g in value]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"gateway names must be unique: {twice} appear twice")
        return value

    @field_validator("callback_base")
    @classmethod
    def _base(cls, value: str | None) -> str | None:
        url = _http_url(value)
        return None if url is None else url.rstrip("/")
