"""The SMS for people who cannot hear the loudspeaker (``needs: ["text"]``), end to end: the
engine (real Redis, real broker) texting through a real HTTP gateway server run by the test,
which keeps its own books of what it sent."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from adapters.sms.gateway import recipient_key
from dispatcher.core.regions import code_path
from dispatcher.store.keys import SMS_RECIPS, sms_region_recips_key
from tests.helpers import GUDONG, QINGCHENG, TAIJIANG_VILLAGE, ZHONGSHAN, alert_body, wait_for
from tests.integration.engine import (
    PROVINCE,
    Client,
    base_url,
    dispatched,
    ebd,
    people,
    phone,
    running_engine,
)
from tests.integration.engine import issue as issue_alert
from tests.integration.test_sms import Texting, generic_engine, register, sms_of, until_sms

# Three village heads who hear (0–2); who cannot hear: a resident in 中山 (10), a grid worker in
# 庆城 (12), and a resident in 台江, outside 鼓东 (11); a resident who hears (13).
DEAF_RESIDENT = {"phone": phone(10), "name": "聋一", "region": ZHONGSHAN, "role": "resident"}
DEAF_OUTSIDE = {"phone": phone(11), "name": "聋二", "region": TAIJIANG_VILLAGE, "role": "resident"}
DEAF_GRID = {"phone": phone(12), "name": "聋三", "region": QINGCHENG, "role": "grid_worker"}
HEARING_RESIDENT = {"phone": phone(13), "name": "居民", "region": ZHONGSHAN, "role": "resident"}
DEAF = [{**row, "needs": ["text"]} for row in (DEAF_RESIDENT, DEAF_OUTSIDE, DEAF_GRID)]
EVERYONE = people(3) + DEAF + [HEARING_RESIDENT]


@pytest.fixture
async def texting(redis_url: str, mqtt_url: str, tmp_path: Path) -> AsyncIterator[Texting]:
    """An engine texting through one gateway, with ``EVERYONE`` registered."""
    async with generic_engine(redis_url, mqtt_url, tmp_path) as engine:
        await register(engine[1], EVERYONE)
        yield engine


def texted(gw: Any, alert_id: str) -> dict[str, int]:
    """Phone → texts of ``alert_id`` the gateway took."""
    out: dict[str, int] = {}
    for message in gw.sent.values():
        if alert_id in str(message.key):
            out[message.phone] = out.get(message.phone, 0) + 1
    return out


async def test_a_loudspeaker_alert_texts_only_those_who_cannot_hear_in_its_area(
    texting: Texting,
) -> None:
    gw, client = texting
    alert_id = await issue_alert(client, areas=[GUDONG], channels=["loudspeaker"])
    summary = await until_sms(client, alert_id, recipients=2, delivered=2)
    assert summary["failed"] == 0
    assert texted(gw, alert_id) == {phone(10): 1, phone(12): 1}
    text = next(m.text for m in gw.sent.values() if alert_id in str(m.key))
    assert text.startswith("【福建省应急管理厅】台风红色预警")


async def test_an_alert_with_sms_texts_everyone_once(texting: Texting) -> None:
    gw, client = texting
    alert_id = await issue_alert(client, areas=[GUDONG], channels=["loudspeaker", "sms"])
    await until_sms(client, alert_id, recipients=6, delivered=6)
    assert texted(gw, alert_id) == {phone(n): 1 for n in (0, 1, 2, 10, 12, 13)}, (
        "one text each, nobody outside 鼓东"
    )
    assert gw.duplicates == 0


async def test_sms_roles_do_not_leave_out_those_who_cannot_hear(texting: Texting) -> None:
    gw, client = texting
    alert_id = await issue_alert(
        client, areas=[ZHONGSHAN], channels=["loudspeaker", "sms"], sms_roles=["village_head"]
    )
    await until_sms(client, alert_id, recipients=4, delivered=4)
    # The resident who cannot hear is texted; the one who hears is not.
    assert texted(gw, alert_id) == {phone(0): 1, phone(1): 1, phone(2): 1, phone(10): 1}


async def test_updates_and_cancels_reach_those_who_cannot_hear(texting: Texting) -> None:
    gw, client = texting
    first = await issue_alert(client, areas=[ZHONGSHAN], channels=["loudspeaker"])
    await until_sms(client, first, recipients=1, delivered=1)
    update = await issue_alert(
        client,
        areas=[ZHONGSHAN],
        channels=["loudspeaker"],
        msg_type="update",
        references=[first],
        text="风力加强，预计有14级大风。",
    )
    await until_sms(client, update, recipients=1, delivered=1)
    (update_text,) = [m.text for m in gw.sent.values() if update in str(m.key)]
    assert "更新" in update_text
    assert "14级" in update_text
    response = await client.post(f"/api/v1/alerts/{update}/cancel", headers=PROVINCE)
    cancel = await response.json()
    assert response.status == 201, cancel
    await until_sms(client, cancel["id"], recipients=1, delivered=1)
    (cancel_text,) = [m.text for m in gw.sent.values() if cancel["id"] in str(m.key)]
    assert "解除" in cancel_text
    assert {m.phone for m in gw.sent.values()} == {phone(10)}


async def test_a_drill_tells_those_who_cannot_hear_it_is_a_drill(texting: Texting) -> None:
    gw, client = texting
    alert_id = await issue_alert(
        client, areas=[QINGCHENG], channels=["loudspeaker"], status="exercise"
    )
    await until_sms(client, alert_id, recipients=1, delivered=1)
    (message,) = [m for m in gw.sent.values() if alert_id in str(m.key)]
    assert message.phone == phone(12)
    assert "【演练】" in message.text


async def test_a_loudspeaker_alert_with_nobody_who_cannot_hear_texts_nobody(
    texting: Texting,
) -> None:
    gw, client = texting
    # Nobody is registered in 鼓西街道.
    alert_id = await issue_alert(client, areas=["350102002"], channels=["loudspeaker"])
    await wait_for(lambda: dispatched(client, alert_id), message="dispatched")
    response = await client.get(f"/api/v1/alerts/{alert_id}", headers=PROVINCE)
    assert "sms" not in (await response.json())["delivery"], "no SMS job was made"
    assert await sms_of(client, alert_id) == {}
    assert texted(gw, alert_id) == {}


async def test_the_preview_counts_those_who_cannot_hear(texting: Texting) -> None:
    _, client = texting
    for channels, recipients in ((["loudspeaker"], 2), (["loudspeaker", "sms"], 6)):
        body = alert_body(areas=[GUDONG], channels=channels)
        response = await client.post("/api/v1/previews", json=body, headers=PROVINCE)
        preview = await response.json()
        assert response.status == 200, preview
        totals = preview["totals"]
        assert preview["sms"]["for_hearing"] == 2, channels
        assert totals["recipients"] == recipients, channels
        assert totals["sms_messages"] == recipients, channels
        assert totals["sms_cost_yuan"] > 0


async def test_the_registry_shows_needs(texting: Texting) -> None:
    _, client = texting
    response = await client.get("/api/v1/recipients?region=35&limit=100", headers=PROVINCE)
    listing = {r["phone"]: r for r in (await response.json())["recipients"]}
    assert listing[phone(10)]["needs"] == ["text"]
    assert listing[phone(0)]["needs"] == []
    # The office's new list is what the person needs now: none.
    await register(client, [DEAF_GRID])
    response = await client.get("/api/v1/recipients?region=35&limit=100", headers=PROVINCE)
    listing = {r["phone"]: r for r in (await response.json())["recipients"]}
    assert listing[phone(12)]["needs"] == []
    # Rows of one number join their needs: one row says it, the other leaves it out.
    await register(client, [{**DEAF_GRID, "needs": ["text"]}, {**DEAF_GRID, "region": ZHONGSHAN}])
    response = await client.get("/api/v1/recipients?region=35&limit=100", headers=PROVINCE)
    listing = {r["phone"]: r for r in (await response.json())["recipients"]}
    assert listing[phone(12)]["needs"] == ["text"]
    assert len(listing[phone(12)]["postings"]) == 2


@pytest.mark.parametrize(
    ("needs", "message"),
    [
        (["braille"], "item 1, needs: unknown need 'braille'; known: 'text'"),
        ("text", "item 1, needs: needs must be a list, not str"),
        ({"text": True}, "item 1, needs: needs must be a list, not dict"),
    ],
    ids=["unknown-value", "a-string", "an-object"],
)
async def test_bad_needs_are_refused_naming_the_row(api: Client, needs: Any, message: str) -> None:
    rows = [people(1)[0], {**DEAF_RESIDENT, "needs": needs}]
    response = await api.post("/api/v1/recipients", json=rows, headers=PROVINCE)
    body = await response.json()
    assert response.status == 422, body
    assert message in body["error"]["message"]
    assert body["error"]["details"][0]["field"] == "needs"
    listed = await api.get("/api/v1/recipients?region=35", headers=PROVINCE)
    assert (await listed.json())["total"] == 0, "nothing was imported"


async def test_the_cli_imports_a_needs_column_and_refuses_an_unknown_value(
    api: Client, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    token_file = tmp_path / "province.token"
    token_file.write_text("tok-province\n", encoding="utf-8")
    auth = ["--api", base_url(api), "--token-file", str(token_file)]
    bad = tmp_path / "bad.csv"
    bad.write_text(
        "phone,name,region,role,needs\n"
        f"13712345678,张三,{ZHONGSHAN},resident,text\n"
        f"13712345679,李四,{ZHONGSHAN},resident,braille\n",
        encoding="utf-8",
    )
    assert await ebd("recipients", "import", str(bad), *auth) == 2
    err = capsys.readouterr().err
    assert "line 3, needs: unknown need 'braille'" in err, err
    good = tmp_path / "good.csv"
    good.write_text(
        "phone,name,region,role,needs\n"
        f"13712345678,张三,{ZHONGSHAN},resident,text\n"
        f"13712345678,张三,{QINGCHENG},grid_worker,\n"
        f"13712345679,李四,{ZHONGSHAN},resident,\n",
        encoding="utf-8",
    )
    assert await ebd("recipients", "import", str(good), *auth) == 0
    assert "3 rows, 2 people: 2 new" in capsys.readouterr().out
    response = await api.get("/api/v1/recipients?region=35", headers=PROVINCE)
    listing = {r["phone"]: r["needs"] for r in (await response.json())["recipients"]}
    assert listing == {"+8613712345678": ["text"], "+8613712345679": []}
    assert await ebd("recipients", "list", *auth, "--region", "350102") == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.endswith("[needs text]") for line in lines if "****" in line] == [True, False]


async def test_a_record_stored_before_needs_existed_is_listed_and_texted(
    redis_url: str, texting: Texting
) -> None:
    gw, client = texting
    # As an engine before this change wrote it: no "needs" member.
    old = {
        "phone": phone(20),
        "name": "旧",
        "languages": ["zh"],
        "postings": [[ZHONGSHAN, "village_head"]],
    }
    key = recipient_key(phone(20))
    redis = aioredis.from_url(redis_url)
    try:
        await redis.hset(SMS_RECIPS, key, json.dumps(old, ensure_ascii=False))
        for code in code_path(ZHONGSHAN):
            await redis.sadd(sms_region_recips_key(code), key)
    finally:
        await redis.aclose()
    response = await client.get(f"/api/v1/recipients?region={ZHONGSHAN}", headers=PROVINCE)
    body = await response.json()
    assert response.status == 200, body
    listing = {r["phone"]: r for r in body["recipients"]}
    assert listing[phone(20)]["needs"] == []
    alert_id = await issue_alert(client, areas=[ZHONGSHAN], channels=["sms"])
    await until_sms(client, alert_id, recipients=6, delivered=6)
    assert texted(gw, alert_id)[phone(20)] == 1


async def test_without_gateways_a_loudspeaker_alert_goes_out_as_before(
    redis_url: str, mqtt_url: str, tmp_path: Path
) -> None:
    async with running_engine(redis_url, mqtt_url, tmp_path) as client:
        # The registry works without gateways; nobody can be texted.
        await register(client, DEAF)
        alert_id = await issue_alert(client, areas=[GUDONG], channels=["loudspeaker"])
        await wait_for(lambda: dispatched(client, alert_id), message="dispatched")
        response = await client.get(f"/api/v1/alerts/{alert_id}", headers=PROVINCE)
        body = await response.json()
        assert response.status == 200, body
        assert "sms" not in body["delivery"]
        preview = await client.post(
            "/api/v1/previews", json=alert_body(areas=[GUDONG]), headers=PROVINCE
        )
        shown = await preview.json()
        assert shown["sms"]["for_hearing"] == 0
        assert shown["totals"]["recipients"] == 0
