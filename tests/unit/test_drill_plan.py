"""The annual drill plan: every township once, on allowed days and hours, spread and capped;
slot checks for coordinators' edits, the reviewer's check, and CSV/JSON export."""

from __future__ import annotations

import csv
import io
import json
from collections import Counter
from datetime import UTC, date, datetime, time, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest

from dispatcher.core.errors import RegionError, ValidationFailed
from dispatcher.core.regions import Level, RegionTree
from drills.models import CSV_COLUMNS, Drill, DrillStatus
from drills.plan import (
    SLOT_MINUTES,
    PlanError,
    check_plan,
    check_slot,
    next_free_slot,
    plan_year,
    start_times,
    to_csv,
    to_json,
)
from drills.settings import Blackout, DrillSettings

TZ = ZoneInfo("Asia/Shanghai")
YEAR = 2027
SPRING = Blackout(start=date(2027, 2, 5), end=date(2027, 2, 11), reason="春节")
TYPHOON = Blackout(start=date(2027, 8, 1), end=date(2027, 8, 15), reason="台风高峰")
NANAN = "350583"  # 南安市: 27 townships, the most of any county
GULOU = "350102"  # 鼓楼区, Fuzhou
GUDONG = "350102001"  # 鼓东街道 in 鼓楼区
GUXI = "350102002"  # 鼓西街道 in 鼓楼区


@pytest.fixture(scope="module")
def settings() -> DrillSettings:
    return DrillSettings(blackouts=[SPRING, TYPHOON], max_per_county_per_day=2)


@pytest.fixture(scope="module")
def plan(tree: RegionTree, settings: DrillSettings) -> list[Drill]:
    return plan_year(tree, "35", YEAR, settings)


def at(day: date, hour: int, minute: int = 0) -> datetime:
    return datetime.combine(day, time(hour, minute), tzinfo=TZ)


def drill(township: str, when: datetime, *, suffix: str = "", **fields: object) -> Drill:
    values: dict[str, object] = {
        "id": f"drill-{when.year}-{township}{suffix}",
        "year": when.year,
        "township": township,
        "township_name": "镇",
        "county": township[:6],
        "county_name": "县",
        "city": township[:4],
        "city_name": "市",
        "scheduled_at": when,
    }
    values.update(fields)
    return Drill.model_validate(values)


def allowed_days(settings: DrillSettings, year: int = YEAR) -> list[date]:
    """Derived here from the settings, independently of the planner."""
    day, days = date(year, 1, 1), []
    while day.year == year:
        blocked = any(b.start <= day <= b.end for b in settings.blackouts)
        if day.isoweekday() in settings.weekdays and not blocked:
            days.append(day)
        day += timedelta(days=1)
    return days


# --- the whole province ---------------------------------------------------------------------


def test_every_township_gets_exactly_one_drill(tree: RegionTree, plan: list[Drill]) -> None:
    townships = tree.descendants("35", Level.TOWNSHIP)
    assert len(townships) == 1170
    # 41 of them are virtual (马祖乡 of 连江县 among them): no village of their own, no drill.
    real = [t for t in townships if not tree.is_virtual(t.code)]
    assert len(real) == 1129
    assert tree.is_virtual("350122400")
    assert len(plan) == 1129
    assert Counter(d.township for d in plan) == Counter(t.code for t in real)
    for d in plan:
        assert d.id == f"drill-{YEAR}-{d.township}"
        assert d.year == YEAR
        assert d.status is DrillStatus.PLANNED
        assert d.origin == "plan"
        assert d.township_name == tree.name(d.township)
        assert (d.county, d.county_name) == (d.township[:6], tree.name(d.township[:6]))
        assert (d.city, d.city_name) == (d.township[:4], tree.name(d.township[:4]))
    assert plan == sorted(plan, key=lambda d: (d.scheduled_at, d.township))


