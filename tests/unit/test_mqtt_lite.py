"""The minimal MQTT 5 client: packet encoding and decoding, and the protocol's bookkeeping
(driven through a fake transport), and credentials and TLS against a real mosquitto of this
module's own (the simulator against the project's broker is in
tests/integration/test_simulator.py)."""

from __future__ import annotations

import asyncio
import getpass
import shutil
import socket
import ssl
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from dispatcher.embedded.tls import ensure_tls
from receiver.mqtt_lite import (
    MAX_PACKET_SIZE,
    Connack,
    ConnectionLost,
    ConnectRefused,
    CredentialsRefused,
    Message,
    MqttConnection,
    MqttUrl,
    Outgoing,
    ProtocolError,
    Will,
    decode_connack,
    decode_properties,
    decode_puback,
    decode_publish,
    decode_suback,
    decode_varint,
    encode_connect,
    encode_disconnect,
    encode_puback,
    encode_publish,
    encode_subscribe,
    encode_varint,
    open_connection,
    parse_mqtt_url,
    refusal,
    split_packets,
)

# -- variable byte integers (MQTT 5, 1.5.5: the spec's own boundary table) -------------------

VARINTS = [
    (0, "00"),
    (127, "7f"),
    (128, "8001"),
    (16_383, "ff7f"),
    (16_384, "808001"),
    (2_097_151, "ffff7f"),
    (2_097_152, "80808001"),
    (268_435_455, "ffffff7f"),
]


