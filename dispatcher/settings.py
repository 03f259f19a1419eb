"""The engine's settings: one TOML file, every key overridable by an ``EBD_`` variable.

``EBD_MQTT__URL=mqtt://broker:1883`` overrides ``[mqtt] url``; ``EBD_OFFICES`` takes a JSON list.
Settings are loaded strictly (unknown keys are errors) and a bad file stops the program with a
message naming the file and the field.
"""

from __future__ import annotations

import json
import os
import tomllib
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
)

from adapters.loudspeaker.announcement import AudioSettings
from adapters.sms.settings import SmsSettings
from dispatcher.core import config
from dispatcher.core.approval import ApprovalSettings
from dispatcher.core.clock import DisplaySettings
from dispatcher.core.config import (
    DEFAULT_REGIONS_FILE,
    ApiSettings,
    CapSettings,
    DispatchSettings,
    LogSettings,
    OfficeConfig,
    RedisSettings,
    RegionsSettings,
    ResendSettings,
    SigningSettings,
)
from dispatcher.core.errors import ConfigError
from drills.settings import DrillSettings

__all__ = ["DEFAULT_REGIONS_FILE", "PROJECT_ROOT", "Settings", "load_settings"]

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def _listen_address(value: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::]:8883`` for IPv6) as a host and a port."""
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536 or not host:
        raise ValueError(
            f"{value!r} is not HOST:PORT; write e.g. 0.0.0.0:8883 (every IPv4 address), "
            "[::]:8883 (IPv6) or 10.0.0.5:8883"
        )
    return host.removeprefix("[").removesuffix("]"), int(port)


class MqttSettings(config.MqttSettings):
    """``[mqtt]``, and where the embedded broker (no ``url``) listens."""

    # The terminals' TLS listener, "HOST:PORT": "0.0.0.0:8883" for terminals on other
    # machines. Unset: loopback, on a port chosen on the first start and kept (ports.json in
    # the broker's state folder). On every address, ``terminal_url`` must say the name or
    # address terminals reach it by; that name goes into the server certificate.
    terminal_listen: str | None = None
    # The engine listener's port (always loopback and plain: only this engine connects to it).
    # Unset: chosen on the first start and kept.
    engine_port: int | None = Field(default=None, ge=1, le=65535)
    # More names or addresses of the broker for its certificate (besides ``terminal_url``'s).
    terminal_names: list[str] = Field(default_factory=list)

    @field_validator("terminal_listen")
    @classmethod
    def _terminal_listen(cls, value: str | None) -> str | None:
        if value is not None:
            _listen_address(value)
        return value

    @model_validator(mode="after")
    def _reachable(self) -> MqttSettings:
        if self.terminal_listen is None or self.url is not None:
            return self
        host, _ = _listen_address(self.terminal_listen)
        if host in ("0.0.0.0", "::") and self.terminal_url is None:  # noqa: S104  a comparison
            raise ValueError(
                "terminal_listen is every address; set terminal_url to the address terminals "
                'reach the broker by, e.g. terminal_url = "mqtts://broker.example.cn:8883"'
            )
        return self

    def embedded_broker(self) -> dict[str, Any]:
        """The embedded broker's listeners, as ``MosquittoServer`` takes them."""
        names = list(self.terminal_names)
        if self.terminal_url is not None:
            told = urlsplit(self.terminal_url).hostname
            names = [told, *names] if told else names
        listeners: dict[str, Any] = {"port": self.engine_port, "terminal_names": names}
        if self.terminal_listen is not None:
            host, port = _listen_address(self.terminal_listen)
            listeners |= {"terminal_host": host, "terminal_port": port}
        return listeners


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
    signing: SigningSettings = SigningSettings()
    dispatch: DispatchSettings = DispatchSettings()
    resend: ResendSettings = ResendSettings()
    sms: SmsSettings = SmsSettings()
    # The loudspeakers' announcement audio: rendering, recordings, the URL terminals fetch.
    audio: AudioSettings = AudioSettings()
    drills: DrillSettings = DrillSettings()
    # Which warnings need a second person, and how long a submission waits for one.
    approval: ApprovalSettings = ApprovalSettings()
    # The zone every API response shows times in (stored times stay UTC).
    display: DisplaySettings = DisplaySettings()
    log: LogSettings = LogSettings()
    offices: list[OfficeConfig] = []
    # A JSON list of offices (as ``offices``) in a file of its own, e.g. the one the compose
    # setup generates with fresh tokens; when set, it replaces ``offices``.
    offices_file: Path | None = None
    state_dir: Path = Path(".ebd-state")
    # The domain of the CAP sender of the alerts this engine serves as CAP: an office's
    # are sent by "{office id}@{cap_sender_domain}" (dispatcher.core.cap_out.cap_sender).
    cap_sender_domain: str = Field(
        default="ebd.local", pattern=r"^[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?$"
    )
    # The engine's CAP output is signed (XML-DSig) with this PEM key, its PEM certificate in
    # KeyInfo, when both are set (dispatcher.core.cap_sign); read at start.
    cap_signing_key: Path | None = None
    cap_signing_certificate: Path | None = None
    # [[cap.feeds]]: upstream CAP feeds the engine polls and imports (dispatcher.http.cap_feeds).
    cap: CapSettings = CapSettings()
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
    if settings.offices_file is not None:
        try:
            listed = json.loads(settings.offices_file.read_text(encoding="utf-8"))
            settings.offices = [OfficeConfig.model_validate(o) for o in listed]
        except (OSError, ValueError, TypeError) as exc:
            raise ConfigError(
                f"cannot read the offices: {exc}", path=settings.offices_file, field="offices_file"
            ) from exc
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
