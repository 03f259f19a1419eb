"""A minimal MQTT 5 client, one ``asyncio.Protocol`` per connection, for the terminal simulator.

Why it exists: ``ebd sim`` runs one virtual terminal per Fujian village, 17,498 connections in
one process on a two-core machine that also runs the engine and the broker. aiomqtt wraps a paho
client per connection: a thread-pool connect, a housekeeping task, a message queue and paho's
own buffers and locks each, which is far too heavy that many times over. Here a connection is
one protocol object with no task of its own (keepalive is a loop timer), and a message is
handled by a plain callback inside ``data_received``. The field agent (``receiver.agent``)
keeps using aiomqtt; this module is only what a terminal needs:

- CONNECT with clean start off, a Session Expiry Interval, a Maximum Packet Size, a Will
  (QoS 1, retained) and a user name and password; CONNACK with its session-present flag,
  reason code and properties (the server's Receive Maximum and Server Keep Alive are honoured);
- TLS: ``open_connection(..., ssl=context)`` with an ``ssl.SSLContext`` of the caller's (its CA,
  its verification); the handshake is done before CONNECT is sent;
- SUBSCRIBE of several topics at QoS 1 and its SUBACK;
- incoming PUBLISH at QoS 0/1 (properties skipped), answered with PUBACK after the callback ran;
- outgoing PUBLISH at QoS 0/1 with packet ids, in-flight tracking up to the server's Receive
  Maximum, and ``unacked()`` so the owner can publish again on its next connection;
- PINGREQ every keepalive (the link is aborted if the previous one got no PINGRESP), and
  DISCONNECT (normal: the broker keeps the session and drops the Will).

Not supported, on purpose: QoS 2, topic aliases, AUTH, Will properties, resending with DUP on
the same packet id after a reconnect (the owner publishes again instead; acks are idempotent).

Errors::

    MqttLiteError          base
    ├── ProtocolError      the peer sent something this client cannot accept; the link is closed
    ├── ConnectRefused     CONNACK with a failure reason code (``reason_code``)
    │   └── CredentialsRefused   0x85 client identifier not valid, 0x86 bad user name or
    │                            password, 0x87 not authorized: retrying with the same
    │                            credentials will not help (a network error might)
    └── ConnectionLost     the link went down while a call waited on it

A TLS handshake that fails raises ``ssl.SSLError`` (``ssl.SSLCertVerificationError`` when the
broker's certificate does not verify against the caller's CA), an ``OSError`` like any other
failure to reach the broker; ``asyncio.open_connection`` raises the same.

The password is never part of an error message or a ``repr`` (``MqttUrl`` leaves it out): it
goes into the CONNECT packet and nowhere else.
"""

from __future__ import annotations

import asyncio
import socket
import ssl as _ssl
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, TypedDict, Unpack
from urllib.parse import unquote, urlsplit

__all__ = [
    "CONNACK_REASONS",
    "CREDENTIAL_REASONS",
    "IP_BIND_ADDRESS_NO_PORT",
    "MAX_PACKET_SIZE",
    "Connack",
    "ConnectOptions",
    "ConnectRefused",
    "ConnectionLost",
    "CredentialsRefused",
    "Message",
    "MqttConnection",
    "MqttLiteError",
    "MqttUrl",
    "Outgoing",
    "ProtocolError",
    "Will",
    "decode_connack",
    "decode_properties",
    "decode_puback",
    "decode_publish",
    "decode_suback",
    "decode_varint",
    "encode_connect",
    "encode_disconnect",
    "encode_puback",
    "encode_publish",
    "encode_subscribe",
    "encode_varint",
    "open_connection",
    "parse_mqtt_url",
    "refusal",
    "split_packets",
]

# Packet types (MQTT 5, 2.1.2).
CONNECT: Final = 1
CONNACK: Final = 2
PUBLISH: Final = 3
PUBACK: Final = 4
SUBSCRIBE: Final = 8
SUBACK: Final = 9
PINGREQ: Final = 12
PINGRESP: Final = 13
DISCONNECT: Final = 14

# Property identifiers used here (MQTT 5, 2.2.2.2).
PROP_SESSION_EXPIRY: Final = 0x11
PROP_SERVER_KEEP_ALIVE: Final = 0x13
PROP_RECEIVE_MAXIMUM: Final = 0x21
PROP_MAXIMUM_PACKET_SIZE: Final = 0x27
PROP_USER_PROPERTY: Final = 0x26

