"""A drill's report: who of the township's terminals received and played the exercise alert.

Pure: no I/O. The caller reads the alert's ``expected`` hash, its ``offline`` set and the ack
log entries of the alert from the store, and passes them in with the drill's window.

Only ack log entries with result 1 changed a terminal's state; the others (0: a duplicate, a
redelivery or a step backwards) are the same ack again and are never counted. An ack recorded
after the window does not count either: for this drill the terminal was silent, and
``after_window`` says how many such terminals did answer later (worth a look at their link).

Every expected terminal gets exactly one outcome:

* ``played``: it reported ``played`` in the window;
* ``failed``: it did not play, and the last state it reported in the window is ``failed``;
* ``received_only``: it acknowledged (``received``, ``playing``, or ``cancelled`` when a cancel
  or update stopped it) but never played in the window;
* ``missing``: nothing counted in the window. The sweeper's ``no_ack`` marks are the engine
  saying it heard nothing, not an ack, so they never lift a terminal out of ``missing``.

``acknowledged`` counts the terminals that confirmed receiving the alert (received, playing,
played, cancelled); a terminal whose only report is ``failed`` is failed, not acknowledged.
``late`` flags acknowledged terminals whose first ack came more than ``late_after`` seconds
after dispatch; it is a flag on top of the outcome, not an outcome.

Late acks (``late_acks``) are another thing: acks that came after the window, which the verdict
never counts but the review must show. An ack is late when the engine recorded it after the
window's end, or when the drill's first report had been made without it (``on_time_through``,
the last ack log entry that report read: an instance whose clock or batches lagged can log an
in-window time after the verdict, and a verdict once given does not change). Every logged ack
of the alert after that point is listed, duplicates too (``counted`` false), the sweeper's
no_ack marks not (they are the engine's, not a terminal's); ``played_with_late`` and
``coverage_with_late`` say what the drill would have reached had they all come in time.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone, tzinfo
from typing import Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict

from dispatcher.core.regions import Level, RegionTree
from drills.exports import csv_text
from drills.models import Drill

__all__ = [
    "CSV_COLUMNS",
    "LATE_CSV_COLUMNS",
    "NO_TERMINALS",
    "AckEntry",
    "Counts",
    "DrillReport",
    "LateAck",
    "LatencyStats",
    "Outcome",
    "TerminalOutcome",
    "TerminalRef",
    "VillageRow",
    "build_report",
    "entry_key",
    "pad",
    "percent_floor",
    "percentile",
    "text_width",
    "to_csv",
    "to_table",
]

Outcome = Literal["played", "received_only", "failed", "missing"]

NO_TERMINALS = "no terminals registered in the township / 乡镇内没有登记的终端"

# States in which a terminal confirms it has the alert. ``cancelled`` is the store's name for a
# ``failed`` caused by a cancel or an update: the terminal had the alert and was stopped.
_RECEIPT_STATES = frozenset({"received", "playing", "played", "cancelled"})
_ACK_STATES = _RECEIPT_STATES | {"failed"}
_NO_ACK = "no_ack"

# Fujian keeps China Standard Time all year (no daylight saving), so a fixed offset is exact
# and needs no time zone database.
CHINA_STANDARD_TIME = timezone(timedelta(hours=8), "CST")


@dataclass(frozen=True)
class AckEntry:
    """One ack log entry of the drill's alert (``ebd:acklog``), as the store recorded it."""

    terminal: str
    state: str
    recorded_ms: int
    result: int
    # The region the ack came from, and the ack log entry holding it ("ms-seq"); "" when unknown.
    region: str = ""
    entry_id: str = ""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class LatencyStats(_Model):
    """Seconds from dispatch, nearest-rank percentiles; all None when ``n`` is 0."""

    n: int
    p50: float | None
    p95: float | None
    max: float | None


class NamedRegion(_Model):
    code: str
    name: str


class TerminalRef(_Model):
    terminal: str
    village: str
    village_name: str


