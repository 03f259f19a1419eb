"""The sections of the engine's settings that its own parts are given: pure pydantic models.

The root settings (``dispatcher.settings``) put these together with the features' own sections
(``adapters.sms.settings``, ``drills.settings``) and load them from TOML and ``EBD_`` variables;
each part is handed only its section.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from dispatcher.core.models import Severity

DEFAULT_REGIONS_FILE = Path("config/regions/fujian.csv")
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
# An alert id is the office id plus 26 characters and must fit in 80.
_OFFICE_ID = re.compile(r"^[a-z0-9][a-z0-9_-]{0,47}$")


def _sha256_hex(value: str, field: str) -> str:
    """A token's SHA-256 as 64 lowercase hex digits, the only form kept of a token."""
    value = value.strip().lower()
    if not _HEX64.match(value):
        raise ValueError(
            f"{field} must be 64 hex digits (the SHA-256 of the token); "
            "run `ebd offices token` to make a token and its hash"
        )
    return value


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ApiSettings(Section):
    listen: str = "127.0.0.1:8080"
    # A province's terminal list (17,498 rows) fits easily; anything far larger is a mistake.
    max_body_bytes: int = Field(default=4 * 1024 * 1024, ge=1024)
    # ``/metrics`` without a token (the default), or, when false or when a scraper token is
    # set, only with ``Authorization: Bearer`` the scraper token (its SHA-256 here) or a
    # province-level office's token.
    metrics_public: bool = True
    metrics_token_sha256: str | None = None
    # Failed authentications (bad or missing tokens) from one source address in a minute,
    # after which it gets 429 for a minute, whatever token it sends.
    auth_failures_per_minute: int = Field(default=20, ge=1, le=100_000)
    # How long a console sign-in lasts (the ``ebd_session`` cookie and its Redis record).
    session_hours: float = Field(default=12, gt=0, le=24 * 30)

    @field_validator("metrics_token_sha256")
    @classmethod
    def _metrics_hash(cls, value: str | None) -> str | None:
        return None if value is None else _sha256_hex(value, "metrics_token_sha256")

    @field_validator("listen")
    @classmethod
    def _host_port(cls, value: str) -> str:
        host, sep, port = value.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError("listen must be HOST:PORT, e.g. 127.0.0.1:8080")
        return value

    @property
    def host(self) -> str:
        return self.listen.rpartition(":")[0].strip("[]")

    @property
    def port(self) -> int:
        return int(self.listen.rpartition(":")[2])


def _check_url(value: str | None, schemes: tuple[str, ...]) -> str | None:
    if value is None or value == "":
        return None
    parts = urlsplit(value)
    # Never the URL itself in the message: it may carry a password.
    shown = f"{parts.scheme}://{parts.hostname or ''}"
    if parts.scheme not in schemes or not parts.hostname:
        raise ValueError(f"must be a URL like {schemes[0]}://HOST:PORT, got one like {shown}")
    try:
        _ = parts.port
    except ValueError as exc:
        raise ValueError(f"bad port in the URL of {shown}") from exc
    return value


