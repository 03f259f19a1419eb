"""Acks that come after a drill's window: kept in its review log once each, shown in its report,
its CSV, the CLI and the ack review as late, and never changing its verdict. Real Redis and
broker; a simulated terminal whose acks take longer than the window (and than the report)."""

from __future__ import annotations

import asyncio
import csv
import io
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from dispatcher.core.regions import Level
from dispatcher.store.store import Store
from drills.handlers import DRILLS
from drills.models import Drill
from drills.report import AckEntry, DrillReport, build_report
from receiver.simulator import Behaviour
from tests.helpers import GUDONG, fujian, unique, wait_for
from tests.integration.engine import Client, base_url, ebd, register, terminals_in
from tests.integration.test_drills import call, drill_status, engine

# The window is 3 s and the report is made a second after it: an ack 7 s after the alert
# reaches the engine after both.
LATE_DELAY = 7.0


def key(row: dict[str, Any]) -> tuple[str, str, str, str, str]:
    """An ack log row as the review keeps it: entry, terminal, state, time, result."""
    return (row["id"], row["terminal_id"], row["state"], row["recorded_ms"], row["result"])


async def engine_log(store: Store, alert_id: str) -> list[tuple[str, str, str, str, str]]:
    """Every ack the engine logged for the alert, in the log's order."""
    return [key(row) for row in await store.acks_since(alert_id, 0)]


async def review_log(client: Client, drill_id: str) -> list[tuple[str, str, str, str, str]]:
    _, rows = await client.app[DRILLS].store.review(drill_id)
    return [key(row) for row in rows]


async def start_drill(client: Client) -> dict[str, Any]:
    at = (datetime.now(UTC) + timedelta(hours=2)).isoformat()
    body = {"township": GUDONG, "at": at, "reason": "late acks"}
    drill: dict[str, Any] = await call(client, "POST", "/api/v1/drills", body, status=201)
    await call(client, "POST", f"/api/v1/drills/{drill['id']}/run", {"reason": "t"}, status=202)
    return drill


