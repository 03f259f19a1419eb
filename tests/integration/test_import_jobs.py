"""Large imports as background jobs (issue 15): ``202`` and ``/api/v1/jobs/{id}``, progress,
who may read a job, credentials handed out once, bad rows refused whole before anything is
written, jobs of a stopped instance reported interrupted, and the CLI following a job."""

from __future__ import annotations

import io
import json
import random
from pathlib import Path
from typing import Any

import pytest
import redis
from aiohttp import ClientResponse

from adapters.loudspeaker.probe import broker_accepts
from adapters.sms.gateway import recipient_key
from adapters.sms.recipients import _normalize_phone, normalize_phone
from dispatcher.cli.provisioning import read_provisioning
from dispatcher.core.regions import Level
from dispatcher.store.jobs import JobStore
from dispatcher.store.keys import SMS_RECIPS, TERMS_REGION
from dispatcher.store.liveness import LivenessStore
from receiver.mqtt_lite import tls_context
from tests.helpers import fujian, wait_for
from tests.integration.engine import (
    GULOU,
    PROVINCE,
    Client,
    base_url,
    ebd,
    people,
    running_engine,
)

# Far from the phones other tests use (people() starts at +86139 00000000).
PHONES = 60_000_000


def villages(n: int) -> list[str]:
    codes = [v.code for v in fujian().descendants("35", level=Level.VILLAGE)]
    return [codes[i % len(codes)] for i in range(n)]


def terminal_rows(n: int, prefix: str) -> list[dict[str, str]]:
    return [{"id": f"{prefix}-{i:06d}", "region": region} for i, region in enumerate(villages(n))]


def recipient_rows(n: int) -> list[dict[str, Any]]:
    return [
        {**row, "region": region}
        for row, region in zip(people(n, start=PHONES), villages(n), strict=True)
    ]


async def post(
    api: Client, path: str, rows: Any, headers: dict[str, str] = PROVINCE
) -> ClientResponse:
    """POST ``rows`` as JSON; a large body as a stream, as a client sending megabytes should."""
    body = io.BytesIO(json.dumps(rows, ensure_ascii=False).encode())
    return await api.post(path, headers={**headers, "Content-Type": "application/json"}, data=body)


async def job_of(api: Client, location: str, headers: dict[str, str] = PROVINCE) -> Any:
    response = await api.get(location, headers=headers)
    assert response.status == 200, await response.text()
    return await response.json()


async def ended(api: Client, location: str, seen: list[int] | None = None) -> Any:
    """The job once it left queued/running (its progress readings in ``seen``)."""

    async def read() -> Any:
        job = await job_of(api, location)
        if seen is not None:
            seen.append(job["progress"]["done"])
        return job if job["state"] not in ("queued", "running") else None

    return await wait_for(read, timeout=45, interval=0.01, message="the job to end")


async def test_a_large_recipient_import_is_a_job_that_reaches_done_with_exact_counts(
    api: Client, rdb: redis.Redis
) -> None:
    rows = recipient_rows(20_000)
    response = await post(api, "/api/v1/recipients", rows, PROVINCE)
    assert response.status == 202, await response.text()
    answer = await response.json()
    location = response.headers["Location"]
    assert location == f"/api/v1/jobs/{answer['id']}" == answer["location"]
    assert answer["kind"] == "recipients"
    assert answer["progress"] == {"done": 0, "total": 20_000}
    seen: list[int] = []
    job = await ended(api, location, seen)
    assert job["state"] == "done", job
    assert job["error"] is None
    assert job["result"] == {"persons": 20_000, "created": 20_000, "updated": 0, "unchanged": 0}
    assert job["progress"] == {"done": 20_000, "total": 20_000}
    # Progress moves: never backwards, and read at least once between the start and the end.
    assert seen == sorted(seen)
    assert any(0 < done < 20_000 for done in seen), seen
    assert rdb.hlen(SMS_RECIPS) == 20_000
    # The same rows again: every person comes back unchanged.
    again = await post(api, "/api/v1/recipients?async=1", rows[:500], PROVINCE)
    assert again.status == 202
    job = await ended(api, again.headers["Location"])
    assert job["result"] == {"persons": 500, "created": 0, "updated": 0, "unchanged": 500}


async def test_a_small_import_still_answers_at_once(api: Client) -> None:
    response = await post(api, "/api/v1/recipients", recipient_rows(10))
    assert response.status == 200
    assert await response.json() == {"persons": 10, "created": 10, "updated": 0, "unchanged": 0}


