"""Chaos for the SMS channel: the real engine (``python -m dispatcher serve``) SIGKILLed, taken
over by another instance, run twice at once, or its Redis SIGKILLed, while it texts hundreds of
people through a sandbox gateway served by this test.

The promise: a message the gateway accepted is neither lost nor sent twice, and no 1-second
window at the gateway sees more than its rate, also with several engines sharing the bucket.
Every scenario ends with ``assert_once``: each person accepted exactly once, no message id ever
submitted again after the gateway took it (``duplicates``), every text delivered, the outbox
and the doubt set empty.

The gateway here (``RetryingGateway``) retries receipt posts that got no answer, as
docs/sms-gateways.md asks of a gateway: receipts posted while the engine or its Redis is down
come again. It counts status lookups, and can hold receipts back so that only a lookup can
settle a message.
"""

from __future__ import annotations

import asyncio
import os
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis
from aiohttp import web

from adapters.sms.gateway import split_out_id
from dispatcher.core.regions import Level
from dispatcher.embedded.processes import RedisServer
from dispatcher.store.keys import sms_job_keys
from tests.helpers import fujian, wait_for
from tests.integration.engine import people
from tests.support.engine_process import EngineApi, EngineProcess
from tests.support.sms_sandbox import GenericGatewayServer, SentMessage

# Real villages (社区) of 鼓楼区, 福州市.
VILLAGES = [v.code for v in fujian().descendants("350102", level=Level.VILLAGE)]
# Short enough that a test runs in seconds: a request in doubt is looked up 0.5 + 2 + 1 s after
# it started, and retries come back within half a second.
SMS = {"settle_after": 1.0, "backoff": 0.05, "backoff_max": 0.5}
GATEWAY = {"timeout": 2.0, "connect_timeout": 0.5}
# Bounds a hang, never a sleep: every scenario is done within seconds.
SETTLE = 40.0
OUTBOX, DOUBT = "ebd:sms:outbox", "ebd:sms:doubt"


