"""Annual compliance: a township passes with a passed drill of the year; rollups up the tree.

鼓楼区 (350102, 10 townships) gets every kind of year: passed, failed then passed on a re-drill,
failed, planned, missed and cancelled, running, cancelled, a pass of another year, and nothing.
One more township passes in 台江区 (Fuzhou) and one in 厦门市, to see the city and province add up.
"""

from __future__ import annotations

import csv
import io
from datetime import datetime, timedelta, timezone

import pytest

from dispatcher.core.errors import UnknownRegion
from dispatcher.core.regions import Level, RegionTree
from drills.compliance import (
    CSV_COLUMNS,
    STATUS_ORDER,
    Compliance,
    Rollup,
    TownshipStatus,
    compliance,
    to_csv,
    to_table,
)
from drills.models import Drill, DrillStatus
from drills.report import text_width

CST = timezone(timedelta(hours=8))
YEAR = 2027
# Townships that must drill in the real file (a change to the file changes these, and the test
# says so): 186 and 1,170 less the virtual ones (红星农场, 马祖乡, 罗源湾 in Fuzhou).
FUZHOU_TOWNSHIPS = 183
FUJIAN_TOWNSHIPS = 1129


def make_drill(
    tree: RegionTree,
    township: str,
    status: DrillStatus,
    *,
    year: int = YEAR,
    n: int = 1,
    month: int = 5,
) -> Drill:
    _, city, county, town = tree.path(township)
    return Drill(
        id=f"drill-{year}-{township}" + ("" if n == 1 else f"-{n}"),
        year=year,
        township=township,
        township_name=town.name,
        county=county.code,
        county_name=county.name,
        city=city.code,
        city_name=city.name,
        scheduled_at=datetime(year, month, 1 + n, 10, 0, tzinfo=CST),
        status=status,
    )


@pytest.fixture(scope="module")
def drills(tree: RegionTree) -> list[Drill]:
    s = DrillStatus
    return [
        make_drill(tree, "350102001", s.FAILED),
        make_drill(tree, "350102001", s.PASSED, n=2),  # the re-drill passed
        make_drill(tree, "350102002", s.PASSED),
        make_drill(tree, "350102003", s.FAILED),
        make_drill(tree, "350102004", s.PLANNED),
        make_drill(tree, "350102005", s.MISSED),
        make_drill(tree, "350102005", s.CANCELLED, n=2),  # later, but missed is better
        make_drill(tree, "350102006", s.PASSED, year=YEAR - 1),  # another year: no count
        make_drill(tree, "350102007", s.RUNNING),
        make_drill(tree, "350102008", s.CANCELLED),
        # 350102009 and 350102100: no drill at all.
        make_drill(tree, "350103001", s.PASSED),  # 台江区, 福州市
        make_drill(tree, "350203001", s.PASSED),  # 思明区, 厦门市
    ]


def only_row(c: Compliance) -> TownshipStatus:
    (row,) = [*c.townships, *c.compliant_townships]
    return row


def numbers(rollup: Rollup) -> tuple[int, int, int, float | None]:
    return rollup.townships, rollup.passed, rollup.not_compliant, rollup.percent


def test_county(tree: RegionTree, drills: list[Drill]) -> None:
    c = compliance(tree, "350102", YEAR, drills)
    assert (c.region, c.region_name, c.year) == ("350102", "鼓楼区", YEAR)
    assert numbers(c.totals) == (10, 2, 8, 20.0)
    assert c.totals.statuses == {
        "passed": 2,
        "failed": 1,
        "running": 1,
        "planned": 1,
        "missed": 1,
        "cancelled": 1,
        "none": 3,  # 350102006 (its pass was the year before), 350102009, 350102100
    }
    assert c.cities == []  # 福州市 is above the region: never a partial city row
    assert [numbers(county) for county in c.counties] == [numbers(c.totals)]


