"""Offices and their tokens and jurisdiction; phone masking and the structured log line."""

from __future__ import annotations

import hashlib
import io
import json
import logging
import re
import sys
from collections.abc import Iterator
from datetime import datetime
from typing import Literal

import pytest
import structlog

from dispatcher.core.auth import Office, Offices, hash_token, new_token
from dispatcher.core.config import OfficeConfig
from dispatcher.core.errors import Forbidden, MalformedRegionCode, Unauthorized, UnknownRegion
from dispatcher.core.masking import mask_phones
from dispatcher.core.regions import RegionTree
from dispatcher.logs import configure_logging
from tests.helpers import OFFICES


@pytest.fixture(scope="module")
def offices(tree: RegionTree) -> Offices:
    configs = [
        OfficeConfig(id=oid, name=name, region=region, token_sha256=hash_token(token))
        for token, (oid, name, region) in OFFICES.items()
    ]
    return Offices(configs, tree)


def office(offices: Offices, token: str) -> Office:
    found = offices.get(OFFICES[token][0])
    assert found is not None
    return found


# --- tokens ----------------------------------------------------------------------------------


def test_hash_token_is_the_hex_sha256_of_the_utf8_token() -> None:
    assert hash_token("abc") == ("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
    assert hash_token("令牌") == hashlib.sha256("令牌".encode()).hexdigest()


def test_new_token_prints_a_token_whose_hash_is_the_printed_hash() -> None:
    token, digest = new_token()
    assert hash_token(token) == digest
    assert re.fullmatch(r"[0-9a-f]{64}", digest)
    # 32 random bytes, URL-safe, so it survives a header, a shell and a config file.
    assert re.fullmatch(r"[A-Za-z0-9_-]{43}", token)


def test_new_tokens_differ() -> None:
    assert len({new_token()[0] for _ in range(20)}) == 20


# --- authenticate ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "fragment"),
    [
        (None, "missing Authorization header"),
        ("", "missing Authorization header"),
        ("Basic dXNlcjpwYXNz", "Authorization must be 'Bearer <token>'"),
        ("Token tok-gulou", "Authorization must be 'Bearer <token>'"),
        ("Bearer", "Authorization must be 'Bearer <token>'"),
        ("Bearer    ", "Authorization must be 'Bearer <token>'"),
        ("tok-gulou", "Authorization must be 'Bearer <token>'"),
        ("Bearer nope", "unknown token"),
        ("Bearer TOK-GULOU", "unknown token"),
        (f"Bearer {hash_token('tok-gulou')}", "unknown token"),  # the hash is not the token
    ],
)
def test_a_missing_or_bad_authorization_is_unauthorized(
    offices: Offices, header: str | None, fragment: str
) -> None:
    with pytest.raises(Unauthorized) as caught:
        offices.authenticate(header)
    assert fragment in caught.value.message
    assert caught.value.status == 401


@pytest.mark.parametrize(
    ("header", "token"),
    [
        ("Bearer tok-gulou", "tok-gulou"),
        ("bearer tok-gulou", "tok-gulou"),
        ("BEARER tok-province", "tok-province"),
        ("  Bearer   tok-taijiang  ", "tok-taijiang"),
        ("Bearer tok-fuzhou", "tok-fuzhou"),
    ],
)
def test_the_right_token_gives_its_office(offices: Offices, header: str, token: str) -> None:
    assert offices.authenticate(header) == Office(*OFFICES[token])


def test_offices_are_looked_up_by_id(offices: Offices) -> None:
    assert len(offices) == 4
    assert offices.get("fz-gulou") == Office("fz-gulou", "鼓楼区应急管理局", "350102")
    assert offices.get("nobody") is None


# --- jurisdiction ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("token", "codes"),
    [
        ("tok-province", ["35"]),
        ("tok-province", ["3501", "3502", "350102001001"]),
        ("tok-fuzhou", ["3501", "350103", "350102001"]),
        ("tok-gulou", ["350102"]),
        ("tok-gulou", ["350102001", "350102001001"]),
        ("tok-gulou", []),
    ],
)
def test_codes_inside_the_office_region_are_allowed(
    offices: Offices, token: str, codes: list[str]
) -> None:
    offices.require_within(office(offices, token), codes)
    assert offices.outside(office(offices, token), codes) == []


