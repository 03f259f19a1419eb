"""The engine's ack connection: a lean MQTT 5 subscriber for the province's acks.

A province-wide warning brings back two acks from each of ~17,500 terminals within a second or
two. Through paho (the client under aiomqtt) each message costs ~100 µs of Python in the
engine, four times the raw broker's pace; here the packets are decoded by ``mqtt5`` (a Rust
codec, the one aiomqtt's next major version is built on) straight from the socket's buffer, a
microsecond each, and handed to the ingester without a task or a queue per message.

The connection only subscribes; everything the engine publishes goes through ``MqttLink``.
What it keeps of the MQTT contract:

- Clean Start off and a Session Expiry of days (zero when the subscription is shared), so acks
  sent while the engine is away wait for it in the broker;
- a PUBACK only once the ingester has the ack in Redis (``confirm``), in the order the
  messages came; the acks of a connection that dropped are not confirmed on the next one: the
  broker sends them again and recording them twice counts them once;
- keepalive pings, and a reconnect loop with backoff.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any, cast

import mqtt5
import structlog

from adapters.loudspeaker.session import BrokerSession
from dispatcher.core.errors import AckLinkError
from dispatcher.pipeline.ports import MessageHandler, PubackHandle

log = structlog.get_logger(__name__)


class _AckProtocol(asyncio.Protocol):
    """One TCP connection: decodes what the broker sends, writes what the link asks."""

    def __init__(self, on_message: MessageHandler) -> None:
        self._on_message = on_message
        self._buffer = bytearray()
        self._transport: asyncio.Transport | None = None
        loop = asyncio.get_running_loop()
        self.connack: asyncio.Future[mqtt5.ConnAckPacket] = loop.create_future()
        self.closed: asyncio.Future[None] = loop.create_future()
        self._replies: dict[int, asyncio.Future[list[int]]] = {}
        self._next_id = 0
        self.last_heard = time.monotonic()
        self.why_closed = ""  # set once the connection is gone

    # asyncio.Protocol ------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # TCP: always a Transport

    def data_received(self, data: bytes) -> None:
        self.last_heard = time.monotonic()
        buffer = self._buffer
        buffer += data
        used = 0
        view = memoryview(buffer)
        try:
            while used < len(buffer):
                try:
                    packet, size = mqtt5.read(view[used:])
                except IndexError:  # the rest of the packet is still on its way
                    break
                used += size
                if type(packet) is mqtt5.PublishPacket:
                    self._on_message(
                        packet.topic,
                        packet.payload,
                        PubackHandle(self, packet.packet_id or 0, int(packet.qos)),
                    )
                else:
                    self._on_control(packet)
        except ValueError as exc:
            # A broker that sends what MQTT 5 does not allow cannot be trusted with the rest.
            log.error("ack_link.malformed_packet", error=str(exc))
            self.close(f"malformed packet from the broker: {exc}")
        finally:
            view.release()
            del buffer[:used]

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
        self.why_closed = self.why_closed or (str(exc) if exc else "the broker closed it")
        waiting: list[asyncio.Future[Any]] = [self.connack, *self._replies.values()]
        for future in waiting:
            if not future.done():
                future.set_exception(AckLinkError(self.why_closed))
        self._replies.clear()
        if not self.closed.done():
            self.closed.set_result(None)

    # Packets ------------------------------------------------------------------------------

    def _on_control(self, packet: mqtt5.Packet) -> None:
        if isinstance(packet, mqtt5.ConnAckPacket):
            if not self.connack.done():
                self.connack.set_result(packet)
        elif isinstance(packet, mqtt5.SubAckPacket | mqtt5.UnsubAckPacket):
            future = self._replies.pop(packet.packet_id, None)
            if future is not None and not future.done():
                future.set_result([int(code) for code in packet.reason_codes])
        elif isinstance(packet, mqtt5.DisconnectPacket):
            reason = f"{packet.reason_code.name} {packet.reason_str or ''}".strip()
            log.warning("ack_link.broker_disconnected", reason=reason)
            self.close(f"the broker disconnected: {reason}")
        # PINGRESP only proves the link is alive (last_heard); nothing else is expected.

    @property
    def open(self) -> bool:
        return self._transport is not None and not self._transport.is_closing()

    def send(self, data: bytes) -> None:
        if self._transport is not None and self.open:
            self._transport.write(data)

    def close(self, why: str = "") -> None:
        """Close the connection; ``why`` is what the link reports as the reason."""
        self.why_closed = self.why_closed or why
        if self._transport is not None:
            self._transport.close()

    def confirm(self, packet_ids: list[int]) -> None:
        if packet_ids:
            self.send(b"".join(mqtt5.PubAckPacket(pid).write() for pid in packet_ids))

    def new_packet_id(self) -> int:
        self._next_id = self._next_id % 65535 + 1
        return self._next_id

    async def request(self, packet_id: int, data: bytes, timeout: float) -> list[int]:
        """Send a SUBSCRIBE or UNSUBSCRIBE and wait for its reason codes."""
        future: asyncio.Future[list[int]] = asyncio.get_running_loop().create_future()
        self._replies[packet_id] = future
        self.send(data)
        async with asyncio.timeout(timeout):
            return await future


class AckLink:
    """Keeps the ack connection up until cancelled; messages go to ``on_message``."""

    def __init__(self, session: BrokerSession, *, connect_timeout: float = 10.0) -> None:
        self.session = session
        # For logs: where the broker is, never the credentials in its URL.
        self.url = session.where
        self._connect_timeout = connect_timeout
        self._protocol: _AckProtocol | None = None
        self.connected = asyncio.Event()
        self.session_present: bool | None = None
        self.connects = 0
        self.connected_at = 0.0  # monotonic time of the last connection made

    async def run(self) -> None:
        backoff = 0.2
        while True:
            try:
                protocol = await self._connect()
                backoff = 0.2
                try:
                    await self._serve(protocol)
                finally:
                    with contextlib.suppress(Exception):
                        # Normal disconnection keeps the session (and its queued acks).
                        protocol.send(mqtt5.DisconnectPacket().write())
                    protocol.close()
            except (OSError, TimeoutError, AckLinkError) as exc:
                log.warning(
                    "ack_link.down", broker=self.url, error=str(exc) or type(exc).__name__,
                    retry_in=backoff,
                )  # fmt: skip
            finally:
                self.connected.clear()
                self._protocol = None
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 5.0)

    async def _connect(self) -> _AckProtocol:
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(self._connect_timeout):
            context = self.session.ssl_context()
            _, protocol = await loop.create_connection(
                lambda: _AckProtocol(self.session.on_message),
                self.session.host,
                self.session.port,
                ssl=context,
                server_hostname=self.session.host if context is not None else None,
            )
            try:
                protocol.send(
                    mqtt5.ConnectPacket(
                        self.session.client_id,
                        username=self.session.username,
                        password=(
                            self.session.password.encode()
                            if self.session.password is not None
                            else None
                        ),
                        clean_start=False,
                        keep_alive=self.session.keepalive,
                        session_expiry_interval=self.session.session_expiry,
                        # The ingester confirms a batch at a time: let the broker run ahead.
                        receive_max=65535,
                    ).write()
                )
                connack = await protocol.connack
                if connack.reason_code != mqtt5.ConnAckReasonCode.SUCCESS:
                    raise AckLinkError(
                        f"the broker refused the connection: {connack.reason_code.name}"
                    )
                self._protocol = protocol
                self.session_present = connack.session_present
                await self._subscribe(protocol)
            except BaseException:
                protocol.close()
                raise
        return protocol

    async def _subscribe(self, protocol: _AckProtocol) -> None:
        # Every time, not only for a new session: the configured form (shared or not) must
        # win over what an older session held. Retained states only on a new subscription.
        filters = [
            mqtt5.TopicFilter(
                topic,
                max_qos=mqtt5.QoS.AT_LEAST_ONCE,
                retain_handling=mqtt5.RetainHandling.SEND_IF_SUBSCRIPTION_NOT_EXISTS,
            )
            for topic in self.session.subscriptions
        ]
        pid = protocol.new_packet_id()
        codes = await protocol.request(
            pid, mqtt5.SubscribePacket(pid, filters).write(), self._connect_timeout
        )
        refused = [t for t, c in zip(self.session.subscriptions, codes, strict=False) if c >= 0x80]
        if refused or len(codes) != len(filters):
            raise AckLinkError(f"the broker refused the subscriptions {refused}: codes {codes}")
        if self.session.stale_subscriptions:
            pid = protocol.new_packet_id()
            packet = mqtt5.UnsubscribePacket(pid, self.session.stale_subscriptions)
            await protocol.request(pid, packet.write(), self._connect_timeout)

    async def _serve(self, protocol: _AckProtocol) -> None:
        self.connects += 1
        self.connected_at = time.monotonic()
        self.connected.set()
        log.info(
            "ack_link.up",
            broker=self.url,
            client_id=self.session.client_id,
            session_present=self.session_present,
        )
        # Ping at half the keepalive; a link silent for 1.5 keepalives is dead (a half-open
        # TCP connection would otherwise hold the acks until the kernel gives up).
        interval = max(1.0, self.session.keepalive / 2)
        while not protocol.closed.done():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(interval):
                    await asyncio.shield(protocol.closed)
            if protocol.closed.done():
                break
            if time.monotonic() - protocol.last_heard > self.session.keepalive * 1.5:
                raise AckLinkError("no answer from the broker within 1.5 keepalives")
            protocol.send(mqtt5.PingReqPacket().write())
        raise AckLinkError(f"connection lost: {protocol.why_closed}")

    def confirm(self, deliveries: list[PubackHandle]) -> None:
        """PUBACK handled messages of the current connection, in the order they arrived."""
        protocol = self._protocol
        if protocol is None or not protocol.open:
            return
        protocol.confirm([d.mid for d in deliveries if d.qos > 0 and d.client is protocol])

    async def wait_connected(self, timeout: float) -> None:
        async with asyncio.timeout(timeout):
            await self.connected.wait()

    def connected_for(self) -> float:
        """Seconds the current connection has been up; 0 while down."""
        return time.monotonic() - self.connected_at if self.connected.is_set() else 0.0