def test_no_drill_off_days_in_blackouts_or_outside_hours(
    plan: list[Drill], settings: DrillSettings
) -> None:
    for d in plan:
        local = d.scheduled_at.astimezone(TZ)
        assert local.year == YEAR
        assert local.isoweekday() <= 5, d
        assert not SPRING.start <= local.date() <= SPRING.end, d
        assert not TYPHOON.start <= local.date() <= TYPHOON.end, d
        assert local.time() >= time(9, 0), d
        assert local + timedelta(minutes=30) <= at(local.date(), 17), d
        assert local.minute % SLOT_MINUTES == 0, d
        assert (local.second, local.microsecond) == (0, 0), d


def test_county_cap_and_distinct_start_times(plan: list[Drill]) -> None:
    per_day = Counter((d.county, d.scheduled_at.date()) for d in plan)
    assert max(per_day.values()) <= 2
    per_start = Counter((d.county, d.scheduled_at) for d in plan)
    assert max(per_start.values()) == 1


def test_reviewer_finds_nothing_wrong(
    tree: RegionTree, settings: DrillSettings, plan: list[Drill]
) -> None:
    assert check_plan(tree, "35", YEAR, settings, plan) == []


def test_months_follow_the_allowed_days(plan: list[Drill], settings: DrillSettings) -> None:
    # Each month's share of the drills should match its share of the allowed days; February
    # and August lose days to the blackouts and so should get fewer drills, not more.
    days = allowed_days(settings)
    days_per_month = Counter(day.month for day in days)
    drills_per_month = Counter(d.scheduled_at.astimezone(TZ).month for d in plan)
    for month in range(1, 13):
        expected = len(plan) * days_per_month[month] / len(days)
        assert abs(drills_per_month[month] - expected) <= 0.1 * expected + 3, month
    assert drills_per_month[8] < drills_per_month[9]


