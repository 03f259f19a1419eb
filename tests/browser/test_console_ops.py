"""The console's operations pages in headless Chromium against a real engine, broker, Redis and
simulated terminals: a drill coordinator opens the calendar, a drill's report and filters the
ack log; an admin creates a person (and a name that is markup stays text); the terminals page
shows the online counts the simulated terminals made true."""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from playwright.async_api import expect

from receiver.simulator import Behaviour
from tests.browser.conftest import new_page, shot
from tests.helpers import GUDONG, GULOU_COUNTY, unique, wait_for
from tests.integration.engine import (
    GULOU,
    Client,
    drill_settings,
    online,
    register,
    running_engine,
    terminals_in,
)

if TYPE_CHECKING:
    from playwright.async_api import Browser, Page

PASSWORD = "correct-horse-9"


@pytest.fixture
async def engine(redis_url: str, mqtt_url: str, tmp_path: Path) -> AsyncIterator[Client]:
    """The engine with drills on (any day and hour, a 2 s window), as the drill tests run it."""
    async with running_engine(
        redis_url, mqtt_url, tmp_path / "state", drills=drill_settings(window=2.0)
    ) as client:
        yield client


async def call(engine: Client, method: str, path: str, body: Any = None, status: int = 200) -> Any:
    """The API as 鼓楼区's office token (a machine): what the truth is, set up or read."""
    response = await engine.request(method, path, json=body, headers=GULOU)
    data = await response.json()
    assert response.status == status, data
    return data


async def person(engine: Client, login: str, *roles: str, name: str = "李明") -> str:
    await call(
        engine,
        "POST",
        "/api/v1/people",
        {"id": login, "name": name, "roles": list(roles), "password": PASSWORD},
        status=201,
    )
    return login


async def signed_in(browser: Browser, engine: Client, login: str, **options: Any) -> Page:
    """A browser of ``login``'s own with a session: signed in through the API from inside
    the browser (its cookie jar), as the sign-in page does; that page has its own tests."""
    page = await new_page(browser, engine, **options)
    answer = await page.request.post("/api/v1/session", data={"login": login, "password": PASSWORD})
    assert answer.status == 200, await answer.text()
    return page


async def loaded(page: Page, root: str) -> None:
    await page.wait_for_selector(f"#{root}[data-loaded='1']")


def no_errors(page: Page) -> None:
    errors = page.errors  # type: ignore[attr-defined]  # set by new_page
    assert errors == [], errors


async def reported_drill(engine: Client) -> dict[str, Any]:
    """A drill of 鼓东街道 run now over the real dispatch path: three terminals play, one
    fails; the drill once reported."""
    ok = terminals_in(GUDONG, 3, unique("ok"))
    bad = terminals_in(GUDONG, 1, unique("bad"))
    given = await register(engine, ok + bad)
    at = (datetime.now(UTC) + timedelta(hours=2)).isoformat()
    body = {"township": GUDONG, "at": at, "reason": "浏览器测试"}
    drill = await call(engine, "POST", "/api/v1/drills", body, status=201)
    async with (
        given.simulator(ok),
        given.simulator(bad, behaviour=Behaviour(fail=frozenset(t.id for t in bad))),
    ):
        await call(engine, "POST", f"/api/v1/drills/{drill['id']}/run", {"reason": "现在"}, 202)

        async def reported() -> Any:
            now = await call(engine, "GET", f"/api/v1/drills/{drill['id']}")
            return now if now["report"] else None

        done: Any = await wait_for(reported, timeout=20, message="the drill's report")
    return dict(done)