@pytest.mark.parametrize(("value", "encoded"), VARINTS)
def test_varint_round_trip(value: int, encoded: str) -> None:
    assert encode_varint(value).hex() == encoded
    assert decode_varint(bytes.fromhex(encoded) + b"\xaa", 0) == (value, len(encoded) // 2)


@pytest.mark.parametrize("value", [-1, 268_435_456])
def test_varint_out_of_range(value: int) -> None:
    with pytest.raises(ValueError, match="variable byte integer"):
        encode_varint(value)


def test_a_five_byte_varint_is_a_protocol_error() -> None:
    with pytest.raises(ProtocolError, match="more than 4 bytes"):
        decode_varint(bytes.fromhex("ffffffff7f"), 0)


# -- encoding --------------------------------------------------------------------------------


def _hex(*parts: str) -> bytes:
    return bytes.fromhex("".join(parts).replace(" ", ""))


def test_connect_with_will_and_session_expiry() -> None:
    packet = encode_connect(
        "T1",
        keepalive=60,
        clean_start=False,
        session_expiry=604_800,
        will=Will("s", b"off", qos=1, retain=True),
    )
    assert packet == _hex(
        "10 22",  # CONNECT, remaining length 34
        "0004 4d515454 05",  # "MQTT", protocol level 5
        "2c",  # flags: will retain 0x20 | will QoS 1 0x08 | will flag 0x04; clean start off
        "003c",  # keepalive 60
        "0a 11 00093a80 27 00040000",  # properties: session expiry 7 d, max packet 256 KiB
        "0002 5431",  # client id "T1"
        "00 0001 73 0003 6f6666",  # no will properties, will topic "s", will payload "off"
    )


@pytest.mark.parametrize(
    ("kwargs", "flags"),
    [
        ({}, 0x00),
        ({"clean_start": True}, 0x02),
        ({"username": "u"}, 0x80),
        ({"username": "u", "password": "p"}, 0xC0),
        ({"will": Will("s", b"", qos=0, retain=False)}, 0x04),
    ],
    ids=["bare", "clean start", "username", "username and password", "will qos 0"],
)
def test_connect_flags(kwargs: dict[str, Any], flags: int) -> None:
    packet = encode_connect("c", **kwargs)
    # fixed header (2) + "MQTT" (6) + level (1), then the flags byte
    assert packet[9] == flags


def test_connect_carries_username_and_password_last() -> None:
    packet = encode_connect("c", username="T1", password="秘密")
    assert packet.endswith(
        _hex("0002 5431") + len("秘密".encode()).to_bytes(2, "big") + "秘密".encode()
    )


PUBLISHES = [
    ({"qos": 0}, "30 0a 0005 612f622f63 00 6869"),
    ({"qos": 1, "packet_id": 7}, "32 0c 0005 612f622f63 0007 00 6869"),
    ({"qos": 1, "packet_id": 7, "retain": True}, "33 0c 0005 612f622f63 0007 00 6869"),
    ({"qos": 1, "packet_id": 7, "dup": True}, "3a 0c 0005 612f622f63 0007 00 6869"),
]


@pytest.mark.parametrize(("kwargs", "expected"), PUBLISHES, ids=["qos0", "qos1", "retain", "dup"])
def test_publish_encoding(kwargs: dict[str, Any], expected: str) -> None:
    assert encode_publish("a/b/c", b"hi", **kwargs) == _hex(expected)


@pytest.mark.parametrize(
    "kwargs",
    [{"qos": 1}, {"qos": 0, "packet_id": 1}, {"qos": 2, "packet_id": 1}],
    ids=["qos1 without id", "qos0 with id", "qos2"],
)
def test_publish_refuses_what_it_cannot_do(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="QoS"):
        encode_publish("t", b"", **kwargs)


def test_subscribe_encoding() -> None:
    assert encode_subscribe(10, ["a", "b/c"]) == _hex(
        "82 0d",  # SUBSCRIBE with its reserved flags 0010
        "000a 00",  # packet id 10, no properties
        "0001 61 01",  # "a", QoS 1
        "0003 622f63 01",  # "b/c", QoS 1
    )


def test_small_packets() -> None:
    assert encode_puback(0x1234) == _hex("40 02 1234")
    assert encode_disconnect() == _hex("e0 00")
    assert encode_disconnect(0x04) == _hex("e0 01 04")


# -- splitting a byte stream into packets ------------------------------------------------------


def test_packets_split_however_the_bytes_arrive() -> None:
    stream = encode_puback(1) + encode_publish("t", b"x" * 300, qos=0) + _hex("d0 00")
    buffer = bytearray()
    packets = []
    for byte in stream:
        buffer.append(byte)
        packets += split_packets(buffer)
    assert [(kind, flags) for kind, flags, _ in packets] == [(4, 0), (3, 0), (13, 0)]
    assert len(packets[1][2]) == 2 + 1 + 1 + 300
    assert buffer == b""


def test_a_packet_over_the_maximum_is_refused() -> None:
    with pytest.raises(ProtocolError, match="over"):
        split_packets(bytearray(b"\x30" + encode_varint(MAX_PACKET_SIZE + 1)))


# -- decoding ---------------------------------------------------------------------------------


def test_connack_with_session_present_and_properties() -> None:
    body = _hex("01 00", "09", "21 0014", "13 0078", "22 000a")
    assert decode_connack(body) == Connack(True, 0, {0x21: 20, 0x13: 120, 0x22: 10})


@pytest.mark.parametrize(
    ("body", "expected"),
    [("00 00", Connack(False, 0)), ("00 87 00", Connack(False, 0x87))],
    ids=["no properties at all (3.1.1 style)", "refused: not authorized"],
)
def test_connack_variants(body: str, expected: Connack) -> None:
    assert decode_connack(_hex(body)) == expected


def test_connack_reserved_bits_are_an_error() -> None:
    with pytest.raises(ProtocolError, match="reserved"):
        decode_connack(_hex("02 00 00"))


def test_publish_decoding_skips_properties() -> None:
    properties = _hex("02 00000e10", "26 0001 6b 0001 76", "03 0004 6a736f6e")
    body = _hex("0003 612f62", "0102") + encode_varint(len(properties)) + properties + b"{}"
    message, packet_id = decode_publish(0b1011, body)  # DUP, QoS 1, retain
    assert message == Message("a/b", b"{}", 1, retain=True, dup=True)
    assert packet_id == 0x0102


def test_qos0_publish_has_no_packet_id() -> None:
    message, packet_id = decode_publish(0, _hex("0001 74 00 6869"))
    assert (message.topic, message.payload, message.qos, packet_id) == ("t", b"hi", 0, None)


@pytest.mark.parametrize(
    ("flags", "body", "error"),
    [
        (0b0110, "0001 74 0001 00", "QoS 3"),
        (0, "0000 00", "empty topic"),
        (0, "0001 ff 00", "not UTF-8"),
        (2, "0001 74 0000 00", "packet id 0"),
        (2, "0005 74", "too short"),
        (0, "0001 74 05 0200", "too short"),
    ],
    ids=["qos 3", "empty topic", "bad utf-8", "packet id 0", "short topic", "short properties"],
)
def test_bad_publishes(flags: int, body: str, error: str) -> None:
    with pytest.raises(ProtocolError, match=error):
        decode_publish(flags, _hex(body))


@pytest.mark.parametrize(
    ("body", "expected"),
    [("0009", (9, 0)), ("0009 10", (9, 0x10)), ("0009 87 00", (9, 0x87))],
    ids=["short form", "reason only", "reason and properties"],
)
def test_puback_forms(body: str, expected: tuple[int, int]) -> None:
    assert decode_puback(_hex(body)) == expected


def test_suback_reason_codes() -> None:
    assert decode_suback(_hex("0005 00 01 00 80")) == (5, [1, 0, 0x80])


@pytest.mark.parametrize(
    ("block", "expected"),
    [
        ("02 01 01", {0x01: 1}),
        ("05 11 0000003c", {0x11: 60}),
        ("02 0b 81", None),  # a varint cut short inside the block
        ("03 0b 8101", {0x0B: 129}),
        ("06 1f 0003 6f6b21", {0x1F: "ok!"}),
        ("04 09 0001 00", {0x09: b"\x00"}),
        ("0e 26 0001 61 0001 62 26 0001 63 0001 64", {0x26: [("a", "b"), ("c", "d")]}),
    ],
    ids=["byte", "u32", "short varint", "varint", "string", "binary", "user properties"],
)
def test_property_types(block: str, expected: dict[int, object] | None) -> None:
    if expected is None:
        with pytest.raises(ProtocolError):
            decode_properties(_hex(block), 0)
    else:
        assert decode_properties(_hex(block), 0) == (expected, len(_hex(block)))


@pytest.mark.parametrize(
    ("block", "error"),
    [
        ("02 7f 00", "unknown property"),
        ("04 01 01 01 01", "given twice"),
        ("02 13 0001", "runs past"),
        ("05 13 00", "too short"),
    ],
    ids=["unknown", "twice", "past the block", "short"],
)
def test_bad_properties(block: str, error: str) -> None:
    with pytest.raises(ProtocolError, match=error):
        decode_properties(_hex(block), 0)


# -- URLs -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("mqtt://127.0.0.1:1884", MqttUrl("127.0.0.1", 1884)),
        ("mqtt://broker", MqttUrl("broker", 1883)),
        ("mqtt://T1:p%40ss@broker:1883", MqttUrl("broker", 1883, "T1", "p@ss")),
    ],
)
def test_parse_mqtt_url(url: str, expected: MqttUrl) -> None:
    assert parse_mqtt_url(url) == expected


