"""Bodies of the drills API requests (validated with pydantic; their schemas go to OpenAPI)."""

from __future__ import annotations

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class PlanRequest(_Body):
    year: int = Field(ge=2000, le=2100)
    region: str | None = None


class AddRequest(_Body):
    township: str
    at: AwareDatetime
    reason: str = Field(min_length=1, max_length=300)


class MoveRequest(_Body):
    at: AwareDatetime
    reason: str = Field(min_length=1, max_length=300)


class ReasonRequest(_Body):
    reason: str = Field(min_length=1, max_length=300)
