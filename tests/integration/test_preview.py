"""The pre-send preview (``POST /api/v1/previews``, ``dispatcher.core.preview``) against a real
engine, broker and Redis: its figures equal what the registry and the recipient list hold,
an offline terminal is the one whose Last Will the broker published, the digest follows what
was previewed, nothing is stored or sent, and a province's preview answers in time."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
import redis

from adapters.sms.text import compose
from dispatcher.core.errors import NothingToReach
from dispatcher.core.models import TerminalIn
from dispatcher.core.preview import require_reachable
from dispatcher.core.regions import Level
from dispatcher.store.store import Store
from receiver.simulator import SimTerminal
from tests.helpers import (
    GUDONG,
    GULOU_COUNTY,
    QINGCHENG,
    TAIJIANG_COUNTY,
    TAIJIANG_VILLAGE,
    ZHONGSHAN,
    fujian,
    unique,
    wait_for,
)
from tests.integration.engine import GULOU, PROVINCE, Client, alert_body, online, phone
from tests.integration.test_sms import generic_engine

GUXI = "350102002"  # 鼓西街道, beside 鼓东街道 (GUDONG) in 鼓楼区
GUANFENGTING = "350102001004"
MENGSHAN, XIHU, LUZHUANG = "350102002002", "350102002003", "350102002004"
COST = 0.045


async def preview(
    api: Client, body: dict[str, Any], headers: dict[str, str] = GULOU, status: int = 200
) -> dict[str, Any]:
    response = await api.post("/api/v1/previews", json=body, headers=headers)
    data: dict[str, Any] = await response.json()
    assert response.status == status, data
    return data


async def get(api: Client, path: str, headers: dict[str, str] = PROVINCE) -> dict[str, Any]:
    response = await api.get(path, headers=headers)
    data: dict[str, Any] = await response.json()
    assert response.status == 200, data
    return data


def villages(code: str) -> list[str]:
    tree = fujian()
    return [v for v in tree.village_codes(code) if not tree.is_virtual(v)]


def recipient(n: int, region: str, role: str, languages: str = "zh") -> dict[str, Any]:
    return {"phone": phone(n), "name": f"张{n}", "region": region, "role": role,
            "languages": languages}  # fmt: skip


def sms_segments(body: dict[str, Any], lang: str) -> int:
    """The segments of the alert's text as the SMS planner composes it for this office."""
    return compose(
        signature="鼓楼区应急管理局",
        headline=body["headline"],
        text=body["text"],
        instruction=body["instruction"],
        status="actual",
        msg_type="alert",
        lang=lang,
        custom=body.get("sms_text"),
    ).segmentation.segments


def offline_recorded(rdb: redis.Redis, terminal_id: str) -> bool:
    state = rdb.hget("ebd:terms:state", terminal_id)
    return isinstance(state, str) and json.loads(state)["state"] == "offline"


