"""What a drill is, as stored, listed, exported and reported. Pure: no I/O.

A drill is one township's comprehensive emergency-broadcast exercise: at its time it becomes an
ordinary alert with ``status: "exercise"`` to that township, and after its window a report of
who acknowledged. Its id is stable and readable: ``drill-2027-350102001`` for the planned one
of a year, ``…-2``, ``…-3`` for the ones added or re-drilled after it.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

# The years a drill may belong to or be scheduled in, everywhere the API takes one (a plan's
# ``year``, ``?year=``, an added or moved drill's ``at``). Far inside ``datetime``'s range, so
# a time of any of these years converts to UTC or any offset without overflowing.
FIRST_YEAR = 2000
LAST_YEAR = 2100


def year_problem(when: datetime) -> str | None:
    """Why a drill may not be at ``when`` because of its year, or None."""
    # when.year is the local year: with offsets of at most ±24 h, a local year inside the
    # range keeps the UTC one within a year of it, far from datetime's limits.
    if FIRST_YEAR <= when.year <= LAST_YEAR:
        return None
    return (
        f"{when.isoformat()} is not a drill time: drills are in the years "
        f"{FIRST_YEAR} to {LAST_YEAR}"
    )


class DrillStatus(StrEnum):
    PLANNED = "planned"  # waiting for its time
    RUNNING = "running"  # dispatched, collecting acks for its window
    PASSED = "passed"  # reported: coverage at or above the threshold
    FAILED = "failed"  # reported: coverage below it (a re-drill is planned)
    MISSED = "missed"  # its time passed, beyond the grace, with no engine to run it
    CANCELLED = "cancelled"  # a coordinator cancelled it (with a reason)

    @property
    def final(self) -> bool:
        return self in (DrillStatus.PASSED, DrillStatus.FAILED, DrillStatus.MISSED,
                        DrillStatus.CANCELLED)  # fmt: skip


class Drill(BaseModel):
    """One drill of one township."""

    model_config = ConfigDict(extra="forbid")

    id: str
    year: int
    township: str  # 9-digit code
    township_name: str
    county: str
    county_name: str
    city: str
    city_name: str
    scheduled_at: AwareDatetime
    status: DrillStatus = DrillStatus.PLANNED
    # Why it exists when it is not from the year's plan: "added: …", "re-drill of …".
    origin: str = "plan"
    redrill_of: str | None = None
    alert_id: str | None = None
    fired_at: AwareDatetime | None = None
    # The idempotency key of its dispatch, claimed with the move to running and before the
    # alert is stored: a crash between the two is finished with the same key.
    fire_key: str | None = None
    # Seconds after its time it was dispatched, and why when that is more than a minute.
    late_by: float | None = None
    late_reason: str | None = None
    missed_reason: str | None = None
    coverage: float | None = None
    reported_at: AwareDatetime | None = None

    def row(self) -> dict[str, Any]:
        """A flat row for CSV and tables."""
        return {
            "id": self.id,
            "year": self.year,
            "city": self.city,
            "city_name": self.city_name,
            "county": self.county,
            "county_name": self.county_name,
            "township": self.township,
            "township_name": self.township_name,
            "scheduled_at": self.scheduled_at.isoformat(),
            "status": self.status.value,
            "origin": self.origin,
            "alert_id": self.alert_id or "",
            "late_by": "" if self.late_by is None else round(self.late_by, 1),
            "coverage": "" if self.coverage is None else round(self.coverage, 4),
        }


CSV_COLUMNS = [
    "id",
    "year",
    "city",
    "city_name",
    "county",
    "county_name",
    "township",
    "township_name",
    "scheduled_at",
    "status",
    "origin",
    "alert_id",
    "late_by",
    "coverage",
]


class Edit(BaseModel):
    """One change to the plan, kept with the drill: who, when, what and why."""

    model_config = ConfigDict(extra="forbid")

    at: AwareDatetime
    office: str
    action: str  # planned | added | moved | cancelled | fired | reported | missed | re-drill
    reason: str = Field(min_length=1, max_length=300)
    before: datetime | None = None
    after: datetime | None = None
