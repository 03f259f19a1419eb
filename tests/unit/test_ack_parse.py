"""The lean ack parser accepts exactly what the ``Ack`` model accepts, and records the same."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import pytest
from pydantic import ValidationError

from dispatcher.core.ack_parse import AckRecord, _fast, parse_ack
from dispatcher.core.models import Ack

ALERT = "fj-province-20261127T051500Z-3f9a1c2b"
GOOD: dict[str, Any] = {
    "v": 1,
    "alert_id": ALERT,
    "state": "played",
    "at": "2026-11-27T10:20:01+08:00",
}


def payload(**changes: Any) -> bytes:
    body = {**GOOD, **changes}
    return json.dumps({k: v for k, v in body.items() if v is not ...}).encode()


def test_the_usual_ack_takes_the_fast_path() -> None:
    record = _fast("T1", payload(detail="ok"))
    assert record == AckRecord("T1", ALERT, "played", "2026-11-27T10:20:01+08:00", "ok")


@pytest.mark.parametrize(
    "changes",
    [
        {},
        {"at": "2026-11-27T02:20:01.5Z"},
        {"at": "2026-11-27T10:20:01.123456-03:30"},
        {"state": "received"},
        {"state": "failed", "detail": "amplifier fault"},
        {"detail": None},
        {"firmware": "2.1", "extra": [1, 2]},  # unknown keys are tolerated
        {"at": 1795000000},  # a number: only pydantic's lax mode takes it
        {"at": "2026-11-27 10:20:01+08:00"},
        {"v": True},
    ],
)
def test_accepted_acks_record_what_the_model_says(changes: dict[str, Any]) -> None:
    data = payload(**changes)
    record = parse_ack("T1", data)
    ack = Ack.model_validate_json(data)
    assert (record.alert_id, record.state, record.detail) == (
        ack.alert_id,
        ack.state.value,
        ack.detail or "",
    )
    assert datetime.fromisoformat(record.at) == ack.at


@pytest.mark.parametrize(
    "data",
    [
        payload(v=2),
        payload(v="1"),
        payload(v=...),
        payload(alert_id=ALERT + "\n"),  # Python's $ would let this through
        payload(alert_id="-starts-with-dash"),
        payload(alert_id="x" * 81),
        payload(alert_id=7),
        payload(state="PLAYED"),
        payload(state="exploded"),
        payload(at="2026-11-27T10:20:01"),  # no offset: not aware
        payload(at="2026-02-30T10:20:01+08:00"),
        payload(at="2026-11-27T25:20:01+08:00"),
        payload(at="yesterday"),
        payload(at=...),
        payload(detail="x" * 201),
        payload(detail=5),
        b"[1, 2]",
        b"not json",
        b"",
        b'{"v": 1, "alert_id": "' + ALERT.encode() + b'"',
    ],
)
def test_refused_acks_raise_the_models_error(data: bytes) -> None:
    with pytest.raises(ValidationError):
        Ack.model_validate_json(data)
    with pytest.raises(ValidationError):
        parse_ack("T1", data)


@pytest.mark.parametrize("terminal", ["a\tb", "a\nb", "", "-x", "x" * 65, "村口喇叭"])
def test_a_terminal_id_no_terminal_can_have_is_refused(terminal: str) -> None:
    with pytest.raises(ValidationError, match="terminal_id"):
        parse_ack(terminal, payload())
