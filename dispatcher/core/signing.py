"""Signed payloads: what the engine publishes and how a terminal knows it came from the engine.

GY/T 389-2023 wants every emergency broadcast message signed by the sender and verified by the
receiver. A message on the wire is a JWS compact serialization (RFC 7515)::

    BASE64URL(header) "." BASE64URL(payload) "." BASE64URL(signature)      (no padding)

with the header ``{"alg":"EdDSA","kid":"ed25519-…","typ":"ebd+v1"}`` (compact JSON, that key
order) and the signature over the ASCII bytes ``BASE64URL(header) "." BASE64URL(payload)``. The
payload is the v1 JSON of docs/protocol.md, byte for byte. Two algorithms:

- ``EdDSA``: Ed25519 (RFC 8032), through ``cryptography``; the default.
- ``SM2SM3``: SM2 (GB/T 32918) with the SM3 digest and the default user id
  ``1234567812345678``, the signature as raw r‖s (64 bytes). SM3 comes from ``cryptography``
  (OpenSSL), the curve arithmetic from ``gmssl``.

``Signer`` signs once per published message; ``Keyring`` holds the public keys a terminal is
provisioned with and ``verify`` returns the payload bytes or raises ``SignatureRejected``,
never anything else on hostile bytes. Keys rotate with an overlap (``rotate``): the old key is
accepted until its ``not_after``.

Like ``dispatcher.core.wire`` this module is part of the terminal's contract: ``receiver``
imports it, so it imports nothing of ``dispatcher`` but the wire module.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import json
import os
import re
import secrets
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Final

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from gmssl.sm2 import CryptSM2  # type: ignore[import-untyped]  # gmssl ships no annotations

from dispatcher.core.wire import MAX_PAYLOAD

__all__ = [
    "ALGORITHMS",
    "ALG_ED25519",
    "ALG_SM2",
    "JWS_TYPE",
    "MAX_MESSAGE",
    "CachingVerifier",
    "Keyring",
    "KeyringError",
    "PublicKey",
    "SignatureRejected",
    "Signer",
    "SigningKey",
    "Verified",
    "load_keyring_from_env",
    "rotate",
]

ALG_ED25519: Final = "EdDSA"
ALG_SM2: Final = "SM2SM3"
ALGORITHMS: Final = frozenset({ALG_ED25519, ALG_SM2})
JWS_TYPE: Final = "ebd+v1"
# The environment variable naming the keyring file, for a receiver started without one.
KEYRING_ENV: Final = "EBD_KEYRING"
# base64url of the largest payload, plus room for the header and the 86-character signature.
MAX_MESSAGE: Final = 4 * ((MAX_PAYLOAD + 2) // 3) + 1024
# Both algorithms sign with 64 bytes: 86 base64url characters, unpadded.
SIGNATURE_SIZE: Final = 64
_MAX_HEADER_SEGMENT = 512
_KID_PREFIX: Final = {ALG_ED25519: "ed25519-", ALG_SM2: "sm2-"}
_KID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}")
_JWS_SHAPE = re.compile(rb"([A-Za-z0-9_-]+)\.([A-Za-z0-9_-]+)\.([A-Za-z0-9_-]+)")
# Only the base64url alphabet and dots: a JWS gone wrong rather than something never signed.
_JWS_ALPHABET = re.compile(rb"[A-Za-z0-9_.-]*\.[A-Za-z0-9_.-]*")

# SM2 recommended curve (GB/T 32918.5), the parameters gmssl uses too.
_SM2 = {
    "p": 0xFFFFFFFEFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF00000000FFFFFFFFFFFFFFFF,
    "a": 0xFFFFFFFEFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF00000000FFFFFFFFFFFFFFFC,
    "b": 0x28E9FA9E9D9F5E344D5A9E4BCF6509A7F39789F515AB8F92DDBCBD414D940E93,
    "n": 0xFFFFFFFEFFFFFFFFFFFFFFFFFFFFFFFF7203DF6B21C6052B53BBF40939D54123,
    "gx": 0x32C4AE2C1F1981195F9904466A39C9948FE30BBFF2660BE1715A4589334C74C7,
    "gy": 0xBC3736A2F4F6779C59BDCEE36B692153D0A9877CC62A474002DF32E52139F0A0,
}
SM2_DEFAULT_ID: Final = b"1234567812345678"


class SignatureRejected(ValueError):
    """A message that did not verify. ``code`` is one of ``unsigned``, ``malformed``,
    ``unknown key``, ``retired``, ``bad signature``, ``algorithm not allowed``; ``reason``
    (also ``str(exc)``) says it for a log or a terminal's report; ``kid`` if the header named
    one."""

    def __init__(self, code: str, reason: str | None = None, kid: str | None = None) -> None:
        super().__init__(reason or code)
        self.code = code
        self.reason = reason or code
        self.kid = kid


class KeyringError(ValueError):
    """A key or keyring file that cannot be used; the message says which entry and why."""


# -- the two algorithms -----------------------------------------------------------------------


def _sm3(data: bytes) -> bytes:
    digest = hashes.Hash(hashes.SM3())
    digest.update(data)
    return digest.finalize()


def _sm2_z(raw: bytes) -> bytes:
    """Z_A of GB/T 32918.2: SM3 of the user id's bit length, the id, the curve and the key."""
    curve = b"".join(_SM2[k].to_bytes(32, "big") for k in ("a", "b", "gx", "gy"))
    entl = (len(SM2_DEFAULT_ID) * 8).to_bytes(2, "big")
    return _sm3(entl + SM2_DEFAULT_ID + curve + raw[1:])