@pytest.mark.parametrize("url", ["http://broker", "mqtt://", "broker:1883"])
def test_parse_mqtt_url_refuses_other_urls(url: str) -> None:
    with pytest.raises(ValueError, match="mqtt://"):
        parse_mqtt_url(url)


# -- the protocol, through a fake transport --------------------------------------------------


class FakeTransport(asyncio.Transport):
    def __init__(self, protocol: MqttConnection) -> None:
        super().__init__()
        self.protocol = protocol
        self.writes: list[bytes] = []
        self.closing = False
        self.aborted = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        assert not self.closing
        self.writes.append(bytes(data))

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self._lose()

    def abort(self) -> None:
        self.aborted = True
        self._lose()

    def _lose(self) -> None:
        if not self.closing:
            self.closing = True
            self.protocol.connection_lost(None)

    def packets(self) -> list[tuple[int, int, bytes]]:
        buffer = bytearray(b"".join(self.writes))
        self.writes.clear()
        return split_packets(buffer)


def connection(**kwargs: Any) -> tuple[MqttConnection, FakeTransport, list[Message]]:
    received: list[Message] = []
    conn = MqttConnection("T1", on_message=received.append, **kwargs)
    transport = FakeTransport(conn)
    conn.connection_made(transport)
    return conn, transport, received