# Linux <linux/in.h>; Python's socket module does not name it. Bound with it, a socket gets its
# port at connect time, so many connections from one address share ports across destinations
# and the kernel does not scan the ephemeral range at bind time.
IP_BIND_ADDRESS_NO_PORT: Final = 24

# What we tell the broker we accept; an alert is a few kB.
MAX_PACKET_SIZE: Final = 256 * 1024
# Seconds between PINGREQs, unless the caller or the broker's Server Keep Alive says otherwise.
DEFAULT_KEEPALIVE: Final = 60
_MAX_VARINT: Final = 268_435_455

_PINGREQ: Final = b"\xc0\x00"
_PROPERTY_TYPES: Final[dict[int, str]] = {
    **dict.fromkeys((0x01, 0x17, 0x19, 0x24, 0x25, 0x28, 0x29, 0x2A), "byte"),
    **dict.fromkeys((0x13, 0x21, 0x22, 0x23), "u16"),
    **dict.fromkeys((0x02, 0x11, 0x18, 0x27), "u32"),
    0x0B: "varint",
    **dict.fromkeys((0x03, 0x08, 0x12, 0x15, 0x1A, 0x1C, 0x1F), "string"),
    **dict.fromkeys((0x09, 0x16), "binary"),
    PROP_USER_PROPERTY: "pair",
}

Buffer = bytes | bytearray | memoryview


class MqttLiteError(Exception):
    """Base of this module's errors."""


class ProtocolError(MqttLiteError):
    """The peer sent a packet this client cannot accept."""


# CONNACK failure reason codes (MQTT 5, 3.2.2.2), for messages.
CONNACK_REASONS: Final[dict[int, str]] = {
    0x80: "unspecified error",
    0x81: "malformed packet",
    0x82: "protocol error",
    0x83: "implementation specific error",
    0x84: "unsupported protocol version",
    0x85: "client identifier not valid",
    0x86: "bad user name or password",
    0x87: "not authorized",
    0x88: "server unavailable",
    0x89: "server busy",
    0x8A: "banned",
    0x8C: "bad authentication method",
    0x90: "topic name invalid",
    0x95: "packet too large",
    0x97: "quota exceeded",
    0x99: "payload format invalid",
    0x9A: "retain not supported",
    0x9B: "QoS not supported",
    0x9C: "use another server",
    0x9D: "server moved",
    0x9F: "connection rate exceeded",
}
# The refusals that are about who the client is, not about the broker's state.
CREDENTIAL_REASONS: Final = frozenset((0x85, 0x86, 0x87))


class ConnectRefused(MqttLiteError):
    """CONNACK with a failure reason code. Its message names the client id and the user name
    (neither is secret), never the password."""

    def __init__(
        self, reason_code: int, client_id: str | None = None, username: str | None = None
    ) -> None:
        reason = CONNACK_REASONS.get(reason_code, "unknown reason")
        who = "" if client_id is None else f" {client_id!r}"
        if username is not None:
            who += f" (user {username!r})"
        super().__init__(
            f"the broker refused client{who}: {reason} (reason code 0x{reason_code:02x})"
        )
        self.reason_code = reason_code
        self.client_id = client_id
        self.username = username


class CredentialsRefused(ConnectRefused):
    """The broker refused who we are (0x85 client identifier not valid, 0x86 bad user name or
    password, 0x87 not authorized; mosquitto sends 0x87 for a wrong password and for an
    anonymous client where anonymous ones are not allowed). Retrying with the same credentials
    will not help."""


def refusal(
    reason_code: int, client_id: str | None = None, username: str | None = None
) -> ConnectRefused:
    """The exception for a CONNACK failure reason code: ``CredentialsRefused`` for the
    credential refusals, ``ConnectRefused`` for the others."""
    kind = CredentialsRefused if reason_code in CREDENTIAL_REASONS else ConnectRefused
    return kind(reason_code, client_id, username)


class ConnectionLost(MqttLiteError):
    """The link went down before the awaited reply came."""


class _Incomplete(Exception):
    """More bytes are needed (internal to the stream splitter)."""


