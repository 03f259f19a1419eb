"""A drill's report from its ack log: outcomes, lateness, latency, villages, CSV and table.

One synthetic drill of 鼓东街道 (350102001) covers every case the report tells apart: terminals
that play fast or late, only receive, fail, stay silent, are marked no_ack by the sweeper (one
of them plays afterwards), answer only after the window, or appear only as duplicates.
"""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta, timezone

import pytest
from pydantic import ValidationError

from dispatcher.core.regions import Level, RegionTree
from drills.models import Drill, DrillStatus
from drills.report import (
    CSV_COLUMNS,
    NO_TERMINALS,
    AckEntry,
    DrillReport,
    TerminalRef,
    build_report,
    percent_floor,
    percentile,
    text_width,
    to_csv,
    to_table,
)

TOWNSHIP = "350102001"  # 鼓东街道
V1 = "350102001001"  # 中山社区
V2 = "350102001002"  # 庆城社区
V4 = "350102001004"  # 观风亭社区
V5 = "350102001005"  # 开元社区
V6 = "350102001006"  # 树兜社区: no terminal at all
CST = timezone(timedelta(hours=8))
SCHEDULED = datetime(2027, 5, 12, 10, 0, tzinfo=CST)
DISPATCHED_MS = int(SCHEDULED.timestamp() * 1000)
WINDOW_S = 1800
WINDOW_END_MS = DISPATCHED_MS + WINDOW_S * 1000
LATE_AFTER = 120.0

EXPECTED = {
    "T01": V1,  # received 1 s, played 5 s
    "T02": V1,  # received 2 s, played 10 s; duplicates before and after must not count
    "T03": V1,  # late: received 130 s, played 200 s
    "T04": V2,  # received 3 s, playing 4 s, never played
    "T05": V2,  # late and only received (150 s)
    "T06": V2,  # received 6 s, failed 20 s
    "T07": V4,  # silent, offline at dispatch
    "T08": V4,  # silent, marked no_ack by the sweeper, offline at dispatch
    "T09": V4,  # answers only after the window
    "T10": V4,  # only duplicate (result 0) entries
    "T11": V5,  # received exactly at late_after (not late), played 121 s
    "T12": V5,  # received and played exactly at the window's end (counted, late)
    "T13": V5,  # reports failed without a received first
    "T14": V5,  # marked no_ack at 600 s, then received 700 s and played 710 s
}
OFFLINE = {"T07", "T08", "T99"}  # T99 is not expected: not counted


def ack(terminal: str, state: str, seconds: float, result: int = 1) -> AckEntry:
    return AckEntry(terminal, state, DISPATCHED_MS + round(seconds * 1000), result)


ACKS = [
    ack("T01", "received", 1),
    ack("T01", "played", 5),
    ack("T02", "received", 0.5, result=0),  # a stale duplicate: would make T02 the fastest
    ack("T02", "received", 2),
    ack("T02", "played", 10),
    ack("T02", "played", 11, result=0),
    ack("T03", "received", 130),
    ack("T03", "played", 200),
    ack("T04", "received", 3),
    ack("T04", "playing", 4),
    ack("T04", "played", 9, result=0),  # a played that did not count: still not played
    ack("T05", "received", 150),
    ack("T06", "received", 6),
    ack("T06", "failed", 20),
    ack("T08", "no_ack", 600),
    ack("T09", "received", WINDOW_S + 1),
    ack("T09", "played", WINDOW_S + 5),
    ack("T10", "received", 2, result=0),
    ack("T10", "played", 3, result=0),
    ack("T11", "received", LATE_AFTER),
    ack("T11", "played", 121),
    ack("T12", "received", WINDOW_S),
    ack("T12", "played", WINDOW_S),
    ack("T13", "failed", 30),
    ack("T14", "no_ack", 600),
    ack("T14", "received", 700),
    ack("T14", "played", 710),
    ack("T99", "played", 3, result=-1),  # registered but not expected for this alert
]