async def test_the_figures_are_what_the_store_holds(
    redis_url: str, mqtt_url: str, tmp_path: Path, rdb: redis.Redis
) -> None:
    prefix = unique("pv")
    places = [ZHONGSHAN, QINGCHENG, GUANFENGTING, MENGSHAN, XIHU]
    terminals = [SimTerminal(f"{prefix}-{i}", village) for i, village in enumerate(places)]
    dropped = terminals[1]  # 庆城社区's terminal
    async with (
        generic_engine(redis_url, mqtt_url, tmp_path) as (_gateway, api),
        online(api, terminals, mqtt_url) as sim,
    ):
        # Offline the way a terminal goes offline: its link dies, the broker publishes its
        # Will, the engine records it.
        await sim.drop([dropped.id])
        await wait_for(lambda: offline_recorded(rdb, dropped.id), timeout=15)
        contacts = [
            recipient(0, ZHONGSHAN, "village_head"),  # a village with a working loudspeaker
            recipient(1, QINGCHENG, "village_head"),  # the offline one's village
            recipient(2, LUZHUANG, "grid_worker"),  # a village with no terminal
            recipient(3, GUXI, "duty_officer"),  # a township with villages with no terminal
            recipient(4, TAIJIANG_VILLAGE, "resident"),  # outside the areas
            recipient(5, XIHU, "village_head", "en"),
        ]
        response = await api.post("/api/v1/recipients", json=contacts, headers=PROVINCE)
        assert response.status == 200, await response.text()

        body = alert_body(channels=["loudspeaker", "sms"], areas=[GULOU_COUNTY])
        shown = await preview(api, body)
        registered = await get(api, f"/api/v1/terminals?region={GULOU_COUNTY}&limit=100")
        assert registered["total"] == len(terminals) == shown["totals"]["terminals"]
        state = (await get(api, f"/api/v1/terminals/{dropped.id}"))["state"]
        assert state["state"] == "offline"
        assert shown["offline_terminals"] == [
            {
                "id": dropped.id,
                "region": QINGCHENG,
                "region_name": "庆城社区",
                "last_seen": state.get("at"),
            }
        ]
        zh, en = sms_segments(body, "zh"), sms_segments(body, "en")
        assert shown["totals"] == {
            "villages": len(villages(GULOU_COUNTY)),
            "villages_without_terminal": len(villages(GULOU_COUNTY)) - len(places),
            "terminals": 5,
            "terminals_offline": 1,
            "recipients": 5,
            # Those of 庆城 (offline), 陆庄 (no terminal) and 鼓西's duty officer.
            "recipients_covering_offline": 3,
            "sms_segments": 4 * zh + en,
            "sms_messages": 5,
            "sms_cost_yuan": round((4 * zh + en) * COST, 4),
        }
        assert shown["sms"]["segments"] == zh
        assert shown["sms"]["text"].startswith("【鼓楼区应急管理局】台风红色预警")
        assert shown["sms"]["cost_per_segment_yuan"] == COST
        rows = {row["code"]: row for row in shown["regions"]}
        assert set(rows) == {GULOU_COUNTY} | {
            t.code for t in fujian().descendants(GULOU_COUNTY, level=Level.TOWNSHIP)
        }
        assert rows[GULOU_COUNTY]["level"] == "county"
        for code, terminals_there, offline, people in (
            (GULOU_COUNTY, 5, 1, 5),
            (GUDONG, 3, 1, 2),
            (GUXI, 2, 0, 3),
        ):
            row = rows[code]
            assert (row["terminals"], row["offline"], row["recipients"]) == (
                terminals_there,
                offline,
                people,
            ), code
            assert row["villages"] == len(villages(code))
            assert row["villages_without_terminal"] == len(
                [v for v in villages(code) if v not in places]
            )
        others = [r for code, r in rows.items() if code not in (GULOU_COUNTY, GUDONG, GUXI)]
        assert not any(r["terminals"] or r["offline"] or r["recipients"] for r in others)
        assert shown["reachable"] is True

        # The alert's sms_roles choose who is texted, and so who covers the gaps.
        heads = await preview(api, {**body, "sms_roles": ["village_head"]})
        assert heads["totals"]["recipients"] == 3
        assert heads["totals"]["recipients_covering_offline"] == 1
        assert heads["totals"]["sms_segments"] == 2 * zh + en
        # Without the SMS channel nobody is texted.
        quiet = await preview(api, {**body, "channels": ["loudspeaker"], "sms_text": None})
        assert quiet["totals"]["recipients"] == quiet["totals"]["sms_cost_yuan"] == 0

        # Nothing was stored, sent or recorded.
        assert (await get(api, "/api/v1/alerts"))["count"] == 0
        assert (await get(api, "/api/v1/audit?action=alert.issue"))["count"] == 0
        assert not rdb.keys("ebd:smsjob:*")
        assert not rdb.keys("ebd:alert:*")