def test_non_compliant_townships(tree: RegionTree, drills: list[Drill]) -> None:
    c = compliance(tree, "350102", YEAR, drills)
    assert [(t.code, t.name, t.best_status) for t in c.townships] == [
        ("350102003", "温泉街道", "failed"),
        ("350102004", "东街街道", "planned"),
        ("350102005", "南街街道", "missed"),
        ("350102006", "安泰街道", "none"),
        ("350102007", "华大街道", "running"),
        ("350102008", "水部街道", "cancelled"),
        ("350102009", "五凤街道", "none"),
        ("350102100", "洪山镇", "none"),
    ]
    by_code = {t.code: t for t in c.townships}
    missed = by_code["350102005"]
    # Last drill vs best drill: the later cancelled one is the last, the missed one the best.
    assert (missed.last_status, missed.last_drill_id) == ("cancelled", "drill-2027-350102005-2")
    assert (missed.drill_id, missed.drills) == ("drill-2027-350102005", 2)
    other_year = by_code["350102006"]
    assert (other_year.drills, other_year.drill_id, other_year.last_status) == (0, None, "none")
    assert not any(t.compliant for t in c.townships)
    assert {(t.county_name, t.city_name) for t in c.townships} == {("鼓楼区", "福州市")}


def test_a_passed_redrill_makes_the_township_compliant(
    tree: RegionTree, drills: list[Drill]
) -> None:
    c = compliance(tree, "350102", YEAR, drills)
    assert [t.code for t in c.compliant_townships] == ["350102001", "350102002"]
    redrilled = c.compliant_townships[0]
    assert redrilled.compliant
    assert redrilled.best_status == "passed"
    assert redrilled.drill_id == "drill-2027-350102001-2"
    assert redrilled.drills == 2


def test_city(tree: RegionTree, drills: list[Drill]) -> None:
    c = compliance(tree, "3501", YEAR, drills)
    # 3 of 183: 1.63…% shown as 1.6 (rounded down).
    assert numbers(c.totals) == (FUZHOU_TOWNSHIPS, 3, FUZHOU_TOWNSHIPS - 3, 1.6)
    assert [(r.code, r.name) for r in c.cities] == [("3501", "福州市")]
    assert len(c.counties) == 13
    counties = {r.code: r for r in c.counties}
    assert numbers(counties["350102"]) == (10, 2, 8, 20.0)
    assert numbers(counties["350103"]) == (10, 1, 9, 10.0)
    assert numbers(counties["350104"]) == (13, 0, 13, 0.0)  # 14 less 红星农场, virtual
    assert sum(r.townships for r in c.counties) == FUZHOU_TOWNSHIPS
    assert len(c.townships) == FUZHOU_TOWNSHIPS - 3


def test_province(tree: RegionTree, drills: list[Drill]) -> None:
    c = compliance(tree, "35", YEAR, drills)
    assert c.region_name == "福建省"
    assert numbers(c.totals) == (FUJIAN_TOWNSHIPS, 4, FUJIAN_TOWNSHIPS - 4, 0.3)
    # 4 passed and the 5 of 鼓楼区 with another status; the rest never had a drill.
    assert c.totals.statuses["none"] == FUJIAN_TOWNSHIPS - 4 - 5
    assert len(c.cities) == 9
    assert len(c.counties) == 84
    cities = {r.code: r for r in c.cities}
    assert numbers(cities["3501"]) == (FUZHOU_TOWNSHIPS, 3, FUZHOU_TOWNSHIPS - 3, 1.6)
    assert cities["3502"].passed == 1
    assert cities["3503"].passed == 0
    assert sum(r.townships for r in c.cities) == FUJIAN_TOWNSHIPS
    assert sum(r.passed for r in c.counties) == 4
    assert len(c.townships) + len(c.compliant_townships) == FUJIAN_TOWNSHIPS