@pytest.fixture
def drill() -> Drill:
    return Drill(
        id="drill-2027-350102001",
        year=2027,
        township=TOWNSHIP,
        township_name="鼓东街道",
        county="350102",
        county_name="鼓楼区",
        city="3501",
        city_name="福州市",
        scheduled_at=SCHEDULED,
        status=DrillStatus.RUNNING,
        alert_id="drill-2027-350102001-a1",
        fired_at=SCHEDULED,
    )


def make(
    drill: Drill,
    tree: RegionTree,
    *,
    expected: dict[str, str] | None = None,
    acks: list[AckEntry] | None = None,
    offline: set[str] | None = None,
    pass_coverage: float = 0.95,
) -> DrillReport:
    return build_report(
        drill=drill,
        expected=EXPECTED if expected is None else expected,
        offline=OFFLINE if offline is None else offline,
        acks=ACKS if acks is None else acks,
        dispatched_ms=DISPATCHED_MS,
        window_end_ms=WINDOW_END_MS,
        late_after=LATE_AFTER,
        pass_coverage=pass_coverage,
        tree=tree,
    )


@pytest.fixture
def report(drill: Drill, tree: RegionTree) -> DrillReport:
    return make(drill, tree)


def ids(refs: list[TerminalRef]) -> list[str]:
    return [ref.terminal for ref in refs]


# --- percentiles -------------------------------------------------------------------------------


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(20, 0, -1)]  # unsorted on purpose
    assert percentile(values, 50) == 10  # ceil(0.5 * 20) = 10th smallest
    assert percentile(values, 95) == 19  # ceil(0.95 * 20) = 19th, not the 20th
    assert percentile(values, 100) == 20
    hundred = [float(v) for v in range(1, 101)]
    assert percentile(hundred, 95) == 95
    assert percentile(hundred, 7) == 7  # 0.07 * 100 is 7.000000000000001 in floating point
    assert percentile([7.0], 50) == 7
    assert percentile([1.0, 2.0], 1) == 1
    assert percentile([], 50) is None


def test_percentile_rejects_a_rank_outside_1_to_100() -> None:
    with pytest.raises(ValueError, match=r"not in 1\.\.100"):
        percentile([1.0], 0)
    with pytest.raises(ValueError, match=r"not in 1\.\.100"):
        percentile([1.0], 101)


def test_percent_floor_never_rounds_up_to_a_threshold() -> None:
    assert percent_floor(189, 199) == 94.9  # 94.97%: rounding would show 95.0
    assert percent_floor(19, 20) == 95.0
    assert percent_floor(2, 3) == 66.6
    assert percent_floor(0, 0) == 0.0


# --- the synthetic drill -----------------------------------------------------------------------


def test_every_terminal_gets_exactly_one_outcome(report: DrillReport) -> None:
    assert report.expected == 14
    assert report.played == 6
    assert report.received_only == 2
    assert report.failed == 2
    assert report.missing == 4
    assert report.played + report.received_only + report.failed + report.missing == 14
    outcomes = {t.terminal: t.outcome for t in report.terminals}
    assert outcomes == {
        "T01": "played",
        "T02": "played",
        "T03": "played",
        "T04": "received_only",
        "T05": "received_only",
        "T06": "failed",
        "T07": "missing",
        "T08": "missing",
        "T09": "missing",
        "T10": "missing",
        "T11": "played",
        "T12": "played",
        "T13": "failed",
        "T14": "played",
    }


def test_counts_beside_the_outcomes(report: DrillReport) -> None:
    # Acknowledged: confirmed receipt; T13 only reported failed, T07-T10 nothing in the window.
    assert report.acknowledged == 9
    assert [t.terminal for t in report.terminals if t.acknowledged] == [
        "T01", "T02", "T03", "T04", "T05", "T06", "T11", "T12", "T14",
    ]  # fmt: skip
    assert report.late == 4
    assert report.after_window == 1
    assert report.no_ack == 2
    assert report.offline_at_dispatch == 2  # T99 is offline but not expected


def test_coverage_and_verdict(report: DrillReport) -> None:
    assert report.coverage == 6 / 14
    assert not report.passed
    assert report.problems == []