def connack(session_present: bool = False, properties: str = "00") -> bytes:
    body = bytes((int(session_present), 0)) + _hex(properties)
    return b"\x20" + encode_varint(len(body)) + body


async def test_connect_is_sent_first_and_connack_resolves() -> None:
    conn, transport, _ = connection(session_expiry=60, keepalive=0)
    assert transport.packets()[0][0] == 1
    conn.data_received(connack(session_present=True))
    assert (await conn.connack).session_present


async def test_a_refused_connect_fails_the_connack_and_closes() -> None:
    conn, transport, _ = connection()
    conn.data_received(_hex("20 03 00 87 00"))
    with pytest.raises(ConnectRefused) as refused:
        await conn.connack
    assert refused.value.reason_code == 0x87
    assert transport.aborted
    assert conn.closed.done()


async def test_incoming_qos1_is_handled_then_acked_in_one_write() -> None:
    replies: list[bytes] = []

    def on_message(message: Message) -> None:
        replies.append(message.payload)
        conn.publish("eb/v1/term/T1/ack", b"ack")

    conn = MqttConnection("T1", on_message=on_message, keepalive=0)
    transport = FakeTransport(conn)
    conn.connection_made(transport)
    conn.data_received(connack())
    transport.writes.clear()
    conn.data_received(encode_publish("eb/v1/alert/35", b"alert", qos=1, packet_id=42))
    assert replies == [b"alert"]
    assert len(transport.writes) == 1, "the ack and the PUBACK leave together"
    kinds = [(kind, body) for kind, _, body in transport.packets()]
    assert kinds[0][0] == 3  # our ack publish, from inside the callback
    assert kinds[1] == (4, _hex("002a"))  # then the PUBACK of packet 42


async def test_outgoing_qos1_respects_the_servers_receive_maximum() -> None:
    conn, transport, _ = connection(keepalive=0)
    conn.data_received(connack(properties="03 21 0002"))
    transport.writes.clear()
    ids = [conn.publish("t", bytes([n])) for n in range(3)]
    assert ids[0] is not None
    assert [kind for kind, _, _ in transport.packets()] == [3, 3]
    waiter = conn.wait_puback(ids[0])
    conn.data_received(encode_puback(ids[0]))  # a 2-byte PUBACK: success
    assert await waiter == 0
    sent = transport.packets()
    assert len(sent) == 1
    assert sent[0][2].endswith(b"\x02")
    assert conn.unacked() == [Outgoing("t", b"\x01"), Outgoing("t", b"\x02")]


async def test_losing_the_link_fails_waiters_and_keeps_unacked_messages() -> None:
    lost: list[MqttConnection] = []
    conn = MqttConnection("T1", on_lost=lambda c, _exc: lost.append(c), keepalive=0)
    transport = FakeTransport(conn)
    conn.connection_made(transport)
    conn.data_received(connack())
    packet_id = conn.publish("eb/v1/term/T1/ack", b"played")
    assert packet_id is not None
    waiter = conn.wait_puback(packet_id)
    subscribing = asyncio.ensure_future(conn.subscribe(["a"]))
    await asyncio.sleep(0)  # let subscribe() write its packet and wait
    conn.abort()
    with pytest.raises(ConnectionLost):
        await waiter
    with pytest.raises(ConnectionLost):
        await subscribing
    assert lost == [conn]
    assert conn.unacked() == [Outgoing("eb/v1/term/T1/ack", b"played")]
    with pytest.raises(ConnectionLost):
        conn.publish("t", b"")


