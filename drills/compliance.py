"""Annual drill compliance: did every township under a region pass a drill this year?

Pure: no I/O. A township is compliant for a year when at least one of its drills of that year
has status ``passed``; a failed drill followed by a passed re-drill is compliant. Counts roll
up from the townships to each county and city at or below the region, and to the region itself.

A drill belongs to the year of its plan (``Drill.year``), not to the calendar day it ran on: a
re-drill of a late-December failure may run in January and still settles the old year.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from typing import Literal

from pydantic import BaseModel, ConfigDict

from dispatcher.core.regions import Level, Region, RegionTree, villages_without_terminal
from drills.exports import csv_text
from drills.models import Drill, DrillStatus
from drills.report import NamedRegion, pad, percent_floor, text_width

__all__ = [
    "CSV_COLUMNS",
    "STATUS_ORDER",
    "BestStatus",
    "Compliance",
    "Rollup",
    "TownshipStatus",
    "compliance",
    "to_csv",
    "to_table",
]

BestStatus = Literal["passed", "failed", "running", "planned", "missed", "cancelled", "none"]
# Best first: what a township's year amounts to is its best drill. A failed drill still beats a
# running one (it was carried out), and a planned one beats a missed one (it can still happen).
STATUS_ORDER: tuple[BestStatus, ...] = (
    "passed",
    "failed",
    "running",
    "planned",
    "missed",
    "cancelled",
    "none",
)
_RANK = {status: rank for rank, status in enumerate(STATUS_ORDER)}
_AS_BEST: dict[DrillStatus, BestStatus] = {
    DrillStatus.PASSED: "passed",
    DrillStatus.FAILED: "failed",
    DrillStatus.RUNNING: "running",
    DrillStatus.PLANNED: "planned",
    DrillStatus.MISSED: "missed",
    DrillStatus.CANCELLED: "cancelled",
}


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TownshipStatus(_Model):
    """One township's year."""

    code: str
    name: str
    county: str
    county_name: str
    city: str
    city_name: str
    compliant: bool
    best_status: BestStatus
    # The drill that gave the best status (the latest, if several did); None without drills.
    drill_id: str | None
    drills: int
    # The township's most recent drill of the year, whatever its status.
    last_status: BestStatus
    last_drill_id: str | None
    # Its villages, and those with no registered terminal (placeholder villages left out):
    # a drill there passes on the terminals it has, and these are the villages it never
    # reached. None when the terminal registry was not consulted.
    villages: int
    villages_without_terminal: int | None = None
    villages_without_terminal_list: list[NamedRegion] | None = None


class Rollup(_Model):
    """The townships of one region: how many, how many passed, and their best statuses."""

    code: str
    name: str
    level: str  # province | city | county | township
    townships: int
    passed: int
    not_compliant: int
    # passed / townships in percent, rounded down to 0.1 (so 100.0 means all); None for none.
    percent: float | None
    # Townships by their best status of the year, every status present.
    statuses: dict[BestStatus, int]
    # Villages of those townships with no registered terminal (None: registry not consulted).
    villages_without_terminal: int | None = None


class Compliance(_Model):
    """Compliance of the townships under ``region`` for ``year``; JSON by
    ``model_dump(mode="json")``."""

    region: str
    region_name: str
    year: int
    totals: Rollup
    # Every city and county at or below the region (never a partial one), sorted by code.
    cities: list[Rollup]
    counties: list[Rollup]
    # The townships that are not compliant, sorted by code: who still owes a drill.
    townships: list[TownshipStatus]
    # The compliant ones, so the CSV can list every township.
    compliant_townships: list[TownshipStatus]
    # Townships with no village of their own (RegionTree.is_virtual): they owe no drill and
    # are counted nowhere above.
    virtual_townships: list[NamedRegion] = []


def _best_status(drills: Sequence[Drill]) -> tuple[BestStatus, str | None]:
    if not drills:
        return "none", None
    # Among drills of the best status the latest wins: its id is the freshest evidence.
    best = max(drills, key=lambda d: (-_RANK[_AS_BEST[d.status]], d.scheduled_at, d.id))
    return _AS_BEST[best.status], best.id