def test_terminal_lists_are_sorted_with_their_village(report: DrillReport) -> None:
    assert ids(report.missing_terminals) == ["T07", "T08", "T09", "T10"]
    assert {(r.village, r.village_name) for r in report.missing_terminals} == {(V4, "观风亭社区")}
    assert ids(report.late_terminals) == ["T03", "T05", "T12", "T14"]
    assert [(r.terminal, r.village) for r in report.failed_terminals] == [
        ("T06", V2),
        ("T13", V5),
    ]


def test_duplicates_do_not_count(report: DrillReport) -> None:
    by_id = {t.terminal: t for t in report.terminals}
    assert by_id["T02"].first_ack_s == 2.0  # not the stale 0.5 s duplicate
    assert by_id["T02"].played_s == 10.0
    assert by_id["T04"].played_s is None
    assert by_id["T10"].first_ack_s is None
    assert not by_id["T10"].acknowledged


def test_no_ack_marks_are_not_acks_but_give_way_to_a_later_ack(report: DrillReport) -> None:
    by_id = {t.terminal: t for t in report.terminals}
    assert by_id["T08"].no_ack
    assert by_id["T08"].first_ack_s is None
    assert by_id["T14"].no_ack
    assert by_id["T14"].first_ack_s == 700.0
    assert by_id["T14"].late


def test_the_window_is_inclusive_and_later_acks_are_missing(report: DrillReport) -> None:
    by_id = {t.terminal: t for t in report.terminals}
    assert by_id["T12"].played_s == WINDOW_S  # recorded exactly at the window's end: counted
    assert by_id["T09"].after_window
    assert by_id["T09"].first_ack_s is None
    assert sum(t.after_window for t in report.terminals) == 1


def test_late_is_strictly_more_than_late_after(report: DrillReport) -> None:
    by_id = {t.terminal: t for t in report.terminals}
    assert by_id["T11"].first_ack_s == LATE_AFTER
    assert not by_id["T11"].late
    assert by_id["T03"].late
    assert not by_id["T13"].late  # failed without a receipt is not an ack that can be late


def test_latency_percentiles(report: DrillReport) -> None:
    # First acks of acknowledged terminals: 1 2 3 6 120 130 150 700 1800 (n = 9).
    assert report.ack_latency.model_dump() == {"n": 9, "p50": 120.0, "p95": 1800.0, "max": 1800.0}
    # Played: 5 10 121 200 710 1800 (n = 6): p50 is the 3rd, p95 the 6th.
    assert report.played_latency.model_dump() == {
        "n": 6,
        "p50": 121.0,
        "p95": 1800.0,
        "max": 1800.0,
    }


def test_village_rows(report: DrillReport, tree: RegionTree) -> None:
    villages = [r.code for r in tree.descendants(TOWNSHIP, level=Level.VILLAGE)]
    assert [row.code for row in report.villages] == sorted(villages) == [V1, V2, V4, V5, V6]
    counts = {
        row.code: (
            row.name,
            row.expected,
            row.acknowledged,
            row.played,
            row.received_only,
            row.failed,
            row.missing,
            row.late,
            row.offline,
        )
        for row in report.villages
    }
    assert counts == {
        V1: ("中山社区", 3, 3, 3, 0, 0, 0, 1, 0),
        V2: ("庆城社区", 3, 3, 0, 2, 1, 0, 1, 0),
        V4: ("观风亭社区", 4, 0, 0, 0, 0, 4, 0, 2),
        V5: ("开元社区", 4, 3, 3, 0, 1, 0, 2, 0),
        V6: ("树兜社区", 0, 0, 0, 0, 0, 0, 0, 0),  # a village nobody can reach shows up
    }