async def test_a_terminal_job_hands_out_each_password_once_and_only_to_its_office(
    api: Client, rdb: redis.Redis
) -> None:
    rows = terminal_rows(3000, "job")
    response = await post(api, "/api/v1/terminals", rows, {**PROVINCE, "Prefer": "respond-async"})
    assert response.status == 202, await response.text()
    location = response.headers["Location"]
    # Another office learns nothing of it, not even that it exists.
    other = await api.get(location, headers=GULOU)
    assert other.status == 404
    job = await ended(api, location)
    assert job["state"] == "done", job
    result = job["result"]
    assert (result["created"], result["updated"], result["unchanged"]) == (3000, 0, 0)
    assert rdb.hlen(TERMS_REGION) == 3000
    credentials = {c["id"]: c["password"] for c in result["credentials"]}
    assert sorted(credentials) == sorted(r["id"] for r in rows)
    broker = result["broker"]
    assert broker["url"].startswith("mqtts://")
    # The password works on the terminals' listener.
    port = int(broker["url"].rsplit(":", 1)[1])
    first = rows[0]["id"]
    tls = tls_context(broker["ca_pem"])
    assert await broker_accepts("127.0.0.1", port, first, credentials[first], tls=tls)
    # Once: the next read has the counts and no password.
    again = await job_of(api, location)
    assert again["result"]["credentials"] == []
    assert "earlier read" in again["result"]["credentials_note"]
    assert again["result"]["created"] == 3000
    assert (await api.get(location, headers=GULOU)).status == 404


async def test_an_import_with_a_bad_row_is_refused_whole_before_anything_is_written(
    api: Client, rdb: redis.Redis
) -> None:
    rows = recipient_rows(6000)
    rows[4321] = {**rows[4321], "phone": "0591 8765 4321"}  # a landline
    rows[5000] = {**rows[5000], "region": "359999999999"}
    # Large enough to be checked by the worker processes, and to run as a job if it were good.
    response = await post(api, "/api/v1/recipients", rows, PROVINCE)
    assert response.status == 422
    error = (await response.json())["error"]
    assert error["message"].startswith("2 bad item(s); nothing was imported. First: item 4321")
    assert [d["item"] for d in error["details"]] == [4321, 5000]
    assert "landline" in error["details"][0]["message"]
    assert error["details"][1]["field"] == "region"
    assert rdb.hlen(SMS_RECIPS) == 0
    terminals = terminal_rows(25_000, "bad")
    terminals[24_999] = {**terminals[24_999], "id": terminals[3]["id"]}
    response = await post(api, "/api/v1/terminals", terminals, PROVINCE)
    assert response.status == 422
    error = (await response.json())["error"]
    assert error["details"] == [
        {
            "item": 24_999,
            "field": "id",
            "message": f"terminal {terminals[3]['id']!r} also at item 3",
            "type": "duplicate",
        }
    ]
    assert rdb.hlen(TERMS_REGION) == 0


async def test_an_import_outside_the_jurisdiction_is_refused_before_a_job_starts(
    api: Client, rdb: redis.Redis
) -> None:
    response = await post(api, "/api/v1/terminals?async=1", terminal_rows(2000, "far"), GULOU)
    assert response.status == 403
    assert rdb.hlen(TERMS_REGION) == 0
    assert not rdb.keys("ebd:job:*")


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/api/v1/jobs/nope", 404),
        ("/api/v1/jobs/job-0123456789abcdef", 404),
        ("/api/v1/jobs/job-0123456789ABCDEF", 404),
        ("/api/v1/jobs/job-0123456789abcdef?x=1", 400),
    ],
)
async def test_bad_job_ids(api: Client, path: str, status: int) -> None:
    response = await api.get(path, headers=PROVINCE)
    assert response.status == status
    assert (await response.json())["error"]["message"]


async def test_bad_async_flag_and_bodies(api: Client) -> None:
    rows = recipient_rows(2)
    maybe = await post(api, "/api/v1/recipients?async=maybe", rows, PROVINCE)
    assert maybe.status == 400
    assert "async must be 1 or 0" in (await maybe.json())["error"]["message"]
    broken = await api.post(
        "/api/v1/terminals",
        headers={**PROVINCE, "Content-Type": "application/json"},
        data=io.BytesIO(b"[" * 200_000),
    )
    assert broken.status == 400
    assert "not valid JSON" in (await broken.json())["error"]["message"]
    shape = await post(api, "/api/v1/terminals", {"rows": []}, PROVINCE)
    assert shape.status == 422
    assert "send a JSON list of terminals" in (await shape.json())["error"]["message"]
    too_many = await post(api, "/api/v1/recipients", recipient_rows(1) * 100_001, PROVINCE)
    assert too_many.status == 422
    assert "at most 100000 recipients" in (await too_many.json())["error"]["message"]