async def test_subscribe_waits_for_its_suback() -> None:
    conn, transport, _ = connection(keepalive=0)
    conn.data_received(connack())
    transport.writes.clear()
    subscribing = asyncio.ensure_future(conn.subscribe(["a", "b"]))
    await asyncio.sleep(0)
    ((kind, flags, body),) = transport.packets()
    assert (kind, flags) == (8, 2)
    conn.data_received(b"\x90\x05" + body[:2] + b"\x00\x01\x80")
    assert await subscribing == [1, 0x80]


async def test_keepalive_pings_and_gives_up_without_an_answer() -> None:
    conn, transport, _ = connection(keepalive=30)
    conn.data_received(connack())
    transport.writes.clear()
    conn._on_ping_timer()
    assert transport.writes == [b"\xc0\x00"]
    conn.data_received(b"\xd0\x00")  # PINGRESP
    conn._on_ping_timer()
    assert not transport.aborted
    conn._on_ping_timer()  # the second ping got no answer
    assert transport.aborted
    assert isinstance(conn.close_reason, ConnectionLost)


async def test_server_keep_alive_overrides_ours() -> None:
    conn, _, _ = connection(keepalive=600)
    conn.data_received(connack(properties="03 13 0078"))
    assert conn._keepalive == 120
    conn.abort()


async def test_a_server_disconnect_closes_with_its_reason() -> None:
    conn, transport, _ = connection(keepalive=0)
    conn.data_received(connack())
    conn.data_received(_hex("e0 01 8e"))  # session taken over
    assert transport.aborted
    assert "0x8e" in str(conn.close_reason)


async def test_garbage_from_the_peer_closes_the_link() -> None:
    conn, transport, _ = connection(keepalive=0)
    conn.data_received(connack())
    conn.data_received(_hex("f0 00"))  # AUTH: not supported
    assert transport.aborted
    assert isinstance(conn.close_reason, ProtocolError)


async def test_disconnect_is_normal_so_the_broker_keeps_the_session_and_drops_the_will() -> None:
    conn, transport, _ = connection(keepalive=0)
    conn.data_received(connack())
    transport.writes.clear()
    conn.disconnect()
    assert transport.writes == [b"\xe0\x00"]
    assert not transport.aborted
    assert conn.closed.done()


# -- credentials and TLS against a real mosquitto ---------------------------------------------
#
# A broker of this module's own (tests/support's MosquittoServer is the project's shipped
# config; these tests want a bare one): anonymous clients refused, a password file made with
# mosquitto_passwd, a plain listener and a TLS listener with a CA and a server certificate
# made here with `cryptography`.

USER = "T350102001001"
PASSWORD = "s3cret-Pässword"
WRONG_PASSWORD = "wrong-Pässword-0451"


@dataclass
class Pki:
    ca_file: Path
    cert_file: Path
    key_file: Path
    other_ca_file: Path


def make_pki(folder: Path) -> Pki:
    """The broker's TLS files as the embedded broker makes them, and a second CA that did not
    sign them."""
    files = ensure_tls(folder / "tls", ["127.0.0.1", "localhost"])
    other = ensure_tls(folder / "other", ["127.0.0.1"])
    return Pki(files.ca_cert, files.server_cert, files.server_key, other.ca_cert)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _wait_listening(port: int, proc: subprocess.Popen[bytes], deadline: float) -> None:
    """Until something accepts on ``port`` (bounded by ``deadline``, a monotonic time)."""
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"mosquitto exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.02)  # polling a condition, within the deadline