def test_each_county_is_spread_over_the_year(plan: list[Drill], settings: DrillSettings) -> None:
    # A county's townships must not bunch: each quarter of the allowed days holds about a
    # quarter of them.
    days = allowed_days(settings)
    index = {day: i for i, day in enumerate(days)}
    by_county: dict[str, list[int]] = {}
    for d in plan:
        by_county.setdefault(d.county, []).append(index[d.scheduled_at.astimezone(TZ).date()])
    for county, positions in by_county.items():
        quarters = Counter(4 * i // len(days) for i in positions)
        for quarter in range(4):
            assert abs(quarters[quarter] - len(positions) / 4) <= 1.5, (county, quarters)


def test_counties_are_interleaved(plan: list[Drill]) -> None:
    # The first eight working days already mix most counties and every city but one, and
    # no county comes up more than twice.
    first_weeks = plan[:40]
    assert len({d.county for d in first_weeks}) >= 30
    assert len({d.city for d in first_weeks}) >= 8
    assert max(Counter(d.county for d in first_weeks).values()) <= 2


def test_start_times_vary(plan: list[Drill]) -> None:
    starts = Counter(d.scheduled_at.astimezone(TZ).time() for d in plan)
    assert set(starts) == set(start_times(DrillSettings()))
    assert max(starts.values()) <= 2 * min(starts.values())


def test_planning_again_adds_nothing(
    tree: RegionTree, settings: DrillSettings, plan: list[Drill]
) -> None:
    assert plan_year(tree, "35", YEAR, settings, existing=plan) == []
    assert plan_year(tree, "3501", YEAR, settings, existing=plan) == []


def test_county_first_then_the_rest_of_the_province(
    tree: RegionTree, settings: DrillSettings
) -> None:
    county = plan_year(tree, NANAN, YEAR, settings)
    assert len(county) == 26  # its 27 townships less 雪峰华侨经济开发区, a virtual one
    assert {d.county for d in county} == {NANAN}
    dates = sorted(d.scheduled_at.date() for d in county)
    assert dates[0].month == 1
    assert dates[-1].month == 12

    rest = plan_year(tree, "35", YEAR, settings, existing=county)
    assert len(rest) == 1129 - 26
    assert not {d.township for d in rest} & {d.township for d in county}
    assert check_plan(tree, "35", YEAR, settings, county + rest) == []


def test_deterministic(tree: RegionTree, settings: DrillSettings, plan: list[Drill]) -> None:
    assert plan_year(tree, "35", YEAR, settings) == plan
    seeded = plan_year(tree, "35", YEAR, settings, seed="2027-a")
    assert plan_year(tree, "35", YEAR, settings, seed="2027-a") == seeded
    assert seeded != plan
    assert plan_year(tree, "35", YEAR, settings, seed="2027-b") != seeded
    assert check_plan(tree, "35", YEAR, settings, seeded) == []


def test_only_days_after_now(tree: RegionTree, settings: DrillSettings) -> None:
    now = at(date(2027, 6, 30), 8)
    drills = plan_year(tree, "3501", YEAR, settings, now=now)
    assert drills
    assert min(d.scheduled_at.date() for d in drills) == date(2027, 7, 1)
    assert check_plan(tree, "3501", YEAR, settings, drills) == []
    with pytest.raises(PlanError, match="timezone"):
        plan_year(tree, "3501", YEAR, settings, now=datetime(2027, 6, 30, 8))


def test_one_township_and_bad_regions(tree: RegionTree, settings: DrillSettings) -> None:
    (only,) = plan_year(tree, GUDONG, YEAR, settings)
    assert only.township == GUDONG
    assert only.township_name == "鼓东街道"
    with pytest.raises(PlanError, match="township or above"):
        plan_year(tree, "350102001001", YEAR, settings)
    with pytest.raises(RegionError):
        plan_year(tree, "359999", YEAR, settings)
    with pytest.raises(RegionError):
        plan_year(tree, "35x", YEAR, settings)


def test_cancelled_drills_free_the_township_and_the_day(
    tree: RegionTree, settings: DrillSettings
) -> None:
    cancelled = drill(GUDONG, at(date(2027, 3, 3), 10), status=DrillStatus.CANCELLED)
    (again,) = plan_year(tree, GUDONG, YEAR, settings, existing=[cancelled])
    # The cancelled one keeps its id; the new one takes the next.
    assert again.id == f"drill-{YEAR}-{GUDONG}-2"
    assert again.origin == "plan"


def test_existing_drills_count_towards_the_cap(tree: RegionTree) -> None:
    # Only two days allowed: 2027-12-30 and 12-31.
    settings = DrillSettings(
        blackouts=[Blackout(start=date(2027, 1, 1), end=date(2027, 12, 29), reason="test")]
    )
    full = [
        drill(GUXI, at(date(2027, 12, 30), 9)),
        drill("350102003", at(date(2027, 12, 30), 10)),
    ]
    (placed,) = plan_year(tree, GUDONG, YEAR, settings, existing=full)
    assert placed.scheduled_at.date() == date(2027, 12, 31)
    # Another year's drill of the township does not count as this year's.
    last_year = drill(GUDONG, at(date(2026, 5, 5), 10))
    assert len(plan_year(tree, GUDONG, YEAR, settings, existing=[last_year])) == 1


def test_two_drills_of_a_county_never_start_together(tree: RegionTree) -> None:
    # Two start times a day (09:00, 09:30), two days, cap 5: four townships fit exactly, and
    # only because each takes its own start time.
    settings = DrillSettings(
        workday_start=time(9, 0),
        workday_end=time(10, 0),
        max_per_county_per_day=5,
        blackouts=[Blackout(start=date(2027, 1, 1), end=date(2027, 12, 29), reason="test")],
    )
    drills: list[Drill] = []
    for code in (GUDONG, GUXI, "350102003", "350102004"):
        drills += plan_year(tree, code, YEAR, settings, existing=drills)
    assert sorted(d.scheduled_at for d in drills) == [
        at(date(2027, 12, 30), 9),
        at(date(2027, 12, 30), 9, 30),
        at(date(2027, 12, 31), 9),
        at(date(2027, 12, 31), 9, 30),
    ]
    with pytest.raises(PlanError, match=GULOU):
        plan_year(tree, GULOU, YEAR, settings)


def test_too_few_days_names_the_county(tree: RegionTree) -> None:
    # December 2027 has 23 weekdays; 南安市 has 26 townships to drill (and a virtual one)
    # and may have one drill a day.
    settings = DrillSettings(
        max_per_county_per_day=1,
        blackouts=[Blackout(start=date(2027, 1, 1), end=date(2027, 11, 30), reason="test")],
    )
    with pytest.raises(PlanError) as caught:
        plan_year(tree, "3505", YEAR, settings)
    message = str(caught.value)
    assert f"{NANAN} 南安市 has 26 townships" in message
    assert "room for only 23 (23 allowed days × 1 a day)" in message
    assert "max_per_county_per_day" in message
    assert "blackouts" in message
    # One of the engine's errors: the API turns it into a 422 that names the rule.
    assert isinstance(caught.value, ValidationFailed)


def test_no_start_time_fits(tree: RegionTree) -> None:
    settings = DrillSettings(workday_start=time(9, 10), workday_end=time(9, 50))
    assert start_times(settings) == []
    with pytest.raises(PlanError, match="grid"):
        plan_year(tree, GULOU, YEAR, settings)


# --- check_slot and next_free_slot ----------------------------------------------------------

WEDNESDAY = date(2027, 3, 3)


def test_check_slot_accepts_a_good_time(settings: DrillSettings) -> None:
    check_slot(at(WEDNESDAY, 10), GUDONG, settings, [])
    check_slot(at(WEDNESDAY, 16, 30), GUDONG, settings, [])
    check_slot(at(WEDNESDAY, 9, 10), GUDONG, settings, [])  # moves need not be on the grid
    # Any timezone will do; 01:00 UTC is 09:00 in Fujian.
    check_slot(datetime(2027, 3, 3, 1, 0, tzinfo=UTC), GUDONG, settings, [])


@pytest.mark.parametrize(
    ("when", "words"),
    [
        (at(date(2027, 2, 8), 10), "春节"),
        (at(date(2027, 3, 6), 10), "Saturday"),
        (at(date(2027, 3, 7), 10), "Sunday"),
        (at(WEDNESDAY, 8, 30), "working hours"),
        (at(WEDNESDAY, 16, 45), "30-minute window must end by 17:00"),
        (datetime(2027, 3, 3, 0, 59, tzinfo=UTC), "working hours"),
        (datetime(2027, 3, 3, 10, 0), "timezone"),
        # Past datetime's range once in UTC or Fujian time: refused by year, never overflowing.
        (datetime(9999, 12, 31, 23, 59, 59, tzinfo=timezone(timedelta(hours=-14))), "2100"),
        (datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=14))), "2000 to 2100"),
        (datetime(2101, 1, 5, 10, 0, tzinfo=TZ), "2000 to 2100"),
    ],
)
def test_check_slot_refuses(when: datetime, words: str, settings: DrillSettings) -> None:
    with pytest.raises(PlanError, match=words):
        check_slot(when, GUDONG, settings, [])