@dataclass(frozen=True, slots=True)
class Will:
    topic: str
    payload: bytes
    qos: int = 1
    retain: bool = True


@dataclass(frozen=True, slots=True)
class Message:
    topic: str
    payload: bytes
    qos: int
    retain: bool = False
    dup: bool = False


@dataclass(frozen=True, slots=True)
class Outgoing:
    topic: str
    payload: bytes
    retain: bool = False


@dataclass(frozen=True, slots=True)
class Connack:
    session_present: bool
    reason_code: int
    properties: dict[int, object] = field(default_factory=dict)


class ConnectOptions(TypedDict, total=False):
    """What a CONNECT carries besides the client id, as ``encode_connect`` takes it (and with
    its defaults there): ``MqttConnection`` and ``open_connection`` pass it on unchanged."""

    keepalive: int
    clean_start: bool
    session_expiry: int
    will: Will | None
    username: str | None
    password: str | None


# ---------------------------------------------------------------------------------------------
# Encoding and decoding (pure)


def encode_varint(value: int) -> bytes:
    """MQTT Variable Byte Integer: 7 bits a byte, least significant first, at most 4 bytes."""
    if not 0 <= value <= _MAX_VARINT:
        raise ValueError(f"{value} does not fit a variable byte integer")
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | 0x80 if value else byte)
        if not value:
            return bytes(out)


def decode_varint(data: Buffer, pos: int) -> tuple[int, int]:
    """The integer at ``pos`` and the position after it; ProtocolError past 4 bytes."""
    value = 0
    for i in range(4):
        if pos + i >= len(data):
            raise _Incomplete
        byte = data[pos + i]
        value |= (byte & 0x7F) << (7 * i)
        if not byte & 0x80:
            return value, pos + i + 1
    raise ProtocolError("malformed variable byte integer (more than 4 bytes)")


def _u16(value: int) -> bytes:
    return value.to_bytes(2, "big")


def _string(text: str) -> bytes:
    return _binary(text.encode())


def _binary(data: bytes) -> bytes:
    if len(data) > 0xFFFF:
        raise ValueError(f"{len(data)} bytes is too long for an MQTT string")
    return _u16(len(data)) + data


def _packet(first_byte: int, body: bytes) -> bytes:
    return bytes((first_byte,)) + encode_varint(len(body)) + body


def encode_connect(
    client_id: str,
    *,
    keepalive: int = DEFAULT_KEEPALIVE,
    clean_start: bool = False,
    session_expiry: int = 0,
    will: Will | None = None,
    username: str | None = None,
    password: str | None = None,
    max_packet_size: int = MAX_PACKET_SIZE,
) -> bytes:
    flags = 0x02 if clean_start else 0
    if will is not None:
        flags |= 0x04 | (will.qos << 3) | (0x20 if will.retain else 0)
    if password is not None:
        flags |= 0x40
    if username is not None:
        flags |= 0x80
    properties = (
        bytes((PROP_SESSION_EXPIRY,))
        + session_expiry.to_bytes(4, "big")
        + bytes((PROP_MAXIMUM_PACKET_SIZE,))
        + max_packet_size.to_bytes(4, "big")
    )
    body = (
        _string("MQTT")
        + bytes((5, flags))
        + _u16(keepalive)
        + encode_varint(len(properties))
        + properties
        + _string(client_id)
    )
    if will is not None:
        body += b"\x00" + _string(will.topic) + _binary(will.payload)  # no Will properties
    if username is not None:
        body += _string(username)
    if password is not None:
        body += _binary(password.encode())
    return _packet(CONNECT << 4, body)


def encode_publish(
    topic: str,
    payload: bytes,
    *,
    qos: int = 1,
    retain: bool = False,
    packet_id: int | None = None,
    dup: bool = False,
) -> bytes:
    if qos not in (0, 1):
        raise ValueError("only QoS 0 and 1 are supported")
    if (packet_id is None) != (qos == 0):
        raise ValueError("a packet id is required with QoS 1 and forbidden with QoS 0")
    first = PUBLISH << 4 | (0x08 if dup else 0) | qos << 1 | (0x01 if retain else 0)
    body = _string(topic) + (_u16(packet_id) if packet_id is not None else b"") + b"\x00"
    return _packet(first, body + payload)