class TerminalOutcome(_Model):
    """One expected terminal's part in the drill: a row of the CSV."""

    terminal: str
    village: str
    village_name: str
    outcome: Outcome
    acknowledged: bool
    # Seconds from dispatch to its first ack of any state, and to ``played``, in the window.
    first_ack_s: float | None
    played_s: float | None
    late: bool
    offline: bool
    # The sweeper marked it no_ack (escalated as silent after the resends).
    no_ack: bool
    # It answered, but only after the window closed.
    after_window: bool
    # Its acks after the window (see ``LateAck``): the state they left it in, seconds from
    # dispatch to the first of them, and whether it played only then. Defaults for reports
    # stored before late acks were kept.
    late_state: str | None = None
    late_ack_s: float | None = None
    played_late: bool = False


class LateAck(_Model):
    """One ack of the review log that came after the window (see the module docstring)."""

    terminal: str
    village: str
    village_name: str
    state: str
    recorded_at: AwareDatetime
    # Seconds from the window's end to the ack (0 for one logged in time but after the verdict).
    after_window_s: float
    # Whether it changed the terminal's state (0: a duplicate or a redelivery).
    counted: bool
    expected: bool


class Counts(_Model):
    """How the expected terminals answered: the counts a report gives for the whole township
    and for each village."""

    expected: int
    acknowledged: int
    played: int
    received_only: int
    failed: int
    missing: int
    late: int


class VillageRow(Counts):
    """The counts of one village (or of any other region a terminal is registered at)."""

    code: str
    name: str
    offline: int


class DrillReport(Counts):
    """What a drill achieved; ``model_dump(mode="json")`` gives its JSON."""

    drill_id: str
    year: int
    township: str
    township_name: str
    county: str
    county_name: str
    city: str
    city_name: str
    alert_id: str | None
    dispatched_at: AwareDatetime
    window_end: AwareDatetime
    # The thresholds it was judged by, so a report read later explains itself.
    late_after: float
    pass_coverage: float
    after_window: int
    no_ack: int
    offline_at_dispatch: int
    coverage: float
    passed: bool
    problems: list[str]
    ack_latency: LatencyStats
    played_latency: LatencyStats
    villages: list[VillageRow]
    # The township's villages with no registered terminal: no loudspeaker there sounded, and
    # coverage counts only terminals, so this is what it cannot show (placeholder villages
    # left out). Defaults for reports stored before they were counted.
    villages_without_terminal: int = 0
    villages_without_terminal_list: list[NamedRegion] = []
    missing_terminals: list[TerminalRef]
    late_terminals: list[TerminalRef]
    failed_terminals: list[TerminalRef]
    terminals: list[TerminalOutcome]
    # Acks after the window, kept for the review; the verdict above is the window's alone.
    on_time_through: str | None = None
    played_late: int = 0
    played_with_late: int = 0
    coverage_with_late: float = 0.0
    late_acks: list[LateAck] = []


@dataclass
class _Seen:
    """What the ack log says about one terminal."""

    first_ack_ms: int | None = None
    played_ms: int | None = None
    receipt: bool = False
    last_state: str | None = None
    no_ack: bool = False
    after_window: bool = False
    late_first_ms: int | None = None
    late_state: str | None = None
    late_played: bool = False