def test_cancelled_late_plays_and_clock_skew(drill: Drill, tree: RegionTree) -> None:
    made = make(
        drill,
        tree,
        expected={"C1": V1, "C2": V1, "C3": V2, "C4": V2},
        acks=[
            # Stopped by a cancel or an update: it had the alert, it did not play it.
            ack("C1", "received", 5),
            ack("C1", "cancelled", 30),
            # Received in the window, played only after it: not a play of this drill.
            ack("C2", "received", 5),
            ack("C2", "played", WINDOW_S + 10),
            # Recorded 50 ms "before" dispatch by another instance's clock.
            ack("C3", "played", -0.05),
            # Its received was lost; a cancelled still says it had the alert.
            ack("C4", "cancelled", 40),
        ],
        offline=set(),
    )
    by_id = {t.terminal: t for t in made.terminals}
    assert (by_id["C1"].outcome, by_id["C1"].acknowledged) == ("received_only", True)
    assert (by_id["C2"].outcome, by_id["C2"].played_s) == ("received_only", None)
    assert not by_id["C2"].after_window  # it answered in the window: not a silent one
    assert made.after_window == 0
    assert (by_id["C3"].outcome, by_id["C3"].first_ack_s, by_id["C3"].played_s) == (
        "played",
        0.0,
        0.0,
    )
    assert (by_id["C4"].outcome, by_id["C4"].acknowledged) == ("received_only", True)
    assert (made.acknowledged, made.played, made.received_only) == (4, 1, 3)


def test_the_order_of_the_log_entries_does_not_matter(drill: Drill, tree: RegionTree) -> None:
    assert make(drill, tree, acks=list(reversed(ACKS))) == make(drill, tree)


def test_header_fields(report: DrillReport) -> None:
    assert report.drill_id == "drill-2027-350102001"
    assert report.township == TOWNSHIP
    assert report.township_name == "鼓东街道"
    assert report.alert_id == "drill-2027-350102001-a1"
    assert report.dispatched_at == SCHEDULED
    assert report.window_end == SCHEDULED + timedelta(seconds=WINDOW_S)
    assert report.dispatched_at.tzinfo is not None


def test_json_round_trip_and_extra_fields_are_refused(report: DrillReport) -> None:
    body = report.model_dump(mode="json")
    assert body["dispatched_at"] == "2027-05-12T02:00:00Z"
    assert DrillReport.model_validate_json(report.model_dump_json()) == report
    with pytest.raises(ValidationError, match="extra"):
        DrillReport.model_validate({**body, "surprise": 1})


# --- coverage at the threshold, and no terminals -----------------------------------------------


def played_of(n_played: int, n_expected: int) -> tuple[dict[str, str], list[AckEntry]]:
    expected = {f"P{i:03d}": V1 for i in range(n_expected)}
    acks = [ack(f"P{i:03d}", "played", 10) for i in range(n_played)]
    return expected, acks


@pytest.mark.parametrize(
    ("n_played", "n_expected", "passed"),
    [
        (19, 20, True),  # exactly 95%
        (57, 60, True),  # exactly 95% again, a different fraction
        (18, 20, False),
        (189, 199, False),  # 94.97%: just under
        (20, 20, True),
    ],
)
def test_pass_at_the_threshold_boundary(
    drill: Drill, tree: RegionTree, n_played: int, n_expected: int, passed: bool
) -> None:
    expected, acks = played_of(n_played, n_expected)
    made = make(drill, tree, expected=expected, acks=acks, offline=set())
    assert made.coverage == n_played / n_expected
    assert made.passed is passed


def test_full_coverage_is_needed_when_the_threshold_is_1(drill: Drill, tree: RegionTree) -> None:
    expected, acks = played_of(99, 100)
    assert not make(drill, tree, expected=expected, acks=acks, pass_coverage=1.0).passed
    expected, acks = played_of(100, 100)
    assert make(drill, tree, expected=expected, acks=acks, pass_coverage=1.0).passed


def test_no_terminals_registered(drill: Drill, tree: RegionTree) -> None:
    made = make(drill, tree, expected={}, acks=[], offline=set())
    assert made.expected == 0
    assert made.coverage == 0.0
    assert not made.passed
    assert made.problems == [NO_TERMINALS]
    assert "no terminals registered in the township" in made.problems[0]
    assert made.ack_latency.model_dump() == {"n": 0, "p50": None, "p95": None, "max": None}
    assert made.played_latency.p50 is None
    assert [row.expected for row in made.villages] == [0, 0, 0, 0, 0]
    assert to_csv(made).splitlines() == [",".join(CSV_COLUMNS)]


def test_a_terminal_at_a_code_missing_from_the_tree_keeps_its_row(
    drill: Drill, tree: RegionTree
) -> None:
    made = make(
        drill, tree, expected={"X1": "350102001999"}, acks=[ack("X1", "played", 3)], offline=set()
    )
    row = next(row for row in made.villages if row.code == "350102001999")
    assert (row.name, row.expected, row.played) == ("", 1, 1)
    assert made.passed


