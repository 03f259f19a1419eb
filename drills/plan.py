"""The year's drill plan: one drill per township, spread over the working days of the year.

Pure: no I/O. ``plan_year`` makes the plan, ``check_slot`` and ``next_free_slot`` validate and
find times when coordinators move, add or re-drill, ``check_plan`` re-checks a whole plan for a
reviewer, and ``to_csv`` / ``to_json`` export it.

All rules are in the drill timezone (``DrillSettings.tz``): a drill falls on an allowed ISO
weekday outside every blackout, starts at or after ``workday_start`` with its ack window ending
by ``workday_end``, and no county has more than ``max_per_county_per_day`` drills on one day.
Cancelled drills never count for anything.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter, defaultdict
from collections.abc import Collection, Sequence
from datetime import date, datetime, time, timedelta
from fractions import Fraction

from dispatcher.core.errors import MalformedRegionCode, PlanError
from dispatcher.core.regions import Level, Region, RegionTree, level_of_code
from drills.exports import csv_text
from drills.models import CSV_COLUMNS, Drill, DrillStatus, year_problem
from drills.settings import Blackout, DrillSettings

__all__ = [
    "SEARCH_DAYS",
    "SLOT_MINUTES",
    "PlanError",
    "check_plan",
    "check_slot",
    "next_free_slot",
    "plan_year",
    "start_times",
    "to_csv",
    "to_json",
]

# Planned drills start on the half hour: easy to announce, and two drills of one county never
# overlap their first minutes.
SLOT_MINUTES = 30
# How far ``next_free_slot`` looks: a whole year, leap day included.
SEARCH_DAYS = 366

_WEEKDAY_NAMES = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
_FIX = "raise drills.max_per_county_per_day, allow more drills.weekdays or shorten drills.blackouts"


# --- rules shared by plan_year, check_slot and next_free_slot ------------------------------


def start_times(settings: DrillSettings) -> list[time]:
    """The grid-aligned start times of a day whose whole window fits in working hours."""
    end = _seconds(settings.workday_end)
    found: list[time] = []
    for minute in range(0, 24 * 60, SLOT_MINUTES):
        start = time(minute // 60, minute % 60)
        if start >= settings.workday_start and minute * 60 + settings.window <= end:
            found.append(start)
    return found


def _seconds(of: time) -> float:
    return of.hour * 3600 + of.minute * 60 + of.second + of.microsecond / 1e6


def _blackout_on(day: date, settings: DrillSettings) -> Blackout | None:
    for blackout in settings.blackouts:
        if blackout.start <= day <= blackout.end:
            return blackout
    return None


def _day_problem(day: date, settings: DrillSettings) -> str | None:
    if day.isoweekday() not in settings.weekdays:
        allowed = ", ".join(_WEEKDAY_NAMES[d - 1] for d in settings.weekdays)
        return f"{day} is a {_WEEKDAY_NAMES[day.isoweekday() - 1]}; drills fall on {allowed}"
    blackout = _blackout_on(day, settings)
    if blackout is not None:
        return (
            f"{day} is inside the blackout {blackout.reason!r} ({blackout.start} to {blackout.end})"
        )
    return None


def _hours_problem(local: datetime, settings: DrillSettings) -> str | None:
    start = _seconds(local.time())
    if start >= _seconds(settings.workday_start) and start + settings.window <= _seconds(
        settings.workday_end
    ):
        return None
    return (
        f"{local:%H:%M} is outside working hours: a drill starts at or after "
        f"{settings.workday_start:%H:%M} and its {_window_text(settings.window)} must end by "
        f"{settings.workday_end:%H:%M}"
    )


def _window_text(seconds: float) -> str:
    if seconds % 60 == 0:
        return f"{int(seconds // 60)}-minute window"
    return f"{seconds:g}-second window"


def _require_aware(value: datetime, what: str) -> None:
    if value.tzinfo is None or value.utcoffset() is None:
        raise PlanError(f"{what} ({value.isoformat()}) has no timezone; give e.g. +08:00")


def _county_of(township: str) -> str:
    try:
        level = level_of_code(township)
    except MalformedRegionCode:
        level = None
    if level is not Level.TOWNSHIP:
        raise PlanError(f"{township!r} is not a township code (9 digits)")
    return township[:6]


def _live(drills: Sequence[Drill]) -> list[Drill]:
    return [d for d in drills if d.status is not DrillStatus.CANCELLED]


def _townships(tree: RegionTree, region: str) -> tuple[Region, list[Region]]:
    root = tree.get(region)  # an unknown or malformed code raises its RegionError here
    if root.level is Level.VILLAGE:
        raise PlanError(
            f"{root.code} {root.name} is a village; plan drills for a township or above"
        )
    # Virtual townships (no village of their own, RegionTree.is_virtual) have nobody to drill.
    return root, tree.townships(root.code)


def _digest(seed: str, text: str) -> str:
    # Not hash(): that is salted per process, and plans must be the same on every instance.
    return hashlib.sha256(f"{seed}\x00{text}".encode()).hexdigest()


# --- planning -------------------------------------------------------------------------------


def plan_year(
    tree: RegionTree,
    region: str,
    year: int,
    settings: DrillSettings,
    *,
    existing: Sequence[Drill] = (),
    taken_ids: Collection[str] = (),
    seed: str | None = None,
    now: datetime | None = None,
) -> list[Drill]:
    """New planned drills for every township under ``region`` without a live drill in ``year``.

    ``existing`` are the drills already stored (any region; those of ``year`` and those
    scheduled in it are enough): their townships are skipped and they count towards each
    county's daily cap, so planning twice adds nothing. ``taken_ids`` are drill ids in use
    besides theirs (a drill moved out of the year keeps its id), which new drills avoid.
    With ``now`` only days after its date are used. ``seed`` shuffles which township of a
    county comes first and which start time a day begins with; without one the region file's
    order is used. The same inputs always give the same plan. Sorted by time, then township.
    """
    _, townships = _townships(tree, region)
    tz = settings.tz
    if now is not None:
        _require_aware(now, "now")
    live = _live(existing)
    done = {d.township for d in live if d.year == year}
    todo = [t for t in townships if t.code not in done]
    if not todo:
        return []

    starts = start_times(settings)
    if not starts:
        raise PlanError(
            f"no start time on the {SLOT_MINUTES}-minute grid fits a "
            f"{_window_text(settings.window)} between {settings.workday_start:%H:%M} and "
            f"{settings.workday_end:%H:%M}; widen the working hours"
        )
    after = None if now is None else now.astimezone(tz).date()
    days = _allowed_days(year, settings, after)
    day_index = {day: i for i, day in enumerate(days)}
    slot_index = {start: i for i, start in enumerate(starts)}
    cap = settings.max_per_county_per_day

    # What is already taken, per (county, day index): how many drills and which start slots;
    # and per day how many drills start in each slot province-wide, to spread the load.
    count: Counter[tuple[str, int]] = Counter()
    used: defaultdict[tuple[str, int], set[int]] = defaultdict(set)
    load = [[0] * len(starts) for _ in days]
    for drill in live:
        local = drill.scheduled_at.astimezone(tz)
        di = day_index.get(local.date())
        if di is None:
            continue
        key = (drill.township[:6], di)
        count[key] += 1
        si = slot_index.get(local.time())
        if si is not None:
            used[key].add(si)
            load[di][si] += 1

    def room(county: str, di: int) -> int:
        key = (county, di)
        return max(0, min(cap - count[key], len(starts) - len(used[key])))

    by_county: dict[str, list[Region]] = {}
    for town in todo:
        by_county.setdefault(town.code[:6], []).append(town)

    short: list[str] = []
    per_day = min(cap, len(starts))
    for county, towns in by_county.items():
        places = sum(room(county, di) for di in range(len(days)))
        if len(towns) > places:
            held = len(days) * per_day - places
            less = f", less {held} taken by existing drills" if held else ""
            short.append(
                f"{county} {tree.name(county)} has {len(towns)} townships to plan but room for "
                f"only {places} ({len(days)} allowed days × {per_day} a day{less})"
            )
    if short:
        raise PlanError(f"cannot plan the {year} drills: {'; '.join(short)}; {_FIX}")

    order = _interleave(by_county, seed)
    total = len(order)
    first_slot = 0 if seed is None else int(_digest(seed, "slots"), 16) % len(starts)
    taken = {*taken_ids, *(d.id for d in existing)}
    planned: list[Drill] = []
    for i, town in enumerate(order):
        county = town.code[:6]
        # The i-th of N gets the day at the same fraction of the allowed days, so the plan is
        # as even over the year as the days are; a full day pushes it to the next with room.
        target = i * len(days) // total
        di = next(
            (
                (target + step) % len(days)
                for step in range(len(days))
                if room(county, (target + step) % len(days))
            ),
            None,
        )
        if di is None:  # the room check above rules this out; a bug should fail loudly
            raise PlanError(f"no day left for township {town.code} in {year}; {_FIX}")
        key = (county, di)
        # The least busy start of the day province-wide, rotating day by day so that no time
        # of day is favoured; never one the county already uses that day.
        rotate = (first_slot + di) % len(starts)
        si = min(
            (s for s in range(len(starts)) if s not in used[key]),
            key=lambda s: (load[di][s], (s - rotate) % len(starts)),
        )
        count[key] += 1
        used[key].add(si)
        load[di][si] += 1
        when = datetime.combine(days[di], starts[si], tzinfo=tz)
        planned.append(_new_drill(tree, town, year, when, taken))
    planned.sort(key=lambda d: (d.scheduled_at, d.township))
    return planned


def _allowed_days(year: int, settings: DrillSettings, after: date | None) -> list[date]:
    days: list[date] = []
    day = date(year, 1, 1)
    while day.year == year:
        if (after is None or day > after) and _day_problem(day, settings) is None:
            days.append(day)
        day += timedelta(days=1)
    return days


def _interleave(by_county: dict[str, list[Region]], seed: str | None) -> list[Region]:
    """Townships in an order that spreads each county evenly and mixes counties.

    The j-th of a county's k townships sits at (2j+1)/2k of the way through the order, so a
    county with 3 townships lands at 1/6, 1/2 and 5/6 of the year whatever the other counties
    hold; counties at the same point alternate.
    """
    keyed: list[tuple[Fraction, str, int, Region]] = []
    for n, (county, towns) in enumerate(by_county.items()):
        rank = "" if seed is None else _digest(seed, county)
        if seed is not None:
            towns = sorted(towns, key=lambda town: _digest(seed, town.code))
        k = len(towns)
        for j, town in enumerate(towns):
            keyed.append((Fraction(2 * j + 1, 2 * k), rank, n, town))
    keyed.sort(key=lambda item: item[:3])
    return [item[3] for item in keyed]


def _new_drill(
    tree: RegionTree, town: Region, year: int, when: datetime, taken_ids: set[str]
) -> Drill:
    above = {region.level: region for region in tree.path(town.code)}
    city, county = above[Level.CITY], above[Level.COUNTY]
    base = f"drill-{year}-{town.code}"
    drill_id, n = base, 1
    # A cancelled drill keeps its id, so a township planned again after one gets the next.
    while drill_id in taken_ids:
        n += 1
        drill_id = f"{base}-{n}"
    taken_ids.add(drill_id)
    return Drill(
        id=drill_id,
        year=year,
        township=town.code,
        township_name=town.name,
        county=county.code,
        county_name=county.name,
        city=city.code,
        city_name=city.name,
        scheduled_at=when,
    )


# --- editing --------------------------------------------------------------------------------


def check_slot(
    when: datetime,
    township: str,
    settings: DrillSettings,
    drills: Sequence[Drill],
    *,
    ignore: str | None = None,
    now: datetime | None = None,
) -> None:
    """Raise PlanError unless a drill of ``township`` may start at ``when``.

    ``drills`` are the stored drills (cancelled ones do not count); ``ignore`` is the id of the
    drill being moved, so it does not count against its own county's cap.
    """
    _require_aware(when, "the drill's time")
    # Before any conversion: 9999-12-31T23:59:59-14:00 is past datetime's range in UTC.
    problem = year_problem(when)
    if problem is not None:
        raise PlanError(problem)
    tz = settings.tz
    local = when.astimezone(tz)
    if now is not None:
        _require_aware(now, "now")
        if when <= now:
            now_text = f"{now.astimezone(tz):%Y-%m-%d %H:%M}"
            raise PlanError(f"{local:%Y-%m-%d %H:%M} is in the past (now is {now_text})")
    problem = _day_problem(local.date(), settings) or _hours_problem(local, settings)
    if problem is not None:
        raise PlanError(problem)
    county = _county_of(township)
    same_day = sorted(
        d.id
        for d in _live(drills)
        if d.id != ignore
        and d.township[:6] == county
        and d.scheduled_at.astimezone(tz).date() == local.date()
    )
    cap = settings.max_per_county_per_day
    if len(same_day) >= cap:
        raise PlanError(
            f"county {county} already has {len(same_day)} drills on {local.date()} "
            f"({', '.join(same_day)}); at most {cap} a day — pick another day"
        )
    clash = _overlapping(when, county, settings, drills, ignore=ignore)
    if clash is not None:
        raise PlanError(
            f"drill {clash.id} of the same county runs at "
            f"{clash.scheduled_at.astimezone(tz):%H:%M} that day, and two drills of one county "
            "never overlap — pick another time"
        )


def coordinates(office_id: str, office_region: str, settings: DrillSettings) -> bool:
    """True for the offices that may run a drill by hand whatever the drill rules say: the
    province and city offices and the configured drill office. Any other office runs a drill
    of its own townships now only when now is a slot the rules allow (``check_slot``)."""
    return len(office_region) <= 4 or office_id == settings.office


def _overlapping(
    when: datetime,
    county: str,
    settings: DrillSettings,
    drills: Sequence[Drill],
    *,
    ignore: str | None = None,
) -> Drill | None:
    """A live drill of ``county`` whose window overlaps one starting at ``when``."""
    window = timedelta(seconds=settings.window)
    for drill in _live(drills):
        if drill.id == ignore or drill.township[:6] != county:
            continue
        if drill.scheduled_at < when + window and when < drill.scheduled_at + window:
            return drill
    return None


def next_free_slot(
    after: datetime, township: str, settings: DrillSettings, drills: Sequence[Drill]
) -> datetime:
    """The first grid start strictly after ``after`` that ``check_slot`` accepts for
    ``township``, in the drill timezone; PlanError if there is none within SEARCH_DAYS days."""
    _require_aware(after, "after")
    tz = settings.tz
    county = _county_of(township)
    starts = start_times(settings)
    local_after = after.astimezone(tz)
    per_day = Counter(
        d.scheduled_at.astimezone(tz).date() for d in _live(drills) if d.township[:6] == county
    )
    first = local_after.date()
    for offset in range(SEARCH_DAYS + 1):
        day = first + timedelta(days=offset)
        if per_day[day] >= settings.max_per_county_per_day:
            continue
        if _day_problem(day, settings) is not None:
            continue
        for start in starts:
            when = datetime.combine(day, start, tzinfo=tz)
            if when > after and _overlapping(when, county, settings, drills) is None:
                return when
    raise PlanError(
        f"no free drill slot for county {county} within {SEARCH_DAYS} days after "
        f"{local_after:%Y-%m-%d %H:%M}; {_FIX}"
    )


# --- review and export ----------------------------------------------------------------------


def check_plan(
    tree: RegionTree,
    region: str,
    year: int,
    settings: DrillSettings,
    drills: Sequence[Drill],
) -> list[str]:
    """What is wrong with the ``year`` plan of ``region``; [] when nothing is.

    Written from the rules, not from ``plan_year``, so a reviewer can trust it to catch the
    planner's mistakes as well as hand edits: townships without a live drill, a township
    planned twice, drills on a day that is not allowed, in a blackout, outside working hours,
    outside the year, and counties over their daily cap (every live drill of the county
    counts, whatever its region or year).
    """
    root, townships = _townships(tree, region)
    tz = settings.tz
    day_start = timedelta(
        hours=settings.workday_start.hour,
        minutes=settings.workday_start.minute,
        seconds=settings.workday_start.second,
    )
    day_end = timedelta(
        hours=settings.workday_end.hour,
        minutes=settings.workday_end.minute,
        seconds=settings.workday_end.second,
    )
    window = timedelta(seconds=settings.window)
    live = [d for d in drills if d.status != DrillStatus.CANCELLED]
    mine = sorted(
        (d for d in live if d.year == year and d.township.startswith(root.code)),
        key=lambda d: d.id,
    )
    problems: list[str] = []

    covered = {d.township for d in mine}
    for town in townships:
        if town.code not in covered:
            problems.append(f"township {town.code} {town.name} has no drill in {year}")
    twice = Counter(d.township for d in mine if d.origin == "plan")
    for code, n in sorted(twice.items()):
        if n > 1:
            problems.append(f"township {code} has {n} planned drills in {year}")

    known = {town.code for town in townships}
    for d in mine:
        local = d.scheduled_at.astimezone(tz)
        when = f"{local:%Y-%m-%d %H:%M}"
        if d.township not in known:
            problems.append(f"drill {d.id}: township {d.township} is not in the region tree")
        if d.county != d.township[:6]:
            problems.append(f"drill {d.id}: county {d.county} is not the township's county")
        if local.year != year:
            problems.append(f"drill {d.id} at {when} is not in {year}")
        if local.isoweekday() not in settings.weekdays:
            problems.append(f"drill {d.id} at {when} falls on a {_WEEKDAY_NAMES[local.weekday()]}")
        for blackout in settings.blackouts:
            if blackout.start <= local.date() <= blackout.end:
                problems.append(
                    f"drill {d.id} at {when} is in the blackout {blackout.reason!r} "
                    f"({blackout.start} to {blackout.end})"
                )
        start = local - local.replace(hour=0, minute=0, second=0, microsecond=0)
        if start < day_start or start + window > day_end:
            problems.append(f"drill {d.id} at {when} is outside working hours")

    per_day: defaultdict[tuple[str, date], list[str]] = defaultdict(list)
    for d in live:
        per_day[(d.township[:6], d.scheduled_at.astimezone(tz).date())].append(d.id)
    for (county, day), ids in sorted(per_day.items()):
        near = county.startswith(root.code) or root.code.startswith(county)
        if near and len(ids) > settings.max_per_county_per_day:
            problems.append(
                f"county {county} has {len(ids)} drills on {day}, more than "
                f"{settings.max_per_county_per_day}: {', '.join(sorted(ids))}"
            )
    return problems


def to_csv(drills: Sequence[Drill], lang: str = "en") -> str:
    """The drills as CSV text, one ``Drill.row()`` a line under the CSV_COLUMNS header (in
    Chinese with ``lang="zh"``)."""
    return csv_text(CSV_COLUMNS, (drill.row() for drill in drills), lang)


def to_json(drills: Sequence[Drill]) -> str:
    """The drills as a JSON list of their full records, Chinese names kept readable."""
    return json.dumps([d.model_dump(mode="json") for d in drills], ensure_ascii=False)
