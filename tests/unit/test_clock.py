"""Times leave the engine in the display zone (Beijing time by default) and the same instant."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from pydantic import ValidationError

from dispatcher.core.clock import (
    DisplaySettings,
    display_zone,
    localized,
    shown,
    shown_ms,
    shown_text,
    use_display_zone,
)

MOMENT = datetime(2026, 11, 27, 5, 15, 0, 123000, tzinfo=UTC)


@pytest.fixture
def berlin() -> Iterator[None]:
    before = display_zone()
    use_display_zone(ZoneInfo("Europe/Berlin"))
    yield
    use_display_zone(before)


def test_a_time_is_shown_in_beijing_time_by_default() -> None:
    assert shown(MOMENT) == "2026-11-27T13:15:00.123000+08:00"
    assert datetime.fromisoformat(shown(MOMENT)) == MOMENT
    assert shown_ms(int(MOMENT.timestamp() * 1000)) == "2026-11-27T13:15:00.123000+08:00"
    assert shown_ms(None) is None


def test_a_naive_time_is_a_bug_not_a_guess() -> None:
    with pytest.raises(ValueError, match="without an offset"):
        shown(MOMENT.replace(tzinfo=None))


@pytest.mark.usefixtures("berlin")
def test_the_zone_is_configurable() -> None:
    assert shown(MOMENT) == "2026-11-27T06:15:00.123000+01:00"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2026-11-27T05:15:00Z", "2026-11-27T13:15:00+08:00"),
        ("2026-11-27T05:15:00+00:00", "2026-11-27T13:15:00+08:00"),
        ("2026-11-27T06:15:00.5+01:00", "2026-11-27T13:15:00.500000+08:00"),
        ("2026-11-27T05:15", "2026-11-27T05:15"),  # no offset: not ours to guess
        ("2026-02-30T05:15:00Z", "2026-02-30T05:15:00Z"),  # not a day
        ("明天 05:15", "明天 05:15"),
        ("", ""),
    ],
)
def test_stored_text_is_shown_only_when_it_is_a_time(value: str, expected: str) -> None:
    assert shown_text(value) == expected


def test_a_response_has_its_time_fields_shown_and_its_text_left_alone() -> None:
    body = {
        "sent": "2026-11-27T05:15:00Z",
        "headline": "2026-11-27T05:15:00Z",  # free text that looks like a time stays as written
        "delivery": {"dispatched_at": "2026-11-27T05:15:01+00:00", "count": 3, "at": None},
        "rows": [{"at": MOMENT.isoformat(), "resolved_at": None}],
        "when": MOMENT,
    }
    assert localized(body) == {
        "sent": "2026-11-27T13:15:00+08:00",
        "headline": "2026-11-27T05:15:00Z",
        "delivery": {"dispatched_at": "2026-11-27T13:15:01+08:00", "count": 3, "at": None},
        "rows": [{"at": "2026-11-27T13:15:00.123000+08:00", "resolved_at": None}],
        "when": "2026-11-27T13:15:00.123000+08:00",
    }


def test_display_settings_refuse_an_unknown_zone() -> None:
    assert DisplaySettings().zone.utcoffset(MOMENT) == timedelta(hours=8)
    assert str(DisplaySettings(timezone="Asia/Urumqi").zone) == "Asia/Urumqi"
    with pytest.raises(ValidationError, match="unknown timezone 'Beijing'"):
        DisplaySettings(timezone="Beijing")