async def test_acks_after_the_window_are_kept_once_shown_late_and_leave_the_verdict(
    redis_url: str, mqtt_url: str, tmp_path: Path, store: Store, capsys: Any
) -> None:
    prefix = unique("late")
    prompt = terminals_in(GUDONG, 3, prefix + "-a")
    slow = terminals_in(GUDONG, 1, prefix + "-b")
    async with engine(redis_url, mqtt_url, tmp_path) as client:
        given = await register(client, prompt + slow)
        async with (
            given.simulator(prompt),
            given.simulator(slow, behaviour=Behaviour(ack_delay=LATE_DELAY)),
        ):
            drill = await start_drill(client)
            done = await wait_for(
                lambda: drill_status(client, drill["id"], "passed", "failed"), timeout=20
            )
            assert isinstance(done, dict)
            # 3 of 4 played in the window: 75 %, below the 95 % to pass.
            assert done["status"] == "failed"
            # The report was made before the slow terminal answered: what follows is folded
            # in after it (the path this test is about), not read with it.
            raw, first_rows = await client.app[DRILLS].store.review(drill["id"])
            assert raw is not None
            assert slow[0].id not in {row["terminal_id"] for row in first_rows}
            path = f"/api/v1/drills/{drill['id']}/report"

            async def late_played() -> dict[str, Any] | None:
                # Several readers at once, as a coordinator's page and a script would: each
                # folds in what came since, and none may append an ack twice.
                reports = await asyncio.gather(*(call(client, "GET", path) for _ in range(4)))
                last: dict[str, Any] = reports[-1]
                played = [a for a in last["late_acks"] if a["state"] == "played"]
                return last if played else None

            report = await wait_for(late_played, timeout=LATE_DELAY + 15)
        assert isinstance(report, dict)
        # The terminals are gone: nothing more comes but what the engine itself logs (no_ack
        # marks of its sweeper), and the review then has every entry of the engine's log once.
        alert_id = done["alert_id"]

        async def complete() -> list[tuple[str, str, str, str, str]] | None:
            await call(client, "GET", path)
            logged = await engine_log(store, alert_id)
            kept = await review_log(client, drill["id"])
            return kept if kept == logged else None

        kept = await wait_for(complete, timeout=10)
        assert isinstance(kept, list)
        assert max(Counter(kept).values()) == 1
        assert {row[1] for row in kept} >= {t.id for t in prompt + slow}

        report = await call(client, "GET", path)
        late_id = slow[0].id
        # The verdict is the window's: 3 of 4, failed; with the late one 4 of 4.
        assert (report["played"], report["expected"], report["passed"]) == (3, 4, False)
        assert report["coverage"] == 0.75
        assert (report["played_late"], report["played_with_late"]) == (1, 4)
        assert report["coverage_with_late"] == 1.0
        shown = await call(client, "GET", f"/api/v1/drills/{drill['id']}")
        assert shown["status"] == "failed"
        assert shown["coverage"] == 0.75
        row = next(t for t in report["terminals"] if t["terminal"] == late_id)
        assert (row["outcome"], row["after_window"], row["played_late"]) == ("missing", True, True)
        assert row["late_state"] == "played"
        assert row["late_ack_s"] >= 3.0
        # Every late ack is the slow terminal's, after the window, with when it came.
        late = report["late_acks"]
        assert {a["terminal"] for a in late} == {late_id}
        assert {"received", "played"} <= {a["state"] for a in late}
        window_end = datetime.fromisoformat(report["window_end"])
        assert all(datetime.fromisoformat(a["recorded_at"]) > window_end for a in late)
        assert all(a["after_window_s"] > 0 for a in late)
        late_rows = [r for r in kept if r[1] == late_id and r[2] != "no_ack"]
        assert len(late) == len(late_rows)

        # The review log marks each entry, so reviews of many drills need not read reports.
        _, rows = await client.app[DRILLS].store.review(drill["id"])
        marks = {(r["terminal_id"], r["late"]) for r in rows if r["state"] != "no_ack"}
        assert marks == {(t.id, "0") for t in prompt} | {(late_id, "1")}
        # The ack review marks them late, and only them.
        review = await call(client, "GET", f"/api/v1/drills/acks?drill={drill['id']}")
        assert review["total"] == len(kept)
        late_flags = {
            (a["terminal_id"], a["late"]) for a in review["acks"] if a["state"] != "no_ack"
        }
        assert late_flags == {(t.id, False) for t in prompt} | {(late_id, True)}
        response = await client.get(
            f"/api/v1/drills/acks?drill={drill['id']}&format=csv",
            headers={"Authorization": "Bearer tok-province"},
        )
        zh = (await response.read()).decode("utf-8-sig")
        assert zh.splitlines()[0].endswith(",计入,迟到回执（窗口关闭后）")

        # The report's CSV: the late columns after the first ten.
        response = await client.get(
            f"{path}?format=csv&lang=en", headers={"Authorization": "Bearer tok-province"}
        )
        rows = list(csv.DictReader(io.StringIO((await response.read()).decode("utf-8-sig"))))
        by_id = {r["terminal"]: r for r in rows}
        assert (by_id[late_id]["late_state"], by_id[late_id]["played_late"]) == ("played", "1")
        assert {by_id[t.id]["played_late"] for t in prompt} == {"0"}

        # The CLI's table says both figures and lists the late acks.
        token_file = tmp_path / "province.token"
        token_file.write_text("tok-province\n", encoding="utf-8")
        auth = ["--api", base_url(client), "--token-file", str(token_file)]
        capsys.readouterr()
        assert await ebd("--lang", "zh", "drills", "report", drill["id"], *auth) == 0
        table = capsys.readouterr().out
        assert "含迟到回执：播放 4/4（100.0%），其中窗口后才播放 1" in table
        assert f"迟到回执（窗口关闭后） ({len(late)}):" in table
        assert f"  {late_id}  played  " in table


async def test_the_scheduler_folds_late_acks_in_without_anyone_reading_the_report(
    redis_url: str, mqtt_url: str, tmp_path: Path, store: Store
) -> None:
    prefix = unique("latebg")
    prompt = terminals_in(GUDONG, 2, prefix + "-a")
    slow = terminals_in(GUDONG, 1, prefix + "-b")
    async with engine(redis_url, mqtt_url, tmp_path) as client:
        given = await register(client, prompt + slow)
        async with (
            given.simulator(prompt),
            given.simulator(slow, behaviour=Behaviour(ack_delay=LATE_DELAY)),
        ):
            drill = await start_drill(client)
            done = await wait_for(
                lambda: drill_status(client, drill["id"], "passed", "failed"), timeout=20
            )
            assert isinstance(done, dict)
            alert_id = done["alert_id"]

            async def logged_late() -> bool:
                return any(
                    row[1] == slow[0].id and row[2] == "played"
                    for row in await engine_log(store, alert_id)
                )

            assert await wait_for(logged_late, timeout=LATE_DELAY + 15)
        # A change of the plan makes the scheduler reconcile now (it also does every 30 s),
        # while readers fold the same acks in at once: each is appended once all the same.
        at = (datetime.now(UTC) + timedelta(hours=3)).isoformat()
        body = {"township": GUDONG, "at": at, "reason": "nudge"}
        service = client.app[DRILLS]
        reported = await service.store.get(drill["id"])
        assert reported is not None
        await asyncio.gather(
            call(client, "POST", "/api/v1/drills", body, status=201),
            *(service.collect_late(reported) for _ in range(8)),
        )

        async def kept() -> bool:
            return any(
                row[1] == slow[0].id and row[2] == "played"
                for row in await review_log(client, drill["id"])
            )

        assert await wait_for(kept, timeout=10)
        raw, _ = await client.app[DRILLS].store.review(drill["id"])
        assert raw is not None
        assert '"played_late":1' in raw
        kept_rows = await review_log(client, drill["id"])
        assert kept_rows == await engine_log(store, alert_id)
        assert max(Counter(kept_rows).values()) == 1