def _township_status(
    tree: RegionTree, township: Region, drills: Sequence[Drill], reached: Collection[str] | None
) -> TownshipStatus:
    path = tree.path(township.code)
    villages = [v for v in tree.villages(township.code) if not tree.is_virtual(v)]
    gaps = (
        None
        if reached is None
        else [NamedRegion(code=v.code, name=v.name)
              for v in villages_without_terminal(tree, [township.code], reached)]
    )  # fmt: skip
    best, best_id = _best_status(drills)
    last = max(drills, key=lambda d: (d.scheduled_at, d.id), default=None)
    last_status: BestStatus = "none" if last is None else _AS_BEST[last.status]
    return TownshipStatus(
        code=township.code,
        name=township.name,
        county=path[2].code,
        county_name=path[2].name,
        city=path[1].code,
        city_name=path[1].name,
        compliant=best == "passed",
        best_status=best,
        drill_id=best_id,
        drills=len(drills),
        last_status=last_status,
        last_drill_id=None if last is None else last.id,
        villages=len(villages),
        villages_without_terminal=None if gaps is None else len(gaps),
        villages_without_terminal_list=gaps,
    )


def _rollup(region: Region, rows: Iterable[TownshipStatus]) -> Rollup:
    statuses: dict[BestStatus, int] = dict.fromkeys(STATUS_ORDER, 0)
    gaps: int | None = None
    for row in rows:
        statuses[row.best_status] += 1
        if row.villages_without_terminal is not None:
            gaps = (gaps or 0) + row.villages_without_terminal
    total = sum(statuses.values())
    passed = statuses["passed"]
    return Rollup(
        code=region.code,
        name=region.name,
        level=region.level.label_en,
        townships=total,
        passed=passed,
        not_compliant=total - passed,
        percent=percent_floor(passed, total) if total else None,
        statuses=statuses,
        villages_without_terminal=gaps,
    )


def compliance(
    tree: RegionTree,
    region: str,
    year: int,
    drills: Sequence[Drill],
    *,
    reached: Collection[str] | None = None,
) -> Compliance:
    """Compliance of every township at or below ``region`` (a province, city, county or
    township code) for ``year``; drills of other years or regions are ignored, and so are
    virtual townships. ``reached`` are the region codes with a registered terminal: with
    them each township and rollup counts its villages without one."""
    top = tree.get(region)
    if top.level is Level.VILLAGE:
        raise ValueError(f"{region} is a village: compliance is counted per township")
    townships = tree.townships(region)
    virtual = [
        NamedRegion(code=t.code, name=t.name)
        for t in tree.townships(region, virtual=True)
        if tree.is_virtual(t.code)
    ]

    by_township: dict[str, list[Drill]] = {t.code: [] for t in townships}
    for drill in drills:
        if drill.year == year and drill.township in by_township:
            by_township[drill.township].append(drill)

    rows = [
        _township_status(tree, t, by_township[t.code], reached)
        for t in sorted(townships, key=lambda t: t.code)
    ]

    def rollups(level: Level) -> list[Rollup]:
        if top.level > level:
            return []
        regions = [top] if top.level is level else tree.descendants(region, level)
        # A township's code starts with its county's and city's codes.
        return [
            _rollup(r, (row for row in rows if row.code.startswith(r.code)))
            for r in sorted(regions, key=lambda r: r.code)
        ]

    return Compliance(
        region=top.code,
        region_name=top.name,
        year=year,
        totals=_rollup(top, rows),
        cities=rollups(Level.CITY),
        counties=rollups(Level.COUNTY),
        townships=[row for row in rows if not row.compliant],
        compliant_townships=[row for row in rows if row.compliant],
        virtual_townships=sorted(virtual, key=lambda t: t.code),
    )


# --- CSV and text table ------------------------------------------------------------------------