def test_check_slot_refuses_the_past(settings: DrillSettings) -> None:
    now = at(WEDNESDAY, 11)
    with pytest.raises(PlanError, match="in the past"):
        check_slot(at(WEDNESDAY, 10), GUDONG, settings, [], now=now)
    with pytest.raises(PlanError, match="in the past"):
        check_slot(now, GUDONG, settings, [], now=now)
    check_slot(at(WEDNESDAY, 11, 30), GUDONG, settings, [], now=now)


def test_check_slot_county_cap(settings: DrillSettings) -> None:
    two = [drill(GUXI, at(WEDNESDAY, 9)), drill("350102003", at(WEDNESDAY, 14))]
    with pytest.raises(PlanError, match=f"county {GULOU} already has 2 drills on 2027-03-03"):
        check_slot(at(WEDNESDAY, 11), GUDONG, settings, two)
    # Moving one of the two within its day is fine: it does not count against itself.
    check_slot(at(WEDNESDAY, 11), GUXI, settings, two, ignore=two[0].id)
    # A cancelled drill, another county or another day does not count.
    cancelled = [two[0].model_copy(update={"status": DrillStatus.CANCELLED}), two[1]]
    check_slot(at(WEDNESDAY, 11), GUDONG, settings, cancelled)
    check_slot(at(WEDNESDAY, 11), "350103001", settings, two)
    check_slot(at(WEDNESDAY + timedelta(days=1), 11), GUDONG, settings, two)


