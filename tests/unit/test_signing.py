"""Signed payloads: round trips, every refusal, tampering, rotation, hostile bytes and the
test vectors of docs/protocol.md ("Signatures")."""

from __future__ import annotations

import base64
import json
import random
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from dispatcher.core.signing import (
    ALG_ED25519,
    ALG_SM2,
    MAX_MESSAGE,
    CachingVerifier,
    Keyring,
    KeyringError,
    PublicKey,
    SignatureRejected,
    Signer,
    SigningKey,
    Verified,
    load_keyring_from_env,
    rotate,
)
from dispatcher.core.wire import MAX_PAYLOAD

NOW = datetime(2026, 7, 1, 8, 0, tzinfo=UTC)
PAYLOAD = '{"v":1,"id":"a1","headline":"台风红色预警"}'.encode()

# Fixed keys: the tests do not depend on the random generator, and SM2 keys cost milliseconds.
ED = SigningKey(ALG_ED25519, bytes(range(32)))
ED_OTHER = SigningKey(ALG_ED25519, bytes(range(1, 33)))
SM2_SECRET = "3945208f7b2144b13f36e38ac6d39f95889393692860b51a42fb81ef4df7c5b8"
SM2 = SigningKey(ALG_SM2, bytes.fromhex(SM2_SECRET))
RING = Keyring([ED.public(), ED_OTHER.public(), SM2.public()])


def b64(data: bytes) -> bytes:
    return base64.urlsafe_b64encode(data).rstrip(b"=")


def jws(header: bytes | dict[str, object], payload: bytes, key: SigningKey = ED) -> bytes:
    """A JWS built by hand, so that a test can put anything in the header."""
    if isinstance(header, dict):
        header = json.dumps(header, separators=(",", ":")).encode()
    signing_input = b64(header) + b"." + b64(payload)
    return signing_input + b"." + b64(key.sign(signing_input))


def header_of(key: SigningKey, **changes: object) -> dict[str, object]:
    return {"alg": key.alg, "kid": key.kid, "typ": "ebd+v1", **changes}


def rejection(message: bytes, ring: Keyring = RING, now: datetime = NOW) -> SignatureRejected:
    with pytest.raises(SignatureRejected) as caught:
        ring.verify(message, now)
    return caught.value


# -- test vectors (the same in docs/protocol.md) -----------------------------------------------