def _sm2_on_curve(raw: bytes) -> bool:
    if len(raw) != 65 or raw[0] != 4:
        return False
    p = _SM2["p"]
    x, y = int.from_bytes(raw[1:33], "big"), int.from_bytes(raw[33:], "big")
    # Cofactor 1: a point on the curve is in the group; the point at infinity has no encoding.
    return x < p and y < p and (y * y - x * x * x - _SM2["a"] * x - _SM2["b"]) % p == 0


def _gmssl(private_hex: str, raw_public: bytes) -> Any:
    crypt = CryptSM2(private_key=private_hex, public_key="")
    # Set after construction: gmssl's constructor does public_key.lstrip("04"), which also eats
    # leading 0 and 4 digits of x and corrupts one key in eight.
    crypt.public_key = raw_public[1:].hex()
    return crypt


class _Sm2Verifier:
    __slots__ = ("_crypt", "_z")

    def __init__(self, raw: bytes) -> None:
        self._z = _sm2_z(raw)
        self._crypt = _gmssl("", raw)

    def __call__(self, data: bytes, signature: bytes) -> bool:
        r = int.from_bytes(signature[:32], "big")
        s = int.from_bytes(signature[32:], "big")
        # gmssl does not check the ranges GB/T 32918.2 (step B1, B2) requires.
        if not (0 < r < _SM2["n"] and 0 < s < _SM2["n"]):
            return False
        try:
            return bool(self._crypt.verify(signature.hex(), _sm3(self._z + data)))
        except Exception:  # gmssl fails on odd points with whatever it hits: never ours to raise
            return False


def _ed25519_verifier(raw: bytes) -> Callable[[bytes, bytes], bool]:
    key = Ed25519PublicKey.from_public_bytes(raw)

    def verify(data: bytes, signature: bytes) -> bool:
        try:
            key.verify(signature, data)
        except InvalidSignature:
            return False
        return True

    return verify


def _kid(alg: str, raw: bytes) -> str:
    return _KID_PREFIX[alg] + hashlib.sha256(raw).hexdigest()[:16]


