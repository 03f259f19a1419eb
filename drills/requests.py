"""Bodies of the drills API requests (validated with pydantic; their schemas go to OpenAPI)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field

from drills.models import FIRST_YEAR, LAST_YEAR, year_problem


def _drill_time(value: datetime) -> datetime:
    problem = year_problem(value)
    if problem is not None:
        raise ValueError(problem)
    return value


# An aware time in the drill years: later checks convert it to UTC and the drill timezone.
DrillTime = Annotated[AwareDatetime, AfterValidator(_drill_time)]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class PlanRequest(_Body):
    year: int = Field(ge=FIRST_YEAR, le=LAST_YEAR)
    region: str | None = None


class AddRequest(_Body):
    township: str
    at: DrillTime
    reason: str = Field(min_length=1, max_length=300)


class MoveRequest(_Body):
    at: DrillTime
    reason: str = Field(min_length=1, max_length=300)


class ReasonRequest(_Body):
    reason: str = Field(min_length=1, max_length=300)