@pytest.mark.parametrize(
    ("token", "codes", "outside"),
    [
        ("tok-gulou", ["35"], ["35"]),
        ("tok-gulou", ["3501"], ["3501"]),
        ("tok-gulou", ["350103"], ["350103"]),
        ("tok-gulou", ["350102001001", "350103", "350102", "35"], ["350103", "35"]),
        ("tok-taijiang", ["350103001", "350102001"], ["350102001"]),
        ("tok-fuzhou", ["3502", "3501", "35"], ["3502", "35"]),
    ],
)
def test_codes_outside_are_forbidden_and_the_403_names_exactly_them(
    offices: Offices, token: str, codes: list[str], outside: list[str]
) -> None:
    who = office(offices, token)
    with pytest.raises(Forbidden) as caught:
        offices.require_within(who, codes)
    error = caught.value
    assert error.status == 403
    assert error.region_codes == outside
    assert error.details == {"region_codes": outside}
    assert error.message.endswith("outside it: " + ", ".join(outside))
    assert f"office {who.id} ({who.name})" in error.message
    assert f"region {who.region}" in error.message


@pytest.mark.parametrize(
    ("code", "error"), [("3599", UnknownRegion), ("3501x", MalformedRegionCode)]
)
def test_a_code_not_in_the_tree_is_a_region_error_not_a_403(
    offices: Offices, code: str, error: type[Exception]
) -> None:
    with pytest.raises(error):
        offices.require_within(office(offices, "tok-province"), [code])


@pytest.mark.parametrize(
    ("token", "areas", "sees"),
    [
        ("tok-gulou", ["350102"], True),
        ("tok-gulou", ["350102001001"], True),  # inside its region
        ("tok-gulou", ["35"], True),  # covers its region
        ("tok-gulou", ["3501"], True),
        ("tok-gulou", ["350103"], False),  # a sibling county
        ("tok-gulou", ["350103", "3502"], False),
        ("tok-gulou", ["350103", "350102001"], True),  # any one area is enough
        ("tok-gulou", [], False),
        ("tok-taijiang", ["350102001001"], False),
        ("tok-province", ["3502"], True),
        ("tok-fuzhou", ["3502"], False),
    ],
)
def test_an_office_sees_alerts_inside_or_covering_its_region(
    offices: Offices, token: str, areas: list[str], sees: bool
) -> None:
    assert offices.can_see(office(offices, token), areas) is sees


# --- mask_phones -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        ("13812345678", "138****5678"),
        ("19987654321", "199****4321"),
        ("+8613812345678", "+86138****5678"),
        ("8613812345678", "86138****5678"),
        ("+86 13812345678", "+86 138****5678"),
        ("call 13812345678.", "call 138****5678."),
        ("tel:13812345678,15912345678", "tel:138****5678,159****5678"),
        ("手机13812345678已通知", "手机138****5678已通知"),
        ("+14155552671", "+1415****671"),
        ("+85291234567", "+8529****567"),
        ("+4915112345678", "+4915******678"),
    ],
)
def test_phone_numbers_are_masked_keeping_the_tail(text: str, masked: str) -> None:
    assert mask_phones(text) == masked


@pytest.mark.parametrize(
    "text",
    [
        "350102001001",  # a village code: 12 digits
        "region 350102001001 terminal gl-1",
        "350102001",
        "fj-province-20261127T051500Z-3f9a1c2b",  # an alert id
        "20261127051500123",
        "12345678901",  # 11 digits but not a mobile prefix (12x)
        "10812345678",
        "138123456789",  # 12 digits starting like a mobile
        "1381234567",  # 10 digits
        "0591-87654321",  # a landline
        "eb/v1/alert/35/3501/350102/350102001/350102001001",
        "",
    ],
)
def test_codes_ids_and_other_numbers_are_not_masked(text: str) -> None:
    assert mask_phones(text) == text


def test_a_masked_foreign_number_keeps_its_length_prefix_and_last_three_digits() -> None:
    for number in ("+4915112345678", "+14155552671", "+447911123456"):
        masked = mask_phones(number)
        assert len(masked) == len(number)
        assert masked[:3] == number[:3]
        assert masked[-3:] == number[-3:]
        assert "****" in masked


