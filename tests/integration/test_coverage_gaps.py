"""Coverage by village, not only by terminal: an alert's delivery and a year's drill
compliance name the villages of their area with no registered terminal, and virtual townships
(no village of their own) are marked and owe no drill. Real Redis and broker."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from dispatcher.core.regions import Level
from receiver.simulator import SimTerminal
from tests.helpers import fujian, unique, wait_for
from tests.integration.engine import (
    PROVINCE,
    delivery,
    drill_settings,
    issue,
    register,
    running_engine,
)

LIANJIANG = "350122"  # 连江县
HUANGQI = "350122112"  # 黄岐镇: 11 villages
MAZU = "350122400"  # 马祖乡: virtual, only 马祖乡虚拟社区


async def test_alert_and_compliance_name_the_villages_without_a_terminal(
    redis_url: str, mqtt_url: str, tmp_path: Path
) -> None:
    villages = [v.code for v in fujian().descendants(HUANGQI, Level.VILLAGE)]
    assert len(villages) == 11
    prefix = unique("gap")
    # Terminals in 5 of the 11 villages: 6 villages have none, as in the issue.
    covered = villages[:5]
    terminals = [SimTerminal(f"{prefix}-{i}", code) for i, code in enumerate(covered)]
    async with running_engine(redis_url, mqtt_url, tmp_path, drills=drill_settings()) as client:
        await register(client, terminals)
        alert_id = await issue(client, areas=[HUANGQI])

        async def sent() -> dict[str, Any] | None:
            state = await delivery(client, alert_id, "township")
            return state if state["dispatched_at"] else None

        state = await wait_for(sent, timeout=10)
        assert isinstance(state, dict)
        assert state["expected"] == 5
        assert state["villages_without_terminal"] == 6
        assert state["villages_without_terminal_list"] is None  # listed on request only
        response = await client.get(
            f"/api/v1/alerts/{alert_id}?villages=list&detail=township", headers=PROVINCE
        )
        listed = (await response.json())["delivery"]["villages_without_terminal_list"]
        assert [v["code"] for v in listed] == villages[5:]
        assert listed[0]["path"].startswith("福建省/福州市/连江县/黄岐镇/")
        township = next(row for row in state["by_township"] if row["code"] == HUANGQI)
        assert township["villages_without_terminal"] == 6
        # The region's own page shows the same before any alert: terminals per village.
        response = await client.get(f"/api/v1/regions/{HUANGQI}", headers=PROVINCE)
        region = await response.json()
        assert [v["code"] for v in region["villages_without_terminal"]] == villages[5:]
        assert [c["terminals"] for c in region["children"]] == [1] * 5 + [0] * 6
        county = next(row for row in state["by_county"] if row["code"] == LIANJIANG)
        assert county["villages_without_terminal"] == 6

        year = datetime.now(UTC).year + 1
        response = await client.get(
            f"/api/v1/drills/compliance?year={year}&region={LIANJIANG}", headers=PROVINCE
        )
        assert response.status == 200, await response.text()
        body = await response.json()
        assert [t["code"] for t in body["virtual_townships"]] == [MAZU]
        rows = {t["code"]: t for t in body["townships"] + body["compliant_townships"]}
        assert MAZU not in rows
        assert rows[HUANGQI]["villages_without_terminal"] == 6
        assert [v["code"] for v in rows[HUANGQI]["villages_without_terminal_list"]] == (
            villages[5:]
        )
        # Every other township of the county has no terminal at all: all its villages count.
        others = [t for t in fujian().townships(LIANJIANG) if t.code != HUANGQI]
        expected_gaps = 6 + sum(len(fujian().villages(t.code)) for t in others)
        assert body["totals"]["villages_without_terminal"] == expected_gaps

        # Planning the county's year leaves the virtual township out.
        response = await client.post(
            "/api/v1/drills/plan", json={"year": year, "region": LIANJIANG}, headers=PROVINCE
        )
        assert response.status == 200, await response.text()
        assert (await response.json())["planned"] == len(others) + 1


async def test_regions_endpoint_marks_virtual_townships(
    redis_url: str, mqtt_url: str, tmp_path: Path
) -> None:
    async with running_engine(redis_url, mqtt_url, tmp_path) as client:
        mazu = await (await client.get(f"/api/v1/regions/{MAZU}", headers=PROVINCE)).json()
        assert mazu["virtual"] is True
        assert mazu["villages"] == 1
        county = await (await client.get(f"/api/v1/regions/{LIANJIANG}", headers=PROVINCE)).json()
        assert county["virtual"] is False
        children = {c["code"]: c for c in county["children"]}
        assert children[MAZU]["virtual"] is True
        assert (children[HUANGQI]["virtual"], children[HUANGQI]["villages"]) == (False, 11)