async def test_a_coordinator_opens_the_calendar_a_report_and_filters_the_ack_log(
    engine: Client, browser: Browser
) -> None:
    drill = await reported_drill(engine)
    report = await call(engine, "GET", f"/api/v1/drills/{drill['id']}/report")
    acks = (await call(engine, "GET", f"/api/v1/drills/acks?drill={drill['id']}"))["acks"]
    await person(engine, "coord.li", "coordinator")
    page = await signed_in(browser, engine, "coord.li")

    # The month of the drill: its day's cell links to it (the API's date is the office's).
    day = drill["scheduled_at"][:10]
    year, month = int(day[:4]), int(day[5:7])
    await page.goto(f"/drills?year={year}&month={month}")
    await loaded(page, "ops-drills")
    cell = page.locator(f"#drill-calendar td[data-day='{day}']")
    assert await cell.locator(f"li[data-drill='{drill['id']}']").count() == 1
    assert "鼓东街道" in await cell.inner_text()
    assert await page.locator("#tot-done").inner_text() == "1"
    await shot(page, "drills-calendar")
    # The list view of the same year lists it too.
    await page.goto(f"/drills?year={year}&view=list")
    await loaded(page, "ops-drills")
    assert await page.locator(f"#drill-table tr[data-drill='{drill['id']}']").count() == 1

    # Compliance by county, as the API counts it.
    truth = await call(engine, "GET", f"/api/v1/drills/compliance?year={year}")
    await page.goto(f"/drills/compliance?year={year}")
    await loaded(page, "ops-compliance")
    for county in truth["counties"]:
        row = page.locator(f"#compliance-counties tr[data-code='{county['code']}']")
        cells = await row.locator("td").all_inner_texts()
        assert cells[:3] == [str(county["townships"]), str(county["passed"]),
                             str(county["not_compliant"])]  # fmt: skip
    assert truth["counties"], truth
    await shot(page, "drill-compliance")

    # Its report: the figures the API reported.
    await page.goto(f"/drills?year={year}&month={month}")
    await loaded(page, "ops-drills")
    await cell.locator("a").first.click()
    await page.wait_for_url(f"**/drills/{drill['id']}")
    await loaded(page, "ops-drill")
    for field in ("expected", "acknowledged", "played", "failed", "missing"):
        assert await page.locator(f"#rep-{field}").inner_text() == str(report[field]), field
    assert (report["expected"], report["played"], report["failed"]) == (4, 3, 1)
    assert await page.locator("#report-villages tbody tr").count() == len(report["villages"])
    await shot(page, "drill-report")

    # The ack log: every ack of the drill, then only the failed one.
    await page.goto(f"/drills/acks?drill={drill['id']}")
    await loaded(page, "ops-acks")
    rows = page.locator("#acks-table tbody tr[data-terminal]")
    assert await rows.count() == len(acks)
    await page.select_option("#f-state", "failed")
    await page.click("#acks-filters button[type=submit]")
    # A locator's expectation runs in Playwright's own world, which the page's CSP (no eval)
    # does not govern; wait_for_function's page-side polling sometimes tripped over it.
    await expect(rows).to_have_count(sum(a["state"] == "failed" for a in acks))
    shown = await rows.evaluate_all("rows => rows.map(r => r.dataset.state)")
    assert shown == ["failed"]
    await shot(page, "drill-acks")
    assert "state=failed" in page.url
    failed_href = await page.get_attribute("#acks-csv", "href")
    # A time range after the drill: none of its acks.
    later = (datetime.now(UTC) + timedelta(days=2)).date().isoformat()
    await page.select_option("#f-state", "")
    await page.fill("#f-since", later)
    await page.click("#acks-filters button[type=submit]")
    await page.locator("#acks-count", has_text="共 0 条回执").wait_for()
    await page.fill("#f-since", "")
    await page.click("#acks-filters button[type=submit]")
    await page.locator("#acks-count", has_text=f"共 {len(acks)} 条回执").wait_for()
    # The export link carries the same filters, the ack state too, to the API's CSV.
    href = failed_href
    assert href is not None
    assert f"drill={drill['id']}" in href
    assert "format=csv" in href
    assert "state=failed" in href
    csv = await page.request.get(href)
    assert csv.status == 200
    failed = sum(a["state"] == "failed" for a in acks)
    assert len((await csv.text()).strip().splitlines()) == failed + 1
    no_errors(page)


