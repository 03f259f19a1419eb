"""The annual drills' settings: when drills may be planned, how they run, how they are judged."""

from __future__ import annotations

from datetime import date, time
from typing import Literal, Self
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, field_validator, model_validator

from dispatcher.core.config import Section


class Blackout(Section):
    """Days on which no drill is planned (both ends included), e.g. the Spring Festival."""

    start: date
    end: date
    reason: str = Field(min_length=1, max_length=100)

    @model_validator(mode="after")
    def _order(self) -> Self:
        if self.end < self.start:
            raise ValueError(f"blackout {self.reason!r} ends ({self.end}) before it starts")
        return self


class DrillSettings(Section):
    """Annual drills: when they may be planned, how they run and how they are judged."""

    # The office that issues drill alerts (an [[offices]] id whose region covers the drills);
    # by default the first province-level office.
    office: str | None = None
    timezone: str = "Asia/Shanghai"
    # Working hours in that timezone: a drill starts no earlier than workday_start and its
    # window of acks ends no later than workday_end.
    workday_start: time = time(9, 0)
    workday_end: time = time(17, 0)
    # ISO weekdays drills may fall on (1 = Monday).
    weekdays: list[int] = Field(default_factory=lambda: [1, 2, 3, 4, 5])
    blackouts: list[Blackout] = Field(default_factory=list)
    max_per_county_per_day: int = Field(default=2, ge=1, le=50)
    # Seconds a drill collects acks after its dispatch, then it is reported.
    window: float = Field(default=1800.0, gt=0, le=86400)
    # An ack later than this many seconds after dispatch counts as late.
    late_after: float = Field(default=120.0, gt=0)
    # A drill due while no engine ran is run when one starts again, if within this many
    # seconds of its time; past that it is marked missed.
    grace: float = Field(default=6 * 3600.0, ge=1)
    # Share of the expected terminals that must play the drill for it to pass.
    pass_coverage: float = Field(default=0.95, gt=0, le=1)
    # A failed drill's re-drill is planned this many days later (the next free slot).
    redrill_after_days: int = Field(default=14, ge=1, le=180)
    severity: Literal["red", "orange", "yellow", "blue"] = "blue"
    event: str = Field(default="综合应急演练", min_length=1, max_length=64)
    # The lease that makes one instance the drill scheduler: renewed every third of it.
    lease_seconds: float = Field(default=15.0, ge=1, le=600)

    @field_validator("timezone")
    @classmethod
    def _tz(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown timezone {value!r}; e.g. Asia/Shanghai") from exc
        return value

    @field_validator("weekdays")
    @classmethod
    def _weekdays(cls, value: list[int]) -> list[int]:
        if not value or any(not 1 <= d <= 7 for d in value):
            raise ValueError("weekdays must be ISO weekday numbers 1 (Monday) to 7 (Sunday)")
        return sorted(set(value))

    @model_validator(mode="after")
    def _hours(self) -> Self:
        start = self.workday_start.hour * 3600 + self.workday_start.minute * 60
        end = self.workday_end.hour * 3600 + self.workday_end.minute * 60
        if end - start < self.window:
            raise ValueError(
                "the working day (workday_start to workday_end) is shorter than a drill's window"
            )
        return self

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)
