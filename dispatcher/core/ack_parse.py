"""Acks from their JSON bytes to what the store records, at the pace of a province's wave.

``Ack`` (pydantic) is the contract. Parsing each of 35,000 acks into it and formatting its
time back costs several µs an ack; the fast path here, for the form every terminal sends
(orjson, compiled patterns, the time kept as the terminal wrote it), costs less. It accepts
only acks that ``Ack`` accepts too; anything else (a missing field, a lax form such as a
number for the time, a bad value) goes through ``Ack`` itself, which accepts the lax forms
and words the errors.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import NamedTuple

import orjson
from pydantic import ValidationError

from dispatcher.core.models import Ack
from dispatcher.core.wire import ALERT_ID_PATTERN, TERMINAL_ID_PATTERN, AckState

# fullmatch, not the pattern's own ^…$: Python's $ also matches before a final newline.
_ALERT_ID = re.compile(ALERT_ID_PATTERN.removeprefix("^").removesuffix("$"))
_TERMINAL_ID = re.compile(TERMINAL_ID_PATTERN.removeprefix("^").removesuffix("$"))
# RFC 3339 with an offset: what terminals send, and a subset of what pydantic takes.
_AWARE_TIME = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,6})?(Z|[+-][0-9]{2}:[0-9]{2})"
)
_STATES = frozenset(state.value for state in AckState)
_DETAIL_MAX = 200


class AckRecord(NamedTuple):
    """One ack as the store records it."""

    terminal: str
    alert_id: str
    state: str
    at: str  # ISO 8601 with its offset
    detail: str  # "" when none


def parse_ack(terminal: str, payload: bytes) -> AckRecord:
    """The ack in ``payload`` from ``terminal``; pydantic's ValidationError if it is not one.

    ``terminal`` comes from the topic, where MQTT allows almost any character: one that no
    registered terminal can have (a tab, a newline …) is refused here, before it reaches the
    store, whose batches are framed by tabs and newlines.
    """
    if not _TERMINAL_ID.fullmatch(terminal):
        raise ValidationError.from_exception_data(
            "Ack",
            [
                {
                    "type": "string_pattern_mismatch",
                    "loc": ("terminal_id",),
                    "input": terminal,
                    "ctx": {"pattern": TERMINAL_ID_PATTERN},
                }
            ],
        )
    record = _fast(terminal, payload)
    if record is not None:
        return record
    ack = Ack.model_validate_json(payload)
    return AckRecord(terminal, ack.alert_id, ack.state.value, ack.at.isoformat(), ack.detail or "")


def _fast(terminal: str, payload: bytes) -> AckRecord | None:
    try:
        body = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return None
    if type(body) is not dict:
        return None
    v, alert_id, state, at = body.get("v"), body.get("alert_id"), body.get("state"), body.get("at")
    detail = body.get("detail")
    if (
        v != 1
        or type(v) is not int
        or type(alert_id) is not str
        or type(state) is not str
        or type(at) is not str
        or state not in _STATES
        or not _ALERT_ID.fullmatch(alert_id)
        or not _AWARE_TIME.fullmatch(at)
        or not (detail is None or (type(detail) is str and len(detail) <= _DETAIL_MAX))
    ):
        return None
    try:
        datetime.fromisoformat(at)  # the pattern lets through 2026-02-30 and 25:00
    except ValueError:
        return None
    # Kept as the terminal wrote it: already RFC 3339, and formatting it anew costs more
    # than the rest of the parse.
    return AckRecord(terminal, alert_id, state, at, detail or "")
