"""What the pipeline needs of the outside world, as interfaces the composition root fills.

The pipeline imports no adapter: ``dispatcher.app`` hands it the loudspeaker side
(``adapters.loudspeaker``: the MQTT links and the payload encoder) and the SMS channel
(``adapters.sms``) through these. Tests may hand it anything that keeps the same promises.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from dispatcher.core.models import Alert


@dataclass(frozen=True, slots=True)
class PubackHandle:
    """Identifies a received message so it can be confirmed (PUBACK) once it is handled."""

    client: object  # the connection it came on: confirmed only on that one
    mid: int
    qos: int


# Called for every message on the terminals' topics: (topic, payload, its handle).
MessageHandler = Callable[[str, bytes, PubackHandle], None]
# The bytes terminals get for an alert (adapters.loudspeaker.payload.encode_alert).
AlertEncoder = Callable[[Alert], bytes]


class Publisher(Protocol):
    """The link that sends alerts to terminals (adapters.loudspeaker.publisher.MqttLink)."""

    @property
    def connected(self) -> asyncio.Event:
        """Set while the link is up."""
        ...

    async def publish(
        self, topic: str, payload: bytes, *, expiry: int | None = None, timeout: float | None = None
    ) -> None:
        """Publish with QoS 1 and wait for the broker to take it; ``PublishFailed`` if it did
        not by the deadline. ``expiry``: the MQTT 5 message expiry in seconds."""
        ...


class SmsPlanning(Protocol):
    """The SMS channel's side of dispatch: queue the alert's texts (idempotently)."""

    async def plan_alert(self, alert: Alert) -> int: ...


class EscalationNotifier(Protocol):
    """Told about terminals failed after their last resend; the SMS channel plugs in here to
    text that village's contacts. Exercise alerts are passed too: a notifier decides whether
    a drill reaches anyone but the duty officer."""

    async def notify(self, alert: Alert, records: Sequence[dict[str, str]]) -> None: ...
