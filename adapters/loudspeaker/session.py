"""What both MQTT links of the engine are given: where the broker is, who they are to it,
which topics they take and where the messages go."""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import urlsplit

from dispatcher.pipeline.ports import MessageHandler


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

    @property
    def host(self) -> str:
        return urlsplit(self.url).hostname or "127.0.0.1"

    @property
    def port(self) -> int:
        return urlsplit(self.url).port or 1883