# -- keys -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PublicKey:
    """A public key a terminal accepts: ``alg`` (``EdDSA`` or ``SM2SM3``), ``raw`` (Ed25519: 32
    bytes; SM2: 65 bytes, 04‖x‖y), and ``not_after`` once it is retired, the end of its
    overlap. ``kid`` is derived from the key: alg prefix and 16 hex digits of SHA-256(raw)."""

    alg: str
    raw: bytes
    not_after: datetime | None = None
    kid: str = field(init=False)
    _verify: Callable[[bytes, bytes], bool] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.not_after is not None and self.not_after.utcoffset() is None:
            raise KeyringError("not_after must have a UTC offset")
        verify: Callable[[bytes, bytes], bool]
        if self.alg == ALG_ED25519:
            if len(self.raw) != 32:
                raise KeyringError(f"an Ed25519 public key is 32 bytes, not {len(self.raw)}")
            verify = _ed25519_verifier(self.raw)
        elif self.alg == ALG_SM2:
            if not _sm2_on_curve(self.raw):
                raise KeyringError("not an SM2 public key (65 bytes 04‖x‖y on the SM2 curve)")
            verify = _Sm2Verifier(self.raw)
        else:
            raise KeyringError(f"unknown algorithm {self.alg!r}")
        # Frozen: set once here, the derived fields and the ready-made verifier.
        object.__setattr__(self, "kid", _kid(self.alg, self.raw))
        object.__setattr__(self, "_verify", verify)

    def verifies(self, data: bytes, signature: bytes) -> bool:
        return len(signature) == SIGNATURE_SIZE and self._verify(data, signature)

    def retired(self, at: datetime) -> PublicKey:
        return replace(self, not_after=at)


class SigningKey:
    """A private key: ``generate(alg)``, ``load(path)`` / ``save(path)`` as a small JSON file
    ``{"alg", "kid", "private_key": base64}`` (Ed25519: the 32-byte seed; SM2: d, 32 bytes)."""

    __slots__ = ("_ed25519", "_secret", "_sm2", "alg", "kid", "raw_public")

    def __init__(self, alg: str, secret: bytes) -> None:
        self.alg = alg
        self._secret = secret
        self._ed25519: Ed25519PrivateKey | None = None
        self._sm2: tuple[Any, bytes] | None = None
        if len(secret) != 32:
            raise KeyringError(f"a private key is 32 bytes, not {len(secret)}")
        if alg == ALG_ED25519:
            self._ed25519 = Ed25519PrivateKey.from_private_bytes(secret)
            self.raw_public = self._ed25519.public_key().public_bytes(
                Encoding.Raw, PublicFormat.Raw
            )
        elif alg == ALG_SM2:
            d = int.from_bytes(secret, "big")
            if not 0 < d < _SM2["n"] - 1:
                raise KeyringError("an SM2 private key is in [1, n-2]")
            crypt = _gmssl(secret.hex(), b"\x04" + bytes(64))
            # d·G by gmssl's own scalar multiplication: it has no key generation of its own.
            point = crypt._kg(d, f"{_SM2['gx']:064x}{_SM2['gy']:064x}")
            self.raw_public = b"\x04" + bytes.fromhex(point)
            crypt.public_key = point
            self._sm2 = (crypt, _sm2_z(self.raw_public))
        else:
            raise KeyringError(f"unknown algorithm {alg!r}")
        self.kid = _kid(alg, self.raw_public)

    def __repr__(self) -> str:
        return f"SigningKey({self.alg!r}, kid={self.kid!r})"  # never the secret

    @classmethod
    def generate(cls, alg: str = ALG_ED25519) -> SigningKey:
        if alg == ALG_SM2:
            return cls(alg, (secrets.randbelow(_SM2["n"] - 2) + 1).to_bytes(32, "big"))
        return cls(alg, secrets.token_bytes(32))

    def public(self, not_after: datetime | None = None) -> PublicKey:
        return PublicKey(self.alg, self.raw_public, not_after)

    def sign(self, data: bytes) -> bytes:
        """The raw 64-byte signature of ``data``."""
        if self._ed25519 is not None:
            return self._ed25519.sign(data)
        assert self._sm2 is not None  # noqa: S101  one of the two is set in __init__
        crypt, z = self._sm2
        digest = _sm3(z + data)
        while True:
            # Our own nonce: gmssl's default draws it with random.choice, which is predictable,
            # and a predictable nonce gives the private key away.
            k = secrets.randbelow(_SM2["n"] - 1) + 1
            signature = crypt.sign(digest, f"{k:064x}")
            if signature is not None:  # None: r = 0 or r + k = n, try another k
                return bytes.fromhex(signature)

    def to_json(self) -> str:
        secret = base64.b64encode(self._secret).decode()
        return json.dumps({"alg": self.alg, "kid": self.kid, "private_key": secret}) + "\n"

    @classmethod
    def from_json(cls, text: str) -> SigningKey:
        try:
            body = json.loads(text)
            key = cls(body["alg"], base64.b64decode(body["private_key"], validate=True))
        except (ValueError, KeyError, TypeError, binascii.Error) as exc:
            raise KeyringError(f"not a signing key file: {exc}") from None
        if body.get("kid", key.kid) != key.kid:
            raise KeyringError(f"kid {body['kid']!r} does not match the key ({key.kid})")
        return key

    def save(self, path: Path) -> None:
        """Write the key readable by its owner alone."""
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with open(fd, "w", encoding="utf-8") as file:
            file.write(self.to_json())

    @classmethod
    def load(cls, path: Path) -> SigningKey:
        return cls.from_json(path.read_text(encoding="utf-8"))


