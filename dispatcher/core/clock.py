"""Times as people read them: kept in UTC, shown with the display zone's offset.

The one rule (docs/operations.md, "Times"): the engine keeps every time in UTC with its offset
(Redis, logs, the audit chain, the MQTT payloads); every API response shows it as ISO 8601 in
the display zone (``[display] timezone``, Asia/Shanghai by default, so ``+08:00``); a time sent
to the engine may carry any offset, and one without an offset is refused.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, datetime, tzinfo
from typing import Any, Final
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import field_validator

from dispatcher.core.config import Section

DEFAULT_TIMEZONE: Final = "Asia/Shanghai"

# Strict ISO 8601 with an offset: a field named like a time but holding free text is left alone.
_ISO_TIME: Final = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}(?::[0-9]{2}(?:\.[0-9]{1,6})?)?"
    r"(?:Z|[+-][0-9]{2}:[0-9]{2})"
)
# JSON fields that hold a time, besides ``at`` and every ``*_at``.
_TIME_FIELDS: Final = frozenset(
    {"sent", "expires", "since", "until", "first", "last", "from", "to", "window_end"}
)


def zone_named(name: str) -> ZoneInfo:
    """The IANA zone ``name``; ``ValueError`` saying what to write if there is none."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(
            f"unknown timezone {name!r}; give an IANA name, e.g. Asia/Shanghai"
        ) from exc


class DisplaySettings(Section):
    """``[display]``: how times are shown to people."""

    timezone: str = DEFAULT_TIMEZONE

    @field_validator("timezone")
    @classmethod
    def _known(cls, value: str) -> str:
        zone_named(value)
        return value

    @property
    def zone(self) -> ZoneInfo:
        return zone_named(self.timezone)


class _Display:
    # Set once when the app is made, like the log configuration: every response of the
    # process shows one zone, and nothing below the handlers has to carry it.
    zone: tzinfo = zone_named(DEFAULT_TIMEZONE)


def use_display_zone(zone: tzinfo) -> None:
    """Show every time from now on in ``zone`` (the app's ``[display] timezone``)."""
    _Display.zone = zone


def display_zone() -> tzinfo:
    return _Display.zone


def shown(moment: datetime) -> str:
    """``moment`` as people read it: ISO 8601 in the display zone, e.g. ``…T18:00:00+08:00``."""
    if moment.tzinfo is None:
        # A naive time is a bug in the engine (inputs without an offset are refused).
        raise ValueError(f"time without an offset: {moment.isoformat()}")
    return moment.astimezone(_Display.zone).isoformat()


def shown_ms(ms: int | str | None) -> str | None:
    """A time kept as milliseconds since the epoch, shown; None stays None."""
    if ms is None or ms == "":
        return None
    return shown(datetime.fromtimestamp(int(ms) / 1000, UTC))


def shown_text(value: str | None) -> str | None:
    """A stored ISO 8601 time shown in the display zone; anything else comes back unchanged."""
    if value is None or not _ISO_TIME.fullmatch(value):
        return value
    try:
        return shown(datetime.fromisoformat(value))
    except ValueError:
        return value  # 2026-02-30 and the like: not a time, so not ours to rewrite


def is_time_field(name: str) -> bool:
    return name == "at" or name.endswith("_at") or name in _TIME_FIELDS


def localized(value: Any) -> Any:
    """A JSON value with every time field (``at``, ``*_at``, ``sent``, ``expires``, …) and every
    ``datetime`` shown in the display zone: what an API response is made of."""
    if isinstance(value, Mapping):
        return {
            key: shown_text(item)
            if isinstance(item, str) and isinstance(key, str) and is_time_field(key)
            else localized(item)
            for key, item in value.items()
        }
    if isinstance(value, list | tuple):
        return [localized(item) for item in value]
    if isinstance(value, datetime):
        return shown(value)
    return value