# --- the structured log line -----------------------------------------------------------------


@pytest.fixture
def reset_logging() -> Iterator[None]:
    """configure_logging changes process-wide state: structlog's and the root logger's."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    structlog.reset_defaults()
    structlog.contextvars.clear_contextvars()
    root.handlers[:] = handlers
    root.setLevel(level)


def json_lines(text: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


@pytest.mark.usefixtures("reset_logging")
@pytest.mark.parametrize("fmt", ["json", "auto"])
def test_a_log_line_is_json_with_context_and_masked_phones(
    capsys: pytest.CaptureFixture[str], fmt: Literal["json", "auto"]
) -> None:
    """Under pytest stderr is not a TTY, so "auto" must give JSON too."""
    configure_logging(fmt)
    log = structlog.get_logger("dispatcher.test")
    with structlog.contextvars.bound_contextvars(
        alert_id="fj-province-20261127T051500Z-3f9a1c2b", office="fj-province"
    ):
        log.info(
            "sms.sent",
            to="13812345678",
            note="转告 +8613912345678",
            region="350102001001",
            count=3,
        )
    captured = capsys.readouterr()
    assert captured.out == ""
    [line] = json_lines(captured.err)
    assert line["event"] == "sms.sent"
    assert line["level"] == "info"
    assert line["alert_id"] == "fj-province-20261127T051500Z-3f9a1c2b"
    assert line["office"] == "fj-province"
    assert line["to"] == "138****5678"
    assert line["note"] == "转告 +86139****5678"
    assert line["region"] == "350102001001"
    assert line["count"] == 3
    stamp = str(line["timestamp"])
    assert stamp.endswith("Z")
    assert datetime.fromisoformat(stamp).tzinfo is not None
    assert "13812345678" not in captured.err
    assert "13912345678" not in captured.err


@pytest.mark.usefixtures("reset_logging")
def test_a_phone_in_a_bound_context_variable_is_masked(
    capsys: pytest.CaptureFixture[str],
) -> None:
    configure_logging("json")
    with structlog.contextvars.bound_contextvars(recipient="13812345678"):
        structlog.get_logger("dispatcher.test").warning("sms.retry")
    [line] = json_lines(capsys.readouterr().err)
    assert line["recipient"] == "138****5678"


@pytest.mark.usefixtures("reset_logging")
def test_lines_below_the_level_are_dropped(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("json", "warning")
    log = structlog.get_logger("dispatcher.test")
    log.info("dispatch.progress")
    log.warning("mqtt.link_down")
    assert [line["event"] for line in json_lines(capsys.readouterr().err)] == ["mqtt.link_down"]


@pytest.mark.usefixtures("reset_logging")
def test_a_terminal_gets_the_console_renderer_not_json(monkeypatch: pytest.MonkeyPatch) -> None:
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    stderr = Tty()
    monkeypatch.setattr(sys, "stderr", stderr)
    configure_logging("auto")
    structlog.get_logger("dispatcher.test").info("sms.sent", to="13812345678")
    text = stderr.getvalue()
    assert "sms.sent" in text
    assert "138****5678" in text
    assert "13812345678" not in text
    with pytest.raises(json.JSONDecodeError):
        json.loads(text)


@pytest.mark.usefixtures("reset_logging")
def test_a_phone_in_a_list_value_is_masked(capsys: pytest.CaptureFixture[str]) -> None:
    """An SMS fan-out naturally logs its recipients as a list."""
    configure_logging("json")
    structlog.get_logger("dispatcher.test").info("sms.batch", to=["13812345678", "15912345678"])
    err = capsys.readouterr().err
    [line] = json_lines(err)
    assert line["to"] == ["138****5678", "159****5678"]
    assert "13812345678" not in err


@pytest.mark.usefixtures("reset_logging")
def test_a_phone_in_a_logged_exception_is_masked(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("json")
    log = structlog.get_logger("dispatcher.test")
    try:
        raise RuntimeError("gateway refused 13812345678")
    except RuntimeError:
        log.exception("sms.failed")
    err = capsys.readouterr().err
    [line] = json_lines(err)
    assert "RuntimeError: gateway refused 138****5678" in str(line["exception"])
    assert "13812345678" not in err