async def test_an_admin_creates_a_person_and_issues_a_token(
    engine: Client, browser: Browser
) -> None:
    await person(engine, "admin.wang", "admin")
    page = await signed_in(browser, engine, "admin.wang")
    await page.goto("/people")
    await loaded(page, "ops-people")
    # No role chosen: refused here, nobody is created.
    await page.fill("#p-id", "zhang.wei")
    await page.fill("#p-name", "张伟")
    await page.fill("#p-password", PASSWORD)
    await page.click("#person-form button[type=submit]")
    assert await page.locator("#person-flash").inner_text() == "请至少选择一个角色"
    # With roles as checkboxes, and a name that is markup: it must stay text.
    name = "<img src=x onerror=alert(1)>"
    await page.fill("#p-name", name)
    await page.check("#p-roles input[value=composer]")
    await page.check("#p-roles input[value=approver]")
    await page.click("#person-form button[type=submit]")
    row = page.locator("#people-table tr[data-person='zhang.wei']")
    await row.wait_for()
    assert name in await row.inner_text()
    assert await page.locator("#people-table img").count() == 0
    listed = await call(engine, "GET", "/api/v1/people")
    made = next(p for p in listed["people"] if p["id"] == "zhang.wei")
    assert made["roles"] == ["approver", "composer"]
    assert made["name"] == name
    await shot(page, "people")
    # A token, shown once.
    await row.locator("button", has_text="签发接口令牌").click()
    await page.wait_for_selector("#token-shown:not([hidden])")
    assert (await page.input_value("#token-value")).startswith("ebdp_")
    # Disable: the API says so afterwards.
    await row.locator("button", has_text="停用").click()
    await row.locator(".badge.bad").wait_for()
    listed = await call(engine, "GET", "/api/v1/people")
    assert next(p for p in listed["people"] if p["id"] == "zhang.wei")["disabled"] is True
    no_errors(page)


async def test_a_person_without_admin_gets_no_people_table(
    engine: Client, browser: Browser
) -> None:
    await person(engine, "view.zhao", "viewer")
    page = await signed_in(browser, engine, "view.zhao")
    await page.goto("/people")
    assert await page.locator("#people-table").count() == 0
    assert "管理员" in await page.locator("#ops-people").inner_text()
    # The API is the guard, whatever the page shows.
    answer = await page.request.get("/api/v1/people")
    assert answer.status == 403


async def test_the_terminals_page_shows_the_online_counts_the_terminals_made_true(
    engine: Client, browser: Browser, mqtt_url: str
) -> None:
    connected = terminals_in(GULOU_COUNTY, 6, unique("on"))
    silent = terminals_in(GULOU_COUNTY, 3, unique("never"))
    await register(engine, silent)
    await person(engine, "admin.chen", "admin")
    async with online(engine, connected, mqtt_url):

        async def all_online() -> bool:
            health = await call(engine, "GET", "/api/v1/terminals/health")
            return bool(health["totals"]["online"] == len(connected))

        await wait_for(all_online, message="the simulated terminals' online states recorded")
        page = await signed_in(browser, engine, "admin.chen")
        await page.goto("/terminals")
        await loaded(page, "ops-terminals")
        assert await page.locator("#tot-online").inner_text() == "6"
        assert await page.locator("#tot-unknown").inner_text() == "3"
        assert await page.locator("#tot-terminals").inner_text() == "9"
        truth = Counter(t.region[:9] for t in connected)
        for township, n in truth.items():
            cell = page.locator(f"#term-children tr[data-code='{township}'] td[data-field=online]")
            assert await cell.inner_text() == str(n), township
        await shot(page, "terminals")
        # Down to a township: each terminal with its state, and a link test that answers.
        township = connected[0].region[:9]
        await page.locator(f"#term-children tr[data-code='{township}'] a").click()
        await loaded(page, "ops-terminals")
        row = page.locator(f"#term-list tr[data-terminal='{connected[0].id}']")
        assert "在线" in await row.inner_text()
        await row.locator("button").click()
        await row.locator(".ping-result", has_text="已应答").wait_for()
        # Above the office's county the path is no link (the API would refuse it).
        assert await page.locator("#term-path a", has_text="福建省").count() == 0
        # In English, the same figures.
        await page.goto("/terminals?lang=en")
        await loaded(page, "ops-terminals")
        assert await page.locator("h1").inner_text() == "Terminal health"
        assert await page.locator("#tot-online").inner_text() == "6"
    no_errors(page)