def test_a_pass_of_another_year_does_not_count(tree: RegionTree, drills: list[Drill]) -> None:
    c = compliance(tree, "350102006", YEAR, drills)
    assert numbers(c.totals) == (1, 0, 1, 0.0)
    assert (c.cities, c.counties) == ([], [])
    assert compliance(tree, "350102006", YEAR - 1, drills).totals.passed == 1
    # And 2026 knows nothing of 2027's passes.
    assert compliance(tree, "350102", YEAR - 1, drills).totals.passed == 1


@pytest.mark.parametrize("status", list(DrillStatus))
def test_every_drill_status_has_a_place_in_the_order(tree: RegionTree, status: DrillStatus) -> None:
    row = only_row(compliance(tree, "350102001", YEAR, [make_drill(tree, "350102001", status)]))
    assert row.best_status == status.value
    assert row.compliant is (status is DrillStatus.PASSED)
    assert STATUS_ORDER.index(row.best_status) < STATUS_ORDER.index("none")


def test_best_status_order(tree: RegionTree) -> None:
    order = [
        DrillStatus.PASSED,
        DrillStatus.FAILED,
        DrillStatus.RUNNING,
        DrillStatus.PLANNED,
        DrillStatus.MISSED,
        DrillStatus.CANCELLED,
    ]
    for i, best in enumerate(order):
        worse = [make_drill(tree, "350102001", s, n=2 + j) for j, s in enumerate(order[i + 1 :])]
        # The best drill first in time and last in the list: neither position decides.
        row = only_row(
            compliance(tree, "350102001", YEAR, [*worse, make_drill(tree, "350102001", best)])
        )
        assert row.best_status == best.value


def test_of_equal_statuses_the_latest_drill_is_named(tree: RegionTree) -> None:
    s = DrillStatus
    for status in (s.PASSED, s.FAILED):
        # Listed latest first: the order of the list must not decide.
        drills = [make_drill(tree, "350102001", status, n=n) for n in (3, 1, 2)]
        row = only_row(compliance(tree, "350102001", YEAR, drills))
        assert row.drill_id == row.last_drill_id == "drill-2027-350102001-3"


def test_a_village_or_an_unknown_region_is_refused(tree: RegionTree) -> None:
    with pytest.raises(ValueError, match="village"):
        compliance(tree, "350102001001", YEAR, [])
    with pytest.raises(UnknownRegion):
        compliance(tree, "350199", YEAR, [])


def test_json_round_trip(tree: RegionTree, drills: list[Drill]) -> None:
    c = compliance(tree, "3501", YEAR, drills)
    body = c.model_dump(mode="json")
    assert body["totals"]["statuses"]["passed"] == 3
    assert Compliance.model_validate(body) == c


# --- CSV and table -----------------------------------------------------------------------------


def test_csv_lists_every_township(tree: RegionTree, drills: list[Drill]) -> None:
    rows = list(csv.DictReader(io.StringIO(to_csv(compliance(tree, "350102", YEAR, drills)))))
    assert list(rows[0]) == CSV_COLUMNS
    assert len(rows) == 10
    assert [row["code"] for row in rows] == sorted(row["code"] for row in rows)
    assert rows[0] == {
        "city": "福州市",
        "county": "鼓楼区",
        "township": "鼓东街道",
        "code": "350102001",
        "compliant": "1",
        "best_status": "passed",
        "drill_id": "drill-2027-350102001-2",
        "drills": "2",
        "last_status": "passed",
        "last_drill_id": "drill-2027-350102001-2",
        "city_code": "3501",
        "county_code": "350102",
        "villages": "5",
        "villages_without_terminal": "",  # the registry was not consulted
    }
    assert sum(int(row["compliant"]) for row in rows) == 2
    assert rows[-1]["township"] == "洪山镇"
    assert (rows[-1]["best_status"], rows[-1]["drill_id"]) == ("none", "")