# -- signing ----------------------------------------------------------------------------------


def _b64(data: bytes) -> bytes:
    return base64.urlsafe_b64encode(data).rstrip(b"=")


def _unb64(segment: bytes, what: str) -> bytes:
    try:
        data = base64.urlsafe_b64decode(segment + b"=" * (-len(segment) % 4))
    except (binascii.Error, ValueError):
        raise SignatureRejected("malformed", f"malformed: {what} is not base64url") from None
    # One encoding per value: a second spelling of the same bytes would be a second message.
    if _b64(data) != segment:
        raise SignatureRejected("malformed", f"malformed: {what} is not canonical base64url")
    return data


class Signer:
    """Signs payloads with one key: ``sign(payload)`` is the JWS compact bytes to publish."""

    __slots__ = ("_prefix", "key")

    def __init__(self, key: SigningKey) -> None:
        self.key = key
        header = json.dumps(
            {"alg": key.alg, "kid": key.kid, "typ": JWS_TYPE}, separators=(",", ":")
        ).encode()
        self._prefix = _b64(header) + b"."

    @property
    def kid(self) -> str:
        return self.key.kid

    def sign(self, payload: bytes) -> bytes:
        if len(payload) > MAX_PAYLOAD:
            raise ValueError(f"payload of {len(payload)} bytes is over {MAX_PAYLOAD}")
        signing_input = self._prefix + _b64(payload)
        return signing_input + b"." + _b64(self.key.sign(signing_input))


# -- verifying --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Verified:
    """A message whose signature holds: its payload, and the key that signed it (whose
    ``not_after`` the caller still checks against its clock)."""

    payload: bytes
    kid: str
    not_after: datetime | None

    def at(self, now: datetime) -> bytes:
        if self.not_after is not None and now >= self.not_after:
            raise SignatureRejected(
                "retired", f"key {self.kid} retired at {self.not_after.isoformat()}", self.kid
            )
        return self.payload