async def test_the_job_of_a_stopped_instance_reads_interrupted(api: Client, redis_url: str) -> None:
    client = redis.asyncio.Redis.from_url(redis_url, decode_responses=True)
    try:
        # An instance that held a lease and gave it up without finishing its job: as one
        # killed mid-import whose lease lapsed.
        gone = LivenessStore(client, "imp-gone", lease_seconds=5)
        await gone.renew()
        await gone.release()
        jobs = JobStore(client)
        job = await jobs.create("terminals", office="fj-province", instance="imp-gone", total=9)
        assert await jobs.start(job)
        assert await jobs.progress(job, 4)
        read = await job_of(api, f"/api/v1/jobs/{job.id}")
        assert read["state"] == "interrupted"
        assert read["error"]["code"] == "interrupted"
        assert "after 4 of 9 rows" in read["error"]["message"]
        assert "import the same rows again" in read["error"]["message"]
        # It stays so: the woken instance cannot finish it any more.
        assert not await jobs.finish(job, {"created": 9}, has_secret=False)
        assert (await job_of(api, f"/api/v1/jobs/{job.id}"))["state"] == "interrupted"
    finally:
        await client.aclose()


async def test_an_instance_marks_its_own_jobs_interrupted_when_it_starts_again(
    redis_url: str, mqtt_url: str, tmp_path: Path
) -> None:
    client = redis.asyncio.Redis.from_url(redis_url, decode_responses=True)
    try:
        jobs = JobStore(client)
        job = await jobs.create("recipients", office="fj-province", instance="imp-again", total=3)
        await jobs.start(job)
        async with running_engine(
            redis_url, mqtt_url, tmp_path / "state", instance="imp-again"
        ) as api:
            read = await job_of(api, f"/api/v1/jobs/{job.id}")
        assert read["state"] == "interrupted"
        assert await jobs.active_of("imp-again") == []
    finally:
        await client.aclose()


async def test_the_cli_follows_a_terminal_import_job_and_writes_the_passwords(
    api: Client,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    rdb: redis.Redis,
) -> None:
    rows = terminal_rows(5500, "cli")
    csv_file = tmp_path / "terminals.csv"
    csv_file.write_text(
        "id,region\n" + "".join(f"{r['id']},{r['region']}\n" for r in rows), encoding="utf-8"
    )
    out = tmp_path / "handed.json"
    monkeypatch.setenv("EBD_TOKEN", "tok-province")
    code = await ebd(
        "terminals", "import", str(csv_file), "--api", base_url(api), "--credentials-out", str(out)
    )
    assert code == 0, capsys.readouterr().err
    printed = capsys.readouterr().out
    assert "5500 terminals: 5500 new, 0 moved, 0 unchanged" in printed
    assert "5500 broker accounts issued" in printed
    handed = read_provisioning(out)
    assert sorted(handed.passwords) == sorted(r["id"] for r in rows)
    assert handed.url.startswith("mqtts://")
    assert rdb.hlen(TERMS_REGION) == 5500


async def test_the_cli_follows_a_recipient_import_job(
    api: Client,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    rows = recipient_rows(5001)
    csv_file = tmp_path / "people.csv"
    csv_file.write_text(
        "phone,name,region,role\n"
        + "".join(f"{r['phone']},{r['name']},{r['region']},{r['role']}\n" for r in rows),
        encoding="utf-8",
    )
    monkeypatch.setenv("EBD_TOKEN", "tok-province")
    assert await ebd("recipients", "import", str(csv_file), "--api", base_url(api)) == 0
    assert "5001 people: 5001 new" in capsys.readouterr().out


def test_the_fast_path_for_mainland_mobiles_gives_what_the_parser_gives() -> None:
    generator = random.Random(15)  # noqa: S311  test data, not secrets
    ranges = [f"1{a}{b}" for a in "3456789" for b in "0123456789"]
    for prefix in ranges:
        for _ in range(30):
            digits = prefix + "".join(generator.choice("0123456789") for _ in range(8))
            for written in (digits, "+86" + digits):
                try:
                    slow: str | Exception = _normalize_phone(written, "CN")
                except ValueError as exc:
                    slow = exc
                try:
                    fast: str | Exception = normalize_phone(written)
                except ValueError as exc:
                    fast = exc
                if isinstance(slow, Exception):
                    assert isinstance(fast, ValueError), written
                    assert str(fast) == str(slow), written
                else:
                    assert fast == slow, written
    assert recipient_key(normalize_phone("13800138000")) == recipient_key("+8613800138000")
