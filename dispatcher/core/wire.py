"""The MQTT wire contract, v1: topics, id patterns, payload fields and ack states.

The one definition the engine, the reference receiver and the simulator share. It imports only
the standard library, so a terminal maker can read it (and ``receiver/``) without the engine:
``receiver`` imports nothing else of ``dispatcher``. docs/protocol.md is its prose.

Topics (never a wildcard for a terminal):

    eb/v1/alert/35/3501/350102/350102001/350102001001   engine → every terminal below a region
    eb/v1/term/{terminal_id}/cmd                        engine → one terminal (resends, commands)
    eb/v1/term/{terminal_id}/ack                        terminal → engine (the id is the topic's)
    eb/v1/term/{terminal_id}/state                      terminal → engine (retained; Last Will)
"""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Final

PAYLOAD_VERSION: Final = 1
# An alert is at most a few kB (headline 120, text 1000, instruction 500 characters); anything
# far larger is not ours and is not worth parsing, on either side.
MAX_PAYLOAD: Final = 64 * 1024

ALERT_TOPIC_PREFIX: Final = "eb/v1/alert/"
TERMINAL_TOPIC_PREFIX: Final = "eb/v1/term/"
ACK_TOPIC_FILTER: Final = TERMINAL_TOPIC_PREFIX + "+/ack"
STATE_TOPIC_FILTER: Final = TERMINAL_TOPIC_PREFIX + "+/state"
# Several engines share the ack stream through this MQTT 5 shared-subscription group.
SHARED_GROUP: Final = "$share/ebd/"

# Anchored, as pydantic's ``pattern`` and JSON Schema want them; ``fullmatch`` the bare ones.
ALERT_ID_PATTERN: Final = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,79}$"
TERMINAL_ID_PATTERN: Final = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
ALERT_ID: Final = re.compile(ALERT_ID_PATTERN.strip("^$"))
TERMINAL_ID: Final = re.compile(TERMINAL_ID_PATTERN.strip("^$"))
# Division codes of the five levels: province 2, city 4, county 6, township 9, village 12.
REGION_CODE_LENGTHS: Final = (2, 4, 6, 9, 12)
# ASCII digits only: \d would also take full-width ３５.
REGION_CODE: Final = re.compile(r"[0-9]{2}(?:[0-9]{2}(?:[0-9]{2}(?:[0-9]{3}(?:[0-9]{3})?)?)?)?")

MSG_TYPES: Final = frozenset({"alert", "update", "cancel"})
STATUSES: Final = frozenset({"actual", "exercise", "test"})
SEVERITIES: Final = ("red", "orange", "yellow", "blue")
# Why a terminal did not play an alert, as it says in an ack's ``detail``.
DETAIL_EXPIRED: Final = "expired"
DETAIL_CANCELLED: Final = "cancelled"
DETAIL_SUPERSEDED: Final = "superseded"
DETAIL_TEST: Final = "test"
# A cancel met while catching up after a reconnect, lifting a warning the terminal never
# sounded: handled (state ``played``), but not announced (docs/protocol.md, "Reconnecting").
DETAIL_SILENT: Final = "silent"


class AckState(StrEnum):
    """A terminal's play state; the national platform's codes are 1 waiting … 5 cancelled."""

    RECEIVED = "received"
    PLAYING = "playing"
    PLAYED = "played"
    FAILED = "failed"


def code_path(code: str) -> list[str]:
    """The codes from the province down to ``code`` itself, by prefix alone; ``ValueError``
    unless ``code`` is 2, 4, 6, 9 or 12 ASCII digits."""
    # isdigit() alone accepts full-width and superscript digits, which are not codes.
    if len(code) not in REGION_CODE_LENGTHS or not (code.isascii() and code.isdigit()):
        raise ValueError(f"not a region code: {code!r}")
    return [code[:n] for n in REGION_CODE_LENGTHS if n <= len(code)]


def alert_topic(code: str) -> str:
    """The alert topic of a region: its code path under ``eb/v1/alert/``."""
    return ALERT_TOPIC_PREFIX + "/".join(code_path(code))


def cmd_topic(terminal_id: str) -> str:
    return f"{TERMINAL_TOPIC_PREFIX}{terminal_id}/cmd"


def ack_topic(terminal_id: str) -> str:
    return f"{TERMINAL_TOPIC_PREFIX}{terminal_id}/ack"


def state_topic(terminal_id: str) -> str:
    return f"{TERMINAL_TOPIC_PREFIX}{terminal_id}/state"


def terminal_topics(terminal_id: str, region: str) -> list[str]:
    """The exact topics a terminal subscribes to: the alert topic of every region from the
    province down to its own, then its cmd topic. Never a wildcard: a terminal must not hear
    its neighbours' alerts."""
    return [*(alert_topic(code) for code in code_path(region)), cmd_topic(terminal_id)]


def terminal_of(topic: str) -> tuple[str, str] | None:
    """``eb/v1/term/T1/ack`` → ("T1", "ack"); anything else → None. The id itself is checked
    against ``TERMINAL_ID`` by whoever records what the terminal said."""
    if not topic.startswith(TERMINAL_TOPIC_PREFIX):
        return None
    terminal, _, kind = topic[len(TERMINAL_TOPIC_PREFIX) :].partition("/")
    if not terminal or kind not in ("ack", "state"):
        return None
    return terminal, kind