async def test_what_a_link_carries_into_a_page_is_checked(engine: Client, browser: Browser) -> None:
    await person(engine, "admin.sun", "admin")
    page = await signed_in(browser, engine, "admin.sun")
    # Markup in the region is dropped: the office's own county is shown, nothing injected.
    await page.goto('/terminals?region="><script>document.title=1</script>')
    await loaded(page, "ops-terminals")
    assert await page.get_attribute("#ops-terminals", "data-region") == GULOU_COUNTY
    assert await page.title() != "1"
    # Another county's terminals: the API refuses, the page says why.
    await page.goto("/terminals?region=350103")
    await page.locator("#flash.error").wait_for()
    assert "350103" in await page.locator("#flash").inner_text()
    # A drill id that cannot be one goes back to the calendar.
    await page.goto("/drills/..%2F..%2Fapi")
    assert page.url.endswith("/drills")
    # Signed out, a page sends to the sign-in page.
    fresh = await new_page(browser, engine)
    await fresh.goto("/drills/acks")
    assert "/login" in fresh.url


async def test_a_composer_edits_a_template_s_texts_and_resets_them(
    engine: Client, browser: Browser
) -> None:
    await person(engine, "comp.lin", "composer")
    page = await signed_in(browser, engine, "comp.lin")
    await page.goto("/templates")
    await loaded(page, "ops-templates")
    assert await page.locator("#tpl-table tbody tr[data-template]").count() == 36
    await page.select_option("#f-hazard", "typhoon")
    rows = page.locator("#tpl-table tbody tr[data-template]")
    assert await rows.evaluate_all("rows => rows.map(r => r.dataset.template)") == [
        "typhoon-red", "typhoon-orange", "typhoon-yellow", "typhoon-blue",
    ]  # fmt: skip
    red = page.locator("#tpl-table tr[data-template='typhoon-red']")
    await red.locator("button", has_text="修改").click()
    headline = "鼓楼区台风红色预警（本单位）"
    await page.fill("#tpl-headline-zh", headline)
    await page.click("#tpl-form button[type=submit]")
    await red.locator("td", has_text=headline).wait_for()
    assert "本单位已修改" in await red.inner_text()
    await shot(page, "templates")
    stored = await call(engine, "GET", "/api/v1/templates")
    edited = next(t for t in stored["templates"] if t["id"] == "typhoon-red")
    assert edited["headline"]["zh"] == headline
    assert edited["edited"] is True
    # A text the API refuses (a control character) is refused with its reason, nothing kept.
    await red.locator("button", has_text="修改").click()
    await page.fill("#tpl-headline-zh", "台风\u0007预警")
    await page.click("#tpl-form button[type=submit]")
    await page.locator("#tpl-flash.error").wait_for()
    # Back to the built-in texts.
    await page.click("#tpl-close")
    page.once("dialog", lambda dialog: dialog.accept())
    await red.locator("button", has_text="恢复内置").click()
    await red.locator("td", has_text="内置").wait_for()
    stored = await call(engine, "GET", "/api/v1/templates")
    assert next(t for t in stored["templates"] if t["id"] == "typhoon-red")["edited"] is False
    no_errors(page)


async def test_the_pages_fit_a_phone_screen(engine: Client, browser: Browser) -> None:
    await person(engine, "coord.he", "coordinator", "admin")
    page = await signed_in(browser, engine, "coord.he", viewport={"width": 390, "height": 844})
    for path, root in [
        ("/terminals", "ops-terminals"),
        ("/drills", "ops-drills"),
        ("/drills?view=list", "ops-drills"),
        ("/drills/acks", "ops-acks"),
        ("/people", "ops-people"),
    ]:
        await page.goto(path)
        await loaded(page, root)
        # Wide tables scroll inside their frame; the page itself never scrolls sideways.
        width = await page.evaluate("document.documentElement.scrollWidth")
        assert width <= 390, (path, width)
    await shot(page, "people-phone")
    no_errors(page)