def encode_puback(packet_id: int) -> bytes:
    # Reason code 0 and no properties may be left out (MQTT 5, 3.4.2.1).
    return bytes((PUBACK << 4, 2)) + _u16(packet_id)


def encode_subscribe(packet_id: int, topics: Sequence[str], qos: int = 1) -> bytes:
    if not topics:
        raise ValueError("SUBSCRIBE needs at least one topic")
    # Options byte: maximum QoS, No Local 0, Retain As Published 0, Retain Handling 0.
    body = _u16(packet_id) + b"\x00" + b"".join(_string(topic) + bytes((qos,)) for topic in topics)
    return _packet(SUBSCRIBE << 4 | 0x02, body)


def encode_disconnect(reason_code: int = 0) -> bytes:
    # Reason 0 (normal) may be sent as an empty body; the broker then discards the Will.
    return (
        bytes((DISCONNECT << 4, 0))
        if reason_code == 0
        else bytes((DISCONNECT << 4, 1, reason_code))
    )


def split_packets(buffer: bytearray) -> list[tuple[int, int, bytes]]:
    """Take every complete packet off the front of ``buffer``: (type, flags, body) each."""
    packets = []
    pos = 0
    while len(buffer) - pos >= 2:
        try:
            length, start = decode_varint(buffer, pos + 1)
        except _Incomplete:
            break
        if length > MAX_PACKET_SIZE:
            raise ProtocolError(
                f"a packet of {length} bytes is over the {MAX_PACKET_SIZE} we allow"
            )
        end = start + length
        if end > len(buffer):
            break
        first = buffer[pos]
        packets.append((first >> 4, first & 0x0F, bytes(buffer[start:end])))
        pos = end
    del buffer[:pos]
    return packets


def _need(body: Buffer, pos: int, size: int, what: str) -> None:
    if pos + size > len(body):
        raise ProtocolError(f"{what}: packet too short")


def _body_varint(body: Buffer, pos: int, what: str) -> tuple[int, int]:
    try:
        return decode_varint(body, pos)
    except _Incomplete:
        raise ProtocolError(f"{what}: packet too short") from None


def decode_properties(
    body: Buffer, pos: int, what: str = "properties"
) -> tuple[dict[int, object], int]:
    """The property block at ``pos`` (length first) and the position after it. User properties
    come back as a list of pairs; other repeated identifiers are a protocol error."""
    length, pos = _body_varint(body, pos, what)
    end = pos + length
    _need(body, pos, length, what)
    properties: dict[int, object] = {}
    while pos < end:
        identifier, pos = _body_varint(body, pos, what)
        kind = _PROPERTY_TYPES.get(identifier)
        value: object
        if kind is None:
            raise ProtocolError(f"{what}: unknown property 0x{identifier:02x}")
        if kind == "byte":
            _need(body, pos, 1, what)
            value, pos = body[pos], pos + 1
        elif kind in ("u16", "u32"):
            size = 2 if kind == "u16" else 4
            _need(body, pos, size, what)
            value, pos = int.from_bytes(body[pos : pos + size], "big"), pos + size
        elif kind == "varint":
            value, pos = _body_varint(body, pos, what)
        else:
            items = []
            for _ in range(2 if kind == "pair" else 1):
                _need(body, pos, 2, what)
                size = int.from_bytes(body[pos : pos + 2], "big")
                _need(body, pos + 2, size, what)
                items.append(bytes(body[pos + 2 : pos + 2 + size]))
                pos += 2 + size
            value = items[0] if kind == "binary" else _utf8(items, what)
        if pos > end:
            raise ProtocolError(f"{what}: a property runs past the property block")
        if identifier == PROP_USER_PROPERTY:
            pairs = properties.setdefault(identifier, [])
            assert isinstance(pairs, list)  # noqa: S101  only user properties are lists
            pairs.append(value)
        elif identifier in properties:
            raise ProtocolError(f"{what}: property 0x{identifier:02x} given twice")
        else:
            properties[identifier] = value
    return properties, end


def _utf8(items: list[bytes], what: str) -> str | tuple[str, ...]:
    try:
        texts = tuple(item.decode() for item in items)
    except UnicodeDecodeError:
        raise ProtocolError(f"{what}: a string is not UTF-8") from None
    return texts[0] if len(texts) == 1 else texts


