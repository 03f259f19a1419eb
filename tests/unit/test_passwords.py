"""Password hashing: scrypt with the stored parameters, a fresh salt each time, a verify that
refuses wrong passwords and damaged or tampered stored forms instead of failing open."""

from __future__ import annotations

import base64

import pytest

from dispatcher.core.passwords import (
    DUMMY_HASH,
    MAX_LENGTH,
    MIN_LENGTH,
    hash_password,
    password_problem,
    verify_password,
)

PASSWORD = "台风来了-correct-horse"


def test_a_hash_names_its_parameters_and_verifies_its_password() -> None:
    stored = hash_password(PASSWORD)
    scheme, params, salt, key = stored.split("$")
    assert (scheme, params) == ("scrypt", "n=16384,r=8,p=1")
    assert len(base64.b64decode(salt)) == 16
    assert len(base64.b64decode(key)) == 32
    assert PASSWORD not in stored
    assert verify_password(PASSWORD, stored)


def test_the_same_password_gets_a_new_salt_each_time() -> None:
    first, second = hash_password(PASSWORD), hash_password(PASSWORD)
    assert first != second
    assert verify_password(PASSWORD, first)
    assert verify_password(PASSWORD, second)


@pytest.mark.parametrize(
    "attempt", ["", PASSWORD[:-1], PASSWORD + " ", PASSWORD.upper(), "台风来了-correct-horsE"]
)
def test_a_wrong_password_is_refused(attempt: str) -> None:
    assert not verify_password(attempt, hash_password(PASSWORD))


def test_older_parameters_still_verify() -> None:
    """A hash made with other parameters (say, before they were raised) is read from itself."""
    import hashlib

    salt = b"0123456789abcdef"
    key = hashlib.scrypt(PASSWORD.encode(), salt=salt, n=2**10, r=8, p=1, dklen=32)
    stored = (
        f"scrypt$n=1024,r=8,p=1${base64.b64encode(salt).decode()}${base64.b64encode(key).decode()}"
    )
    assert verify_password(PASSWORD, stored)
    assert not verify_password("other-password", stored)


@pytest.mark.parametrize(
    "damage",
    [
        lambda s: "",
        lambda s: "garbage",
        lambda s: s.replace("scrypt$", "md5$"),
        lambda s: s.replace("n=16384", "n=16383"),  # not a power of two
        lambda s: s.replace("n=16384", "n=1"),
        lambda s: s.replace("p=1", "p=1000"),  # an attacker's CPU bill
        lambda s: s.replace("r=8", "r=100000"),
        lambda s: s.replace("n=16384", "n=1048576"),  # over the memory bound
        lambda s: s.replace(",r=8", ""),
        lambda s: s.rsplit("$", 1)[0] + "$",  # no key: an empty key would match anything
        lambda s: s.rsplit("$", 1)[0] + "$!!notbase64",
        lambda s: s + "$extra",
    ],
)
def test_a_damaged_or_tampered_hash_refuses_every_password(damage: object) -> None:
    stored = damage(hash_password(PASSWORD))  # type: ignore[operator]
    assert not verify_password(PASSWORD, stored)


def test_a_password_that_is_no_unicode_text_is_refused_not_raised() -> None:
    assert not verify_password("\ud800", hash_password(PASSWORD))
    assert password_problem("\ud800" * MIN_LENGTH) is not None


def test_the_dummy_hash_matches_no_likely_password() -> None:
    for attempt in ("", "password", "1234567890", PASSWORD):
        assert not verify_password(attempt, DUMMY_HASH)


@pytest.mark.parametrize(
    ("password", "problem"),
    [
        ("x" * (MIN_LENGTH - 1), "at least 10"),
        ("x" * (MAX_LENGTH + 1), "at most 256"),
        ("tab\there-and-more", "control characters"),
        ("newline\nhere-and-more", "control characters"),
    ],
)
def test_a_weak_or_malformed_new_password_is_explained(password: str, problem: str) -> None:
    said = password_problem(password)
    assert said is not None
    assert problem in said
    assert password not in said  # the message never quotes the password


def test_a_good_new_password_has_no_problem() -> None:
    assert password_problem(PASSWORD) is None
    assert password_problem("x" * MIN_LENGTH) is None
    assert password_problem("x" * MAX_LENGTH) is None
