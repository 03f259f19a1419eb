"""The console's alert pages in a real browser against a real engine and simulated terminals:
sign in, compose from a template, preview, be refused for an area with nothing to reach,
submit a red warning for approval, approve it as a second person of the city, watch the tree
reach 100 %, cancel. The guard of the pages is tested without a browser."""

from __future__ import annotations

import re
import shutil
from typing import Any

from playwright.async_api import Browser, Page, expect
from yarl import URL

from receiver.simulator import Behaviour
from tests.browser.conftest import new_page, shot
from tests.helpers import GUDONG, GULOU_COUNTY, unique
from tests.integration.engine import PROVINCE, Client, online
from tests.support.people import DEFAULT_PASSWORD, add_person

EMPTY_TOWNSHIP = "350102002"  # a township of 鼓楼区 with no terminal registered by the test


async def person(engine: Client, office_token: str, roles: list[str], name: str) -> str:
    login = unique("p").replace("-", "")
    await add_person(
        engine.session, str(engine.make_url("")), office_token, login, roles, name=name
    )
    return login


async def sign_in(page: Page, login: str, password: str = DEFAULT_PASSWORD) -> None:
    await page.goto("/alerts")
    await expect(page).to_have_url(re.compile(r"/login\?next="))
    await page.get_by_label("用户名").fill(login)
    await page.get_by_label("密码").fill(password)
    await page.get_by_role("button", name="登录").click()
    # The path, not the query: "/login?next=/alerts" ends with /alerts too.
    await expect(page).to_have_url(re.compile(r"^https?://[^/?]+/alerts$"))


# ---- The pages' guard, without a browser ----------------------------------------------------


async def test_pages_send_strangers_to_sign_in_and_keep_where_they_were_going(
    engine: Client,
) -> None:
    response = await engine.get("/alerts/new?x=1", allow_redirects=False)
    assert response.status == 302
    location = URL(response.headers["Location"])
    assert (location.path, location.query["next"]) == ("/login", "/alerts/new?x=1")
    # A machine's office token is no person: its pages are not shown either.
    response = await engine.get("/approvals", headers=PROVINCE, allow_redirects=False)
    assert response.status == 302
    response = await engine.get("/login")
    assert response.status == 200
    html = await response.text()
    assert "用户名" in html
    assert "script-src 'self'" in response.headers["Content-Security-Policy"]


async def test_sign_in_page_never_redirects_off_site(engine: Client) -> None:
    for target in ("//evil.example/x", "https://evil.example/", "/\\evil.example", "javascript:x"):
        response = await engine.get("/login", params={"next": target})
        assert response.status == 200
        assert 'data-next="/alerts"' in await response.text(), target
    response = await engine.get("/login", params={"next": "/approvals"})
    assert 'data-next="/approvals"' in await response.text()


async def test_language_is_chinese_by_default_and_english_on_request_remembered(
    engine: Client,
) -> None:
    response = await engine.get("/login?lang=en")
    assert "Login name" in await response.text()
    assert "ebd_lang=en" in response.headers.get("Set-Cookie", ""), response.headers
    response = await engine.get("/login")  # the cookie jar sends the choice back
    assert "Login name" in await response.text()
    response = await engine.get("/login?lang=xx")  # an unknown language is no choice
    assert "ebd_lang" not in response.cookies
    engine.session.cookie_jar.clear()
    assert "用户名" in await (await engine.get("/login")).text()


async def test_a_hostile_alert_text_is_shown_as_text_never_run(
    engine: Client, browser: Browser
) -> None:
    composer = await person(engine, "tok-gulou", ["composer", "viewer"], "编制员甲")
    hostile = '<img src=x onerror="window.hacked=1">台风'
    response = await engine.post(
        "/api/v1/alerts",
        headers=PROVINCE,
        json={"event": "台风", "severity": "blue", "headline": hostile, "text": hostile,
              "areas": [GULOU_COUNTY], "status": "test", "expires_in": 3600},
    )  # fmt: skip
    assert response.status == 201, await response.text()
    page = await new_page(browser, engine)
    await sign_in(page, composer)
    await expect(page.locator("#alerts-body")).to_contain_text("onerror")
    assert await page.evaluate("window.hacked") is None