def decode_connack(body: Buffer) -> Connack:
    _need(body, 0, 2, "CONNACK")
    if body[0] & 0xFE:
        raise ProtocolError("CONNACK: reserved flag bits set")
    properties: dict[int, object] = {}
    if len(body) > 2:
        properties, _ = decode_properties(body, 2, "CONNACK")
    return Connack(bool(body[0] & 0x01), body[1], properties)


def decode_publish(flags: int, body: Buffer) -> tuple[Message, int | None]:
    """The message and its packet id (None at QoS 0); properties are skipped."""
    qos = (flags >> 1) & 0x03
    if qos == 3:
        raise ProtocolError("PUBLISH: QoS 3 does not exist")
    _need(body, 0, 2, "PUBLISH")
    topic_length = int.from_bytes(body[0:2], "big")
    _need(body, 2, topic_length, "PUBLISH")
    try:
        topic = bytes(body[2 : 2 + topic_length]).decode()
    except UnicodeDecodeError:
        raise ProtocolError("PUBLISH: the topic is not UTF-8") from None
    if not topic:
        # Only a topic alias may stand for an empty topic, and we allow none.
        raise ProtocolError("PUBLISH: empty topic")
    pos = 2 + topic_length
    packet_id = None
    if qos:
        _need(body, pos, 2, "PUBLISH")
        packet_id = int.from_bytes(body[pos : pos + 2], "big")
        if packet_id == 0:
            raise ProtocolError("PUBLISH: packet id 0")
        pos += 2
    properties_length, pos = _body_varint(body, pos, "PUBLISH")
    _need(body, pos, properties_length, "PUBLISH")
    payload = bytes(body[pos + properties_length :])
    message = Message(topic, payload, qos, retain=bool(flags & 0x01), dup=bool(flags & 0x08))
    return message, packet_id


def decode_puback(body: Buffer) -> tuple[int, int]:
    """(packet id, reason code); a 2-byte PUBACK means success."""
    _need(body, 0, 2, "PUBACK")
    return int.from_bytes(body[0:2], "big"), body[2] if len(body) > 2 else 0


def decode_suback(body: Buffer) -> tuple[int, list[int]]:
    """(packet id, one reason code per topic: the granted QoS, or 0x80 and up for failure)."""
    _need(body, 0, 2, "SUBACK")
    _, pos = decode_properties(body, 2, "SUBACK")
    return int.from_bytes(body[0:2], "big"), list(body[pos:])


# ---------------------------------------------------------------------------------------------
# The connection


MessageHandler = Callable[[Message], None]
LostHandler = Callable[["MqttConnection", BaseException | None], None]