def test_check_slot_wants_a_township(settings: DrillSettings) -> None:
    with pytest.raises(PlanError, match="township code"):
        check_slot(at(WEDNESDAY, 10), GULOU, settings, [])


def test_next_free_slot_is_on_the_grid_and_strictly_later(settings: DrillSettings) -> None:
    assert next_free_slot(at(WEDNESDAY, 10), GUDONG, settings, []) == at(WEDNESDAY, 10, 30)
    assert next_free_slot(at(WEDNESDAY, 10, 1), GUDONG, settings, []) == at(WEDNESDAY, 10, 30)
    assert next_free_slot(at(WEDNESDAY, 7), GUDONG, settings, []) == at(WEDNESDAY, 9)
    # 16:30 is the last start of a day with a 30-minute window.
    friday = date(2027, 3, 5)
    assert next_free_slot(at(friday, 16, 30), GUDONG, settings, []) == at(date(2027, 3, 8), 9)


def test_next_free_slot_skips_blackouts_and_full_days(settings: DrillSettings) -> None:
    before_festival = at(date(2027, 2, 4), 16, 40)
    assert next_free_slot(before_festival, GUDONG, settings, []) == at(date(2027, 2, 12), 9)
    full = [drill(GUXI, at(date(2027, 2, 12), 9)), drill("350102003", at(date(2027, 2, 12), 10))]
    found = next_free_slot(before_festival, GUDONG, settings, full)
    assert found == at(date(2027, 2, 15), 9)
    check_slot(found, GUDONG, settings, full)
    # A re-drill two weeks after a failed one.
    failed = at(WEDNESDAY, 10)
    redrill = next_free_slot(failed + timedelta(days=14), GUDONG, settings, [])
    assert redrill == at(date(2027, 3, 17), 10, 30)


def test_next_free_slot_gives_up_after_a_year(settings: DrillSettings) -> None:
    blocked = DrillSettings(
        blackouts=[Blackout(start=date(2027, 1, 1), end=date(2028, 12, 31), reason="test")]
    )
    with pytest.raises(PlanError, match="no free drill slot for county 350102"):
        next_free_slot(at(WEDNESDAY, 10), GUDONG, blocked, [])
    with pytest.raises(PlanError, match="timezone"):
        next_free_slot(datetime(2027, 3, 3, 10), GUDONG, settings, [])


# --- check_plan -----------------------------------------------------------------------------


def _replace(plan: list[Drill], township: str, **update: object) -> list[Drill]:
    return [d.model_copy(update=update) if d.township == township else d for d in plan]


