"""How the engine reaches its broker and Redis, and what terminals are told of the broker:
from the settings for a deployment's servers (one Redis URL, or Redis Sentinel), or from the
embedded servers it started.

Credentials come in the URL's userinfo or, so that none has to stand in a config file or an
environment listing, from a file of their own (``password_file``), whose mode is checked.
"""

from __future__ import annotations

import asyncio
import os
import signal
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, urlsplit, urlunsplit

from dispatcher.core.config import MqttSettings, RedisSettings, sentinel_address
from dispatcher.core.errors import ConfigError
from dispatcher.core.redis_access import RedisAccess
from dispatcher.embedded.processes import MosquittoServer, RedisServer
from dispatcher.embedded.secrets import read_secret

_TLS_SCHEMES = frozenset({"mqtts", "ssl"})


@dataclass(frozen=True, slots=True)
class BrokerAccess:
    """Everything about the broker the engine's parts need."""

    # The engine listener, credentials in the userinfo.
    engine_url: str
    # TLS for the engine's links (mqtts://); None: plain, or the system's CAs for mqtts://.
    engine_tls: ssl.SSLContext | None
    # What terminals are given: where they connect and the CA (PEM) to verify it against.
    terminal_url: str | None
    terminal_ca_pem: str | None
    # The terminals' password file and how the broker is made to reread it.
    accounts_file: Path | None
    reload: Callable[[], Awaitable[None]] | None
    accounts_file_mode: int = 0o600

    def terminal_tls(self) -> ssl.SSLContext | None:
        """The context a terminal (or the engine's probe) connects to ``terminal_url`` with."""
        if self.terminal_url is None or urlsplit(self.terminal_url).scheme not in _TLS_SCHEMES:
            return None
        context = ssl.create_default_context(cadata=self.terminal_ca_pem or None)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        return context

    @classmethod
    def embedded(cls, server: MosquittoServer) -> BrokerAccess:
        async def reload() -> None:
            await asyncio.to_thread(server.reload)

        return cls(
            engine_url=server.url,
            engine_tls=None,
            terminal_url=server.terminal_url,
            terminal_ca_pem=server.ca_file.read_text(encoding="ascii"),
            accounts_file=server.accounts_file,
            reload=reload,
        )

    @classmethod
    def configured(cls, settings: MqttSettings) -> BrokerAccess:
        if settings.url is None:
            raise ConfigError("no broker URL to connect to", field="mqtt.url")
        url = with_password(settings.url, settings.password_file, "mqtt.password_file")
        engine_tls = None
        if urlsplit(url).scheme in _TLS_SCHEMES:
            engine_tls = ssl.create_default_context(
                cafile=str(settings.ca_file) if settings.ca_file else None
            )
            engine_tls.minimum_version = ssl.TLSVersion.TLSv1_2
            if settings.cert_file:
                engine_tls.load_cert_chain(
                    settings.cert_file, settings.key_file if settings.key_file else None
                )
        ca_pem = None
        if settings.terminal_ca_file is not None:
            try:
                ca_pem = settings.terminal_ca_file.read_text(encoding="ascii")
            except (OSError, UnicodeDecodeError) as exc:
                raise ConfigError(
                    f"cannot read the terminals' CA: {exc}", path=settings.terminal_ca_file
                ) from exc
        pid_file = settings.broker_pid_file
        return cls(
            engine_url=url,
            engine_tls=engine_tls,
            terminal_url=settings.terminal_url,
            terminal_ca_pem=ca_pem,
            accounts_file=settings.accounts_file,
            reload=_signaller(pid_file) if pid_file is not None else None,
            # A broker in another container reads it as another user; the folder (a volume
            # only the engine and the broker mount) is what keeps it private.
            accounts_file_mode=0o644,
        )


def redis_url(settings: RedisSettings, embedded: RedisServer | None) -> str:
    """The URL the engine connects to Redis with, credentials in it."""
    if embedded is not None:
        return embedded.url
    if settings.url is None:
        raise ConfigError("no Redis URL to connect to", field="redis.url")
    return with_password(settings.url, settings.password_file, "redis.password_file")


def redis_access(settings: RedisSettings, embedded: RedisServer | None) -> RedisAccess:
    """Where the engine's Redis is: the embedded server, the configured URL, or the
    configured sentinels (with the passwords read from their files)."""
    if embedded is not None or not settings.sentinels:
        return RedisAccess(url=redis_url(settings, embedded))
    if settings.sentinel_service is None:  # pragma: no cover - the settings refuse it
        raise ConfigError("sentinels need a service name", field="redis.sentinel_service")
    password = sentinel_password = None
    if settings.password_file is not None:
        password = read_secret(settings.password_file)
    if settings.sentinel_password_file is not None:
        sentinel_password = read_secret(settings.sentinel_password_file)
    return RedisAccess(
        url=None,
        sentinels=tuple(sentinel_address(entry) for entry in settings.sentinels),
        service=settings.sentinel_service,
        username=settings.username,
        password=password,
        sentinel_password=sentinel_password,
    )


def with_password(url: str, password_file: Path | None, field: str) -> str:
    """``url`` with the password of ``password_file`` in its userinfo (if it has none)."""
    if password_file is None:
        return url
    parts = urlsplit(url)
    if parts.password:
        raise ConfigError(
            "the URL has a password and a password file is given too; keep one", field=field
        )
    password = quote(read_secret(password_file), safe="")
    user = quote(parts.username or "", safe="")
    host = f"[{parts.hostname}]" if parts.hostname and ":" in parts.hostname else parts.hostname
    netloc = f"{user}:{password}@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def _signaller(pid_file: Path) -> Callable[[], Awaitable[None]]:
    def send() -> None:
        try:
            pid = int(pid_file.read_text(encoding="ascii").strip())
            os.kill(pid, signal.SIGHUP)
        except (OSError, ValueError) as exc:
            raise ConfigError(f"cannot signal the broker: {exc}", path=pid_file) from exc

    async def reload() -> None:
        await asyncio.to_thread(send)

    return reload