async def test_the_report_of_a_drill_not_reported_yet_and_unknown_parameters(
    redis_url: str, mqtt_url: str, tmp_path: Path
) -> None:
    async with engine(redis_url, mqtt_url, tmp_path) as client:
        at = (datetime.now(UTC) + timedelta(hours=2)).isoformat()
        body = {"township": GUDONG, "at": at, "reason": "x"}
        drill = await call(client, "POST", "/api/v1/drills", body, status=201)
        path = f"/api/v1/drills/{drill['id']}/report"
        missing = await call(client, "GET", path, status=404)
        assert "planned" in missing["error"]["message"]
        cases = (("late=1", 400, "late"), ("format=xml", 422, "format"), ("lang=fr", 422, "lang"))
        for query, status, fragment in cases:
            refused = await call(client, "GET", f"{path}?{query}", status=status)
            assert fragment in refused["error"]["message"]
        # Nothing was collected for a drill without a report.
        raw, rows = await client.app[DRILLS].store.review(drill["id"])
        assert (raw, rows) == (None, [])


def test_an_entry_logged_after_the_first_report_is_late_whatever_its_time() -> None:
    """An instance whose batches lag can log an ack with an in-window time after the verdict:
    it is late (after the first report's cut), and the verdict and coverage stay."""
    tree = fujian()
    town = tree.get(GUDONG)
    drill = Drill(id="drill-2027-x", year=2027, township=GUDONG, township_name=town.name,
                  county=GUDONG[:6], county_name="", city=GUDONG[:4], city_name="",
                  scheduled_at=datetime(2027, 5, 12, 2, tzinfo=UTC))  # fmt: skip
    village = tree.descendants(GUDONG, level=Level.VILLAGE)[0].code
    start = int(drill.scheduled_at.timestamp() * 1000)
    end = start + 3000
    on_time = [AckEntry("A", "played", start + 500, 1, village, f"{start + 500}-0")]
    lagging = AckEntry("B", "played", start + 900, 1, village, f"{end + 2000}-0")
    repeat = AckEntry("A", "played", end + 5000, 0, village, f"{end + 5000}-0")
    kwargs: dict[str, Any] = {
        "drill": drill, "expected": {"A": village, "B": village}, "offline": set(),
        "dispatched_ms": start, "window_end_ms": end, "late_after": 1.0,
        "pass_coverage": 0.95, "tree": tree,
    }  # fmt: skip
    first = build_report(acks=on_time, on_time_through=on_time[-1].entry_id, **kwargs)
    later = build_report(acks=[*on_time, lagging, repeat], on_time_through=first.on_time_through,
                         **kwargs)  # fmt: skip
    assert (first.played, first.passed) == (later.played, later.passed) == (1, False)
    assert (later.played_late, later.played_with_late, later.coverage_with_late) == (1, 2, 1.0)
    assert [(a.terminal, a.after_window_s, a.counted) for a in later.late_acks] == [
        ("B", 0.0, True),
        ("A", 5.0, False),
    ]
    # Without the cut (a first report), its in-window time would have counted.
    assert build_report(acks=[*on_time, lagging], **kwargs).played == 2
    # A report stored before late acks were kept still reads, with none.
    old = first.model_dump(mode="json")
    for field in ("late_acks", "played_late", "played_with_late", "coverage_with_late",
                  "on_time_through"):  # fmt: skip
        del old[field]
    for row in old["terminals"]:
        del row["late_state"], row["late_ack_s"], row["played_late"]
    assert DrillReport.model_validate(old).late_acks == []
