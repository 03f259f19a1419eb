"""The broker's side of trust: its accounts (mosquitto password-file lines) and ACLs.

Pure: the engine renders the broker's files from these, whether it runs the broker itself
(``dispatcher.embedded``) or writes the terminals' accounts for a deployment's broker.
"""

from __future__ import annotations

import base64
import hashlib
import os

# The engine's account on the engine listener; every engine instance and link uses it.
ENGINE_USER = "ebd-engine"
# Terminals' accounts are named by their terminal ids, which never start with "~" (see
# wire.TERMINAL_ID): this account is the engine's proof that the broker has reread the file.
CANARY_USER = "~ebd-canary"
# Mosquitto 2.0's password hash: PBKDF2-HMAC-SHA512, a 12-byte salt, 101 iterations (what
# mosquitto_passwd writes). The passwords are 32 random bytes, so the iterations guard nothing
# that guessing could reach; more would slow every reconnect of 17,498 terminals.
_PW_ITERATIONS = 101
_PW_SALT_BYTES = 12


def password_line(user: str, password: str, *, salt: bytes | None = None) -> str:
    """One line of a mosquitto password file: ``user:$7$101$salt$hash``."""
    if ":" in user or "\n" in user or "\n" in password:
        raise ValueError("a broker user name holds no ':' and neither it nor a password a newline")
    salt = salt if salt is not None else os.urandom(_PW_SALT_BYTES)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, _PW_ITERATIONS)
    encoded = base64.b64encode(salt).decode(), base64.b64encode(digest).decode()
    return f"{user}:$7${_PW_ITERATIONS}${encoded[0]}${encoded[1]}"


ENGINE_ACL = f"""\
# The engine's accounts: alerts and commands out, acks and states in, nothing else exists on
# this listener.
user {ENGINE_USER}
topic write eb/v1/alert/#
topic write eb/v1/term/+/cmd
topic read eb/v1/term/+/ack
topic read eb/v1/term/+/state
"""

TERMINALS_ACL = """\
# Every terminal (its user name is its terminal id): the alerts of every region (it subscribes
# only to its own region's path), its own commands; its own acks and state, nothing else.
pattern read eb/v1/alert/#
pattern read eb/v1/term/%u/cmd
pattern write eb/v1/term/%u/ack
pattern write eb/v1/term/%u/state
"""
