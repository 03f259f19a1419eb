"""``POST /api/v1/alerts?dry_run=1`` and ``ebd alerts issue --dry-run``: the preview, checked
like a real issue, with nothing stored, sent or audited, and areas that reach nobody refused."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
import redis

from dispatcher.core.regions import Level
from receiver.simulator import SimTerminal
from tests.helpers import GUDONG, GULOU_COUNTY, QINGCHENG, ZHONGSHAN, alert_body, fujian
from tests.integration.engine import (
    GULOU,
    PROVINCE,
    Client,
    base_url,
    ebd,
    online,
    register,
)

DRY_RUN = "/api/v1/alerts?dry_run=1"


def terminal(region: str) -> SimTerminal:
    return SimTerminal(f"dry-{uuid.uuid4().hex[:10]}", region)


async def post(
    api: Client, path: str, body: Any, status: int, headers: dict[str, str] = GULOU
) -> dict[str, Any]:
    response = await api.post(path, json=body, headers=headers)
    data: dict[str, Any] = await response.json()
    assert response.status == status, data
    return data


def unreached_village(rdb: redis.Redis) -> str:
    """A village of 鼓楼区's neighbour counties where no terminal is registered (the session's
    Redis holds every test's terminals, so it is looked up, not assumed)."""
    for village in fujian().descendants("3501", level=Level.VILLAGE):
        if village.code.startswith(GULOU_COUNTY) and not rdb.exists(f"ebd:rterms:{village.code}"):
            return village.code
    pytest.skip("every village of 鼓楼区 has a terminal in this session")


async def test_the_preview_shows_the_cover_and_changes_nothing(
    api: Client, rdb: redis.Redis
) -> None:
    await register(api, [terminal(ZHONGSHAN), terminal(ZHONGSHAN), terminal(QINGCHENG)])
    keys = set(rdb.scan_iter("ebd:*"))
    audit_head = rdb.hgetall("ebd:audit:head")
    alerts = rdb.zcard("ebd:alerts")
    preview = await post(api, DRY_RUN, alert_body(areas=[GUDONG]), 200)
    assert len(preview["preview_id"]) == 64
    assert preview["areas"] == [{"code": GUDONG, "name": fujian().name(GUDONG)}]
    assert preview["totals"]["terminals"] >= 3
    assert preview["totals"]["villages"] == len(fujian().village_codes(GUDONG))
    assert preview["reachable"] is True
    township = [row for row in preview["regions"] if row["code"] == GUDONG]
    assert township[0]["terminals"] >= 3
    # Nothing stored, queued or audited.
    assert set(rdb.scan_iter("ebd:*")) == keys
    assert rdb.hgetall("ebd:audit:head") == audit_head
    assert rdb.zcard("ebd:alerts") == alerts
    # The same body gives the same preview id; another cover another one.
    again = await post(api, "/api/v1/alerts?dry_run=true", alert_body(areas=[GUDONG]), 200)
    assert again["preview_id"] == preview["preview_id"]
    wider = await post(api, DRY_RUN, alert_body(areas=[GULOU_COUNTY]), 200)
    assert wider["preview_id"] != preview["preview_id"]


async def test_a_dry_run_sends_nothing(api: Client, mqtt_url: str) -> None:
    listening = terminal(ZHONGSHAN)
    async with online(api, [listening], mqtt_url) as sim:
        await post(api, DRY_RUN, alert_body(areas=[ZHONGSHAN]), 200, PROVINCE)
        # A real alert after it, through the same outbox: once it is played, a dry run that
        # had been queued would have been received first.
        sent = await post(api, "/api/v1/alerts", alert_body(areas=[ZHONGSHAN]), 201, PROVINCE)
        await sim.wait_played(sent["id"], 1, timeout=30)
        assert sim.counts.alert_ids() == [sent["id"]]


async def test_areas_that_reach_nobody_are_refused(api: Client, rdb: redis.Redis) -> None:
    village = unreached_village(rdb)
    refused = await post(api, DRY_RUN, alert_body(areas=[village]), 422)
    assert refused["error"]["code"] == "nothing_to_reach"
    assert fujian().name(village) in refused["error"]["message"]


@pytest.mark.parametrize(
    ("query", "status"),
    [
        ("dry_run=yes", 422),
        ("dry_run=", 422),
        ("dry_run=1&dry_run=1", 400),
        ("dryrun=1", 400),
        ("dry_run=1&preview=1", 400),
    ],
)
async def test_a_flag_the_engine_does_not_know_issues_nothing(
    api: Client, rdb: redis.Redis, query: str, status: int
) -> None:
    alerts = rdb.zcard("ebd:alerts")
    await post(api, f"/api/v1/alerts?{query}", alert_body(), status)
    assert rdb.zcard("ebd:alerts") == alerts


async def test_a_dry_run_is_checked_like_a_real_issue(api: Client, rdb: redis.Redis) -> None:
    await register(api, [terminal(ZHONGSHAN)])
    alerts = rdb.zcard("ebd:alerts")
    outside = await post(api, DRY_RUN, alert_body(areas=["350103"]), 403)
    assert "350103" in outside["error"]["message"]
    await post(api, DRY_RUN, alert_body(areas=["3501029"]), 422)
    await post(api, DRY_RUN, alert_body(headline="台风\u202e"), 422)
    await post(api, DRY_RUN, alert_body(expires_in=None), 422)
    await post(api, DRY_RUN, [alert_body()], 422)
    update = alert_body(msg_type="update", references=["fz-gulou-20260101T000000Z-00000000"])
    await post(api, DRY_RUN, update, 422)
    response = await api.post(DRY_RUN, data=b"{}", headers=GULOU)
    assert response.status == 415
    response = await api.post(DRY_RUN, json=alert_body())
    assert response.status == 401
    assert rdb.zcard("ebd:alerts") == alerts


async def test_the_cli_previews_with_dry_run(
    api: Client, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    await register(api, [terminal(ZHONGSHAN)])
    monkeypatch.setenv("EBD_TOKEN", "tok-gulou")
    monkeypatch.setenv("EBD_LANG", "zh")
    argv = ("alerts", "issue", "--area", GUDONG, "--severity", "红", "--event", "台风",
            "--headline", "台风红色预警", "--text", "请立即转移。", "--dry-run")  # fmt: skip
    capsys.readouterr()
    assert await ebd(*argv, "--api", base_url(api)) == 0
    out = capsys.readouterr().out
    assert "预览编号" in out
    assert "未发布" in out
    assert await ebd(*argv, "--api", base_url(api), "-o", "json") == 0
    preview = json.loads(capsys.readouterr().out)
    assert preview["reachable"] is True
    assert preview["preview_id"] in out