def test_table_of_the_province(tree: RegionTree, drills: list[Drill]) -> None:
    text = to_table(compliance(tree, "35", YEAR, drills))
    lines = text.splitlines()
    assert "福建省" in lines[0]
    assert str(YEAR) in lines[0]
    assert f"4 / {FUJIAN_TOWNSHIPS}" in text
    assert "0.3%" in text
    fuzhou = next(line for line in lines if line.startswith("福州市"))
    # "-": without the registry, villages without a terminal are not counted.
    assert fuzhou.split() == ["福州市", "3501", "183", "3", "180", "1.6%", "-"]
    gulou = next(line for line in lines if line.strip().startswith("鼓楼区"))
    assert gulou.startswith("  ")  # a county sits under its city
    assert gulou.split() == ["鼓楼区", "350102", "10", "2", "8", "20.0%", "-"]
    # One line per city and county, plus the header of the table, aligned.
    table = lines[lines.index(next(line for line in lines if line.startswith("地区"))) :]
    assert len(table) == 1 + 9 + 84
    assert len({text_width(line) for line in table}) == 1


def test_table_of_a_county_and_of_a_township(tree: RegionTree, drills: list[Drill]) -> None:
    county = to_table(compliance(tree, "350102", YEAR, drills))
    assert "鼓楼区" in county
    assert "20.0%" in county
    assert any(line.split()[:2] == ["鼓楼区", "350102"] for line in county.splitlines())
    township = to_table(compliance(tree, "350102003", YEAR, drills))
    assert "温泉街道" in township
    assert "0 / 1" in township
    assert "failed 1" in township


def test_virtual_townships_owe_no_drill_and_villages_without_terminals_are_named(
    tree: RegionTree, drills: list[Drill]
) -> None:
    lianjiang = "350122"  # 连江县: 马祖乡 is virtual; 黄岐镇 (350122112) is not
    huangqi = "350122112"
    villages = [v.code for v in tree.descendants(huangqi, Level.VILLAGE)]
    # Terminals in all but the first three villages of 黄岐镇, and in every other village.
    reached = {v for v in tree.villages(lianjiang) if v not in villages[:3]}
    c = compliance(tree, lianjiang, YEAR, drills, reached=reached)
    assert [(v.code, v.name) for v in c.virtual_townships] == [("350122400", "马祖乡")]
    codes = {row.code for row in [*c.townships, *c.compliant_townships]}
    assert "350122400" not in codes
    assert c.totals.townships == len(tree.descendants(lianjiang, Level.TOWNSHIP)) - 1
    row = next(r for r in c.townships if r.code == huangqi)
    assert row.villages == len(villages)
    assert row.villages_without_terminal == 3
    assert [v.code for v in row.villages_without_terminal_list or []] == villages[:3]
    assert c.totals.villages_without_terminal == 3
    assert c.counties[0].villages_without_terminal == 3
    text = to_table(c)
    assert "马祖乡（350122400）" in text
    gap_line = next(line for line in text.splitlines() if "黄岐镇（350122112）" in line)
    assert f"3/{len(villages)}" in gap_line
    assert tree.name(villages[0]) in gap_line
    # Without the registry nothing is claimed either way.
    assert compliance(tree, lianjiang, YEAR, drills).totals.villages_without_terminal is None


def test_csv_in_chinese_names_every_column_for_people(
    tree: RegionTree, drills: list[Drill]
) -> None:
    c = compliance(tree, "350102", YEAR, drills, reached={"350102001001"})
    rows = list(csv.reader(io.StringIO(to_csv(c, "zh"))))
    assert rows[0][:4] == ["市", "县（区）", "乡镇（街道）", "乡镇（街道）代码"]
    assert rows[0][-4:] == ["市代码", "县（区）代码", "村（社区）数", "无登记终端的村（社区）数"]
    assert rows[1][:4] == ["福州市", "鼓楼区", "鼓东街道", "350102001"]
    assert rows[1][-4:] == ["3501", "350102", "5", "4"]
    assert [len(row) for row in rows] == [len(CSV_COLUMNS)] * len(rows)
    with pytest.raises(ValueError, match="lang"):
        to_csv(c, "fr")
