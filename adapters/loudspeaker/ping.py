"""Link tests of one terminal (``POST /api/v1/terminals/{id}/ping``): a signed ``test``-status
alert on that terminal's cmd topic, which it acks (``received``, then ``played`` with detail
``test``) without sounding anything (docs/protocol.md, "What a terminal does").

The message is addressed to the terminal alone (its cmd topic, its region as the only area) and
expires in a minute, so a terminal that comes back later does not answer a test nobody waits
for. Its id starts with ``PING_PREFIX``: the ack ingester hands its acks to the waiting
request instead of counting them as acks of an alert.
"""

from __future__ import annotations

import json
import secrets
from datetime import timedelta
from typing import Protocol

from dispatcher.core.models import utcnow
from dispatcher.core.signing import Signer
from dispatcher.core.wire import PAYLOAD_VERSION, cmd_topic
from dispatcher.pipeline.ingester import PING_PREFIX

__all__ = ["PING_EXPIRY", "LinkPinger", "Publisher", "ping_payload"]

# Long enough for a slow rural link, short enough that a late terminal does not answer it.
PING_EXPIRY = timedelta(seconds=60)


class Publisher(Protocol):
    """The engine's MQTT link (``adapters.loudspeaker.publisher.MqttLink``) as a ping uses it."""

    async def publish(
        self, topic: str, payload: bytes, *, qos: int, expiry: int | None, timeout: float | None
    ) -> None:
        """Publish at ``qos`` and wait for the broker's PUBACK; PublishFailed after
        ``timeout`` seconds."""


def ping_payload(ping_id: str, region: str) -> bytes:
    """The v1 payload of a link test to a terminal in ``region`` (unsigned)."""
    sent = utcnow()
    body = {
        "v": PAYLOAD_VERSION,
        "id": ping_id,
        "msg_type": "alert",
        "status": "test",
        "severity": "blue",
        "event": "链路测试",
        "event_code": None,
        "headline": "链路测试",
        "text": "这是一条链路测试消息，终端只回执，不播放。",
        "instruction": None,
        "sent": sent.isoformat(),
        "expires": (sent + PING_EXPIRY).isoformat(),
        "areas": [region],
        "references": [],
        "repeat": 1,
        "audio": None,
    }
    return json.dumps(body, ensure_ascii=False).encode()


class LinkPinger:
    """Sends link tests through the engine's link, signed with the engine's key."""

    def __init__(self, link: Publisher, signer: Signer) -> None:
        self._link = link
        self._signer = signer

    async def send(self, terminal_id: str, region: str, *, timeout: float) -> str:
        """Publish a link test to ``terminal_id``; its ping id once the broker took it.
        ``PublishFailed`` (503) if the broker does not take it within ``timeout`` seconds."""
        ping_id = f"{PING_PREFIX}{terminal_id[:40]}:{secrets.token_hex(6)}"
        payload = self._signer.sign(ping_payload(ping_id, region))
        await self._link.publish(
            cmd_topic(terminal_id),
            payload,
            qos=1,
            expiry=int(PING_EXPIRY.total_seconds()),
            timeout=timeout,
        )
        return ping_id
