"""What both MQTT links of the engine are given: where the broker is, who they are to it,
which topics they take and where the messages go.

The broker's URL says all of the connection: ``mqtt://HOST:PORT`` (plain, port 1883 by
default) or ``mqtts://HOST:PORT`` (TLS, 8883), with the engine account's credentials as its
userinfo (``mqtts://ebd-engine:PASSWORD@broker``). ``tls`` carries the CA to trust and the
client certificate, if any; without it a TLS link trusts the system's CAs.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass, field
from urllib.parse import unquote, urlsplit

from dispatcher.pipeline.ports import MessageHandler

TLS_SCHEMES = frozenset({"mqtts", "ssl"})


@dataclass(frozen=True, slots=True)
class BrokerSession:
    url: str
    client_id: str
    on_message: MessageHandler
    subscriptions: list[str] = field(default_factory=list)
    # Topics a session kept from an earlier version may still hold: taken over, then dropped.
    stale_subscriptions: list[str] = field(default_factory=list)
    # Days, so what the broker queues while the engine restarts waits for it.
    session_expiry: int = 7 * 86400
    keepalive: int = 30
    tls: ssl.SSLContext | None = None

    @property
    def secure(self) -> bool:
        return urlsplit(self.url).scheme in TLS_SCHEMES

    @property
    def host(self) -> str:
        return urlsplit(self.url).hostname or "127.0.0.1"

    @property
    def port(self) -> int:
        return urlsplit(self.url).port or (8883 if self.secure else 1883)

    @property
    def username(self) -> str | None:
        name = urlsplit(self.url).username
        return unquote(name) if name else None

    @property
    def password(self) -> str | None:
        secret = urlsplit(self.url).password
        return unquote(secret) if secret is not None else None

    @property
    def where(self) -> str:
        """The broker as logs name it: scheme, host and port, never the credentials."""
        scheme = urlsplit(self.url).scheme
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{scheme}://{host}:{self.port}"

    def ssl_context(self) -> ssl.SSLContext | None:
        """The TLS context to connect with, or None for a plain connection."""
        if not self.secure:
            return None
        return self.tls if self.tls is not None else ssl.create_default_context()


def tls_context(
    ca_file: str | None = None, cert_file: str | None = None, key_file: str | None = None
) -> ssl.SSLContext:
    """A client context that verifies the broker against ``ca_file`` (the system's CAs when
    None) and, with ``cert_file``, shows that certificate (its key in ``key_file`` or in the
    same file)."""
    context = ssl.create_default_context(cafile=ca_file)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if cert_file:
        context.load_cert_chain(cert_file, key_file)
    return context