class Keyring:
    """The public keys a terminal trusts, by kid; ``allowed`` narrows the algorithms."""

    __slots__ = ("_by_kid", "allowed", "keys")

    def __init__(self, keys: Iterable[PublicKey], allowed: Iterable[str] = ALGORITHMS) -> None:
        self.keys = tuple(keys)
        self.allowed = frozenset(allowed)
        self._by_kid = {key.kid: key for key in self.keys}
        if len(self._by_kid) != len(self.keys):
            raise KeyringError("a kid appears twice in the keyring")
        if not self.allowed <= ALGORITHMS:
            raise KeyringError(f"unknown algorithms {sorted(self.allowed - ALGORITHMS)}")

    def __repr__(self) -> str:
        return f"Keyring({[key.kid for key in self.keys]})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Keyring) and (self.keys, self.allowed) == (
            other.keys,
            other.allowed,
        )

    __hash__ = None  # type: ignore[assignment]  # equal by value, and not meant as a dict key

    def get(self, kid: str) -> PublicKey | None:
        return self._by_kid.get(kid)

    def verify(self, message: bytes, now: datetime) -> bytes:
        """The payload of ``message`` if a key of this ring, not retired at ``now``, signed it;
        SignatureRejected otherwise, and nothing else whatever the bytes."""
        if now.utcoffset() is None:
            raise ValueError("now must be timezone-aware")
        return self.check(message).at(now)

    def check(self, message: bytes) -> Verified:
        """Everything ``verify`` checks but the clock: what may be cached by message bytes."""
        if not isinstance(message, bytes | bytearray | memoryview):
            raise SignatureRejected("unsigned")
        message = bytes(message)
        if len(message) > MAX_MESSAGE:
            raise SignatureRejected(
                "malformed", f"malformed: message of {len(message)} bytes is over {MAX_MESSAGE}"
            )
        shape = _JWS_SHAPE.fullmatch(message)
        if shape is None:
            if _JWS_ALPHABET.fullmatch(message):
                raise SignatureRejected("malformed", "malformed: not three non-empty segments")
            raise SignatureRejected("unsigned")
        header_b64, payload_b64, signature_b64 = shape.groups()
        if len(header_b64) > _MAX_HEADER_SEGMENT:
            raise SignatureRejected("malformed", "malformed: header too long")
        alg, kid = _header(_unb64(header_b64, "header"))
        if alg not in self.allowed:
            raise SignatureRejected("algorithm not allowed", f"algorithm not allowed: {alg}", kid)
        key = self._by_kid.get(kid)
        if key is None:
            raise SignatureRejected("unknown key", f"unknown key {kid}", kid)
        if key.alg != alg:
            # The header must not choose how a key is used.
            raise SignatureRejected(
                "algorithm not allowed",
                f"algorithm not allowed: {alg} with key {kid} of {key.alg}",
                kid,
            )
        signature = _unb64(signature_b64, "signature")
        if len(signature) != SIGNATURE_SIZE:
            raise SignatureRejected("malformed", "malformed: signature is not 64 bytes", kid)
        signing_input = message[: len(header_b64) + 1 + len(payload_b64)]
        if not key.verifies(signing_input, signature):
            raise SignatureRejected("bad signature", kid=kid)
        payload = _unb64(payload_b64, "payload")
        if len(payload) > MAX_PAYLOAD:
            raise SignatureRejected("malformed", f"malformed: payload over {MAX_PAYLOAD}", kid)
        return Verified(payload, kid, key.not_after)

    # -- the file terminals are provisioned with ----------------------------------------------

    def to_json(self) -> str:
        keys = [
            {
                "kid": key.kid,
                "alg": key.alg,
                "public_key": base64.b64encode(key.raw).decode(),
                "not_after": None if key.not_after is None else key.not_after.isoformat(),
            }
            for key in self.keys
        ]
        return json.dumps({"keys": keys}, indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str | bytes, allowed: Iterable[str] = ALGORITHMS) -> Keyring:
        """Strict: an entry that is not exactly right fails the whole ring, with its index."""
        try:
            body = json.loads(text)
        except ValueError as exc:
            raise KeyringError(f"keyring is not JSON: {exc}") from None
        if not isinstance(body, dict) or not isinstance(body.get("keys"), list):
            raise KeyringError('keyring must be {"keys": [...]}')
        return cls((_entry(n, entry) for n, entry in enumerate(body["keys"])), allowed)

    def save(self, path: Path) -> None:
        path.write_text(self.to_json(), encoding="utf-8")

    @classmethod
    def load(cls, path: Path, allowed: Iterable[str] = ALGORITHMS) -> Keyring:
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise KeyringError(f"cannot read keyring {path}: {exc}") from None
        return cls.from_json(text, allowed)


