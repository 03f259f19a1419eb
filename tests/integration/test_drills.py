"""Drills end to end: plan, edit, fire at an explicit time over the real dispatch path, report
from what simulated terminals did, compliance. Real Redis and broker; short windows."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from dispatcher.core.regions import Level
from receiver.simulator import Behaviour
from tests.helpers import GUDONG, GULOU_COUNTY, fujian, unique, wait_for
from tests.integration.engine import (
    GULOU,
    PROVINCE,
    Client,
    base_url,
    drill_settings,
    ebd,
    register,
    running_engine,
    terminals_in,
)


@asynccontextmanager
async def engine(
    redis_url: str, mqtt_url: str, tmp_path: Path, **drills: Any
) -> AsyncIterator[Client]:
    async with running_engine(
        redis_url, mqtt_url, tmp_path, drills=drill_settings(**drills)
    ) as client:
        yield client


async def call(client: Client, method: str, path: str, body: Any = None, headers: Any = PROVINCE,
               status: int = 200) -> Any:  # fmt: skip
    response = await client.request(method, path, json=body, headers=headers)
    data = await response.json() if response.content_type == "application/json" else None
    assert response.status == status, data
    return data


async def drill_status(client: Client, drill_id: str, *statuses: str) -> dict[str, Any] | None:
    drill = await call(client, "GET", f"/api/v1/drills/{drill_id}")
    return drill if drill["status"] in statuses else None


async def test_plan_a_county_list_export_and_edit(
    redis_url: str, mqtt_url: str, tmp_path: Path
) -> None:
    year = datetime.now(UTC).year + 1
    townships = fujian().descendants(GULOU_COUNTY, level=Level.TOWNSHIP)
    # The weekday rules are the province's, in its zone (not the tests' zone where it is midday
    # now, in which a +08:00 Sunday can be a Saturday).
    async with engine(redis_url, mqtt_url, tmp_path, workday_start="09:00",
                      workday_end="17:00", weekdays=[1, 2, 3, 4, 5],
                      timezone="Asia/Shanghai") as client:  # fmt: skip
        result = await call(client, "POST", "/api/v1/drills/plan", {"year": year}, GULOU)
        assert result["planned"] == len(townships)
        again = await call(client, "POST", "/api/v1/drills/plan", {"year": year}, GULOU)
        assert (again["planned"], again["already_planned"]) == (0, len(townships))
        listed = await call(client, "GET", f"/api/v1/drills?year={year}", headers=GULOU)
        assert {d["township"] for d in listed["drills"]} == {t.code for t in townships}
        response = await client.get(f"/api/v1/drills?year={year}&format=csv", headers=GULOU)
        raw = await response.read()
        assert response.content_type == "text/csv"
        # For Excel: a byte order mark, Chinese headers, a name beside every region code.
        assert raw.startswith(b"\xef\xbb\xbf")
        lines = raw.decode("utf-8-sig").strip().splitlines()
        assert len(lines) == len(townships) + 1
        assert lines[0].startswith("演练编号,年度,市代码,市,县（区）代码,县（区）,")
        english = await client.get(f"/api/v1/drills?year={year}&format=csv&lang=en", headers=GULOU)
        first = (await english.read()).decode("utf-8-sig").splitlines()[0]
        assert first.startswith("id,year,city,city_name,county,county_name,township,")
        bad = await client.get("/api/v1/drills?format=csv&lang=fr", headers=GULOU)
        assert bad.status == 422
        drill = listed["drills"][0]
        # Moving onto a Sunday is refused, naming why; with a reason onto a weekday it moves.
        when = datetime.fromisoformat(drill["scheduled_at"])
        sunday = when + timedelta(days=(6 - when.weekday()) % 7 or 7)
        refused = await call(client, "POST", f"/api/v1/drills/{drill['id']}/move",
                             {"at": sunday.isoformat(), "reason": "x"}, GULOU, 422)  # fmt: skip
        assert "sunday" in refused["error"]["message"].lower()
        # A time whose UTC lies past datetime's range is refused like any other bad time.
        for at in ("9999-12-31T23:59:59-14:00", "0001-01-01T00:00:00+14:00"):
            far = await call(client, "POST", f"/api/v1/drills/{drill['id']}/move",
                             {"at": at, "reason": "x"}, GULOU, 422)  # fmt: skip
            assert "2000 to 2100" in far["error"]["message"]
        await call(client, "POST", f"/api/v1/drills/{drill['id']}/move",
                   {"at": when.isoformat()}, GULOU, 422)  # fmt: skip
        cancelled = await call(client, "POST", f"/api/v1/drills/{drill['id']}/cancel",
                               {"reason": "镇政府搬迁"}, GULOU)  # fmt: skip
        assert cancelled["status"] == "cancelled"
        shown = await call(client, "GET", f"/api/v1/drills/{drill['id']}", headers=GULOU)
        assert [e["action"] for e in shown["history"]] == ["planned", "cancelled"]
        assert shown["history"][1]["reason"] == "镇政府搬迁"
        # Taijiang's office sees none of Gulou's drills.
        other = await call(client, "GET", f"/api/v1/drills?year={year}",
                           headers={"Authorization": "Bearer tok-taijiang"})  # fmt: skip
        assert other["drills"] == []
        compliance = await call(client, "GET", f"/api/v1/drills/compliance?year={year}",
                                headers=GULOU)  # fmt: skip
        assert compliance["totals"]["townships"] == len(townships)


async def test_a_drill_fires_at_its_time_and_is_reported_from_the_acks(
    redis_url: str, mqtt_url: str, tmp_path: Path
) -> None:
    prefix = unique("dr")
    prompt = terminals_in(GUDONG, 4, prefix + "-a")
    slow = terminals_in(GUDONG, 2, prefix + "-b")
    silent = terminals_in(GUDONG, 1, prefix + "-c")
    async with engine(redis_url, mqtt_url, tmp_path) as client:
        given = await register(client, prompt + slow + silent)
        at = datetime.now(UTC) + timedelta(seconds=2)
        drill = await call(
            client, "POST", "/api/v1/drills",
            {"township": GUDONG, "at": at.isoformat(), "reason": "test"}, status=201,
        )  # fmt: skip
        async with (
            given.simulator(prompt),
            given.simulator(slow, behaviour=Behaviour(ack_delay=1.5)),
            given.simulator(silent, behaviour=Behaviour(silent=frozenset(t.id for t in silent))),
        ):
            done = await wait_for(
                lambda: drill_status(client, drill["id"], "passed", "failed"), timeout=20
            )
        assert isinstance(done, dict)
        assert done["status"] == "failed"  # 6 of 7 played: below 95 %
        assert done["late_by"] is not None
        assert done["late_by"] < 5
        report = await call(client, "GET", f"/api/v1/drills/{drill['id']}/report")
        assert report["expected"] == 7
        assert report["played"] == 6
        assert report["late"] == 2
        assert report["missing"] == 1
        assert report["passed"] is False
        # A re-drill is planned for the township.
        listed = await call(client, "GET", f"/api/v1/drills?region={GUDONG}")
        redrills = [d for d in listed["drills"] if d.get("redrill_of") == drill["id"]]
        assert len(redrills) == 1
        assert redrills[0]["status"] == "planned"
        # The drill's acks are kept for review and filterable by terminal.
        acks = await call(client, "GET", f"/api/v1/drills/acks?drill={drill['id']}")
        assert {a["terminal_id"] for a in acks["acks"]} == {t.id for t in prompt + slow}
        query = f"township={GUDONG}&terminal={slow[0].id}"
        one = await call(client, "GET", f"/api/v1/drills/acks?{query}")
        assert {a["terminal_id"] for a in one["acks"]} == {slow[0].id}
        # And by state: only the acks in it, every one of them.
        played = await call(client, "GET", f"/api/v1/drills/acks?drill={drill['id']}&state=played")
        assert played["acks"]
        assert {a["state"] for a in played["acks"]} == {"played"}
        assert len(played["acks"]) == sum(a["state"] == "played" for a in acks["acks"])


async def test_bad_drill_requests_get_clear_errors(
    redis_url: str, mqtt_url: str, tmp_path: Path
) -> None:
    soon = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    async with engine(redis_url, mqtt_url, tmp_path) as client:
        cases: list[tuple[str, str, Any, Any, int, str]] = [
            ("POST", "/api/v1/drills/plan", {"year": 1999}, PROVINCE, 422, "year"),
            ("POST", "/api/v1/drills/plan", {"year": 2101}, PROVINCE, 422, "2100"),
            ("POST", "/api/v1/drills", {"township": GUDONG, "at": "9999-12-31T23:59:59-14:00",
             "reason": "x"}, PROVINCE, 422, "2000 to 2100"),
            ("POST", "/api/v1/drills", {"township": GUDONG, "at": "0001-01-01T00:00:00+14:00",
             "reason": "x"}, PROVINCE, 422, "2000 to 2100"),
            ("GET", "/api/v1/drills?year=2101", None, PROVINCE, 422, "2100"),
            ("POST", "/api/v1/drills/plan", {"year": 2027, "region": "3501x"}, PROVINCE, 422,
             "malformed"),
            ("POST", "/api/v1/drills/plan", {"year": 2027, "region": "350103"}, GULOU, 403,
             "350103"),
            ("POST", "/api/v1/drills/plan", {"year": 2027, "extra": 1}, PROVINCE, 422, "extra"),
            ("POST", "/api/v1/drills", {"township": "350102", "at": soon, "reason": "x"},
             PROVINCE, 422, "township"),
            ("POST", "/api/v1/drills", {"township": GUDONG, "at": "2027-03-01T10:00:00",
             "reason": "x"}, PROVINCE, 422, "timezone"),
            ("POST", "/api/v1/drills", {"township": GUDONG, "at": "2020-03-02T10:00:00+08:00",
             "reason": "x"}, PROVINCE, 422, "past"),
            ("POST", "/api/v1/drills", {"township": GUDONG, "at": soon, "reason": ""},
             PROVINCE, 422, "reason"),
            ("POST", "/api/v1/drills", {"township": GUDONG, "at": soon, "reason": "x"},
             None, 401, "authorization"),
            ("GET", "/api/v1/drills/drill-2027-nope", None, PROVINCE, 404, "drill-2027-nope"),
            # Not a drill id at all (they start with drill-): no such endpoint.
            ("GET", "/api/v1/drills/nope", None, PROVINCE, 404, "no such endpoint"),
            ("POST", "/api/v1/drills/nope/cancel", {"reason": "x"}, PROVINCE, 404, "nope"),
            ("GET", "/api/v1/drills?status=done", None, PROVINCE, 422, "status"),
            ("GET", "/api/v1/drills?format=xml", None, PROVINCE, 422, "format"),
            ("GET", "/api/v1/drills/compliance", None, PROVINCE, 422, "year"),
            ("GET", "/api/v1/drills/compliance?year=20x7", None, PROVINCE, 422, "year"),
            ("GET", "/api/v1/drills/compliance?year=2027&region=350102001001", None, PROVINCE,
             422, "village"),
            ("POST", "/api/v1/drills/nope/run", {"reason": "x"}, PROVINCE, 404, "nope"),
            ("GET", "/api/v1/drills/acks?since=yesterday", None, PROVINCE, 422, "since"),
            ("GET", "/api/v1/drills/acks?state=heard", None, PROVINCE, 422, "state"),
            ("GET", "/api/v1/drills/acks?since=2027-01-01T00:00:00", None, PROVINCE, 422,
             "offset"),
        ]  # fmt: skip
        for method, path, body, headers, status, fragment in cases:
            response = await client.request(method, path, json=body, headers=headers or {})
            data = await response.json()
            assert response.status == status, (path, body, data)
            assert fragment.lower() in str(data["error"]).lower(), (path, body, data)
        # Nothing was stored by any of them.
        listed = await call(client, "GET", "/api/v1/drills")
        assert listed["drills"] == []
        response = await client.post(
            "/api/v1/drills/plan",
            data=b"{not json",
            headers={**PROVINCE, "Content-Type": "application/json"},
        )
        assert response.status == 400


async def test_run_now_and_the_cli(
    redis_url: str, mqtt_url: str, tmp_path: Path, capsys: Any
) -> None:
    terminals = terminals_in(GUDONG, 3, unique("cli"))
    async with engine(redis_url, mqtt_url, tmp_path, window=2.0) as client:
        token_file = tmp_path / "province.token"
        token_file.write_text("tok-province\n", encoding="utf-8")
        auth = ["--api", base_url(client), "--token-file", str(token_file)]
        given = await register(client, terminals)
        at = (datetime.now(UTC) + timedelta(hours=2)).isoformat()
        assert await ebd("drills", "add", "--township", GUDONG, "--at", at, "--reason", "试",
                         *auth) == 0  # fmt: skip
        out = capsys.readouterr().out.splitlines()
        drill_id = next(line for line in out if line.startswith("drill-")).split(":")[0]
        async with given.simulator(terminals):
            assert await ebd("drills", "run-now", drill_id, *auth) == 0
            assert "running" in capsys.readouterr().out
            done = await wait_for(lambda: drill_status(client, drill_id, "passed"), timeout=20)
        assert isinstance(done, dict)
        assert done["late_by"] is None  # run by hand, not late
        assert await ebd("drills", "report", drill_id, *auth) == 0
        table = capsys.readouterr().out
        assert "鼓东街道" in table
        assert "100" in table
        assert await ebd("drills", "report", drill_id, "-o", "csv", *auth) == 0
        rows = capsys.readouterr().out.strip().splitlines()
        assert len(rows) == 1 + len(terminals)
        assert await ebd("drills", "acks", "--drill", drill_id, "-o", "csv", *auth) == 0
        out_csv = capsys.readouterr().out
        assert all(t.id in out_csv for t in terminals)
        year = str(datetime.fromisoformat(done["scheduled_at"]).year)
        assert await ebd("drills", "compliance", "--year", year, "--region", "350102", *auth) == 0
        assert "鼓楼区" in capsys.readouterr().out
        # A second run of the same drill is refused.
        assert await ebd("drills", "run-now", drill_id, *auth) == 2
        assert "passed" in capsys.readouterr().err


async def exercise_alerts(client: Client) -> list[dict[str, Any]]:
    listed = await call(client, "GET", "/api/v1/alerts?limit=500")
    return [a for a in listed["alerts"] if a["status"] == "exercise"]


async def planned_in_two_hours(client: Client) -> dict[str, Any]:
    """A drill of Gudong planned two hours from now, as the API answered its creation."""
    at = (datetime.now(UTC) + timedelta(hours=2)).isoformat()
    body = {"township": GUDONG, "at": at, "reason": "x"}
    created: dict[str, Any] = await call(client, "POST", "/api/v1/drills", body, status=201)
    return created


async def test_two_run_nows_at_once_send_one_alert_and_a_long_reason_is_kept_short(
    redis_url: str, mqtt_url: str, tmp_path: Path
) -> None:
    import asyncio

    async with engine(redis_url, mqtt_url, tmp_path) as client:
        drill = await planned_in_two_hours(client)
        path = f"/api/v1/drills/{drill['id']}/run"
        responses = await asyncio.gather(
            *(client.post(path, json={"reason": "因" * 290}, headers=PROVINCE) for _ in range(3))
        )
        assert sorted(r.status for r in responses) == [202, 409, 409]
        assert len(await exercise_alerts(client)) == 1
        shown = await call(client, "GET", f"/api/v1/drills/{drill['id']}")
        fired = [e for e in shown["history"] if e["action"] == "fired"]
        assert len(fired) == 1
        assert len(fired[0]["reason"]) <= 300


async def test_a_drill_claimed_but_not_dispatched_is_finished_by_the_scheduler(
    redis_url: str, mqtt_url: str, tmp_path: Path
) -> None:
    from drills.handlers import DRILLS
    from drills.models import Drill, DrillStatus, Edit

    async with engine(redis_url, mqtt_url, tmp_path) as client:
        created = await planned_in_two_hours(client)
        service = client.app[DRILLS]
        drill = Drill.model_validate(created)
        # What an instance killed between its claim and its dispatch leaves behind.
        claimed = drill.model_copy(
            update={
                "status": DrillStatus.RUNNING,
                "fired_at": datetime.now(UTC),
                "fire_key": f"drill:{drill.id}:{drill.scheduled_at.isoformat()}",
            }
        )
        edit = Edit(at=datetime.now(UTC), office="engine", action="fired", reason="due")
        assert await service.store.put(claimed, edit, expect=[DrillStatus.PLANNED])

        async def dispatched() -> dict[str, Any] | None:
            shown = await call(client, "GET", f"/api/v1/drills/{drill.id}")
            return shown if shown["alert_id"] else None

        shown = await wait_for(dispatched, timeout=10)
        assert isinstance(shown, dict)
        assert len(await exercise_alerts(client)) == 1


async def test_planning_reads_one_year_and_avoids_ids_moved_away(
    redis_url: str, mqtt_url: str, tmp_path: Path
) -> None:
    """A year's plan, list and compliance read that year's drills only (the year index, also
    built for drills stored before it), and a drill moved into the next year keeps its id, so
    planning its old year again gives the township the next free one."""
    import redis.asyncio as aioredis

    from dispatcher.store.keys import DRILLS_BY_YEAR

    year = datetime.now(UTC).year + 1
    townships = fujian().descendants(GULOU_COUNTY, level=Level.TOWNSHIP)
    async with engine(redis_url, mqtt_url, tmp_path) as client:
        await call(client, "POST", "/api/v1/drills/plan", {"year": year}, GULOU)
        await call(client, "POST", "/api/v1/drills/plan", {"year": year + 1}, GULOU)
        listed = await call(client, "GET", f"/api/v1/drills?year={year}", headers=GULOU)
        assert {d["year"] for d in listed["drills"]} == {year}
        first = listed["drills"][0]
        following = await call(client, "GET", f"/api/v1/drills?year={year + 1}", headers=GULOU)
        # Onto the day and hour of a drill of the next year, a week later: a free slot.
        later = datetime.fromisoformat(following["drills"][0]["scheduled_at"])
        moved = await call(client, "POST", f"/api/v1/drills/{first['id']}/move",
                           {"at": (later + timedelta(days=7)).isoformat(), "reason": "x"},
                           GULOU)  # fmt: skip
        assert (moved["id"], moved["year"]) == (first["id"], year + 1)
        # As if stored by a version without the year index: it is rebuilt when first read.
        async with aioredis.Redis.from_url(redis_url) as redis:
            await redis.delete(DRILLS_BY_YEAR)
        again = await call(client, "POST", "/api/v1/drills/plan", {"year": year}, GULOU)
        assert again["planned"] == 1
        listed = await call(client, "GET", f"/api/v1/drills?year={year}", headers=GULOU)
        ids = {d["id"] for d in listed["drills"]}
        assert f"{first['id']}-2" in ids
        assert first["id"] not in ids
        assert len(ids) == len(townships)
        compliance = await call(client, "GET", f"/api/v1/drills/compliance?year={year + 1}",
                                headers=GULOU)  # fmt: skip
        assert compliance["totals"]["townships"] == len(townships)
        assert compliance["totals"]["statuses"]["planned"] == len(townships)