# --- CSV and table -----------------------------------------------------------------------------


def test_csv_has_one_row_per_terminal(report: DrillReport) -> None:
    rows = list(csv.DictReader(io.StringIO(to_csv(report))))
    assert list(rows[0]) == CSV_COLUMNS
    assert [row["terminal"] for row in rows] == sorted(EXPECTED)
    by_id = {row["terminal"]: row for row in rows}
    assert by_id["T01"] == {
        "terminal": "T01",
        "village": V1,
        "village_name": "中山社区",
        "outcome": "played",
        "first_ack_s": "1.0",
        "played_s": "5.0",
        "late": "0",
        "offline": "0",
        "no_ack": "0",
        "after_window": "0",
    }
    assert by_id["T09"]["outcome"] == "missing"
    assert by_id["T09"]["after_window"] == "1"
    assert by_id["T07"]["offline"] == "1"
    assert by_id["T07"]["first_ack_s"] == ""
    assert by_id["T12"]["late"] == "1"
    assert by_id["T12"]["played_s"] == "1800.0"


def test_table_in_chinese(report: DrillReport) -> None:
    text = to_table(report)
    assert "鼓东街道" in text
    assert "福州市 鼓楼区" in text
    assert "2027-05-12 10:00:00 +0800" in text  # dispatch shown in China Standard Time
    assert "覆盖率 42.8% (6/14" in text  # 42.857…% rounded down
    assert "未通过" in text
    for name in ("中山社区", "庆城社区", "观风亭社区", "开元社区", "树兜社区", "合计"):
        assert name in text
    assert "T07  350102001004 观风亭社区" in text


def test_table_in_english_and_a_passing_drill(drill: Drill, tree: RegionTree) -> None:
    expected, acks = played_of(19, 20)
    made = make(drill, tree, expected=expected, acks=acks, offline=set())
    zh = to_table(made, "zh")
    assert "通过" in zh
    assert "未通过" not in zh
    en = to_table(made, lang="en", tz=UTC)
    assert "PASSED" in en
    assert "coverage 95.0% (19/20 terminals played" in en
    assert "2027-05-12 02:00:00 +0000" in en
    assert "FAILED" in to_table(make(drill, tree), "en")


def test_table_columns_line_up_with_chinese_names(report: DrillReport) -> None:
    lines = to_table(report).splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("代码"))
    end = next(i for i, line in enumerate(lines) if line.lstrip().startswith("合计"))
    table = lines[start : end + 1]
    assert len(table) == 7  # header, five villages, total
    # Counts are right-aligned, so every line ends at the same column.
    assert len({text_width(line) for line in table}) == 1
    assert table[-1].split()[-8:] == ["14", "9", "6", "2", "2", "4", "4", "2"]


def test_table_rejects_an_unknown_language(report: DrillReport) -> None:
    with pytest.raises(ValueError, match="lang"):
        to_table(report, "fr")


def test_villages_without_a_terminal_are_counted_named_and_shown(
    drill: Drill, tree: RegionTree
) -> None:
    made = make(drill, tree)
    # 树兜社区 has no registered terminal: the report says so beside its coverage.
    assert made.villages_without_terminal == 1
    assert [(v.code, v.name) for v in made.villages_without_terminal_list] == [(V6, "树兜社区")]
    zh = to_table(made).splitlines()
    at = zh.index("无登记终端的村（社区） (1):")
    assert zh[at + 1].split() == [V6, "树兜社区"]
    en = to_table(made, "en")
    assert "villages with no registered terminal (1):" in en
    # With terminals in every village, none is listed.
    full = make(drill, tree, expected={**EXPECTED, "T15": V6})
    assert full.villages_without_terminal == 0
    assert "无登记终端的村（社区） (0): 无" in to_table(full)
    # A report stored before the count existed still reads.
    old = made.model_dump(mode="json")
    del old["villages_without_terminal"], old["villages_without_terminal_list"]
    assert DrillReport.model_validate(old).villages_without_terminal == 0