VECTOR_PAYLOAD = (
    '{"v": 1, "id": "test-vector-1", "msg_type": "alert", "status": "test", "severity": "blue",'
    ' "event": "测试", "event_code": null, "headline": "签名测试", "text": "这是一条测试消息",'
    ' "instruction": null, "sent": "2026-07-01T08:00:00+08:00",'
    ' "expires": "2026-07-01T09:00:00+08:00", "areas": ["35"], "references": [], "repeat": 1,'
    ' "audio": null}'
).encode()
VECTOR_PAYLOAD_B64 = (
    "eyJ2IjogMSwgImlkIjogInRlc3QtdmVjdG9yLTEiLCAibXNnX3R5cGUiOiAiYWxlcnQiLCAic3RhdHVzIjogInRl"
    "c3QiLCAic2V2ZXJpdHkiOiAiYmx1ZSIsICJldmVudCI6ICLmtYvor5UiLCAiZXZlbnRfY29kZSI6IG51bGwsICJo"
    "ZWFkbGluZSI6ICLnrb7lkI3mtYvor5UiLCAidGV4dCI6ICLov5nmmK_kuIDmnaHmtYvor5Xmtojmga8iLCAiaW5z"
    "dHJ1Y3Rpb24iOiBudWxsLCAic2VudCI6ICIyMDI2LTA3LTAxVDA4OjAwOjAwKzA4OjAwIiwgImV4cGlyZXMiOiAi"
    "MjAyNi0wNy0wMVQwOTowMDowMCswODowMCIsICJhcmVhcyI6IFsiMzUiXSwgInJlZmVyZW5jZXMiOiBbXSwgInJl"
    "cGVhdCI6IDEsICJhdWRpbyI6IG51bGx9"
)
# RFC 8032, section 7.1, TEST 1: its secret key (the seed) and public key.
ED_VECTOR_SEED = "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60"
ED_VECTOR_PUBLIC = "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a"
ED_VECTOR_KID = "ed25519-21fe31dfa154a261"
ED_VECTOR_JWS = (
    "eyJhbGciOiJFZERTQSIsImtpZCI6ImVkMjU1MTktMjFmZTMxZGZhMTU0YTI2MSIsInR5cCI6ImViZCt2MSJ9."
    + VECTOR_PAYLOAD_B64
    + ".aX0hgB-OeqzZVA_PZnF_WlhfaiEw4VDSzO5e5VdDmUE_F_bWftraKBbEQ0Hxoucvx4pv2GzEGfGDhqjqtkqcDA"
)
# SM2 is randomised: a fixed public key and one signature it made, which OpenSSL 3.0 verifies
# too (pkeyutl -verify -digest sm3 -pkeyopt distid:1234567812345678).
SM2_VECTOR_PUBLIC = (
    "0409f9df311e5421a150dd7d161e4bc5c672179fad1833fc076bb08ff356f35020"
    "ccea490ce26775a52dc6ea718cc1aa600aed05fbf35e084a6632f6072da9ad13"
)
SM2_VECTOR_KID = "sm2-7ad64964540082dd"
SM2_VECTOR_JWS = (
    "eyJhbGciOiJTTTJTTTMiLCJraWQiOiJzbTItN2FkNjQ5NjQ1NDAwODJkZCIsInR5cCI6ImViZCt2MSJ9."
    + VECTOR_PAYLOAD_B64
    + ".xYtUYuFnbwpfTVHMckKNrp5NcYBdvELeFGTQp_aZ15wfpF0MZqJxgDU1oRwWP86iVdgZsCJeGc428azy5xS9bw"
)


def test_the_ed25519_vector_is_reproduced_byte_for_byte() -> None:
    key = SigningKey(ALG_ED25519, bytes.fromhex(ED_VECTOR_SEED))
    assert key.raw_public.hex() == ED_VECTOR_PUBLIC
    assert key.kid == ED_VECTOR_KID
    assert Signer(key).sign(VECTOR_PAYLOAD).decode() == ED_VECTOR_JWS
    assert b64(VECTOR_PAYLOAD).decode() == VECTOR_PAYLOAD_B64


def test_the_vectors_verify_with_their_public_keys_alone() -> None:
    ring = Keyring(
        [
            PublicKey(ALG_ED25519, bytes.fromhex(ED_VECTOR_PUBLIC)),
            PublicKey(ALG_SM2, bytes.fromhex(SM2_VECTOR_PUBLIC)),
        ]
    )
    assert [key.kid for key in ring.keys] == [ED_VECTOR_KID, SM2_VECTOR_KID]
    assert ring.verify(ED_VECTOR_JWS.encode(), NOW) == VECTOR_PAYLOAD
    assert ring.verify(SM2_VECTOR_JWS.encode(), NOW) == VECTOR_PAYLOAD
    # The SM2 vector's x starts with a 0 digit: the key gmssl's own parsing would mangle.
    assert SM2.raw_public.hex() == SM2_VECTOR_PUBLIC


# -- round trips ------------------------------------------------------------------------------


@pytest.mark.parametrize("key", [ED, SM2], ids=["EdDSA", "SM2SM3"])
def test_a_signed_payload_verifies_to_its_exact_bytes(key: SigningKey) -> None:
    message = Signer(key).sign(PAYLOAD)
    assert message.isascii()
    header, _, _ = message.split(b".")
    assert base64.urlsafe_b64decode(header + b"==") == (
        f'{{"alg":"{key.alg}","kid":"{key.kid}","typ":"ebd+v1"}}'.encode()
    )
    assert RING.verify(message, NOW) == PAYLOAD
    assert RING.check(message) == Verified(PAYLOAD, key.kid, None)