class MqttConnection(asyncio.Protocol):
    """One MQTT 5 link. Create it through ``open_connection`` (or hand it to
    ``loop.create_connection``, then await ``connack``). ``on_message`` runs inside
    ``data_received`` and must not block; a QoS 1 message is acknowledged after it returns.
    ``connect`` is what the CONNECT carries (``ConnectOptions``)."""

    def __init__(
        self,
        client_id: str,
        *,
        on_message: MessageHandler | None = None,
        on_lost: LostHandler | None = None,
        **connect: Unpack[ConnectOptions],
    ) -> None:
        self.client_id = client_id
        self._loop = asyncio.get_running_loop()
        self._on_message = on_message
        self._on_lost = on_lost
        self._keepalive = connect.get("keepalive", DEFAULT_KEEPALIVE)
        self._username = connect.get("username")
        self._connect_packet = encode_connect(client_id, **connect)
        self.connack: asyncio.Future[Connack] = self._loop.create_future()
        self.closed: asyncio.Future[None] = self._loop.create_future()
        # Why the link ended: None after our own DISCONNECT or a clean EOF.
        self.close_reason: BaseException | None = None
        self._transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self._next_id = 0
        # Outgoing QoS 1 messages by packet id, oldest first, until their PUBACK.
        self._inflight: dict[int, Outgoing] = {}
        self._unsent: deque[int] = deque()  # held back by the server's Receive Maximum
        self._sent_unacked = 0
        self._receive_maximum = 65_535
        self._puback_waiters: dict[int, asyncio.Future[int]] = {}
        self._subscribes: dict[int, asyncio.Future[list[int]]] = {}
        self._ping_timer: asyncio.TimerHandle | None = None
        self._ping_outstanding = False
        # While data_received runs, writes are gathered here and sent as one: a terminal's
        # PUBACK and the acks its callback publishes leave in one segment, not three.
        self._batch: list[bytes] | None = None

    # -- asyncio.Protocol -----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)  # noqa: S101  a stream transport
        self._transport = transport
        transport.write(self._connect_packet)

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        self._batch = []
        try:
            for kind, flags, body in split_packets(self._buffer):
                self._dispatch(kind, flags, body)
        except ProtocolError as exc:
            self._fail(exc)
        finally:
            batch, self._batch = self._batch, None
            if batch and self.is_open:
                assert self._transport is not None  # noqa: S101  is_open says so
                self._transport.write(b"".join(batch))

    def eof_received(self) -> bool | None:
        return None  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        if self.close_reason is None:
            self.close_reason = exc
        if self._ping_timer is not None:
            self._ping_timer.cancel()
        lost = ConnectionLost(f"{self.client_id}: the link went down")
        if not self.connack.done():
            self.connack.set_exception(lost)
            # Read it here so an unawaited failure is not reported as "never retrieved".
            self.connack.exception()
        waiters: list[asyncio.Future[Any]] = [
            *self._subscribes.values(),
            *self._puback_waiters.values(),
        ]
        for waiter in waiters:
            if not waiter.done():
                waiter.set_exception(lost)
                waiter.exception()
        self._subscribes.clear()
        self._puback_waiters.clear()
        if not self.closed.done():
            self.closed.set_result(None)
        if self._on_lost is not None:
            self._on_lost(self, self.close_reason)

    # -- calls ----------------------------------------------------------------------------

    @property
    def is_open(self) -> bool:
        return self._transport is not None and not self._transport.is_closing()

    def publish(
        self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False
    ) -> int | None:
        """Queue a message; its packet id at QoS 1 (see ``wait_puback``), None at QoS 0."""
        transport = self._open_transport()
        if qos == 0:
            self._write(transport, encode_publish(topic, payload, qos=0, retain=retain))
            return None
        packet_id = self._new_packet_id()
        self._inflight[packet_id] = Outgoing(topic, payload, retain)
        if self._sent_unacked < self._receive_maximum:
            self._send(packet_id)
        else:
            self._unsent.append(packet_id)
        return packet_id

    def wait_puback(self, packet_id: int) -> asyncio.Future[int]:
        """A future of the PUBACK's reason code (at once if it came already)."""
        waiter: asyncio.Future[int] = self._loop.create_future()
        if packet_id not in self._inflight:
            waiter.set_result(0)
        elif not self.is_open:
            waiter.set_exception(ConnectionLost(f"{self.client_id}: the link is down"))
        else:
            self._puback_waiters[packet_id] = waiter
        return waiter

    async def publish_acked(self, topic: str, payload: bytes, *, retain: bool = False) -> int:
        """Publish at QoS 1 and wait for the PUBACK; its reason code."""
        packet_id = self.publish(topic, payload, qos=1, retain=retain)
        assert packet_id is not None  # noqa: S101  QoS 1 always has one
        return await self.wait_puback(packet_id)

    async def subscribe(self, topics: Sequence[str], qos: int = 1) -> list[int]:
        """Subscribe and wait for the SUBACK; its reason codes, one per topic."""
        transport = self._open_transport()
        packet_id = self._new_packet_id()
        waiter: asyncio.Future[list[int]] = self._loop.create_future()
        self._subscribes[packet_id] = waiter
        self._write(transport, encode_subscribe(packet_id, topics, qos))
        try:
            return await waiter
        finally:
            self._subscribes.pop(packet_id, None)

    def unacked(self) -> list[Outgoing]:
        """QoS 1 messages not acknowledged yet, oldest first: to publish again on the next
        connection after this one is lost."""
        return list(self._inflight.values())

    def disconnect(self) -> None:
        """Close with a normal DISCONNECT: the broker keeps the session and discards the Will."""
        if self.is_open:
            assert self._transport is not None  # noqa: S101  is_open says so
            batch, self._batch = self._batch, None
            self._transport.write(b"".join([*(batch or ()), encode_disconnect()]))
            self._transport.close()

    def abort(self) -> None:
        """Drop the link without DISCONNECT, as a power cut would: the broker sends the Will."""
        if self._transport is not None:
            self._transport.abort()

    # -- internals ------------------------------------------------------------------------

    def _write(self, transport: asyncio.Transport, data: bytes) -> None:
        if self._batch is not None:
            self._batch.append(data)
        else:
            transport.write(data)

    def _open_transport(self) -> asyncio.Transport:
        if self._transport is None or self._transport.is_closing():
            raise ConnectionLost(f"{self.client_id}: the link is down")
        return self._transport

    def _new_packet_id(self) -> int:
        for _ in range(65_535):
            self._next_id = self._next_id % 65_535 + 1
            if self._next_id not in self._inflight and self._next_id not in self._subscribes:
                return self._next_id
        raise MqttLiteError(f"{self.client_id}: all 65,535 packet ids are in use")

    def _send(self, packet_id: int) -> None:
        message = self._inflight[packet_id]
        assert self._transport is not None  # noqa: S101  publish() checked
        self._write(
            self._transport,
            encode_publish(
                message.topic, message.payload, qos=1, retain=message.retain, packet_id=packet_id
            ),
        )
        self._sent_unacked += 1

    def _fail(self, exc: MqttLiteError) -> None:
        self.close_reason = exc
        self.abort()

    def _dispatch(self, kind: int, flags: int, body: bytes) -> None:
        if kind == PUBLISH:
            message, packet_id = decode_publish(flags, body)
            if message.qos == 2:
                raise ProtocolError("PUBLISH at QoS 2, above what we subscribed with")
            if self._on_message is not None:
                self._on_message(message)
            if packet_id is not None and self.is_open:
                assert self._transport is not None  # noqa: S101  is_open says so
                self._write(self._transport, encode_puback(packet_id))
        elif kind == PUBACK:
            self._on_puback(*decode_puback(body))
        elif kind == SUBACK:
            packet_id, codes = decode_suback(body)
            waiter = self._subscribes.pop(packet_id, None)
            if waiter is not None and not waiter.done():
                waiter.set_result(codes)
        elif kind == PINGRESP:
            self._ping_outstanding = False
        elif kind == CONNACK:
            self._on_connack(decode_connack(body))
        elif kind == DISCONNECT:
            reason = body[0] if body else 0
            self._fail(ConnectionLost(f"the broker disconnected us: reason 0x{reason:02x}"))
        else:
            raise ProtocolError(f"unexpected packet type {kind}")

    def _on_connack(self, connack: Connack) -> None:
        if self.connack.done():
            raise ProtocolError("a second CONNACK")
        if connack.reason_code >= 0x80:
            refused = refusal(connack.reason_code, self.client_id, self._username)
            self.connack.set_exception(refused)
            self.connack.exception()  # the caller sees it; do not report it as unretrieved
            self._fail(refused)
            return
        maximum = connack.properties.get(PROP_RECEIVE_MAXIMUM)
        if isinstance(maximum, int) and maximum > 0:
            self._receive_maximum = maximum
        keepalive = connack.properties.get(PROP_SERVER_KEEP_ALIVE, self._keepalive)
        assert isinstance(keepalive, int)  # noqa: S101  a u16 property
        self._keepalive = keepalive
        if keepalive > 0:
            self._ping_timer = self._loop.call_later(keepalive, self._on_ping_timer)
        self.connack.set_result(connack)

    def _on_puback(self, packet_id: int, reason_code: int) -> None:
        if self._inflight.pop(packet_id, None) is None:
            return  # a PUBACK for a packet of an earlier connection, or a duplicate
        self._sent_unacked -= 1
        waiter = self._puback_waiters.pop(packet_id, None)
        if waiter is not None and not waiter.done():
            waiter.set_result(reason_code)
        while self._unsent and self._sent_unacked < self._receive_maximum:
            self._send(self._unsent.popleft())

    def _on_ping_timer(self) -> None:
        if not self.is_open:
            return
        if self._ping_outstanding:
            self._fail(ConnectionLost(f"{self.client_id}: no PINGRESP within {self._keepalive} s"))
            return
        assert self._transport is not None  # noqa: S101  is_open says so
        self._transport.write(_PINGREQ)
        self._ping_outstanding = True
        self._ping_timer = self._loop.call_later(self._keepalive, self._on_ping_timer)