async def test_the_digest_follows_what_was_previewed(api: Client) -> None:
    body = alert_body(areas=[GUDONG])
    first = (await preview(api, body))["preview_id"]
    assert len(first) == 64
    assert (await preview(api, body))["preview_id"] == first
    # The expiry is not part of it; the areas' order and repeats are not either.
    assert (await preview(api, {**body, "expires_in": 600}))["preview_id"] == first
    assert (await preview(api, {**body, "areas": [GUDONG, ZHONGSHAN]}))["preview_id"] == first
    wider = await preview(api, {**body, "areas": [GUDONG, GUXI]})
    county = await preview(api, {**body, "areas": [GULOU_COUNTY]})
    reworded = await preview(api, {**body, "headline": "台风红色预警（更新）"})
    exercise = await preview(api, {**body, "status": "exercise"})
    ids = {first, wider["preview_id"], county["preview_id"], reworded["preview_id"],
           exercise["preview_id"]}  # fmt: skip
    assert len(ids) == 5
    # Another office previewing the same warning previews another send.
    assert (await preview(api, body, PROVINCE))["preview_id"] != first


async def test_areas_with_nothing_to_reach_are_unreachable(api: Client) -> None:
    shown = await preview(api, alert_body(areas=[GULOU_COUNTY]))
    assert shown["reachable"] is False
    assert shown["totals"]["terminals"] == shown["totals"]["recipients"] == 0
    assert shown["totals"]["villages_without_terminal"] == len(villages(GULOU_COUNTY))
    with pytest.raises(NothingToReach) as refused:
        require_reachable(shown)
    assert (refused.value.code, refused.value.status) == ("nothing_to_reach", 422)
    assert "鼓楼区" in refused.value.message


@pytest.mark.parametrize(
    ("body", "status", "says"),
    [
        (alert_body(areas=["350199"]), 422, "not in the loaded region tree"),
        (alert_body(areas=["3501x"]), 422, "malformed"),
        (alert_body(areas=[TAIJIANG_COUNTY]), 403, "350103"),
        (alert_body(channels=["loudspeaker", "sms"]), 422, "sms' is not configured"),
        (alert_body(headline="台风\u202e警预"), 422, "U+202E"),
        (alert_body(expires_in=None), 422, "exactly one of expires"),
        (["not", "an", "alert"], 422, "JSON object"),
    ],
)
async def test_a_bad_preview_request_is_refused(
    api: Client, body: Any, status: int, says: str
) -> None:
    refused = await preview(api, body, status=status)
    assert says in refused["error"]["message"]


async def test_a_preview_takes_no_query_parameters(api: Client) -> None:
    response = await api.post("/api/v1/previews?dry_run=0", json=alert_body(), headers=GULOU)
    assert response.status == 400
    unauthenticated = await api.post("/api/v1/previews", json=alert_body())
    assert unauthenticated.status == 401


async def test_a_province_preview_answers_within_two_seconds(api: Client, store: Store) -> None:
    tree = fujian()
    every_village = tree.village_codes("35")
    terminals = [TerminalIn(id=f"prov-{code}", region=code) for code in every_village]
    await store.register_terminals(terminals)
    offline = {t.id: '{"v":1,"state":"offline"}' for t in terminals[::175]}
    await store.record_terminal_states(offline)
    started = time.perf_counter()
    shown = await preview(api, alert_body(areas=["35"]), PROVINCE)
    took = time.perf_counter() - started
    print(f"province preview: {len(terminals)} terminals, {took * 1000:.0f} ms")
    assert took < 2.0
    assert shown["totals"]["terminals"] == len(every_village) == 17_498
    assert shown["totals"]["terminals_offline"] == len(offline)
    assert shown["totals"]["villages_without_terminal"] == 0
    assert len(shown["offline_terminals"]) == min(len(offline), 200)
    levels = {Level.CITY, Level.COUNTY, Level.TOWNSHIP}
    assert len(shown["regions"]) == sum(1 for r in tree if r.level in levels)
