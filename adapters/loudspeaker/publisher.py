"""The engine's one MQTT link: publish with deadlines, subscribe, reconnect, keep the session.

The link is an aiomqtt client in a reconnect loop. It connects with Clean Start off and a
Session Expiry of days, so acks that terminals send while the engine is away are queued by the
broker and delivered when the link comes back (aiomqtt's default would start clean on every
``async with``, dropping them).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from typing import Any

import aiomqtt
import structlog
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

from adapters.loudspeaker.session import BrokerSession
from dispatcher.core.errors import PublishFailed
from dispatcher.pipeline.ports import PubackHandle

log = structlog.get_logger(__name__)


class _Client(aiomqtt.Client):
    """aiomqtt with what it does not expose: CONNACK's session-present flag (to prove the
    session held), paho's manual PUBACK (to confirm an ack only once it is in Redis), and a
    direct message callback."""

    session_present: bool = False
    handler: Callable[[str, bytes, PubackHandle], None] | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Without this paho confirms each message as it arrives: an engine killed before its
        # batch reached Redis would lose acks the broker already forgot.
        self._client.manual_ack_set(True)

    def confirm(self, mid: int, qos: int) -> None:
        self._client.ack(mid, qos)

    def _on_message(self, client: Any, userdata: Any, message: Any) -> None:
        # Straight from paho to the ingester: aiomqtt's queue costs a task and a wait per
        # message, a third of the engine's time in a province-wide wave of acks.
        if self.handler is None:
            super()._on_message(client, userdata, message)
            return
        self.handler(
            message.topic, bytes(message.payload), PubackHandle(self, message.mid, message.qos)
        )

    def _on_connect(self, client: Any, userdata: Any, flags: Any, *args: Any, **kw: Any) -> None:
        self.session_present = bool(getattr(flags, "session_present", False))
        super()._on_connect(client, userdata, flags, *args, **kw)


class MqttLink:
    """Owns the connection; ``run()`` keeps it up until cancelled."""

    def __init__(self, session: BrokerSession, *, publish_timeout: float = 30.0) -> None:
        self.session = session
        # For logs: where the broker is, never the credentials in its URL.
        self.url = session.where
        self.publish_timeout = publish_timeout
        self._client: _Client | None = None
        self._link_down = asyncio.Event()
        self.connected = asyncio.Event()
        self.session_present: bool | None = None
        self.connects = 0

    def _new_client(self) -> _Client:
        client = self._build_client()
        client.handler = self.session.on_message
        return client

    def _build_client(self) -> _Client:
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]  # paho has no hints
        props.SessionExpiryInterval = self.session.session_expiry
        # The broker may hold thousands of acks for us after an outage: take them quickly.
        props.ReceiveMaximum = 10000
        return _Client(
            self.session.host,
            self.session.port,
            username=self.session.username,
            password=self.session.password,
            tls_context=self.session.ssl_context(),
            identifier=self.session.client_id,
            protocol=aiomqtt.ProtocolVersion.V5,
            clean_start=False,
            properties=props,
            keepalive=self.session.keepalive,
            # Also bounds the DISCONNECT wait on shutdown, which paho sometimes never confirms.
            timeout=3,
            max_inflight_messages=1000,
        )

    async def run(self) -> None:
        backoff = 0.2
        while True:
            client = self._new_client()
            self._link_down = asyncio.Event()
            try:
                async with client:
                    self._client = client
                    self.connects += 1
                    self.session_present = client.session_present
                    # Every time, not only for a new session: the configured form (shared or
                    # not) must win over what an older session held. Retain handling 1:
                    # retained states only on a new subscription, not on every reconnect.
                    if self.session.subscriptions:
                        await client.subscribe(
                            [
                                (topic, SubscribeOptions(qos=1, retainHandling=1))
                                for topic in self.session.subscriptions
                            ]
                        )
                    if self.session.stale_subscriptions:
                        await client.unsubscribe(self.session.stale_subscriptions)
                    self.connected.set()
                    log.info(
                        "mqtt.link_up",
                        broker=self.url,
                        client_id=self.session.client_id,
                        session_present=client.session_present,
                    )
                    backoff = 0.2
                    # Messages go to the handler from paho's callback; this only waits for
                    # the link to drop (the iterator then raises MqttError).
                    async for _message in client.messages:
                        pass
            except aiomqtt.MqttError as exc:
                log.warning("mqtt.link_down", broker=self.url, error=str(exc), retry_in=backoff)
            finally:
                self.connected.clear()
                self._client = None
                self._link_down.set()
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 5.0)

    def confirm(self, deliveries: list[PubackHandle]) -> None:
        """PUBACK handled messages, in the order they arrived (MQTT requires that order).

        Messages of an earlier connection are not confirmed: the broker sends them again on
        the resumed session, and recording them twice counts them once.
        """
        client = self._client
        if client is None:
            return
        for delivery in deliveries:
            if delivery.qos > 0 and delivery.client is client:
                client.confirm(delivery.mid, delivery.qos)

    async def wait_connected(self, timeout: float) -> None:
        async with asyncio.timeout(timeout):
            await self.connected.wait()

    async def publish(
        self,
        topic: str,
        payload: bytes,
        *,
        qos: int = 1,
        expiry: int | None = None,
        retain: bool = False,
        timeout: float | None = None,
    ) -> None:
        """Publish and wait for the broker's PUBACK, across reconnects, until the deadline."""
        deadline = time.monotonic() + (timeout or self.publish_timeout)
        props: Properties | None = None
        if expiry is not None:
            props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]  # paho has no hints
            props.MessageExpiryInterval = max(1, int(expiry))
        last_error = "not connected"
        while (left := deadline - time.monotonic()) > 0:
            try:
                await self.wait_connected(left)
            except TimeoutError:
                break
            client, down = self._client, self._link_down
            if client is None:
                continue
            # aiomqtt does not fail a pending publish when the link drops: race it against
            # the drop, or a broker crash would hold the alert for the whole timeout.
            sending = asyncio.ensure_future(
                client.publish(
                    topic, payload, qos=qos, retain=retain, properties=props, timeout=left
                )
            )
            dropped = asyncio.ensure_future(down.wait())
            try:
                await asyncio.wait({sending, dropped}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                dropped.cancel()
                if not sending.done():
                    sending.cancel()
                    with contextlib.suppress(asyncio.CancelledError, aiomqtt.MqttError):
                        await sending
            if sending.cancelled():
                last_error = "the link dropped before the broker confirmed"
                continue
            exc = sending.exception()
            if exc is None:
                return
            if not isinstance(exc, aiomqtt.MqttError):
                raise exc
            last_error = str(exc)
            # Wait for the link loop to notice the drop before trying again.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(0.0, deadline - time.monotonic())):
                    await down.wait()
        raise PublishFailed(f"broker did not accept publish to {topic}: {last_error}", topic=topic)