@dataclass
class SecureBroker:
    port: int
    tls_port: int
    pki: Pki
    log: Path


@pytest.fixture(scope="module")
def secure_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecureBroker]:
    folder = tmp_path_factory.mktemp("secure-mosquitto")
    pki = make_pki(folder)
    passwd = folder / "passwd"
    mosquitto_passwd = shutil.which("mosquitto_passwd") or "/usr/bin/mosquitto_passwd"
    subprocess.run([mosquitto_passwd, "-b", "-c", str(passwd), USER, PASSWORD], check=True)
    port, tls_port = _free_port(), _free_port()
    conf = folder / "mosquitto.conf"
    conf.write_text(
        f"per_listener_settings false\n"
        f"allow_anonymous false\n"
        f"password_file {passwd}\n"
        f"user {getpass.getuser()}\n"
        f"listener {port} 127.0.0.1\n"
        f"listener {tls_port} 127.0.0.1\n"
        f"cafile {pki.ca_file}\n"
        f"certfile {pki.cert_file}\n"
        f"keyfile {pki.key_file}\n"
        f"tls_version tlsv1.2\n"
    )
    mosquitto = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    log = folder / "mosquitto.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([mosquitto, "-c", str(conf)], stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 10
        _wait_listening(port, proc, deadline)
        _wait_listening(tls_port, proc, deadline)
        yield SecureBroker(port, tls_port, pki, log)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _client_context(ca_file: Path) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(ca_file))


def _no_password_in(exc: BaseException, *passwords: str) -> None:
    for text in (str(exc), repr(exc), repr(exc.args)):
        for password in passwords:
            assert password not in text


def _settle(future: asyncio.Future[Message], message: Message) -> None:
    if not future.done():
        future.set_result(message)


async def test_good_credentials_connect(secure_broker: SecureBroker) -> None:
    received: asyncio.Future[Message] = asyncio.get_running_loop().create_future()
    conn, connack = await open_connection(
        "127.0.0.1",
        secure_broker.port,
        USER,
        timeout=5,
        on_message=lambda message: _settle(received, message),
        keepalive=30,
        clean_start=True,
        username=USER,
        password=PASSWORD,
    )
    try:
        assert connack.reason_code == 0
        topic = f"eb/v1/term/{USER}/cmd"
        assert await conn.subscribe([topic]) == [1]
        assert await conn.publish_acked(topic, b"ping") == 0
        async with asyncio.timeout(5):
            assert (await received).payload == b"ping"
    finally:
        conn.disconnect()
        await conn.closed


async def test_a_wrong_password_is_refused_without_showing_it(
    secure_broker: SecureBroker,
) -> None:
    lost: list[BaseException | None] = []
    with pytest.raises(CredentialsRefused) as refused:
        await open_connection(
            "127.0.0.1",
            secure_broker.port,
            USER,
            timeout=5,
            on_lost=lambda _conn, exc: lost.append(exc),
            keepalive=30,
            username=USER,
            password=WRONG_PASSWORD,
        )
    assert refused.value.reason_code == 0x87  # mosquitto 2.0 says "not authorized" for both
    assert isinstance(refused.value, ConnectRefused)
    assert not isinstance(refused.value, (OSError, ConnectionLost))
    assert USER in str(refused.value)
    _no_password_in(refused.value, WRONG_PASSWORD, PASSWORD)
    assert lost == [refused.value]  # on_lost got the same exception: no password there either


async def test_an_anonymous_client_is_refused(secure_broker: SecureBroker) -> None:
    with pytest.raises(CredentialsRefused) as refused:
        await open_connection("127.0.0.1", secure_broker.port, "anonymous-1", timeout=5)
    assert refused.value.reason_code == 0x87  # mosquitto 2.0: not authorized