class MqttSettings(Section):
    # The broker's engine listener: mqtt:// or mqtts:// (TLS), the engine account's user name
    # and password as userinfo or in ``password_file``. Unset: the embedded broker.
    url: str | None = None
    password_file: Path | None = None
    # TLS to the broker (mqtts://): the CA to verify it against (default: the system's) and a
    # client certificate if the broker asks for one.
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    # What terminals are given with their credentials: the broker's address for them (its TLS
    # listener) and the CA that signed its certificate.
    terminal_url: str | None = None
    terminal_ca_file: Path | None = None
    # The terminals' password file the engine writes, and how the broker learns of a change:
    # a SIGHUP to the pid in ``broker_pid_file``, or (unset) the broker's own watcher (see
    # docker-compose.yml). Unset ``accounts_file``: the deployment manages terminal accounts
    # itself and the engine issues none.
    accounts_file: Path | None = None
    broker_pid_file: Path | None = None
    # Defaults to the instance name: two instances must never share a client id (the broker
    # would disconnect one whenever the other connects).
    client_id: str | None = None
    # Days, so acks queued while the engine restarts wait for it in the broker.
    session_expiry: int = Field(default=7 * 86400, ge=60)
    keepalive: int = Field(default=30, ge=5, le=3600)
    publish_timeout: float = Field(default=30.0, gt=0)
    shared_subscription: bool = False

    @field_validator("url", "terminal_url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        return _check_url(value, ("mqtt", "mqtts", "tcp", "ssl"))


class RedisSettings(Section):
    # redis:// or rediss:// (TLS), the user and password as userinfo or the password in
    # ``password_file``. Unset (and no sentinels): the embedded Redis.
    url: str | None = None
    password_file: Path | None = None
    # Redis Sentinel instead of ``url`` (docs/redis-ha.md): the sentinels' HOST:PORT and the
    # name they monitor the primary under; the engine asks them where the primary is and
    # follows a failover. ``password_file`` is then the primary's and replicas' password,
    # ``sentinel_password_file`` the sentinels' own (their ``requirepass``), if they have one.
    sentinels: list[str] = Field(default_factory=list)
    sentinel_service: str | None = None
    # The ACL user the engine logs in to the primary and replicas as (with sentinels; a URL
    # carries its own); unset: Redis's default user.
    username: str | None = Field(default=None, min_length=1, max_length=128, pattern=r"^\S+$")
    sentinel_password_file: Path | None = None
    # Replicas that must have an accepted alert (and each recorded batch of acks) before the
    # API answers 201 (before the broker is told the acks are taken): Redis ``WAIT``. 0: none
    # asked, a 201 means the primary has it (and on disk, with the shipped appendfsync).
    replicas_ack: int = Field(default=0, ge=0, le=16)
    replicas_ack_timeout_ms: int = Field(default=500, ge=10, le=60_000)

    @field_validator("url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        return _check_url(value, ("redis", "rediss", "unix"))

    @field_validator("sentinels")
    @classmethod
    def _sentinels(cls, value: list[str]) -> list[str]:
        seen: set[tuple[str, int]] = set()
        for entry in value:
            address = sentinel_address(entry)
            if address in seen:
                raise ValueError(f"sentinel {entry!r} is listed twice")
            seen.add(address)
        return value

    @field_validator("sentinel_service")
    @classmethod
    def _service(cls, value: str | None) -> str | None:
        if value is not None and not _SENTINEL_SERVICE.match(value):
            raise ValueError(
                "sentinel_service must be the name of the sentinels' `sentinel monitor NAME`: "
                "1 to 64 letters, digits, '.', '-' or '_'"
            )
        return value

    @model_validator(mode="after")
    def _one_way_to_redis(self) -> RedisSettings:
        if self.sentinels:
            if self.url:
                raise ValueError(
                    "set either url (one Redis server) or sentinels (Redis Sentinel), not both"
                )
            if self.sentinel_service is None:
                raise ValueError(
                    "sentinels are set but sentinel_service is not: give the name the "
                    "sentinels monitor the primary under (`sentinel monitor NAME ...`)"
                )
        elif self.sentinel_service is not None or self.sentinel_password_file is not None:
            raise ValueError(
                "sentinel_service and sentinel_password_file need sentinels: "
                'list them, e.g. sentinels = ["10.0.0.1:26379", "10.0.0.2:26379"]'
            )
        elif self.username is not None:
            raise ValueError("username is for sentinels; with url, put the user in the URL")
        return self

    @property
    def configured(self) -> bool:
        """Whether the deployment gives its Redis (else the engine starts its own)."""
        return bool(self.url or self.sentinels)


# The characters a sentinel's master name is safe to have in a config line and a log.
_SENTINEL_SERVICE = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


def sentinel_address(entry: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[v6]:PORT`` for IPv6) of a sentinel as (host, port); ValueError else."""
    host, sep, port = entry.strip().rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(
            f"sentinel {entry!r} must be HOST:PORT, e.g. 127.0.0.1:26379 ([::1]:26379 for IPv6)"
        )
    if any(c.isspace() or c in "/@[]" for c in host):
        raise ValueError(f"sentinel {entry!r} has a malformed host")
    return host, int(port)


class SigningSettings(Section):
    """The key every payload to terminals is signed with (GY/T 389-2023: signed and verified).
    Unset files: made in the state folder on the first start (see docs/protocol.md)."""

    algorithm: Literal["EdDSA", "SM2SM3"] = "EdDSA"
    key_file: Path | None = None
    keyring_file: Path | None = None


class RegionsSettings(Section):
    file: Path = DEFAULT_REGIONS_FILE


class DispatchSettings(Section):
    # Acks per recording script call. Each call holds Redis for its length, and every other
    # client's command (an office's issue request) waits behind it: 500 held it up to 18 ms in
    # a province wave (issue p99 58 ms with 50 offices issuing), 200 about 8 ms (p99 47 ms),
    # with the same wave time; 100 was no better (bench/api_load.py --ack-batch-size).
    ack_batch_size: int = Field(default=200, ge=1, le=10000)
    ack_batch_wait: float = Field(default=0.005, gt=0, le=5)
    # Approximate cap on the ack log's entries, so it cannot eat all of Redis's memory. An
    # entry is one recorded batch of one alert's acks (up to ack_batch_size): a province-wide
    # alert writes about 70-150, a township drill a few, so the default keeps years of both.
    ack_log_maxlen: int = Field(default=1_000_000, ge=1000)
    claim_idle_seconds: float = Field(default=60.0, gt=0)
    # Each instance's liveness lease in Redis, renewed every third of it: when it lapses (the
    # instance died or hangs), the others take over its outbox entries at once.
    # ``claim_idle_seconds`` stays the fallback for entries of instances with no lease.
    lease_seconds: float = Field(default=3.0, ge=1, le=60)


class ResendSettings(Section):
    """When a terminal that should have acknowledged has not, and what happens then."""

    # Seconds from dispatch until a terminal with no ack gets its first resend, per severity.
    red: float = Field(default=60, gt=0)
    orange: float = Field(default=120, gt=0)
    yellow: float = Field(default=300, gt=0)
    blue: float = Field(default=600, gt=0)
    # Resends on the terminal's own cmd topic before it is failed and escalated.
    max_attempts: int = Field(default=3, ge=0, le=20)
    # Wait after resend k is backoff * 2**(k-1), at most backoff_max.
    backoff: float = Field(default=30, gt=0)
    backoff_max: float = Field(default=300, gt=0)
    # How often an instance looks for alerts whose deadline has come.
    sweep_interval: float = Field(default=1.0, gt=0, le=60)

    def deadline(self, severity: str) -> float:
        return float(getattr(self, severity))

    def wait_after(self, attempt: int) -> float:
        return float(min(self.backoff * 2 ** max(0, attempt - 1), self.backoff_max))


class OfficeConfig(Section):
    id: str
    name: str = Field(min_length=1, max_length=64)
    region: str
    token_sha256: str
    # The 【signature】 of its texts; defaults to the office name.
    sms_signature: str | None = Field(default=None, min_length=2, max_length=20)
    # A linked upstream release system whose alerts were approved there: its token's actual
    # warnings skip the second person. False (fail-closed): they wait for an approver too.
    machine_approved: bool = False
    # A PEM X.509 certificate (read at start): CAP this office posts or its feeds bring must be
    # signed by its key (XML-DSig, dispatcher.core.cap_sign); None: a signature is not needed.
    cap_certificate: Path | None = None
    # The colours whose actual warnings need a second person here; None: [approval] colours.
    approval_colours: list[Severity] | None = None

    @field_validator("id")
    @classmethod
    def _id(cls, value: str) -> str:
        if not _OFFICE_ID.match(value):
            raise ValueError("office id must be 1 to 48 lowercase letters, digits, '-' or '_'")
        return value

    @field_validator("token_sha256")
    @classmethod
    def _hash(cls, value: str) -> str:
        return _sha256_hex(value, "token_sha256")


class LogSettings(Section):
    format: Literal["auto", "json", "console"] = "auto"
    level: Literal["debug", "info", "warning", "error"] = "info"


class CapFeedSettings(Section):
    """One ``[[cap.feeds]]`` entry: an upstream CAP feed the engine polls
    (``dispatcher.http.cap_feeds``)."""

    url: str
    # The office whose identity and jurisdiction the imports have (as its token would).
    office: str
    interval: float = Field(default=60.0, ge=10, le=86_400)
    # Sent with every request to the upstream (e.g. an API key header).
    headers: dict[str, str] = Field(default_factory=dict)
    # A file holding the upstream's bearer token (sent as Authorization: Bearer …); read at
    # start.
    token_file: Path | None = None
    max_documents: int = Field(default=20, ge=1, le=500)
    # Seconds one request to the upstream may take, whole; under the interval.
    timeout: float = Field(default=20.0, ge=1, le=120)

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("the feed URL must be http:// or https:// with a host")
        return value

    @field_validator("headers")
    @classmethod
    def _headers(cls, value: dict[str, str]) -> dict[str, str]:
        for name, text in value.items():
            if any(c in name + text for c in "\r\n\0") or not name.strip():
                raise ValueError(f"header {name!r}: no empty name, no line breaks")
        return value


class CapSettings(Section):
    """``[cap]``: the upstream feeds to poll (none by default)."""

    feeds: list[CapFeedSettings] = Field(default_factory=list)