async def open_connection(
    host: str,
    port: int,
    client_id: str,
    *,
    source_address: str | None = None,
    timeout: float = 10.0,
    ssl: _ssl.SSLContext | None = None,
    server_hostname: str | None = None,
    on_message: MessageHandler | None = None,
    on_lost: LostHandler | None = None,
    **connect: Unpack[ConnectOptions],
) -> tuple[MqttConnection, Connack]:
    """Connect to ``host`` (an IP address) and wait for a successful CONNACK; ``connect`` is
    what the CONNECT carries (``ConnectOptions``: ``username=``, ``password=`` among them).

    With ``ssl`` the link is TLS, verified as that context says, against ``server_hostname``
    (``host`` by default, so the broker's certificate must name that address). ``timeout``
    bounds the TCP connect, the TLS handshake and the CONNACK together. A refused CONNACK
    raises ``ConnectRefused`` (``CredentialsRefused`` for bad credentials); a certificate that
    does not verify, ``ssl.SSLCertVerificationError``.

    ``source_address`` binds the socket to that local address with ``IP_BIND_ADDRESS_NO_PORT``
    (Linux): thousands of connections from one address make the kernel scan the ephemeral port
    range on every bind, and spreading them over 127.0.0.2, 127.0.0.3, … avoids that on loopback.
    """
    loop = asyncio.get_running_loop()
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock: socket.socket | None = socket.socket(family, socket.SOCK_STREAM)
    transport: asyncio.Transport | None = None
    try:
        assert sock is not None  # noqa: S101  just made
        sock.setblocking(False)
        if source_address is not None:
            sock.setsockopt(socket.SOL_IP, IP_BIND_ADDRESS_NO_PORT, 1)
            sock.bind((source_address, 0))
        async with asyncio.timeout(timeout):
            await loop.sock_connect(sock, (host, port))
            transport, protocol = await loop.create_connection(
                lambda: MqttConnection(
                    client_id, on_message=on_message, on_lost=on_lost, **connect
                ),
                sock=sock,
                ssl=ssl,
                server_hostname=(server_hostname or host) if ssl is not None else None,
            )
            sock = None  # the transport owns it now
            # shield: a timeout must not cancel the future that connection_lost still settles.
            connack = await asyncio.shield(protocol.connack)
    except BaseException:
        if transport is not None:
            transport.abort()
        raise
    finally:
        if sock is not None:
            sock.close()
    return protocol, connack


