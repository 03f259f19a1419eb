"""Password hashing for people's sign-in: scrypt (``hashlib.scrypt``) with a random salt.

A stored hash names its parameters, so raising them later leaves older hashes verifiable:

    scrypt$n=16384,r=8,p=1$<salt, base64>$<key, base64>

Pure apart from the CPU it burns (about 50 ms and 16 MiB a hash): callers on the event loop
run ``hash_password`` and ``verify_password`` in a thread.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

SCHEME = "scrypt"
N, R, P = 2**14, 8, 1
SALT_BYTES = 16
KEY_BYTES = 32
# scrypt needs 128 * n * r bytes; twice that leaves room and refuses absurd stored parameters.
_MAX_MEM = 2 * 128 * 2**17 * 8
MIN_LENGTH = 10
# Long enough for any passphrase; longer ones are refused before they cost anything.
MAX_LENGTH = 256


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def _derive(password: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    return hashlib.scrypt(
        password.encode("utf-8"), salt=salt, n=n, r=r, p=p, maxmem=_MAX_MEM, dklen=KEY_BYTES
    )


def hash_password(password: str) -> str:
    """The stored form of ``password`` with a fresh salt."""
    salt = secrets.token_bytes(SALT_BYTES)
    key = _derive(password, salt, N, R, P)
    return f"{SCHEME}$n={N},r={R},p={P}${_b64(salt)}${_b64(key)}"


def verify_password(password: str, stored: str) -> bool:
    """Whether ``password`` is the one ``stored`` was made from; False for a malformed
    ``stored`` too (a damaged record locks its person out rather than letting anyone in)."""
    try:
        scheme, params, salt_b64, key_b64 = stored.split("$")
        fields = dict(item.split("=", 1) for item in params.split(","))
        n, r, p = int(fields["n"]), int(fields["r"]), int(fields["p"])
        salt = base64.b64decode(salt_b64, validate=True)
        key = base64.b64decode(key_b64, validate=True)
        if scheme != SCHEME or not key or n < 2 or n & (n - 1) or not (0 < r <= 32 and 0 < p <= 16):
            return False
        derived = hashlib.scrypt(
            password.encode("utf-8"), salt=salt, n=n, r=r, p=p, maxmem=_MAX_MEM, dklen=len(key)
        )
    except (ValueError, KeyError, TypeError, UnicodeEncodeError):
        return False
    return hmac.compare_digest(derived, key)


# Verified against when the login names nobody, so an unknown login takes as long as a known
# one with a wrong password (the answer's timing does not tell which logins exist).
DUMMY_HASH = hash_password(secrets.token_urlsafe(16))


def password_problem(password: str) -> str | None:
    """What is wrong with ``password`` as a new password, None if it will do."""
    if len(password) < MIN_LENGTH:
        return f"a password needs at least {MIN_LENGTH} characters (got {len(password)})"
    if len(password) > MAX_LENGTH:
        return f"a password may have at most {MAX_LENGTH} characters (got {len(password)})"
    if not password.isprintable():
        return "a password may not hold control characters (tabs, newlines)"
    try:
        password.encode("utf-8")
    except UnicodeEncodeError:
        return "a password must be valid Unicode text"
    return None