def percentile(values: Sequence[float], p: int) -> float | None:
    """The nearest-rank ``p``-th percentile (0 < p ≤ 100): the smallest value with at least p%
    of the values at or below it, i.e. the ceil(p·n/100)-th smallest. None for no values.

    Nearest-rank always returns one of the values (no interpolation), so "p95 = 41 s" means a
    terminal really took 41 s. The rank is computed in integers: in floating point 0.07 * 100
    is 7.000000000000001, and ceil() would pick the 8th of 100 instead of the 7th.
    """
    if not 0 < p <= 100:
        raise ValueError(f"percentile {p} is not in 1..100")
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, -(-p * len(ordered) // 100))
    return ordered[rank - 1]


def _latency(values: Sequence[float]) -> LatencyStats:
    return LatencyStats(
        n=len(values),
        p50=percentile(values, 50),
        p95=percentile(values, 95),
        max=max(values) if values else None,
    )


def percent_floor(part: int, whole: int) -> float:
    """``part / whole`` in percent, rounded down to 0.1 in exact integer arithmetic, so that a
    share just under a threshold never shows as the threshold (94.97% is 94.9%, not 95.0%)."""
    return 0.0 if whole <= 0 else (part * 1000 // whole) / 10


def _seconds(ms: int, dispatched_ms: int) -> float:
    # An ack recorded a few ms "before" dispatch comes from clocks of different instances, not
    # from the past; a negative latency would only confuse the statistics.
    return round(max(0, ms - dispatched_ms) / 1000, 3)


def _from_ms(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


def entry_key(entry_id: str) -> tuple[int, int]:
    """An ack log entry id ("ms-seq") as numbers, so ids compare in the stream's order."""
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


def _is_late(ack: AckEntry, window_end_ms: int, on_time_through: str | None) -> bool:
    if ack.recorded_ms > window_end_ms:
        return True
    # Without an entry id (an entry of an old log) the recorded time alone decides.
    return (
        on_time_through is not None
        and bool(ack.entry_id)
        and entry_key(ack.entry_id) > entry_key(on_time_through)
    )


def _read_acks(
    expected: Mapping[str, str],
    acks: Sequence[AckEntry],
    window_end_ms: int,
    on_time_through: str | None = None,
) -> dict[str, _Seen]:
    seen = {terminal: _Seen() for terminal in expected}
    # Stable sort: entries recorded in the same millisecond keep the log's order.
    for ack in sorted(acks, key=lambda a: a.recorded_ms):
        state = seen.get(ack.terminal)
        if state is None or ack.result != 1:
            continue
        if ack.state == _NO_ACK:
            state.no_ack = True
            continue
        if ack.state not in _ACK_STATES:
            continue
        if _is_late(ack, window_end_ms, on_time_through):
            state.after_window = True
            if state.late_first_ms is None:
                state.late_first_ms = ack.recorded_ms
            state.late_state = ack.state
            state.late_played = state.late_played or ack.state == "played"
            continue
        if state.first_ack_ms is None:
            state.first_ack_ms = ack.recorded_ms
        if ack.state == "played" and state.played_ms is None:
            state.played_ms = ack.recorded_ms
        state.receipt = state.receipt or ack.state in _RECEIPT_STATES
        state.last_state = ack.state
    return seen


def _outcome(seen: _Seen) -> Outcome:
    # Played first: a terminal that played did the drill's job whatever it reported after.
    if seen.played_ms is not None:
        return "played"
    if seen.last_state == "failed":
        return "failed"
    if seen.first_ack_ms is not None:
        return "received_only"
    return "missing"


def _region_name(tree: RegionTree, code: str) -> str:
    # A terminal may be registered at a code a later region file dropped; keep its row.
    return tree.name(code) if code in tree else ""


def build_report(
    *,
    drill: Drill,
    expected: Mapping[str, str],
    offline: Collection[str],
    acks: Sequence[AckEntry],
    dispatched_ms: int,
    window_end_ms: int,
    late_after: float,
    pass_coverage: float,
    tree: RegionTree,
    on_time_through: str | None = None,
) -> DrillReport:
    """The report of ``drill``: ``expected`` maps each terminal to its region code (village),
    ``offline`` are the terminals offline at dispatch, ``acks`` the alert's ack log entries;
    times are epoch milliseconds, ``late_after`` seconds, ``pass_coverage`` a share (0.95).
    ``on_time_through`` is the last ack log entry the drill's first report read (None when
    making that first report): entries after it are late whatever time they were logged at."""
    seen = _read_acks(expected, acks, window_end_ms, on_time_through)
    offline_set = set(offline)

    terminals: list[TerminalOutcome] = []
    for terminal in sorted(expected):
        state = seen[terminal]
        village = expected[terminal]
        first_s = (
            None if state.first_ack_ms is None else _seconds(state.first_ack_ms, dispatched_ms)
        )
        played_s = None if state.played_ms is None else _seconds(state.played_ms, dispatched_ms)
        # Compared in ms, not in rounded seconds, so the boundary is exact.
        late = (
            state.receipt
            and state.first_ack_ms is not None
            and (state.first_ack_ms - dispatched_ms) > late_after * 1000
        )
        outcome = _outcome(state)
        terminals.append(
            TerminalOutcome(
                terminal=terminal,
                village=village,
                village_name=_region_name(tree, village),
                outcome=outcome,
                acknowledged=state.receipt,
                first_ack_s=first_s,
                played_s=played_s,
                late=late,
                offline=terminal in offline_set,
                no_ack=state.no_ack,
                after_window=state.after_window and outcome == "missing",
                late_state=state.late_state,
                late_ack_s=(
                    None
                    if state.late_first_ms is None
                    else _seconds(state.late_first_ms, dispatched_ms)
                ),
                played_late=state.late_played and outcome != "played",
            )
        )

    n_expected = len(terminals)
    played = _count(terminals, "played")
    coverage = played / n_expected if n_expected else 0.0
    played_late = sum(t.played_late for t in terminals)
    problems = [] if n_expected else [NO_TERMINALS]
    # Direct comparison is exact where it matters: played / expected is correctly rounded, so
    # a ratio equal to the configured decimal (19/20 and 0.95) is the very same float.
    passed = n_expected > 0 and coverage >= pass_coverage
    villages = _villages(drill.township, terminals, tree)
    unreached = [
        NamedRegion(code=row.code, name=row.name)
        for row in villages
        if row.expected == 0 and not (row.code in tree and tree.is_virtual(row.code))
    ]

    return DrillReport(
        drill_id=drill.id,
        year=drill.year,
        township=drill.township,
        township_name=drill.township_name,
        county=drill.county,
        county_name=drill.county_name,
        city=drill.city,
        city_name=drill.city_name,
        alert_id=drill.alert_id,
        dispatched_at=_from_ms(dispatched_ms),
        window_end=_from_ms(window_end_ms),
        late_after=late_after,
        pass_coverage=pass_coverage,
        expected=n_expected,
        acknowledged=sum(t.acknowledged for t in terminals),
        played=played,
        received_only=_count(terminals, "received_only"),
        failed=_count(terminals, "failed"),
        missing=_count(terminals, "missing"),
        late=sum(t.late for t in terminals),
        after_window=sum(t.after_window for t in terminals),
        no_ack=sum(t.no_ack for t in terminals),
        offline_at_dispatch=sum(t.offline for t in terminals),
        coverage=coverage,
        passed=passed,
        problems=problems,
        ack_latency=_latency(
            [t.first_ack_s for t in terminals if t.acknowledged and t.first_ack_s is not None]
        ),
        played_latency=_latency([t.played_s for t in terminals if t.played_s is not None]),
        villages=villages,
        villages_without_terminal=len(unreached),
        villages_without_terminal_list=unreached,
        missing_terminals=_refs(t for t in terminals if t.outcome == "missing"),
        late_terminals=_refs(t for t in terminals if t.late),
        failed_terminals=_refs(t for t in terminals if t.outcome == "failed"),
        terminals=terminals,
        on_time_through=on_time_through,
        played_late=played_late,
        played_with_late=played + played_late,
        coverage_with_late=(played + played_late) / n_expected if n_expected else 0.0,
        late_acks=_late_acks(acks, expected, window_end_ms, on_time_through, tree),
    )


def _late_acks(
    acks: Sequence[AckEntry],
    expected: Mapping[str, str],
    window_end_ms: int,
    on_time_through: str | None,
    tree: RegionTree,
) -> list[LateAck]:
    out = []
    for ack in sorted(acks, key=lambda a: (a.recorded_ms, a.terminal)):
        if ack.state == _NO_ACK or not _is_late(ack, window_end_ms, on_time_through):
            continue
        village = expected.get(ack.terminal, ack.region)
        out.append(
            LateAck(
                terminal=ack.terminal,
                village=village,
                village_name=_region_name(tree, village) if village else "",
                state=ack.state,
                recorded_at=_from_ms(ack.recorded_ms),
                after_window_s=round(max(0, ack.recorded_ms - window_end_ms) / 1000, 3),
                counted=ack.result == 1,
                expected=ack.terminal in expected,
            )
        )
    return out


def _count(terminals: Sequence[TerminalOutcome], outcome: Outcome) -> int:
    return sum(t.outcome == outcome for t in terminals)


def _refs(terminals: Iterable[TerminalOutcome]) -> list[TerminalRef]:
    return [
        TerminalRef(terminal=t.terminal, village=t.village, village_name=t.village_name)
        for t in terminals
    ]


def _villages(
    township: str, terminals: Sequence[TerminalOutcome], tree: RegionTree
) -> list[VillageRow]:
    # Every village of the township gets a row, those without a terminal too: a village
    # nobody can reach is what a coordinator most needs to see.
    codes = (
        {r.code for r in tree.descendants(township, Level.VILLAGE)} if township in tree else set()
    )
    codes.update(t.village for t in terminals)
    by_code: dict[str, list[TerminalOutcome]] = {code: [] for code in codes}
    for t in terminals:
        by_code[t.village].append(t)
    rows = []
    for code in sorted(by_code):
        group = by_code[code]
        rows.append(
            VillageRow(
                code=code,
                name=_region_name(tree, code),
                expected=len(group),
                acknowledged=sum(t.acknowledged for t in group),
                played=_count(group, "played"),
                received_only=_count(group, "received_only"),
                failed=_count(group, "failed"),
                missing=_count(group, "missing"),
                late=sum(t.late for t in group),
                offline=sum(t.offline for t in group),
            )
        )
    return rows


# --- CSV and text table ------------------------------------------------------------------------

CSV_COLUMNS = [
    "terminal",
    "village",
    "village_name",
    "outcome",
    "first_ack_s",
    "played_s",
    "late",
    "offline",
    "no_ack",
    "after_window",
]
# The columns of the terminals' answers after the window, after the first ones: a script that
# reads the first ten by position still reads them.
LATE_CSV_COLUMNS = [*CSV_COLUMNS, "late_state", "late_ack_s", "played_late"]


def to_csv(report: DrillReport, lang: str = "en", *, with_late: bool = False) -> str:
    """One row per expected terminal, sorted by id; flags are 1/0 so a spreadsheet can sum
    them; headers in Chinese with ``lang="zh"``; ``with_late`` adds ``LATE_CSV_COLUMNS``' last
    three (what the API and the CLI export). A file of it starts with ``exports.BOM``: Excel
    reads UTF-8 without a byte order mark as GBK."""
    rows = (
        [
            t.terminal,
            t.village,
            t.village_name,
            t.outcome,
            "" if t.first_ack_s is None else t.first_ack_s,
            "" if t.played_s is None else t.played_s,
            int(t.late),
            int(t.offline),
            int(t.no_ack),
            int(t.after_window),
            *(
                (
                    t.late_state or "",
                    "" if t.late_ack_s is None else t.late_ack_s,
                    int(t.played_late),
                )
                if with_late
                else ()
            ),
        ]
        for t in report.terminals
    )
    return csv_text(LATE_CSV_COLUMNS if with_late else CSV_COLUMNS, rows, lang)


def text_width(text: str) -> int:
    """Columns ``text`` takes in a terminal: CJK characters take two."""
    return sum(2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in text)


def pad(text: str, width: int, *, right: bool = False) -> str:
    """``text`` padded with spaces to ``width`` terminal columns (str.ljust counts characters,
    which misaligns Chinese names)."""
    fill = " " * max(0, width - text_width(text))
    return fill + text if right else text + fill


_LABELS: dict[str, dict[str, str]] = {
    "zh": {
        "title": "综合应急演练报告",
        "alert": "预警",
        "dispatched": "下发",
        "window": "窗口截止",
        "coverage": "覆盖率",
        "of": "终端播放",
        "threshold": "合格线",
        "passed": "通过",
        "failed_verdict": "未通过",
        "expected": "应到",
        "acknowledged": "已确认",
        "played": "已播放",
        "received_only": "仅接收",
        "failed": "失败",
        "missing": "未响应",
        "late": "迟到",
        "after_window": "窗口后响应",
        "no_ack": "无应答升级",
        "offline": "下发时离线",
        "ack_latency": "确认时延",
        "played_latency": "播放时延",
        "max": "最大",
        "code": "代码",
        "village": "村（社区）",
        "total": "合计",
        "problems": "问题",
        "failed_terminals": "播放失败的终端",
        "missing_terminals": "未响应的终端",
        "late_terminals": "迟到的终端",
        "villages_without_terminal": "无登记终端的村（社区）",
        "none": "无",
        "with_late": "含迟到回执：播放 {played}/{expected}（{pct}%），其中窗口后才播放 {late}；"
        "是否通过只按窗口内计算",
        "late_acks": "迟到回执（窗口关闭后）",
        "not_counted": "重复，不计入",
        "not_expected": "不在应到终端中",
    },
    "en": {
        "title": "emergency drill report",
        "alert": "alert",
        "dispatched": "dispatched",
        "window": "window ends",
        "coverage": "coverage",
        "of": "terminals played",
        "threshold": "pass at",
        "passed": "PASSED",
        "failed_verdict": "FAILED",
        "expected": "expected",
        "acknowledged": "acked",
        "played": "played",
        "received_only": "recv only",
        "failed": "failed",
        "missing": "missing",
        "late": "late",
        "after_window": "after window",
        "no_ack": "no_ack",
        "offline": "offline",
        "ack_latency": "ack latency",
        "played_latency": "play latency",
        "max": "max",
        "code": "code",
        "village": "village",
        "total": "total",
        "problems": "problems",
        "failed_terminals": "terminals that failed to play",
        "missing_terminals": "terminals that did not answer",
        "late_terminals": "late terminals",
        "villages_without_terminal": "villages with no registered terminal",
        "none": "none",
        "with_late": "with the late acks: {played}/{expected} played ({pct}%), {late} of them "
        "only after the window; the verdict counts the window only",
        "late_acks": "late acks (after the window)",
        "not_counted": "a repeat, not counted",
        "not_expected": "not an expected terminal",
    },
}

_COUNT_COLUMNS = (
    "expected",
    "acknowledged",
    "played",
    "received_only",
    "failed",
    "missing",
    "late",
    "offline",
)


def _fmt_s(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}s"


def _latency_line(label: str, stats: LatencyStats, words: Mapping[str, str]) -> str:
    return (
        f"{label} (n={stats.n}): p50 {_fmt_s(stats.p50)}, p95 {_fmt_s(stats.p95)}, "
        f"{words['max']} {_fmt_s(stats.max)}"
    )


def to_table(report: DrillReport, lang: str = "zh", *, tz: tzinfo | None = None) -> str:
    """The report as text for the CLI, in ``lang`` "zh" or "en"; times in ``tz`` (China
    Standard Time by default)."""
    words = _LABELS.get(lang)
    if words is None:
        raise ValueError(f"lang must be one of {sorted(_LABELS)}, got {lang!r}")
    zone = tz or CHINA_STANDARD_TIME
    start = report.dispatched_at.astimezone(zone)
    end = report.window_end.astimezone(zone)
    verdict = words["passed"] if report.passed else words["failed_verdict"]
    lines = [
        # Full-width parentheses belong to Chinese text only.
        (
            f"{report.township_name}（{report.township}）{words['title']}"
            if lang == "zh"
            else f"{report.township_name} ({report.township}) {words['title']}"
        )
        + f"  {report.drill_id}",
        f"{report.city_name} {report.county_name} {report.township_name}  "
        f"{words['alert']} {report.alert_id or '-'}",
        f"{words['dispatched']} {start:%Y-%m-%d %H:%M:%S %z}  {words['window']} {end:%H:%M:%S}",
        f"{words['coverage']} {percent_floor(report.played, report.expected):.1f}% "
        f"({report.played}/{report.expected} {words['of']}, "
        f"{words['threshold']} {report.pass_coverage * 100:.1f}%): {verdict}",
        ", ".join(
            f"{words[key]} {getattr(report, key)}"
            for key in ("acknowledged", "received_only", "failed", "missing", "late")
        )
        + f", {words['after_window']} {report.after_window}, {words['no_ack']} {report.no_ack}"
        + f", {words['offline']} {report.offline_at_dispatch}",
        words["with_late"].format(
            played=report.played_with_late,
            expected=report.expected,
            pct=f"{percent_floor(report.played_with_late, report.expected):.1f}",
            late=report.played_late,
        ),
        _latency_line(words["ack_latency"], report.ack_latency, words),
        _latency_line(words["played_latency"], report.played_latency, words),
    ]
    if report.problems:
        lines.append(f"{words['problems']}: " + "; ".join(report.problems))
    lines.append("")
    lines.extend(_village_table(report, words))
    gaps = report.villages_without_terminal_list
    lines.append("")
    lines.append(
        f"{words['villages_without_terminal']} ({report.villages_without_terminal}):"
        + ("" if gaps else f" {words['none']}")
    )
    lines.extend(f"  {v.code}  {v.name}" for v in gaps)
    for key, refs in (
        ("failed_terminals", report.failed_terminals),
        ("missing_terminals", report.missing_terminals),
        ("late_terminals", report.late_terminals),
    ):
        lines.append("")
        lines.append(f"{words[key]} ({len(refs)}):" + ("" if refs else f" {words['none']}"))
        lines.extend(f"  {r.terminal}  {r.village} {r.village_name}" for r in refs)
    lines.append("")
    late = report.late_acks
    lines.append(f"{words['late_acks']} ({len(late)}):" + ("" if late else f" {words['none']}"))
    for a in late:
        notes = [words["not_counted"]] * (not a.counted) + [words["not_expected"]] * (
            not a.expected
        )
        lines.append(
            f"  {a.terminal}  {a.state}  {a.recorded_at.astimezone(zone):%Y-%m-%d %H:%M:%S}"
            f"  +{a.after_window_s:.1f}s  {a.village} {a.village_name}"
            + (f"  ({'; '.join(notes)})" if notes else "")
        )
    # No trailing newline: the CLI prints it.
    return "\n".join(lines)


def _village_table(report: DrillReport, words: Mapping[str, str]) -> list[str]:
    header = [words["code"], words["village"], *(words[c] for c in _COUNT_COLUMNS)]
    body = [
        [row.code, row.name, *(str(getattr(row, c)) for c in _COUNT_COLUMNS)]
        for row in report.villages
    ]
    total = [
        "",
        words["total"],
        *(str(sum(getattr(row, c) for row in report.villages)) for c in _COUNT_COLUMNS),
    ]
    table = [header, *body, total]
    widths = [max(text_width(r[i]) for r in table) for i in range(len(header))]
    # Code and name read left to right; counts line up on their last digit.
    return [
        "  ".join(pad(cell, widths[i], right=i >= 2) for i, cell in enumerate(r)).rstrip()
        for r in table
    ]
