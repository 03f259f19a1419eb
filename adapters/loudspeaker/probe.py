"""Does the broker take these credentials? One MQTT 3.1.1 CONNECT, answered by a CONNACK.

The engine asks it of the account it has just written to the broker's password file, to know
that the broker has reread the file before it hands new credentials out.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import struct

_CONNACK = 0x20
_DISCONNECT = b"\xe0\x00"


def connect_packet(client_id: str, username: str, password: str, keepalive: int = 10) -> bytes:
    """A clean-session MQTT 3.1.1 CONNECT with a user name and a password."""

    def field(value: str) -> bytes:
        raw = value.encode()
        return struct.pack("!H", len(raw)) + raw

    # Flags: user name (0x80), password (0x40), clean session (0x02).
    variable = field("MQTT") + bytes([4, 0xC2]) + struct.pack("!H", keepalive)
    body = variable + field(client_id) + field(username) + field(password)
    length = len(body)
    encoded = bytearray()
    while True:
        byte, length = length % 128, length // 128
        encoded.append(byte | (0x80 if length else 0))
        if not length:
            break
    return bytes([0x10]) + bytes(encoded) + body


async def broker_accepts(
    host: str,
    port: int,
    username: str,
    password: str,
    *,
    tls: ssl.SSLContext | None,
    timeout: float = 5.0,
) -> bool:
    """True if the broker answers CONNACK 0 (accepted); False if it refuses or cannot be
    reached within ``timeout``."""
    writer: asyncio.StreamWriter | None = None
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(
                host, port, ssl=tls, server_hostname=host if tls is not None else None
            )
            writer.write(connect_packet(username, username, password))
            await writer.drain()
            reply = await reader.readexactly(4)
            accepted = reply[0] == _CONNACK and reply[3] == 0
            if accepted:
                writer.write(_DISCONNECT)
                await writer.drain()
            return accepted
    except (OSError, TimeoutError, asyncio.IncompleteReadError, ssl.SSLError):
        return False
    finally:
        if writer is not None:
            writer.close()
            with contextlib.suppress(OSError, ssl.SSLError):
                await writer.wait_closed()