async def test_a_user_name_of_nobody_is_refused(secure_broker: SecureBroker) -> None:
    with pytest.raises(CredentialsRefused):
        await open_connection(
            "127.0.0.1",
            secure_broker.port,
            "T0",
            timeout=5,
            username="T0",
            password=PASSWORD,
        )


async def test_tls_with_credentials_connects(secure_broker: SecureBroker) -> None:
    conn, connack = await tls_connect(secure_broker, secure_broker.pki.ca_file, PASSWORD)
    try:
        assert connack.reason_code == 0
        assert await conn.subscribe(["eb/v1/alert/35"]) == [1]
    finally:
        conn.disconnect()
        await conn.closed


async def test_tls_by_host_name(secure_broker: SecureBroker) -> None:
    conn, _ = await open_connection(
        "127.0.0.1",
        secure_broker.tls_port,
        USER,
        timeout=5,
        ssl=_client_context(secure_broker.pki.ca_file),
        server_hostname="localhost",
        username=USER,
        password=PASSWORD,
    )
    conn.disconnect()
    await conn.closed


async def tls_connect(
    broker: SecureBroker, ca_file: Path, password: str
) -> tuple[MqttConnection, Connack]:
    """A connection as ``USER`` to the TLS listener, trusting ``ca_file``."""
    return await open_connection(
        "127.0.0.1",
        broker.tls_port,
        USER,
        timeout=5,
        ssl=_client_context(ca_file),
        username=USER,
        password=password,
    )


async def test_tls_against_another_ca_fails_verification(secure_broker: SecureBroker) -> None:
    with pytest.raises(ssl.SSLCertVerificationError):
        await tls_connect(secure_broker, secure_broker.pki.other_ca_file, PASSWORD)


async def test_tls_wrong_password_is_refused_too(secure_broker: SecureBroker) -> None:
    with pytest.raises(CredentialsRefused) as refused:
        await tls_connect(secure_broker, secure_broker.pki.ca_file, WRONG_PASSWORD)
    _no_password_in(refused.value, WRONG_PASSWORD)


# -- refusals and secrets, without a broker ----------------------------------------------------


@pytest.mark.parametrize(
    ("code", "kind", "text"),
    [
        (0x85, CredentialsRefused, "client identifier not valid"),
        (0x86, CredentialsRefused, "bad user name or password"),
        (0x87, CredentialsRefused, "not authorized"),
        (0x88, ConnectRefused, "server unavailable"),
        (0xFE, ConnectRefused, "unknown reason"),
    ],
)
def test_refusal_kinds(code: int, kind: type[ConnectRefused], text: str) -> None:
    exc = refusal(code, "T1", "T1")
    assert type(exc) is kind
    assert exc.reason_code == code
    assert text in str(exc)
    assert f"0x{code:02x}" in str(exc)


async def test_a_credentials_refusal_through_the_protocol_names_the_user_not_the_password() -> None:
    conn, transport, _ = connection(username="T1", password=PASSWORD)
    conn.data_received(_hex("20 03 00 86 00"))
    with pytest.raises(CredentialsRefused) as refused:
        await conn.connack
    assert "bad user name or password" in str(refused.value)
    assert "'T1'" in str(refused.value)
    _no_password_in(refused.value, PASSWORD)
    assert transport.aborted


def test_an_mqtt_url_hides_its_password() -> None:
    url = parse_mqtt_url(f"mqtts://T1:{PASSWORD}@broker")
    assert url == MqttUrl("broker", 8883, "T1", PASSWORD, tls=True)
    assert PASSWORD not in repr(url)
    assert PASSWORD not in str(url)


@pytest.mark.parametrize(
    "url", [f"http://T1:{PASSWORD}@broker", f"mqtt://T1:{PASSWORD}@broker:port"]
)
def test_a_bad_url_error_hides_the_password(url: str) -> None:
    with pytest.raises(ValueError, match="mqtt://") as error:
        parse_mqtt_url(url)
    assert PASSWORD not in str(error.value)
    assert "T1:***@broker" in str(error.value)
