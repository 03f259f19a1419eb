"""The audit log against a real engine: every state-changing request leaves a record with its
office, action and target; only province offices read it; an edit or a removal made directly
in Redis is reported by ``/audit/verify`` and ``ebd audit verify``."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import redis
from structlog.testing import capture_logs

from dispatcher.core.audit import AuditAction
from dispatcher.http.state import STORE
from dispatcher.store.keys import AUDIT_HEAD, AUDIT_RECORDS
from dispatcher.store.store import Store
from tests.helpers import GUDONG, TAIJIANG_VILLAGE, ZHONGSHAN, alert_body
from tests.integration import engine as steps
from tests.integration.engine import GULOU, PROVINCE, Client, base_url, ebd

PHONE = "13712345678"


@pytest.fixture
def engine_overrides() -> dict[str, Any]:
    return {"drills": steps.drill_settings()}


async def ok(response: Any, status: int = 200) -> Any:
    body = await response.json()
    assert response.status == status, body
    return body


async def records(api: Client, query: str = "") -> list[dict[str, Any]]:
    body = await ok(await api.get(f"/api/v1/audit?limit=1000{query}", headers=PROVINCE))
    return list(body["records"])


async def verify(api: Client) -> dict[str, Any]:
    return dict(await ok(await api.get("/api/v1/audit/verify", headers=PROVINCE)))


async def some_actions(api: Client) -> dict[str, str]:
    """An alert issued, updated and cancelled by Gulou; returns their ids."""
    issued = await ok(await api.post("/api/v1/alerts", json=alert_body(), headers=GULOU), 201)
    update = alert_body(
        headline="台风红色预警（更新）", msg_type="update", references=[issued["id"]]
    )
    updated = await ok(await api.post("/api/v1/alerts", json=update, headers=GULOU), 201)
    cancel = await api.post(f"/api/v1/alerts/{updated['id']}/cancel", json={}, headers=GULOU)
    cancelled = await ok(cancel, 201)
    return {"issue": issued["id"], "update": updated["id"], "cancel": cancelled["id"]}


async def test_every_state_changing_request_is_recorded(api: Client) -> None:
    alerts = await some_actions(api)
    terminal = [{"id": "audit-t1", "region": ZHONGSHAN}]
    await ok(await api.post("/api/v1/terminals", json=terminal, headers=PROVINCE))
    moved = [{"id": "audit-t1", "region": TAIJIANG_VILLAGE}]
    await ok(await api.post("/api/v1/terminals", json=moved, headers=PROVINCE))
    person = {"phone": PHONE, "name": "张三", "region": ZHONGSHAN, "role": "village_head"}
    await ok(await api.post("/api/v1/recipients", json=[person], headers=GULOU))
    await ok(await api.delete(f"/api/v1/recipients/{PHONE}", headers=GULOU))
    year = datetime.now(UTC).year + 1
    await ok(await api.post("/api/v1/drills/plan", json={"year": year}, headers=GULOU))
    at = (datetime.now(UTC) + timedelta(days=2)).isoformat()
    added = await api.post(
        "/api/v1/drills", json={"township": GUDONG, "at": at, "reason": "补演"}, headers=GULOU
    )
    drill = await ok(added, 201)
    await ok(await api.post(f"/api/v1/drills/{drill['id']}/run", headers=GULOU), 202)

    got = await records(api)
    assert [(r["action"], r["office"], r["target"]) for r in got] == [
        ("alert.issue", "fz-gulou", alerts["issue"]),
        ("alert.update", "fz-gulou", alerts["update"]),
        ("alert.cancel", "fz-gulou", alerts["cancel"]),
        ("terminal.register", "fj-province", "audit-t1"),
        ("credential.issue", "fj-province", "audit-t1"),
        ("terminal.move", "fj-province", "audit-t1"),
        ("recipient.import", "fz-gulou", "+86137****5678"),
        ("recipient.delete", "fz-gulou", "+86137****5678"),
        ("drill.plan", "fz-gulou", f"350102/{year}"),
        ("drill.edit", "fz-gulou", drill["id"]),
        ("drill.run_now", "fz-gulou", drill["id"]),
    ]
    assert [r["seq"] for r in got] == list(range(1, 12))
    assert {r["source"] for r in got} == {"127.0.0.1"}
    assert all(r["person"] is None for r in got)
    assert got[1]["detail"]["references"] == [alerts["issue"]]
    assert got[5]["detail"]["moved"] == 1
    assert got[10]["detail"]["alert_id"]
    assert datetime.fromisoformat(got[0]["at"]).tzinfo is not None
    result = await verify(api)
    assert (result["ok"], result["records"], result["head"]["seq"]) == (True, 11, 11)
    assert result["head"]["hash"] == got[-1]["hash"]
    with pytest.MonkeyPatch.context() as env:
        env.setenv("EBD_TOKEN", "tok-province")
        assert await ebd("audit", "verify", "--api", base_url(api)) == 0


async def test_a_replayed_request_is_not_recorded_twice(api: Client) -> None:
    headers = {**GULOU, "Idempotency-Key": "audit-once"}
    for _ in range(2):
        await ok(await api.post("/api/v1/alerts", json=alert_body(), headers=headers), 201)
    assert [r["action"] for r in await records(api)] == ["alert.issue"]


async def test_no_phone_number_or_secret_is_stored_in_records(
    api: Client, rdb: redis.Redis
) -> None:
    people = [
        {"phone": f"1371234{i:04d}", "name": "李四", "region": ZHONGSHAN, "role": "grid_worker"}
        for i in range(3)
    ]
    await ok(await api.post("/api/v1/recipients", json=people, headers=GULOU))
    await ok(await api.post("/api/v1/alerts", json=alert_body(), headers=GULOU), 201)
    stored = json.dumps(rdb.hgetall(AUDIT_RECORDS), ensure_ascii=False)
    assert "137****0001" in stored
    for secret in ("13712340001", "tok-gulou", "tok-province", "Bearer"):
        assert secret not in stored


async def test_only_province_offices_read_the_log(api: Client) -> None:
    for path in ("/api/v1/audit", "/api/v1/audit/export", "/api/v1/audit/verify"):
        response = await api.get(path, headers=GULOU)
        body = await response.json()
        assert response.status == 403, body
        assert "province offices" in body["error"]["message"]
        assert (await api.get(path)).status == 401


@pytest.mark.parametrize(
    ("query", "field", "fragment"),
    [
        ("since=yesterday", "since", "ISO 8601 time with its offset"),
        ("until=2027-03-01T00:00:00", "until", "ISO 8601 time with its offset"),
        (
            "since=2027-03-02T00:00:00%2B08:00&until=2027-03-01T00:00:00%2B08:00",
            "since",
            "swap them",
        ),
        ("action=alert.delete", "action", "alert.issue"),
        ("limit=0", "limit", "from 1 to 1000"),
        ("limit=5000", "limit", "from 1 to 1000"),
        ("after=-1", "after", "integer"),
        ("office=", "office", "office id"),
    ],
)
async def test_bad_filters_are_400_saying_what_to_send(
    api: Client, query: str, field: str, fragment: str
) -> None:
    response = await api.get(f"/api/v1/audit?{query}", headers=PROVINCE)
    body = await response.json()
    assert response.status == 400, body
    assert fragment in body["error"]["message"]
    assert body["error"]["details"][0]["field"] == field


async def test_filters_and_pages(api: Client) -> None:
    before = datetime.now(UTC)
    await some_actions(api)
    terminal = [{"id": "audit-t2", "region": ZHONGSHAN}]
    await ok(await api.post("/api/v1/terminals", json=terminal, headers=PROVINCE))
    after = datetime.now(UTC)

    by_office = await records(api, "&office=fj-province")
    # Registering it also issued its broker account.
    assert [(r["action"], r["target"]) for r in by_office] == [
        ("terminal.register", "audit-t2"),
        ("credential.issue", "audit-t2"),
    ]
    by_action = await records(api, "&action=alert.cancel")
    assert [r["action"] for r in by_action] == ["alert.cancel"]
    window = f"&since={quote(before.isoformat())}&until={quote(after.isoformat())}"
    assert len(await records(api, window)) == 5
    later = quote((after + timedelta(seconds=1)).isoformat())
    assert await records(api, f"&since={later}") == []
    earlier = quote((before - timedelta(seconds=1)).isoformat())
    assert await records(api, f"&until={earlier}") == []

    seen: list[int] = []
    path = "/api/v1/audit?limit=3"
    while path:
        page = await ok(await api.get(path, headers=PROVINCE))
        assert page["count"] <= 3
        seen.extend(r["seq"] for r in page["records"])
        path = page["next"]
    assert seen == [1, 2, 3, 4, 5]


async def test_export_is_the_log_as_ndjson(api: Client, tmp_path: Path) -> None:
    await some_actions(api)
    response = await api.get("/api/v1/audit/export", headers=PROVINCE)
    assert response.status == 200
    assert response.content_type == "application/x-ndjson"
    lines = [json.loads(line) for line in (await response.text()).splitlines()]
    listed = await records(api)
    # The export keeps the hashed bytes (UTC); the list shows the same instants in +08:00.
    assert [r["hash"] for r in lines] == [r["hash"] for r in listed]
    assert [datetime.fromisoformat(r["at"]) for r in lines] == [
        datetime.fromisoformat(r["at"]) for r in listed
    ]
    assert all(r["at"].endswith("+08:00") for r in listed)
    out = tmp_path / "audit.ndjson"
    argv = ["audit", "export", "--api", base_url(api)]
    token_file = tmp_path / "province.token"
    token_file.write_text("tok-province\n", encoding="utf-8")
    argv += ["--token-file", str(token_file)]
    assert await ebd(*argv, "--output", str(out)) == 0
    assert [json.loads(line) for line in out.read_text().splitlines()] == lines
    future = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    assert await ebd(*argv, "--since", future, "--output", str(out)) == 0
    assert out.read_text() == ""


async def tampered(api: Client, capsys: pytest.CaptureFixture[str]) -> tuple[list[Any], str]:
    """What ``/audit/verify`` reports, and what ``ebd audit verify`` printed (it must fail)."""
    result = await verify(api)
    assert result["ok"] is False
    capsys.readouterr()
    with pytest.MonkeyPatch.context() as env:
        env.setenv("EBD_TOKEN", "tok-province")
        assert await ebd("audit", "verify", "--api", base_url(api)) == 1
    return [(p["seq"], p["kind"]) for p in result["problems"]], capsys.readouterr().err


async def test_an_edited_record_is_reported(
    api: Client, rdb: redis.Redis, capsys: pytest.CaptureFixture[str]
) -> None:
    await some_actions(api)
    record = json.loads(str(rdb.hget(AUDIT_RECORDS, "2")))
    record["office"] = "fz-taijiang"
    rdb.hset(AUDIT_RECORDS, "2", json.dumps(record))
    problems, printed = await tampered(api, capsys)
    assert problems == [(2, "edited")]
    assert "seq 2: edited" in printed


@pytest.mark.parametrize(
    ("tamper", "problem", "said"),
    [
        (lambda rdb: rdb.hdel(AUDIT_RECORDS, "2"), (2, "missing"), "records 2 are missing"),
        # The last record gone: only the head, kept apart, tells.
        (lambda rdb: rdb.hdel(AUDIT_RECORDS, "3"), (3, "truncated"), "were removed"),
        (lambda rdb: rdb.hset(AUDIT_RECORDS, "1", "{not json"), (1, "unreadable"), "seq 1"),
    ],
    ids=["removed", "removed_tail", "garbage"],
)
async def test_a_removed_or_garbled_record_is_reported(
    api: Client,
    rdb: redis.Redis,
    capsys: pytest.CaptureFixture[str],
    tamper: Callable[[redis.Redis], object],
    problem: tuple[int, str],
    said: str,
) -> None:
    await some_actions(api)
    tamper(rdb)
    problems, printed = await tampered(api, capsys)
    assert problems == [problem]
    assert said in printed


async def test_appends_of_two_engines_at_once_make_one_chain(redis_url: str) -> None:
    stores = [Store.from_url(redis_url), Store.from_url(redis_url)]
    try:

        async def append(i: int) -> int:
            record = await stores[i % 2].audit.append(
                office="fj-province",
                person=None,
                source="cli",
                action=AuditAction.KEY_ROTATE,
                target=f"k{i}",
            )
            return record.seq

        seqs = await asyncio.gather(*(append(i) for i in range(60)))
        assert sorted(seqs) == list(range(1, 61))
        result = await stores[0].audit.verify()
        assert (result.ok, result.records, result.head.seq) == (True, 60, 60)
    finally:
        for store in stores:
            await store.close()


async def test_a_refused_append_still_answers_and_raises_the_alarm(
    api: Client, rdb: redis.Redis
) -> None:
    # The head key of the wrong type: Redis refuses every append (WRONGTYPE).
    rdb.set(AUDIT_HEAD, "wrong type")
    with capture_logs() as logs:
        response = await api.post("/api/v1/alerts", json=alert_body(), headers=GULOU)
        alert = await ok(response, 201)
    failed = [e for e in logs if e["event"] == "audit.append_failed"]
    assert len(failed) == 1
    assert (failed[0]["log_level"], failed[0]["office"], failed[0]["target"]) == (
        "error",
        "fz-gulou",
        alert["id"],
    )
    assert api.app[STORE].audit.append_failures == 1
    metrics = await (await api.get("/metrics")).text()
    assert "ebd_audit_append_failures_total 1.0" in metrics