def test_key_ids_name_the_algorithm_and_the_key() -> None:
    assert ED.kid.startswith("ed25519-")
    assert SM2.kid.startswith("sm2-")
    assert len(ED.kid) == len("ed25519-") + 16
    assert ED.kid != ED_OTHER.kid


def test_sm2_signatures_are_randomised_and_each_verifies() -> None:
    signer = Signer(SM2)
    first, second = signer.sign(PAYLOAD), signer.sign(PAYLOAD)
    assert first != second
    assert RING.verify(first, NOW) == RING.verify(second, NOW) == PAYLOAD


@pytest.mark.parametrize("alg", [ALG_ED25519, ALG_SM2])
def test_a_generated_key_round_trips_through_its_file(alg: str, tmp_path: Path) -> None:
    key = SigningKey.generate(alg)
    path = tmp_path / "engine.key"
    key.save(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    loaded = SigningKey.load(path)
    assert loaded.kid == key.kid
    message = Signer(loaded).sign(PAYLOAD)
    assert Keyring([key.public()]).verify(message, NOW) == PAYLOAD
    assert base64.b64encode(key.sign(b"x")).decode() not in repr(key)
    assert "private_key" not in repr(key)


def test_a_key_file_whose_kid_is_not_its_key_is_refused() -> None:
    body = json.loads(ED.to_json()) | {"kid": ED_OTHER.kid}
    with pytest.raises(KeyringError, match="does not match"):
        SigningKey.from_json(json.dumps(body))


def test_a_keyring_round_trips_through_its_file(tmp_path: Path) -> None:
    ring = Keyring([ED.public(), SM2.public(not_after=NOW + timedelta(days=7))])
    path = tmp_path / "keyring.json"
    ring.save(path)
    body = json.loads(path.read_text(encoding="utf-8"))
    assert body["keys"][0] == {
        "kid": ED.kid,
        "alg": "EdDSA",
        "public_key": base64.b64encode(ED.raw_public).decode(),
        "not_after": None,
    }
    assert body["keys"][1]["not_after"] == "2026-07-08T08:00:00+00:00"
    assert Keyring.load(path) == ring


def _entry(**changes: object) -> str:
    entry = json.loads(Keyring([ED.public()]).to_json())["keys"][0] | changes
    return json.dumps({"keys": [{k: v for k, v in entry.items() if v != "DROP"}]})


BAD_KEYRINGS = [
    ("not JSON", "{", "not JSON"),
    ("no keys list", '{"key": []}', '{"keys": [...]}'),
    ("a kid that is not the key's", _entry(kid="ed25519-0000000000000000"), "is not the key's"),
    ("an unknown algorithm", _entry(alg="RS256"), "unknown algorithm"),
    ("a short key", _entry(public_key=base64.b64encode(b"short").decode()), "32 bytes"),
    ("a key that is not base64", _entry(public_key="!!"), "keyring entry 0"),
    ("a field too many", _entry(comment="x"), "exactly kid, alg, public_key, not_after"),
    ("a field missing", _entry(not_after="DROP"), "exactly kid, alg, public_key, not_after"),
    ("not_after without offset", _entry(not_after="2026-07-01T08:00:00"), "UTC offset"),
    ("an SM2 point off the curve",
     json.dumps({"keys": [{"kid": "sm2-x", "alg": "SM2SM3", "not_after": None,
                           "public_key": base64.b64encode(b"\x04" + bytes(64)).decode()}]}),
     "not an SM2 public key"),
]  # fmt: skip


@pytest.mark.parametrize(("text", "reason"), [b[1:] for b in BAD_KEYRINGS],
                         ids=[b[0] for b in BAD_KEYRINGS])  # fmt: skip
def test_a_bad_keyring_file_is_refused_whole(text: str, reason: str) -> None:
    with pytest.raises(KeyringError, match=reason.replace("[", r"\[").replace("]", r"\]")):
        Keyring.from_json(text)


def test_a_keyring_holds_a_kid_once() -> None:
    with pytest.raises(KeyringError, match="twice"):
        Keyring([ED.public(), ED.public()])


def test_the_keyring_comes_from_the_environment(tmp_path: Path) -> None:
    with pytest.raises(KeyringError, match="EBD_KEYRING"):
        load_keyring_from_env({})
    path = tmp_path / "keyring.json"
    RING.save(path)
    assert load_keyring_from_env({"EBD_KEYRING": str(path)}) == RING
    with pytest.raises(KeyringError, match="cannot read"):
        load_keyring_from_env({"EBD_KEYRING": str(tmp_path / "missing.json")})


# -- every refusal ----------------------------------------------------------------------------

SIGNED = Signer(ED).sign(PAYLOAD)
SIGNED_SM2 = Signer(SM2).sign(PAYLOAD)
_H, _P, _S = SIGNED.split(b".")

REFUSALS = [
    ("bare JSON", PAYLOAD, "unsigned", "unsigned"),
    ("empty", b"", "unsigned", "unsigned"),
    ("plain text", b"hello", "unsigned", "unsigned"),
    ("non-ASCII bytes", "风.雨.雷".encode(), "unsigned", "unsigned"),
    ("binary garbage", bytes(range(256)), "unsigned", "unsigned"),
    ("two segments", _H + b"." + _P, "malformed", "not three non-empty segments"),
    ("four segments", SIGNED + b".x", "malformed", "not three non-empty segments"),
    ("an empty payload segment", _H + b".." + _S, "malformed", "not three non-empty segments"),
    ("a header that is not JSON", b64(b"{alg") + b"." + _P + b"." + _S, "malformed", "not JSON"),
    ("a header that is a list", b64(b"[]") + b"." + _P + b"." + _S, "malformed", "exactly alg"),
    ("a header with crit", jws(header_of(ED, crit=["exp"]), PAYLOAD), "malformed", "exactly alg"),
    ("a header without typ", jws({"alg": "EdDSA", "kid": ED.kid}, PAYLOAD), "malformed",
     "exactly alg"),
    ("another typ", jws(header_of(ED, typ="JWT"), PAYLOAD), "malformed", "typ is not ebd+v1"),
    ("a kid that is no key id", jws(header_of(ED, kid="a b"), PAYLOAD), "malformed",
     "kid is not a key id"),
    ("a header too long", jws(header_of(ED, kid="k" * 600), PAYLOAD), "malformed",
     "header too long"),
    ("a header of 1 character too many", _H + b"A." + _P + b"." + _S, "malformed", "base64url"),
    ("a signature not 64 bytes", _H + b"." + _P + b"." + b64(bytes(60)), "malformed",
     "not 64 bytes"),
    ("alg none", jws(header_of(ED, alg="none"), PAYLOAD), "algorithm not allowed",
     "algorithm not allowed: none"),
    ("alg HS256", jws(header_of(ED, alg="HS256"), PAYLOAD), "algorithm not allowed",
     "algorithm not allowed: HS256"),
    ("alg SM2SM3 on an Ed25519 key", jws(header_of(ED, alg="SM2SM3"), PAYLOAD),
     "algorithm not allowed", f"algorithm not allowed: SM2SM3 with key {ED.kid} of EdDSA"),
    ("an unknown key", jws(header_of(ED, kid="ed25519-0123456789abcdef"), PAYLOAD),
     "unknown key", "unknown key ed25519-0123456789abcdef"),
    ("a signature of other bytes", _H + b"." + _P + b"." + SIGNED_SM2.split(b".")[2],
     "bad signature", "bad signature"),
    ("a kid swapped for another trusted key's",
     jws(header_of(ED, kid=ED_OTHER.kid), PAYLOAD, key=ED), "bad signature", "bad signature"),
    ("oversized", b"a." * (MAX_MESSAGE // 2 + 1), "malformed", f"over {MAX_MESSAGE}"),
]  # fmt: skip


@pytest.mark.parametrize(("message", "code", "reason"), [r[1:] for r in REFUSALS],
                         ids=[r[0] for r in REFUSALS])  # fmt: skip
def test_every_refusal_has_its_reason(message: bytes, code: str, reason: str) -> None:
    refused = rejection(message)
    assert refused.code == code
    assert reason in refused.reason
    assert str(refused) == refused.reason


def test_an_unknown_key_is_named_in_the_refusal() -> None:
    refused = rejection(Signer(ED).sign(PAYLOAD), Keyring([SM2.public()]))
    assert refused.reason == f"unknown key {ED.kid}"
    assert refused.kid == ED.kid


def test_a_keyring_may_allow_one_algorithm_only() -> None:
    sm2_only = Keyring([ED.public(), SM2.public()], allowed={ALG_SM2})
    assert rejection(SIGNED, sm2_only).reason == "algorithm not allowed: EdDSA"
    assert sm2_only.verify(SIGNED_SM2, NOW) == PAYLOAD


def test_an_sm2_signature_out_of_range_is_bad() -> None:
    header, payload, _ = SIGNED_SM2.split(b".")
    n = 0xFFFFFFFEFFFFFFFFFFFFFFFFFFFFFFFF7203DF6B21C6052B53BBF40939D54123
    for r, s in [(0, 1), (1, 0), (n, 1), (1, n)]:
        signature = r.to_bytes(32, "big") + s.to_bytes(32, "big")
        assert rejection(header + b"." + payload + b"." + b64(signature)).code == "bad signature"


def test_a_payload_over_the_limit_is_not_signed_nor_accepted() -> None:
    with pytest.raises(ValueError, match="over"):
        Signer(ED).sign(b" " * (MAX_PAYLOAD + 1))
    # Within the message limit, but its payload over MAX_PAYLOAD: refused after the signature.
    message = jws(header_of(ED), b" " * (MAX_PAYLOAD + 1))
    assert len(message) <= MAX_MESSAGE
    assert rejection(message).reason == f"malformed: payload over {MAX_PAYLOAD}"
    assert RING.verify(Signer(ED).sign(b" " * MAX_PAYLOAD), NOW) == b" " * MAX_PAYLOAD


def test_non_canonical_base64_is_malformed() -> None:
    # The last character of a segment carries spare bits; another value is the same bytes.
    header, payload, signature = SIGNED.split(b".")
    last = signature[-1:]
    twin = next(c for c in b"ABCDEFGHIJKLMNOP" if bytes([c]) != last and (c - last[0]) % 4 == 0)
    refused = rejection(header + b"." + payload + b"." + signature[:-1] + bytes([twin]))
    assert refused.reason in ("malformed: signature is not canonical base64url", "bad signature")


def test_a_str_is_not_a_signed_message() -> None:
    assert rejection(SIGNED.decode()).code == "unsigned"  # type: ignore[arg-type]  # hostile


def test_now_must_be_timezone_aware() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        RING.verify(SIGNED, datetime(2026, 7, 1, 8, 0))


# -- tampering --------------------------------------------------------------------------------

_ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


def _flip(message: bytes, index: int) -> bytes:
    char = message[index]
    if char == ord("."):
        replacement = ord("A")
    else:
        replacement = _ALPHABET[(_ALPHABET.index(char) + 1) % len(_ALPHABET)]
    return message[:index] + bytes([replacement]) + message[index + 1 :]


def test_changing_any_one_character_of_an_ed25519_message_is_refused() -> None:
    for index in range(len(SIGNED)):
        with pytest.raises(SignatureRejected):
            RING.verify(_flip(SIGNED, index), NOW)


def test_changing_a_character_of_an_sm2_message_is_refused() -> None:
    # An SM2 check costs milliseconds: the first, middle and last characters of each segment.
    header, payload, signature = SIGNED_SM2.split(b".")
    starts = [0, len(header) + 1, len(header) + len(payload) + 2]
    lengths = [len(header), len(payload), len(signature)]
    for start, length in zip(starts, lengths, strict=True):
        for index in (start, start + length // 2, start + length - 1):
            with pytest.raises(SignatureRejected):
                RING.verify(_flip(SIGNED_SM2, index), NOW)


def test_random_and_mutated_bytes_only_ever_raise_signature_rejected() -> None:
    # Seeded, so a failure reproduces; hypothesis is not a dependency of this project.
    rng = random.Random(20260701)  # noqa: S311  test data, not keys
    samples = [rng.randbytes(rng.randrange(0, 300)) for _ in range(500)]
    jws_like = _ALPHABET + b"..."
    for _ in range(500):
        samples.append(bytes(rng.choice(jws_like) for _ in range(rng.randrange(200))))
    for _ in range(1000):
        mutated = bytearray(SIGNED)
        for _ in range(rng.randrange(1, 4)):
            mutated[rng.randrange(len(mutated))] = rng.randrange(256)
        samples.append(bytes(mutated))
    samples += [SIGNED[:cut] for cut in range(0, len(SIGNED), 7)]
    for sample in samples:
        try:
            payload = RING.verify(sample, NOW)
        except SignatureRejected:
            continue
        assert payload == PAYLOAD, sample  # a mutation that left the message whole


# -- rotation ---------------------------------------------------------------------------------


def test_rotation_keeps_the_old_key_through_the_overlap_only() -> None:
    before = Keyring([ED.public()])
    after = rotate(before, ED.kid, ED_OTHER.public(), timedelta(days=7), NOW)
    retire_at = NOW + timedelta(days=7)
    assert [(k.kid, k.not_after) for k in after.keys] == [
        (ED.kid, retire_at),
        (ED_OTHER.kid, None),
    ]
    old_message, new_message = Signer(ED).sign(PAYLOAD), Signer(ED_OTHER).sign(PAYLOAD)
    assert after.verify(old_message, retire_at - timedelta(microseconds=1)) == PAYLOAD
    refused = rejection(old_message, after, retire_at)
    assert refused.reason == f"key {ED.kid} retired at 2026-07-08T08:00:00+00:00"
    assert refused.code == "retired"
    assert after.verify(new_message, retire_at + timedelta(days=365)) == PAYLOAD
    assert before.keys[0].not_after is None  # rotation makes a new keyring


def test_rotation_drops_keys_whose_overlap_has_ended() -> None:
    ring = Keyring([ED.public(not_after=NOW - timedelta(seconds=1)), ED_OTHER.public()])
    after = rotate(ring, ED_OTHER.public(), SM2.public(), timedelta(hours=1), NOW)
    assert [k.kid for k in after.keys] == [ED_OTHER.kid, SM2.kid]


def test_rotation_refuses_a_missing_old_or_a_present_new_key() -> None:
    ring = Keyring([ED.public()])
    with pytest.raises(KeyringError, match="not in the keyring"):
        rotate(ring, ED_OTHER.kid, SM2.public(), timedelta(days=1), NOW)
    with pytest.raises(KeyringError, match="already in the keyring"):
        rotate(ring, ED.kid, ED.public(), timedelta(days=1), NOW)


# -- the shared verifier ----------------------------------------------------------------------


class CountingKeyring(Keyring):
    __slots__ = ("checks",)

    def __init__(self, keys: list[PublicKey]) -> None:
        super().__init__(keys)
        self.checks = 0

    def check(self, message: bytes) -> Verified:
        self.checks += 1
        return super().check(message)


def test_a_caching_verifier_checks_each_message_once_and_the_clock_every_time() -> None:
    retire_at = NOW + timedelta(hours=1)
    ring = CountingKeyring([ED.public(not_after=retire_at)])
    verify = CachingVerifier(ring)
    for _ in range(1000):
        assert verify(SIGNED, NOW) == PAYLOAD
    for _ in range(3):
        with pytest.raises(SignatureRejected, match="unsigned"):
            verify(PAYLOAD, NOW)
    with pytest.raises(SignatureRejected, match="retired"):
        verify(SIGNED, retire_at)
    assert ring.checks == 2