# ---- The whole path in a browser ------------------------------------------------------------


async def test_compose_preview_refuse_submit_approve_watch_and_cancel(
    engine: Client, browser: Browser, mqtt_url: str
) -> None:
    composer = await person(engine, "tok-gulou", ["composer", "viewer"], "鼓楼编制员")
    approver = await person(engine, "tok-fuzhou", ["approver", "viewer"], "福州审批员")
    from tests.integration.engine import terminals_in

    terminals = terminals_in(GUDONG, 8, unique("web"))
    async with online(engine, terminals, mqtt_url, Behaviour(ack_delay=0.2)) as sim:
        page = await new_page(browser, engine)
        await shot(page, "login") if await page.goto("/login") else None
        await sign_in(page, composer)
        await expect(page.locator("#who-person")).to_have_text("鼓楼编制员")

        await page.goto("/alerts/new")
        await page.get_by_label("模板").select_option("typhoon-red")
        await expect(page.get_by_label("标题")).not_to_have_value("")
        sms_text = await page.get_by_label("短信内容").input_value()
        assert sms_text != await page.get_by_label("广播内容（大喇叭播放）").input_value()

        # An area where nothing can be reached is refused before anything is sent.
        await page.get_by_label("按名称或代码查找地区").fill(EMPTY_TOWNSHIP)
        await page.locator(f"#area-suggest button[data-code='{EMPTY_TOWNSHIP}']").click()
        await page.get_by_role("button", name="预览").click()
        await expect(page.locator("#compose-result")).to_contain_text("不能发布")
        await expect(page.locator("#send")).to_be_disabled()

        await page.locator(f"#area-chips li[data-code='{EMPTY_TOWNSHIP}'] button").click()
        await page.get_by_label("按名称或代码查找地区").fill(GUDONG)
        await page.locator(f"#area-suggest button[data-code='{GUDONG}']").click()
        await page.get_by_role("button", name="预览").click()
        await expect(page.locator("#preview-totals [data-key='terminals'] dd")).to_have_text("8")
        await expect(page.locator("#send")).to_be_enabled()
        # An edit after the preview needs a new one before sending.
        await page.get_by_label("标题").fill("台风红色预警（改）")
        await expect(page.locator("#send")).to_be_disabled()
        await expect(page.locator("#stale")).to_be_visible()
        await page.get_by_role("button", name="预览").click()
        await expect(page.locator("#send")).to_be_enabled()
        # The composer can listen to what the loudspeakers will play, from this origin.
        if shutil.which("espeak-ng"):
            player = page.locator("#preview-audio")
            await expect(player).to_have_attribute("src", re.compile(r"^/audio/[0-9a-f]{64}\.wav$"))
            heard = await page.request.get(str(await player.get_attribute("src")))
            assert heard.status == 200
            assert heard.headers["content-type"].startswith("audio/wav")
        else:
            await expect(page.locator("#preview-audio-none")).to_be_visible()
        await shot(page, "compose-preview")
        await page.locator("#send").click()
        await expect(page.locator("#compose-result")).to_contain_text("已提交审批")
        # Pending: stored for the approver, but no alert of that id and no terminal played it.
        pending = await (await engine.get("/api/v1/approvals", headers=PROVINCE)).json()
        [submitted] = [a for a in pending["approvals"] if a["state"] == "pending"]
        unsent = await engine.get(f"/api/v1/alerts/{submitted['id']}", headers=PROVINCE)
        assert unsent.status == 404
        assert sim.played(submitted["id"]) == 0

        approving = await new_page(browser, engine)
        await sign_in(approving, approver)
        await approving.goto("/approvals")
        card = approving.locator("[data-approval-id]").first
        await expect(card).to_contain_text("台风红色预警（改）")
        await expect(card.locator("#preview-totals [data-key='terminals'] dd")).to_have_text("8")
        await shot(approving, "approvals")
        await card.get_by_role("button", name="批准发布").click()
        await expect(card).to_contain_text("已批准并发布")
        await card.get_by_role("link").last.click()

        await expect(approving.locator("#live-state")).to_have_text("全部回执已到", timeout=30_000)
        alert_id = approving.url.rsplit("/", 1)[-1]
        played = sim.played(alert_id)
        assert played == 8
        # The template's {area} was filled with the township's name before the preview.
        sent = await (await engine.get(f"/api/v1/alerts/{alert_id}", headers=PROVINCE)).json()
        assert "{area}" not in sent["text"]
        assert sent["area_names"][GUDONG] in sent["text"]
        await expect(approving.locator("#total-played")).to_have_text(str(played))
        # Who approved it and when, the wait included, in Beijing time as the API gives it.
        await expect(approving.locator("#time-approver")).to_contain_text("福州审批员")
        approval = sent["approval"]
        shown = approval["approved_at"][:19].replace("T", " ")
        assert approval["approved_at"].endswith("+08:00")
        await expect(approving.locator("#time-approved_at")).to_have_text(shown)
        await expect(approving.locator("#time-submitted_at")).not_to_have_text("—")
        await expect(approving.locator("#alert-state")).to_have_text("已发送")
        await expect(approving.locator("#total-expected")).to_have_text("8")
        province_row = approving.locator("#tree-body tr[data-code='35']")
        await expect(province_row.locator("[role=progressbar]")).to_have_attribute(
            "aria-valuenow", "100"
        )
        # Down to the township, the village and its terminals, each figure as they did it.
        await approving.locator("#tree-body tr[data-code='3501'] button.toggle").click()
        await approving.locator(f"#tree-body tr[data-code='{GULOU_COUNTY}'] button.toggle").click()
        await approving.locator(f"#tree-body tr[data-code='{GUDONG}'] button.toggle").click()
        await expect(
            approving.locator(f"#tree-body tr[data-code='{GUDONG}'] [data-k='played']")
        ).to_have_text("8")
        village = terminals[0].region
        await approving.locator(f"#tree-body tr[data-code='{village}'] button.toggle").click()
        in_village = sum(1 for t in terminals if t.region == village)
        await expect(approving.locator("#tree-body tr[data-code^='t:']")).to_have_count(in_village)
        await shot(approving, "alert-live")

        # Cancelling is the composer's: the approver's page says why it is not theirs.
        approving.once("dialog", lambda dialog: dialog.accept())
        await approving.get_by_role("button", name="解除预警").click()
        await expect(approving.locator("#flash")).to_contain_text("composer (编制员)")
        await page.goto(f"/alerts/{alert_id}")
        page.once("dialog", lambda dialog: dialog.accept())
        await page.get_by_role("button", name="解除预警").click()
        await expect(page.locator("#flash")).to_contain_text("预警已解除")
        assert page.errors == []  # type: ignore[attr-defined]
        assert approving.errors == []  # type: ignore[attr-defined]


async def test_a_phone_screen_shows_the_alerts_list_without_sideways_scrolling(
    engine: Client, browser: Browser
) -> None:
    viewer = await person(engine, "tok-gulou", ["viewer"], "查看员")
    page = await new_page(browser, engine, viewport={"width": 375, "height": 740})
    await sign_in(page, viewer)
    width: Any = await page.evaluate("document.documentElement.scrollWidth")
    assert width <= 375
    size = await page.evaluate("getComputedStyle(document.body).fontSize")
    assert float(size.removesuffix("px")) >= 18
    await shot(page, "alerts-phone")
