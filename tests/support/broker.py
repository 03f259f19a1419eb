"""The tests' side of the broker: a client that publishes as the engine does and records what
terminals send, and v1 alert payloads as terminals receive them."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

from receiver.mqtt_lite import Message, MqttConnection, open_connection, parse_mqtt_url
from tests.helpers import unique


def alert_body(
    alert_id: str,
    *,
    msg_type: str = "alert",
    status: str = "actual",
    references: list[str] | None = None,
    areas: list[str] | None = None,
    sent: datetime | None = None,
    expires_in: timedelta = timedelta(hours=1),
) -> dict[str, Any]:
    sent = sent or datetime.now(UTC)
    return {
        "v": 1,
        "id": alert_id,
        "msg_type": msg_type,
        "status": status,
        "severity": "orange",
        "event": "暴雨",
        "event_code": "11B03",
        "headline": "鼓楼区暴雨橙色预警",
        "text": "预计未来6小时降雨量将达50毫米以上。",
        "instruction": "请远离低洼地带。",
        "sent": sent.isoformat(),
        "expires": (sent + expires_in).isoformat(),
        "areas": areas or ["350102"],
        "references": references or [],
        "repeat": 2,
        "audio": None,
    }


class Watch:
    """The test's side of the broker: publishes like the engine and records what terminals
    send (a mqtt_lite client, so the agent's aiomqtt link is checked against another
    implementation)."""

    def __init__(self) -> None:
        self.messages: list[Message] = []
        self.conn: MqttConnection | None = None

    async def open(self, url: str, topics: list[str]) -> None:
        mqtt = parse_mqtt_url(url)
        self.conn, _ = await open_connection(
            mqtt.host, mqtt.port, unique("watch"), on_message=self.messages.append, keepalive=30
        )
        await self.conn.subscribe(topics)

    async def publish(self, topic: str, body: dict[str, Any] | bytes) -> None:
        assert self.conn is not None
        payload = body if isinstance(body, bytes) else json.dumps(body).encode()
        assert await self.conn.publish_acked(topic, payload) < 0x80

    def on(self, topic: str) -> list[dict[str, Any]]:
        return [json.loads(m.payload) for m in self.messages if m.topic == topic and m.payload]

    def acks(self, terminal_id: str, alert_id: str | None = None) -> list[dict[str, Any]]:
        acks = self.on(f"eb/v1/term/{terminal_id}/ack")
        return [a for a in acks if alert_id is None or a["alert_id"] == alert_id]

    def states(self, terminal_id: str) -> list[str]:
        return [s["state"] for s in self.on(f"eb/v1/term/{terminal_id}/state")]

    async def close(self) -> None:
        if self.conn is not None:
            self.conn.disconnect()
            await self.conn.closed