async def test_a_coordinator_moves_a_drill_and_runs_it_now(
    engine: Client, browser: Browser
) -> None:
    await register(engine, terminals_in(GUDONG, 1, unique("one")))
    at = (datetime.now(UTC) + timedelta(hours=3)).isoformat()
    body = {"township": GUDONG, "at": at, "reason": "待调整"}
    drill = await call(engine, "POST", "/api/v1/drills", body, status=201)
    await person(engine, "view.qian", "viewer")
    viewer = await signed_in(browser, engine, "view.qian")
    await viewer.goto(f"/drills/{drill['id']}")
    await loaded(viewer, "ops-drill")
    assert await viewer.locator("#drill-actions").is_hidden()

    await person(engine, "coord.wu", "coordinator")
    page = await signed_in(browser, engine, "coord.wu")
    await page.goto(f"/drills/{drill['id']}")
    await loaded(page, "ops-drill")
    assert await page.locator("#drill-actions").is_visible()
    # No reason: refused before the API is asked; the drill stays where it was.
    target = (datetime.now(UTC) + timedelta(days=1)).replace(
        hour=2, minute=30, second=0, microsecond=0
    )
    await page.fill("#move-at", target.strftime("%Y-%m-%dT%H:%M"))
    await page.click("#drill-move button[type=submit]")
    assert await page.locator("#flash").inner_text() == "请填写原因"
    same = await call(engine, "GET", f"/api/v1/drills/{drill['id']}")
    assert same["scheduled_at"] == drill["scheduled_at"]
    await page.fill("#move-reason", "与防汛检查错开")
    await page.click("#drill-move button[type=submit]")
    await page.locator("#flash.ok").wait_for()
    moved = await call(engine, "GET", f"/api/v1/drills/{drill['id']}")
    # The browser's zone is UTC here, so the time typed is the UTC time stored.
    assert datetime.fromisoformat(moved["scheduled_at"]) == target
    assert moved["history"][-1]["action"] == "moved"
    assert moved["history"][-1]["reason"] == "与防汛检查错开"
    await page.locator("#drill-history td", has_text="调整时间").first.wait_for()
    # Run now, once confirmed.
    page.once("dialog", lambda dialog: dialog.accept())
    await page.click("#drill-run")
    await page.locator("#flash", has_text="演练已开始").wait_for()
    ran = await call(engine, "GET", f"/api/v1/drills/{drill['id']}")
    assert ran["status"] != "planned"
    assert ran["alert_id"]
    no_errors(page)


async def test_a_coordinator_plans_the_year_and_a_viewer_cannot(
    engine: Client, browser: Browser
) -> None:
    """The plan button gives every township of the coordinator's region a drill that year,
    as the API would; a viewer has no button, and the API refuses them anyway."""
    year = datetime.now(UTC).year + 2
    await person(engine, "coord.plan", "coordinator", "viewer")
    page = await signed_in(browser, engine, "coord.plan")
    await page.goto(f"/drills?year={year}&month=1&view=list")
    await loaded(page, "ops-drills")
    await page.get_by_role("button", name=f"排定全年演练计划： {year}").click()
    await page.locator("#flash", has_text="已排定").wait_for()
    drills = (await call(engine, "GET", f"/api/v1/drills?year={year}"))["drills"]
    assert drills
    assert {d["township"][:6] for d in drills} == {GULOU_COUNTY}
    await page.locator("#flash", has_text=f"已排定 {len(drills)} 场演练").wait_for()
    planned = await page.locator("#tot-planned").inner_text()
    assert int(planned.replace(",", "")) == len(drills)

    await person(engine, "viewer.plan", "viewer")
    viewer = await signed_in(browser, engine, "viewer.plan")
    await viewer.goto(f"/drills?year={year}")
    await loaded(viewer, "ops-drills")
    assert await viewer.locator("#plan-year").is_hidden()
    csrf = await viewer.get_attribute("meta[name=csrf-token]", "content")
    answer = await viewer.request.post(
        "/api/v1/drills/plan", data={"year": year + 1}, headers={"X-CSRF-Token": csrf or ""}
    )
    assert answer.status == 403
    no_errors(page)
    no_errors(viewer)