class RetryingGateway(GenericGatewayServer):
    """The generic sandbox gateway, plus what a real one does and tests need here.

    Receipt posts that get no answer or no 200 are tried again every 0.2 s until the gateway
    closes (``receipt_retries`` counts the extra tries). ``hold_receipts()`` keeps receipts
    back until ``release_receipts()``. ``lookups`` counts the ids asked about by status
    lookups.
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.receipt_retries = 0
        self.lookups = 0
        self._released = asyncio.Event()
        self._released.set()

    def hold_receipts(self) -> None:
        self._released.clear()

    def release_receipts(self) -> None:
        self._released.set()

    async def _post_receipts(self, batch: list[SentMessage]) -> None:
        await self._released.wait()
        url = self._receipt_url(batch)
        while url is not None and self._client is not None and not self._closing.is_set():
            body, headers = self._receipt_request(batch)  # signed anew: a fresh timestamp
            try:
                async with self._client.post(url, data=body, headers=headers) as response:
                    await response.read()
                    status = response.status
            except (TimeoutError, aiohttp.ClientError):
                status = 0
            self.receipt_answers.append(status)
            if status == 200:
                return
            self.receipt_retries += 1
            await asyncio.sleep(0.2)

    async def _status(self, request: web.Request) -> web.Response:
        self.lookups += len(request.query.getall("id", []))
        return await super()._status(request)


def engine_for(
    tmp_path: Path,
    redis_url: str,
    mqtt_url: str,
    gw: GenericGatewayServer,
    *,
    instance: str = "ebd-1",
    rate: float = 100.0,
    claim_idle_seconds: float = 60.0,
    callback_base: str | None = None,
    **gateway: Any,
) -> EngineProcess:
    """An engine texting through ``gw`` as gateway gw1; receipts go to ``callback_base``
    (default: the engine's own API)."""
    settings = gw.settings("gw1", rate=rate, **{**GATEWAY, **gateway})
    return EngineProcess(
        tmp_path,
        redis_url=redis_url,
        mqtt_url=mqtt_url,
        instance=instance,
        claim_idle_seconds=claim_idle_seconds,
        # A client id of its own: the session broker is shared with other tests.
        client_id=f"sms-chaos-{instance}-{os.getpid()}",
        sms={**SMS, "callback_base": callback_base, "gateways": [settings]},
    )


async def register(api: EngineApi, rows: list[dict[str, Any]]) -> None:
    async with api.http.post(f"{api.base_url}/api/v1/recipients", json=rows) as response:
        assert response.status == 200, await response.text()


async def issue(api: EngineApi, village: str, base_url: str | None = None) -> str:
    return await api.issue(base_url, areas=[village], channels=["sms"])


async def until_delivered(
    api: EngineApi, alert_id: str, n: int, base_url: str | None = None
) -> dict[str, Any]:
    """Until the alert's ``delivery.sms`` has ``n`` recipients, all delivered (the engine or
    its Redis may be down meanwhile); the counts. On timeout the error shows the last ones."""
    last: dict[str, Any] | None = None

    async def delivered() -> bool:
        nonlocal last
        state = await api.try_delivery(alert_id, base_url)
        last = (state or {}).get("sms") or last
        return bool(last and last["recipients"] == n and last["delivered"] == n)

    try:
        await wait_for(delivered, timeout=SETTLE, interval=0.1)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n  last sms counts: {last}") from None
    assert last is not None
    return last


def counts(rdb: redis.Redis, alert_id: str) -> dict[str, int]:
    """The job's state counts straight from Redis (nonzero ones)."""
    raw = rdb.hgetall(sms_job_keys(alert_id)[2])
    return {
        str(k): int(v) for k, v in raw.items() if int(v) and k not in ("recipients", "segments")
    }


def quiet(rdb: redis.Redis) -> bool:
    """Nothing left to send or to look up: the SMS outbox fully acked, the doubt set empty."""
    groups = {g["name"]: g for g in rdb.xinfo_groups(OUTBOX)}
    sms = groups["sms"]
    return sms["pending"] == 0 and int(sms["lag"] or 0) == 0 and rdb.zcard(DOUBT) == 0


def assert_once(
    gw: GenericGatewayServer, jobs: Mapping[str, Sequence[str]], *, limit: int | None = None
) -> None:
    """Every phone of every job accepted by the gateway exactly once, nothing else accepted, no
    accepted id ever submitted again, and (with ``limit``) the rate held."""
    total = sum(len(phones) for phones in jobs.values())
    wrong = {
        (job, p): k
        for job, phones in jobs.items()
        for p in phones
        if (k := gw.sent_count(p, job)) != 1
    }
    assert not wrong, f"{len(wrong)} texts not accepted exactly once: {list(wrong.items())[:5]}"
    assert len(gw.accepted) == total, f"{len(gw.accepted)} accepted for {total} recipients"
    assert gw.duplicates == 0, f"{gw.duplicates} accepted messages were submitted again"
    if limit is not None:
        assert gw.throttled == 0, f"the gateway throttled {gw.throttled} requests"
        assert gw.peak_rate <= limit, f"peak {gw.peak_rate}/s over the limit {limit}/s"


def requests_by(engine: EngineProcess) -> int:
    """Messages this engine submitted, by its ``sms.request`` log lines (all its starts)."""
    return sum(int(e.get("messages", 0)) for e in engine.log_events("sms.request"))


def settled_events(engine: EngineProcess) -> Counter[str]:
    """Answers and requeues of the engine's ``sms.settled`` log lines, summed."""
    total: Counter[str] = Counter()
    for event in engine.log_events("sms.settled"):
        total["answers"] += int(event.get("answers", 0))
        total["requeued"] += int(event.get("requeued", 0))
    return total


async def texting_a_third(
    api: EngineApi, gw: RetryingGateway, n: int
) -> tuple[list[dict[str, Any]], str]:
    """``n`` residents of a village and an alert to them, returned once the gateway has
    accepted a third of the texts: the moment to kill an engine mid-send."""
    rows = people(n, VILLAGES[0], role="resident")
    await register(api, rows)
    alert_id = await issue(api, VILLAGES[0])
    await wait_for(lambda: len(gw.accepted) >= n // 3, timeout=20, interval=0.005)
    return rows, alert_id


async def test_engine_killed_mid_send_restarts_and_texts_everyone_once(
    redis_url: str, mqtt_url: str, rdb: redis.Redis, tmp_path: Path
) -> None:
    """400 texts at 100/s; SIGKILL once a third was accepted, with requests in flight (the
    gateway takes 0.1 s per request, and finishes those the dead engine sent). The restarted
    engine (same instance) re-reads its pending chunk, sends what was queued, and looks up what
    was in flight: everyone once, the rate held across the restart."""
    n, limit = 400, 100
    async with RetryingGateway(rate_limit=limit, latency=0.1) as gw:
        engine = engine_for(tmp_path, redis_url, mqtt_url, gw, rate=limit)
        async with engine, EngineApi(engine.base_url) as api:
            rows, alert_id = await texting_a_third(api, gw, n)
            engine.kill()
            at_kill = counts(rdb, alert_id)
            assert len(gw.accepted) < n, "the kill came too late: everything was sent"
            # Texts waiting and texts in flight: both sides of the write-ahead mark.
            assert at_kill.get("queued", 0) > 0, at_kill
            assert at_kill.get("submitting", 0) > 0, at_kill
            await engine.start()
            summary = await until_delivered(api, alert_id, n)
            await wait_for(lambda: quiet(rdb), timeout=SETTLE, message="outbox and doubts empty")
            assert summary["failed"] == summary["unknown"] == 0, summary
            assert_once(gw, {alert_id: [r["phone"] for r in rows]}, limit=limit)
            print(
                f"at kill: {at_kill}; accepted then {len(gw.accepted)}; "
                f"settled {dict(settled_events(engine))}; receipt retries {gw.receipt_retries}"
            )


async def test_engine_killed_while_a_request_hangs_the_lookup_finds_it(
    redis_url: str, mqtt_url: str, rdb: redis.Redis, tmp_path: Path
) -> None:
    """The gateway takes a batch and never answers; the engine dies waiting. Restarted, it
    sends the rest and, once the request's time is up, asks the gateway about the hung batch
    instead of sending it again. Receipts are held back until then, so only the lookup can
    have marked those five delivered."""
    n = 20
    async with RetryingGateway() as gw:
        # One request at a time: the hung one is the only one in flight when the engine dies.
        engine = engine_for(tmp_path, redis_url, mqtt_url, gw, concurrency=1, timeout=3.0)
        async with engine, EngineApi(engine.base_url) as api:
            rows = people(n, VILLAGES[0], role="resident")
            await register(api, rows)
            gw.hold_receipts()
            gw.fail_next(1, "accept_then_hang")
            alert_id = await issue(api, VILLAGES[0])
            await wait_for(lambda: gw.faults_injected == 1, timeout=10, interval=0.005)
            engine.kill()
            hung = {a.phone for a in gw.accepted}
            assert len(hung) == 5  # one batch: a 20th of the rate
            assert counts(rdb, alert_id) == {"submitting": 5, "queued": n - 5}
            await engine.start()

            async def hung_settled() -> bool:
                states = await recipients_of(api, alert_id)
                return all(states[p]["state"] == "delivered" for p in hung)

            await wait_for(hung_settled, timeout=SETTLE, interval=0.1)
            assert gw.lookups >= len(hung)
            assert settled_events(engine) == {"answers": len(hung), "requeued": 0}
            gw.release_receipts()
            summary = await until_delivered(api, alert_id, n)
            await wait_for(lambda: quiet(rdb), timeout=SETTLE, message="outbox and doubts empty")
            assert summary["failed"] == summary["unknown"] == 0, summary
            assert_once(gw, {alert_id: [r["phone"] for r in rows]})
            recipients = await recipients_of(api, alert_id)
            assert {recipients[p]["attempts"] for p in hung} == {1}


async def recipients_of(api: EngineApi, alert_id: str) -> dict[str, dict[str, Any]]:
    url = f"{api.base_url}/api/v1/alerts/{alert_id}/sms?job=alert"
    async with api.http.get(url) as response:
        assert response.status == 200, await response.text()
        return {row["phone"]: row for row in (await response.json())["recipients"]}


async def test_another_instance_takes_over_a_dead_ones_chunks(
    redis_url: str, mqtt_url: str, rdb: redis.Redis, tmp_path: Path
) -> None:
    """ebd-a dies by SIGKILL mid-send and stays dead; ebd-b, started afterwards, claims its
    chunk once idle for 2 s (XAUTOCLAIM) and settles its in-flight texts: everyone once.

    Receipts go to one address for both, as behind a load balancer (here ebd-b's port): the
    receipts of what ebd-a had submitted must reach a live engine."""
    n, limit = 400, 100
    async with RetryingGateway(rate_limit=limit, latency=0.1) as gw:
        b = engine_for(
            tmp_path, redis_url, mqtt_url, gw, instance="ebd-b", rate=limit, claim_idle_seconds=2
        )
        a = engine_for(
            tmp_path,
            redis_url,
            mqtt_url,
            gw,
            instance="ebd-a",
            rate=limit,
            claim_idle_seconds=2,
            callback_base=b.base_url,
        )
        async with a, EngineApi(a.base_url) as api:
            rows, alert_id = await texting_a_third(api, gw, n)
            a.kill()
            sent_by_a = len(gw.accepted)
            assert sent_by_a < n
            async with b:
                summary = await until_delivered(api, alert_id, n, b.base_url)
                await wait_for(lambda: quiet(rdb), timeout=SETTLE, message="outbox, doubts empty")
            assert summary["failed"] == summary["unknown"] == 0, summary
            assert_once(gw, {alert_id: [r["phone"] for r in rows]}, limit=limit)
            assert a.starts == 1
            # What ebd-a had in flight (4 requests of 5) the gateway may have taken after all.
            assert requests_by(b) >= n - sent_by_a - 4 * 5
            consumers = {c["name"]: c for c in rdb.xinfo_consumers(OUTBOX, "sms")}
            assert consumers["ebd-a"]["pending"] == 0


async def test_two_instances_at_once_share_the_rate_limit(
    redis_url: str, mqtt_url: str, rdb: redis.Redis, tmp_path: Path
) -> None:
    """ebd-a and ebd-b run at once against one gateway allowing 60/s; four alerts of 100 texts
    each are spread over them by the outbox. The bucket they share in Redis keeps the gateway
    at or under 60 in every 1-second window: never throttled, everyone once."""
    per_alert, limit = 100, 60
    async with RetryingGateway(rate_limit=limit) as gw:
        a, b = (
            engine_for(tmp_path, redis_url, mqtt_url, gw, instance=name, rate=limit)
            for name in ("ebd-a", "ebd-b")
        )
        async with a, b, EngineApi(a.base_url) as api:
            jobs: dict[str, list[str]] = {}
            rows = [
                people(per_alert, VILLAGES[i], role="resident", start=i * per_alert)
                for i in range(4)
            ]
            await register(api, [row for part in rows for row in part])
            for i, part in enumerate(rows):
                # Issued at either engine; a chunk goes to whichever one reads it first.
                alert_id = await issue(api, VILLAGES[i], (a, b)[i % 2].base_url)
                jobs[alert_id] = [r["phone"] for r in part]
            for alert_id in jobs:
                await until_delivered(api, alert_id, per_alert)
            await wait_for(lambda: quiet(rdb), timeout=SETTLE, message="outbox and doubts empty")
            assert_once(gw, jobs, limit=limit)
            by_instance = {e.instance: requests_by(e) for e in (a, b)}
            assert sum(by_instance.values()) == len(jobs) * per_alert
            overlap = sending_overlap(gw, a, b)
            print(
                f"texts per instance: {by_instance}; overlap {overlap:.1f} s; peak {gw.peak_rate}/s"
            )
            assert all(by_instance.values()), f"one instance sent everything: {by_instance}"
            # Both fed the gateway at the same time, most of the ~7 s: separate buckets of
            # 60/s each would have taken it to twice its limit.
            assert overlap > 3.0


def sending_overlap(gw: GenericGatewayServer, a: EngineProcess, b: EngineProcess) -> float:
    """Seconds during which the gateway took texts of jobs sent by ``a`` and of ``b``."""
    spans = []
    for engine in (a, b):
        jobs = {e["job"] for e in engine.log_events("sms.request")}
        times = [m.at for m in gw.accepted if split_out_id(str(m.key))[0] in jobs]
        spans.append((min(times), max(times)))
    return min(spans[0][1], spans[1][1]) - max(spans[0][0], spans[1][0])


def store_errors(engine: EngineProcess) -> list[str]:
    """The engine's log events saying the SMS channel could not reach Redis."""
    names = ("sms.store_down", "sms.chunk_store_down", "sms.settle_store_down")
    return [e["event"] for e in engine.log_events() if e.get("event") in names]


@pytest.mark.parametrize("outage", ["blip", "noticed"])
async def test_redis_killed_mid_send_everyone_texted_once(
    fresh_redis: RedisServer, mqtt_url: str, tmp_path: Path, outage: str
) -> None:
    """Redis dies by SIGKILL once a third was accepted and comes back (appendfsync always):
    at once ("blip", within the client's retries on a fresh connection) or once the SMS
    channel has seen it gone ("noticed"). What the engine recorded is there, what it could not
    record is in doubt and looked up, receipts refused meanwhile come again; the engine
    carries on by itself."""
    n, limit = 400, 100
    async with RetryingGateway(rate_limit=limit, latency=0.1) as gw:
        engine = engine_for(tmp_path, fresh_redis.url, mqtt_url, gw, rate=limit)
        async with engine, EngineApi(engine.base_url) as api:
            rows = people(n, VILLAGES[0], role="resident")
            await register(api, rows)
            alert_id = await issue(api, VILLAGES[0])
            await wait_for(lambda: len(gw.accepted) >= n // 3, timeout=20, interval=0.005)
            fresh_redis.kill()
            if outage == "noticed":
                await wait_for(lambda: store_errors(engine), timeout=10, interval=0.01)
            assert len(gw.accepted) < n
            fresh_redis.start()
            with redis.Redis.from_url(fresh_redis.url, decode_responses=True) as rdb:
                after_restart = counts(rdb, alert_id)
                summary = await until_delivered(api, alert_id, n)
                await wait_for(lambda: quiet(rdb), timeout=SETTLE, message="outbox, doubts empty")
            assert summary["failed"] == summary["unknown"] == 0, summary
            assert_once(gw, {alert_id: [r["phone"] for r in rows]}, limit=limit)
            assert engine.running
            assert engine.starts == 1
            print(
                f"after the Redis restart ({outage}): {after_restart}; "
                f"accepted then {len(gw.accepted)}; settled {dict(settled_events(engine))}; "
                f"store errors {Counter(store_errors(engine))}; "
                f"receipt retries {gw.receipt_retries}"
            )
