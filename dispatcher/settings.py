"""The engine's settings: one TOML file, every key overridable by an ``EBD_`` variable.

``EBD_MQTT__URL=mqtt://broker:1883`` overrides ``[mqtt] url``; ``EBD_OFFICES`` takes a JSON list.
Settings are loaded strictly (unknown keys are errors) and a bad file stops the program with a
message naming the file and the field.
"""

from __future__ import annotations

import os
import re
import tomllib
from datetime import date, time
from pathlib import Path
from typing import Any, Literal, Self
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
)

from dispatcher.errors import ConfigError

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_REGIONS_FILE = Path("config/regions/fujian.csv")
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
# An alert id is the office id plus 26 characters and must fit in 80.
_OFFICE_ID = re.compile(r"^[a-z0-9][a-z0-9_-]{0,47}$")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ApiSettings(_Section):
    listen: str = "127.0.0.1:8080"
    # A province's terminal list (17,498 rows) fits easily; anything far larger is a mistake.
    max_body_bytes: int = Field(default=4 * 1024 * 1024, ge=1024)

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
    if parts.scheme not in schemes or not parts.hostname:
        raise ValueError(f"must be a URL like {schemes[0]}://HOST:PORT, got {value!r}")
    try:
        _ = parts.port
    except ValueError as exc:
        raise ValueError(f"bad port in {value!r}") from exc
    return value


class MqttSettings(_Section):
    url: str | None = None
    # Defaults to the instance name: two instances must never share a client id (the broker
    # would disconnect one whenever the other connects).
    client_id: str | None = None
    # Days, so acks queued while the engine restarts wait for it in the broker.
    session_expiry: int = Field(default=7 * 86400, ge=60)
    keepalive: int = Field(default=30, ge=5, le=3600)
    publish_timeout: float = Field(default=30.0, gt=0)
    shared_subscription: bool = False

    @field_validator("url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        return _check_url(value, ("mqtt", "tcp"))


class RedisSettings(_Section):
    url: str | None = None

    @field_validator("url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        return _check_url(value, ("redis", "rediss", "unix"))


class RegionsSettings(_Section):
    file: Path = DEFAULT_REGIONS_FILE


class DispatchSettings(_Section):
    ack_batch_size: int = Field(default=500, ge=1, le=10000)
    ack_batch_wait: float = Field(default=0.02, gt=0, le=5)
    # Approximate cap on the ack log's entries, so it cannot eat all of Redis's memory. An
    # entry is one recorded batch of one alert's acks (up to ack_batch_size): a province-wide
    # alert writes about 70-150, a township drill a few, so the default keeps years of both.
    ack_log_maxlen: int = Field(default=1_000_000, ge=1000)
    claim_idle_seconds: float = Field(default=60.0, gt=0)


class ResendSettings(_Section):
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


class GatewaySettings(_Section):
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
        if value is None:
            return None
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"must be an http(s) URL, got {value!r}")
        return value

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


class SmsSettings(_Section):
    """The SMS channel: who gets texts, how fast, and how failures are handled."""

    gateways: list[GatewaySettings] = []
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
    escalation_roles: list[str] = ["village_head", "grid_worker"]
    exercise_roles: list[str] = ["duty_officer"]

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
        if value is None:
            return None
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"must be an http(s) URL, got {value!r}")
        return value.rstrip("/")


class Blackout(_Section):
    """Days on which no drill is planned (both ends included), e.g. the Spring Festival."""

    start: date
    end: date
    reason: str = Field(min_length=1, max_length=100)

    @model_validator(mode="after")
    def _order(self) -> Self:
        if self.end < self.start:
            raise ValueError(f"blackout {self.reason!r} ends ({self.end}) before it starts")
        return self


class DrillSettings(_Section):
    """Annual drills: when they may be planned, how they run and how they are judged."""

    # The office that issues drill alerts (an [[offices]] id whose region covers the drills);
    # by default the first province-level office.
    office: str | None = None
    timezone: str = "Asia/Shanghai"
    # Working hours in that timezone: a drill starts no earlier than workday_start and its
    # window of acks ends no later than workday_end.
    workday_start: time = time(9, 0)
    workday_end: time = time(17, 0)
    # ISO weekdays drills may fall on (1 = Monday).
    weekdays: list[int] = [1, 2, 3, 4, 5]
    blackouts: list[Blackout] = []
    max_per_county_per_day: int = Field(default=2, ge=1, le=50)
    # Seconds a drill collects acks after its dispatch, then it is reported.
    window: float = Field(default=1800.0, gt=0, le=86400)
    # An ack later than this many seconds after dispatch counts as late.
    late_after: float = Field(default=120.0, gt=0)
    # A drill due while no engine ran is run when one starts again, if within this many
    # seconds of its time; past that it is marked missed.
    grace: float = Field(default=6 * 3600.0, ge=1)
    # Share of the expected terminals that must play the drill for it to pass.
    pass_coverage: float = Field(default=0.95, gt=0, le=1)
    # A failed drill's re-drill is planned this many days later (the next free slot).
    redrill_after_days: int = Field(default=14, ge=1, le=180)
    severity: Literal["red", "orange", "yellow", "blue"] = "blue"
    event: str = Field(default="综合应急演练", min_length=1, max_length=64)
    # The lease that makes one instance the drill scheduler: renewed every third of it.
    lease_seconds: float = Field(default=15.0, ge=1, le=600)

    @field_validator("timezone")
    @classmethod
    def _tz(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown timezone {value!r}; e.g. Asia/Shanghai") from exc
        return value

    @field_validator("weekdays")
    @classmethod
    def _weekdays(cls, value: list[int]) -> list[int]:
        if not value or any(not 1 <= d <= 7 for d in value):
            raise ValueError("weekdays must be ISO weekday numbers 1 (Monday) to 7 (Sunday)")
        return sorted(set(value))

    @model_validator(mode="after")
    def _hours(self) -> Self:
        start = self.workday_start.hour * 3600 + self.workday_start.minute * 60
        end = self.workday_end.hour * 3600 + self.workday_end.minute * 60
        if end - start < self.window:
            raise ValueError(
                "the working day (workday_start to workday_end) is shorter than a drill's window"
            )
        return self

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)