def test_check_plan_finds_each_kind_of_problem(
    tree: RegionTree, settings: DrillSettings, plan: list[Drill]
) -> None:
    def problems(drills: list[Drill]) -> list[str]:
        return check_plan(tree, "35", YEAR, settings, drills)

    missing = [d for d in plan if d.township != GUDONG]
    assert problems(missing) == [f"township {GUDONG} 鼓东街道 has no drill in {YEAR}"]

    cancelled = _replace(plan, GUDONG, status=DrillStatus.CANCELLED)
    assert problems(cancelled) == [f"township {GUDONG} 鼓东街道 has no drill in {YEAR}"]

    (found,) = problems(_replace(plan, GUDONG, scheduled_at=at(date(2027, 2, 8), 10)))
    assert "drill-2027-350102001" in found
    assert "春节" in found

    (found,) = problems(_replace(plan, GUDONG, scheduled_at=at(date(2027, 3, 6), 10)))
    assert "Saturday" in found

    original = next(d for d in plan if d.township == GUDONG).scheduled_at.date()
    for hour, minute in ((8, 30), (16, 45), (17, 0)):
        moved = _replace(plan, GUDONG, scheduled_at=at(original, hour, minute))
        (found,) = problems(moved)
        assert "outside working hours" in found

    (found,) = problems(_replace(plan, GUDONG, scheduled_at=at(date(2028, 1, 3), 10)))
    assert f"not in {YEAR}" in found

    day = original
    extra = [
        drill(GUDONG, at(day, 15), suffix="-2", origin="added: test"),
        drill(GUXI, at(day, 16), suffix="-2", origin="added: test"),
    ]
    (found,) = problems(plan + extra)
    assert f"county {GULOU} has 3 drills on {day}, more than 2" in found

    twice = [*plan, drill(GUDONG, at(date(2027, 12, 1), 10), suffix="-2")]
    (found,) = problems(twice)
    assert f"township {GUDONG} has 2 planned drills" in found


def test_check_plan_scope(tree: RegionTree, settings: DrillSettings, plan: list[Drill]) -> None:
    gulou = [d for d in plan if d.county == GULOU]
    assert check_plan(tree, GULOU, YEAR, settings, gulou) == []
    assert check_plan(tree, GUDONG, YEAR, settings, gulou) == []
    # Drills of other regions and other years are not this region's plan.
    assert len(check_plan(tree, "3502", YEAR, settings, gulou)) == len(tree.townships("3502"))
    assert len(check_plan(tree, GULOU, YEAR + 1, settings, gulou)) == len(gulou)


# --- export ---------------------------------------------------------------------------------


def test_csv_export(plan: list[Drill]) -> None:
    text = to_csv(plan[:3])
    assert text.count("\n") == 4
    rows = list(csv.DictReader(io.StringIO(text)))
    assert list(rows[0]) == CSV_COLUMNS
    for row, d in zip(rows, plan[:3], strict=True):
        assert row == {key: str(value) for key, value in d.row().items()}
    assert to_csv([]) == ",".join(CSV_COLUMNS) + "\n"


def test_json_export(plan: list[Drill]) -> None:
    text = to_json(plan[:3])
    assert plan[0].township_name in text  # Chinese kept, not \u-escaped
    items = json.loads(text)
    assert isinstance(items, list)
    assert [Drill.model_validate(item) for item in items] == plan[:3]
    assert items[0]["scheduled_at"].endswith("+08:00")
    assert items[0]["status"] == "planned"
    assert json.loads(to_json([])) == []


def test_two_drills_of_a_county_never_overlap(settings: DrillSettings) -> None:
    day = allowed_days(settings)[40]
    first = drill("350102001", at(day, 9))
    # Another township of the same county, fifteen minutes later: inside the first's window.
    with pytest.raises(PlanError, match="never overlap"):
        check_slot(at(day, 9, 15), "350102002", settings, [first])
    # Another county at the same time is fine.
    check_slot(at(day, 9), "350103001", settings, [first])
    # The next free slot after 08:00 skips the taken 09:00 and whatever overlaps it.
    when = next_free_slot(at(day, 8), "350102002", settings, [first])
    window = timedelta(seconds=settings.window)
    assert when >= first.scheduled_at + window
    assert when.date() == day