def _header(raw: bytes) -> tuple[str, str]:
    try:
        header = json.loads(raw)
    except (ValueError, RecursionError):
        raise SignatureRejected("malformed", "malformed: header is not JSON") from None
    if not isinstance(header, dict) or set(header) != {"alg", "kid", "typ"}:
        # Exactly these: a "crit" or "jku" we ignored would be a promise we did not keep.
        raise SignatureRejected("malformed", "malformed: header must be exactly alg, kid, typ")
    alg, kid, typ = header["alg"], header["kid"], header["typ"]
    if not isinstance(kid, str) or not _KID.fullmatch(kid):
        raise SignatureRejected("malformed", "malformed: kid is not a key id")
    if typ != JWS_TYPE:
        raise SignatureRejected("malformed", f"malformed: typ is not {JWS_TYPE}", kid)
    if not isinstance(alg, str):
        raise SignatureRejected("malformed", "malformed: alg is not a string", kid)
    if alg not in ALGORITHMS:
        raise SignatureRejected("algorithm not allowed", f"algorithm not allowed: {alg}"[:80], kid)
    return alg, kid


def _entry(index: int, entry: object) -> PublicKey:
    where = f"keyring entry {index}"
    if not isinstance(entry, dict) or set(entry) != {"kid", "alg", "public_key", "not_after"}:
        raise KeyringError(f"{where}: must be exactly kid, alg, public_key, not_after")
    try:
        raw = base64.b64decode(entry["public_key"], validate=True)
        not_after = entry["not_after"]
        key = PublicKey(
            entry["alg"], raw, None if not_after is None else datetime.fromisoformat(not_after)
        )
    except (KeyringError, ValueError, TypeError, binascii.Error) as exc:
        raise KeyringError(f"{where}: {exc}") from None
    if entry["kid"] != key.kid:
        raise KeyringError(f"{where}: kid {entry['kid']!r} is not the key's ({key.kid})")
    return key


def load_keyring_from_env(environ: dict[str, str] | None = None) -> Keyring:
    """The keyring named by ``EBD_KEYRING``, for a receiver that was given none."""
    path = (os.environ if environ is None else environ).get(KEYRING_ENV)
    if not path:
        raise KeyringError(f"no keyring: give one, or set {KEYRING_ENV} to a keyring file")
    return Keyring.load(Path(path))


class CachingVerifier:
    """``Keyring.verify`` that checks each distinct message once: the simulator's thousands
    of terminals share one. The clock (a retired key) is still checked on every call."""

    __slots__ = ("_check", "keyring")

    def __init__(self, keyring: Keyring, maxsize: int = 256) -> None:
        self.keyring = keyring
        self._check = functools.lru_cache(maxsize=maxsize)(self._outcome)

    def _outcome(self, message: bytes) -> Verified | SignatureRejected:
        # lru_cache caches results, not exceptions: a forged message is checked once too.
        try:
            return self.keyring.check(message)
        except SignatureRejected as exc:
            return exc

    def __call__(self, message: bytes, now: datetime) -> bytes:
        if now.utcoffset() is None:
            raise ValueError("now must be timezone-aware")
        outcome = self._check(bytes(message))
        if isinstance(outcome, SignatureRejected):
            raise SignatureRejected(outcome.code, outcome.reason, outcome.kid)
        return outcome.at(now)


def rotate(
    keyring: Keyring, old: str | PublicKey, new: PublicKey, overlap: timedelta, now: datetime
) -> Keyring:
    """The keyring after a rotation: ``old`` retires at ``now + overlap`` (terminals accept
    it until then, so messages signed just before the switch still play), ``new`` is added,
    and keys whose overlap already ended are dropped."""
    if now.utcoffset() is None:
        raise ValueError("now must be timezone-aware")
    old_kid = old if isinstance(old, str) else old.kid
    if keyring.get(old_kid) is None:
        raise KeyringError(f"key {old_kid} is not in the keyring")
    if keyring.get(new.kid) is not None:
        raise KeyringError(f"key {new.kid} is already in the keyring")
    keys = [
        key.retired(now + overlap) if key.kid == old_kid else key
        for key in keyring.keys
        if key.kid == old_kid or key.not_after is None or key.not_after > now
    ]
    return Keyring([*keys, replace(new, not_after=None)], keyring.allowed)