@dataclass(frozen=True, slots=True)
class MqttUrl:
    host: str
    port: int
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    tls: bool = False


_DEFAULT_PORTS: Final = {"mqtt": 1883, "mqtts": 8883}


def tls_context(ca_pem: str | None) -> _ssl.SSLContext:
    """A client context that verifies the broker against ``ca_pem`` (PEM text)."""
    context = _ssl.create_default_context(cadata=ca_pem or None)
    context.minimum_version = _ssl.TLSVersion.TLSv1_2
    return context


def parse_mqtt_url(url: str) -> MqttUrl:
    """``mqtt://[user[:password]@]host[:port]`` (port 1883 by default), or ``mqtts://`` for
    TLS (port 8883 by default). An error message shows the URL without its password."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise ValueError(f"{_without_password(url)!r} is not an mqtt://host[:port] URL") from None
    if parts.scheme not in _DEFAULT_PORTS or not parts.hostname:
        raise ValueError(f"{_without_password(url)!r} is not an mqtt://host[:port] URL")
    return MqttUrl(
        parts.hostname,
        port or _DEFAULT_PORTS[parts.scheme],
        unquote(parts.username) if parts.username is not None else None,
        unquote(parts.password) if parts.password is not None else None,
        tls=parts.scheme == "mqtts",
    )


def _without_password(url: str) -> str:
    scheme, sep, rest = url.rpartition("://")
    userinfo, at, host = rest.rpartition("@")
    if not at or ":" not in userinfo:
        return url
    return f"{scheme}{sep}{userinfo.partition(':')[0]}:***@{host}"