CSV_COLUMNS = [
    "city",
    "county",
    "township",
    "code",
    "compliant",
    "best_status",
    "drill_id",
    "drills",
    "last_status",
    "last_drill_id",
    "city_code",
    "county_code",
    "villages",
    "villages_without_terminal",
]
# Here city, county and township hold names (the first columns, for people); the codes follow.
_ZH_NAMES = {"city": "市", "county": "县（区）", "township": "乡镇（街道）"}


def to_csv(c: Compliance, lang: str = "en") -> str:
    """One row per township, sorted by code; ``compliant`` is 1/0 so a spreadsheet can sum it;
    headers in Chinese with ``lang="zh"``. A file of it starts with ``exports.BOM``."""
    rows = (
        [
            row.city_name,
            row.county_name,
            row.name,
            row.code,
            int(row.compliant),
            row.best_status,
            row.drill_id or "",
            row.drills,
            row.last_status,
            row.last_drill_id or "",
            row.city,
            row.county,
            row.villages,
            "" if row.villages_without_terminal is None else row.villages_without_terminal,
        ]
        for row in sorted([*c.townships, *c.compliant_townships], key=lambda r: r.code)
    )
    return csv_text(CSV_COLUMNS, rows, lang, _ZH_NAMES)


def _percent(rollup: Rollup) -> str:
    return "-" if rollup.percent is None else f"{rollup.percent:.1f}%"


def to_table(c: Compliance) -> str:
    """The rollup as text for the CLI: the totals, then each city followed by its counties
    (indented), with townships, passed, not compliant and the passed percentage."""
    t = c.totals
    lines = [
        f"{c.region_name}（{c.region}）{c.year} 年度综合应急演练达标情况 / "
        f"drill compliance {c.year}",
        f"达标 passed {t.passed} / {t.townships} 乡镇 townships ({_percent(t)}), "
        f"未达标 not compliant {t.not_compliant}",
        "  ".join(f"{s} {t.statuses[s]}" for s in STATUS_ORDER),
    ]
    if t.villages_without_terminal is not None:
        lines.append(
            f"无登记终端的村（社区） villages with no registered terminal: "
            f"{t.villages_without_terminal}"
        )
    if c.virtual_townships:
        lines.append(
            "虚拟乡镇（无村，不需演练） virtual townships (no villages, no drill owed): "
            + "、".join(f"{v.name}（{v.code}）" for v in c.virtual_townships)
        )
    lines.append("")
    counties_by_city: dict[str, list[Rollup]] = {}
    for county in c.counties:
        counties_by_city.setdefault(county.code[:4], []).append(county)
    ordered: list[tuple[str, Rollup]] = []
    for city in c.cities:
        ordered.append(("", city))
        ordered.extend(("  ", county) for county in counties_by_city.pop(city.code, []))
    # A city-less listing (the region is a county) still shows its county.
    for rest in counties_by_city.values():
        ordered.extend(("", county) for county in rest)

    header = [
        "地区 region",
        "代码 code",
        "乡镇 townships",
        "达标 passed",
        "未达标 not compliant",
        "%",
        "无终端村 no-terminal villages",
    ]
    table = [header] + [
        [
            indent + r.name,
            r.code,
            str(r.townships),
            str(r.passed),
            str(r.not_compliant),
            _percent(r),
            "-" if r.villages_without_terminal is None else str(r.villages_without_terminal),
        ]
        for indent, r in ordered
    ]
    if len(table) > 1:  # a township alone: the totals say it all
        widths = [max(text_width(row[i]) for row in table) for i in range(len(header))]
        lines.extend(
            "  ".join(pad(cell, widths[i], right=i >= 2) for i, cell in enumerate(row)).rstrip()
            for row in table
        )
    gaps = [
        row
        for row in sorted([*c.townships, *c.compliant_townships], key=lambda r: r.code)
        if row.villages_without_terminal_list
    ]
    if gaps:
        lines.extend(["", "无登记终端的村（社区） villages with no registered terminal:"])
        for row in gaps:
            names = [v.name for v in row.villages_without_terminal_list or []]
            lines.append(
                f"  {row.county_name}{row.name}（{row.code}） {len(names)}/{row.villages}: "
                + "、".join(names)
            )
    # No trailing newline: the CLI prints it.
    return "\n".join(lines)