class OfficeConfig(_Section):
    id: str
    name: str = Field(min_length=1, max_length=64)
    region: str
    token_sha256: str
    # The 【signature】 of its texts; defaults to the office name.
    sms_signature: str | None = Field(default=None, min_length=2, max_length=20)

    @field_validator("id")
    @classmethod
    def _id(cls, value: str) -> str:
        if not _OFFICE_ID.match(value):
            raise ValueError("office id must be 1 to 48 lowercase letters, digits, '-' or '_'")
        return value

    @field_validator("token_sha256")
    @classmethod
    def _hash(cls, value: str) -> str:
        value = value.strip().lower()
        if not _HEX64.match(value):
            raise ValueError(
                "token_sha256 must be 64 hex digits; run `ebd offices token` to make one"
            )
        return value


class LogSettings(_Section):
    format: Literal["auto", "json", "console"] = "auto"
    level: Literal["debug", "info", "warning", "error"] = "info"


class Settings(BaseSettings):
    """Everything the engine is configured with, built once in ``__main__`` and passed down."""

    model_config = SettingsConfigDict(
        env_prefix="EBD_",
        env_nested_delimiter="__",
        extra="forbid",
        nested_model_default_partial_update=True,
    )

    api: ApiSettings = ApiSettings()
    mqtt: MqttSettings = MqttSettings()
    redis: RedisSettings = RedisSettings()
    regions: RegionsSettings = RegionsSettings()
    dispatch: DispatchSettings = DispatchSettings()
    resend: ResendSettings = ResendSettings()
    sms: SmsSettings = SmsSettings()
    drills: DrillSettings = DrillSettings()
    log: LogSettings = LogSettings()
    offices: list[OfficeConfig] = []
    state_dir: Path = Path(".ebd-state")
    # This instance's name: its outbox consumer and, by default, its MQTT client id.
    instance: str = Field(default="ebd-1", pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")

    @property
    def mqtt_client_id(self) -> str:
        return self.mqtt.client_id or self.instance

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Environment first: an operator's EBD_ variable beats the file it overrides.
        return (env_settings, init_settings)

    def regions_path(self, config_file: Path | None = None) -> Path:
        """The region file, relative paths tried from the cwd, the config's folder, the project."""
        path = self.regions.file
        if path.is_absolute():
            return path
        candidates = [Path.cwd() / path]
        if config_file is not None:
            candidates.append(config_file.resolve().parent / path)
        candidates.append(PROJECT_ROOT / path)
        for candidate in candidates:
            if candidate.exists():
                return candidate
        return candidates[0]


def _field_of(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _variable_of(loc: tuple[int | str, ...]) -> str | None:
    """The EBD_ variable that set the field at ``loc``, if one did."""
    parts = [str(p) for p in loc if isinstance(p, str)]
    for n in range(len(parts), 0, -1):
        name = "EBD_" + "__".join(parts[:n]).upper()
        if name in os.environ:
            return name
    return None


def load_settings(path: Path | None = None, **overrides: Any) -> Settings:
    """Load the TOML file (if given), apply ``EBD_`` variables, and check every field.

    Raises ``ConfigError`` naming the file, line (for TOML syntax) and field.
    """
    data: dict[str, Any] = {}
    if path is not None:
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"cannot read config file: {exc.strerror}", path=path) from exc
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"not valid TOML: {exc}", path=path) from exc
    data.update(overrides)
    try:
        settings = Settings(**data)
    except SettingsError as exc:
        # pydantic-settings could not even parse a variable (e.g. EBD_OFFICES that is not JSON).
        raise ConfigError(f"{exc}; complex values such as EBD_OFFICES must be JSON") from exc
    except ValidationError as exc:
        first = exc.errors()[0]
        field = _field_of(first["loc"])
        more = f" (and {exc.error_count() - 1} more problems)" if exc.error_count() > 1 else ""
        message = first["msg"].removeprefix("Value error, ")
        if first["type"] == "extra_forbidden":
            message = "unknown setting; check its spelling against config/ebd.example.toml"
        variable = _variable_of(first["loc"])
        if variable is not None:
            raise ConfigError(
                f"{message}{more} (set by the environment variable {variable})",
                path="environment",
                field=field,
            ) from exc
        raise ConfigError(message + more, path=path or "environment", field=field) from exc
    seen_ids: set[str] = set()
    seen_hashes: set[str] = set()
    for index, office in enumerate(settings.offices):
        if office.id in seen_ids:
            raise ConfigError(
                f"office id {office.id!r} appears twice", path=path, field=f"offices[{index}].id"
            )
        if office.token_sha256 in seen_hashes:
            raise ConfigError(
                "two offices share one token hash; each office needs its own token",
                path=path,
                field=f"offices[{index}].token_sha256",
            )
        seen_ids.add(office.id)
        seen_hashes.add(office.token_sha256)
    if settings.drills.office is not None and settings.drills.office not in seen_ids:
        raise ConfigError(
            f"no [[offices]] entry has id {settings.drills.office!r}; drills are issued by one",
            path=path,
            field="drills.office",
        )
    return settings
